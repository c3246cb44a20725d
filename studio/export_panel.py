"""Export and reopen: files sent to the browser (send_file_download) with a progress notification, session
save to a folder, and opening a session (folder on this machine or an uploaded .zip) or a new world."""

from __future__ import annotations

import dataclasses
import io
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

import viser

from scenes.factory import (StepsAsked, continue_with_learned_model, make_scene, recording_notes,
                            start_learned_from)
from scenes.scene import Scene
from scenes.session import SessionError, is_session_folder, read_session_meta, save_session, session_meant_by
from studio.panel_api import Notify, Submit
from studio.security import path_in_root, session_world_in_root, world_spec_in_root
from worldmodel.recordings import FORMAT_NAMES

MAX_UPLOAD_BYTES = 2 * 1024**3  # a session .zip larger than this is refused
# viser queues a download and sends it meanwhile (no acknowledgement): a studio stopping after an export gives it
# this long to reach the browser
DOWNLOAD_GRACE_S, DOWNLOAD_BYTES_PER_S, DOWNLOAD_WAIT_MAX_S = 2.0, 50e6, 120.0


def zip_folder(folder: Path, out: Path) -> Path:
    """Write the folder's files to the .zip ``out`` (stored: safetensors and PNG do not compress much), file by
    file (a session of many GB is not held in memory) -> ``out``."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    return out


def working_note(client: viser.ClientHandle | None, title: str, body: str) -> viser.NotificationHandle | None:
    """A loading notification for the tab that asked (None without one) while the worker runs a long command;
    :func:`settle_note` turns it into the outcome."""
    return client.add_notification(title, body, loading=True, with_close_button=False) if client else None


def settle_note(note: viser.NotificationHandle | None, title: str, body: str, error: bool = False) -> None:
    """Show a command's outcome in its :func:`working_note` (a failure stays until closed, in red)."""
    if note is None:
        return
    note.title, note.body = title, body
    if error:
        note.color = "red"
    else:
        note.auto_close_seconds = 5.0
    note.loading, note.with_close_button = False, True


def upload_too_large(size_bytes: int) -> str | None:
    """The one-line refusal of an upload of ``size_bytes``; None when it is within MAX_UPLOAD_BYTES."""
    if size_bytes <= MAX_UPLOAD_BYTES:
        return None
    return (f"upload is {size_bytes / 2**30:.1f} GiB, more than the {MAX_UPLOAD_BYTES / 2**30:.0f} GiB limit; "
            "open the folder by path instead")


def refuse_large_uploads_as_they_start(server: viser.ViserServer,
                                       refused: Callable[[viser.ClientHandle | None, str], None]) -> None:
    """viser 1.1 keeps every part of an upload in RAM until the last one arrives, and only then calls the upload
    button: a 10 GiB upload would fill the RAM before :func:`unzip_session` could refuse it. This drops a
    transfer as it starts when its announced size is over the limit (viser then ignores its parts) and calls
    ``refused(the tab, why)``. viser has no hook for it: this adds a handler for its upload-start message and
    removes the transfer from its table of uploads in flight (both internals of the pinned viser 1.1.1;
    tests/test_studio.py uploads through a websocket to check them)."""
    from viser import _messages

    in_flight = server.gui._current_file_upload_states

    def on_start(client_id: int, message: _messages.FileTransferStartUpload) -> None:
        why = upload_too_large(message.size_bytes)
        if why is not None:
            in_flight.pop(message.transfer_uuid, None)
            refused(server.get_clients().get(client_id), why)

    server._websock_server.register_handler(_messages.FileTransferStartUpload, on_start)


def unzip_session(content: bytes, target: Path) -> Path:
    """Extract an uploaded session .zip safely; returns the folder that holds session.json."""
    why = upload_too_large(len(content))
    if why is not None:
        raise SessionError(why)
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            names = z.namelist()
            if any(n.startswith(("/", "\\")) or ".." in Path(n).parts for n in names):
                raise SessionError("the .zip holds paths outside its folder; it was not opened")
            if sum(i.file_size for i in z.infolist()) > 4 * MAX_UPLOAD_BYTES:
                raise SessionError("the .zip unpacks to more than 8 GiB; open the folder by path instead")
            z.extractall(target)
    except zipfile.BadZipFile:
        raise SessionError("the upload is not a .zip of a session folder; zip the folder that holds "
                           "session.json and upload that") from None
    found = sorted(target.rglob("session.json"), key=lambda p: len(p.parts))
    if not found:
        raise SessionError("the .zip holds no session.json; zip the folder that holds session.json")
    return found[0].parent


class ExportPanel:
    """Export and Open folders. submit / notify: see studio.panel_api; replace_scene(scene): swap the
    studio's scene for another one (called on the worker thread, inside a submitted command); root: the
    workspace root that folders and replay paths typed here must stay inside (studio.security); steps: the step
    sizes asked for on the command line, for the worlds opened here (what is not asked: each world's own, a learned
    model's trained steps)."""

    def __init__(self, gui: viser.GuiApi, submit: Submit, notify: Notify, replace_scene: Callable[[Scene], None],
                 root: str | Path = ".", steps: StepsAsked = StepsAsked()):
        self.submit, self.notify, self.replace_scene = submit, notify, replace_scene
        self.steps = steps
        self.root = Path(root).resolve()
        self._sending_until = 0.0  # (time.monotonic) when the downloads sent so far have reached the browser
        with gui.add_folder("Export", order=3):
            gui.add_markdown("Exports the current branch (map as shown at the cursor).")
            for label, make in (
                ("PLY point cloud", self._ply), ("GLB (points + cameras)", self._glb(False)),
                ("GLB + TSDF mesh", self._glb(True)), ("MP4 (RGB | depth)", self._mp4),
                ("Trajectory (TUM)", self._trajectory), ("transforms.json (zip)", self._transforms),
                ("Session (zip)", self._session_zip),
            ):
                button = gui.add_button(label, icon=viser.Icon.DOWNLOAD)
                button.on_click(self._export_clicked(label, make))
            self.save_path = gui.add_text("Save session to folder", initial_value="sessions/latest")
            save = gui.add_button("Save session", icon=viser.Icon.DEVICE_FLOPPY)
            save.on_click(self._save_clicked)
        with gui.add_folder("Open", order=4, expand_by_default=False):
            self.open_path = gui.add_text("Session folder", initial_value="",
                                          hint="a folder on this machine that holds session.json")
            open_button = gui.add_button("Open session folder", icon=viser.Icon.FOLDER_OPEN)
            open_button.on_click(self._open_clicked)
            self.upload = gui.add_upload_button("Upload session (.zip)", icon=viser.Icon.UPLOAD, mime_type=".zip")
            self.upload.on_upload(self._uploaded)
            self.world = gui.add_text("World", initial_value="neural",
                                      hint="neural[:weights folder in the workspace] | procedural | procedural:fly | "
                                           "replay:/path/to/sequence[?level=1: its floor turned level] | a plugin "
                                           "(python3 launch.py worlds lists them)")
            self.seed = gui.add_number("Seed", 0, step=1)
            new = gui.add_button("Open world", icon=viser.Icon.WORLD)
            new.on_click(self._new_world)
            learned = gui.add_button("Continue with the learned model from this frame", icon=viser.Icon.SPARKLES,
                                     hint="the learned world model takes the frame at the cursor (of a recording, "
                                          "a session or any world) and the frames before it as its own, and "
                                          "generates from there: coming back, it shows what they saw")
            learned.on_click(self._learned_from_frame)
            self.start_from = gui.add_text("Session or recording", initial_value="",
                                           hint=f"a saved session folder, or a recording folder or file "
                                                f"({FORMAT_NAMES}; ?stride=2&level=1 allowed)")
            self.start_frame = gui.add_number("Frame (-1: a session's cursor, a recording's last)", -1, step=1,
                                              min=-1)
            from_folder = gui.add_button("Learned model from that frame", icon=viser.Icon.SPARKLES,
                                         hint="the learned world model goes on from that frame with the frames "
                                              "before it as its memory, without playing the recording through")
            from_folder.on_click(self._learned_from_folder)

    # ------------------------------------------------------------------ exports
    def download_seconds_left(self) -> float:
        """How long the downloads sent so far may still take to reach the browser (an estimate: viser does not
        say when a download is through), at most DOWNLOAD_WAIT_MAX_S; 0 when they are through."""
        return min(max(0.0, self._sending_until - time.monotonic()), DOWNLOAD_WAIT_MAX_S)

    def _export_clicked(self, label: str, make: Callable[[Scene, Path], Path]):
        def handler(event: viser.GuiEvent) -> None:
            client = event.client
            note = working_note(client, f"Exporting {label}", "working…")

            def run(scene: Scene) -> tuple[str, bytes]:  # (viser sends bytes: the file is read once, whole)
                with tempfile.TemporaryDirectory(prefix="worldstudio-export-") as tmp:
                    path = make(scene, Path(tmp))
                    return path.name, path.read_bytes()

            def done(result: tuple[str, bytes]) -> None:
                name, data = result
                if client is not None:
                    client.send_file_download(name, data, save_immediately=True)
                    self._sending_until = max(self._sending_until, time.monotonic() + DOWNLOAD_GRACE_S
                                              + len(data) / DOWNLOAD_BYTES_PER_S)
                settle_note(note, f"Exported {label}", f"{name} ({len(data) / 2**20:.1f} MB)")

            def failed(message: str) -> None:
                settle_note(note, f"Export failed: {label}", message, error=True)

            self.submit(f"export {label}", run, client, on_done=done, on_error=failed)
        return handler

    @staticmethod
    def _ply(scene: Scene, tmp: Path) -> Path:
        return scene.export_ply(tmp / "scene.ply")

    @staticmethod
    def _glb(mesh: bool):
        def make(scene: Scene, tmp: Path) -> Path:
            return scene.export_glb(tmp / ("scene_mesh.glb" if mesh else "scene.glb"), mesh=mesh)
        return make

    @staticmethod
    def _mp4(scene: Scene, tmp: Path) -> Path:
        return scene.export_mp4(tmp / "frames.mp4")

    @staticmethod
    def _trajectory(scene: Scene, tmp: Path) -> Path:
        return scene.export_trajectory(tmp / "trajectory.txt")

    @staticmethod
    def _transforms(scene: Scene, tmp: Path) -> Path:
        scene.export_transforms(tmp / "dataset")
        return zip_folder(tmp / "dataset", tmp / "transforms.zip")

    @staticmethod
    def _session_zip(scene: Scene, tmp: Path) -> Path:
        save_session(scene, tmp / "session")
        return zip_folder(tmp / "session", tmp / "session.zip")

    def _save_clicked(self, event: viser.GuiEvent) -> None:
        text = self.save_path.value

        def run(scene: Scene) -> Path:
            return save_session(scene, path_in_root(self.root, text))

        self.submit("save session", run, event.client,
                    on_done=lambda p: self.notify(event.client, "Session saved", str(p.resolve())))

    # ------------------------------------------------------------------ open
    def _open_clicked(self, event: viser.GuiEvent) -> None:
        text = self.open_path.value

        def run(_: Scene) -> Path:
            folder = path_in_root(self.root, text)
            self.replace_scene(make_scene(session=folder, session_meta=self._meta_in_root(folder)))
            return folder

        self.submit("open session", run, event.client,
                    on_done=lambda folder: self.notify(event.client, "Session opened", str(folder)))

    def _uploaded(self, event: viser.GuiEvent) -> None:
        upload = event.target.value
        client = event.client
        # viser would keep the bytes (up to the limit) as the button's value until the next upload: only the
        # command below holds them now (a viser internal: setting .value would call this callback again)
        event.target._impl.value = viser.UploadedFile(name=upload.name, content=b"")

        def run(_: Scene) -> None:
            tmp = Path(tempfile.mkdtemp(prefix="worldstudio-upload-"))
            try:
                folder = unzip_session(upload.content, tmp)
                # the frames' private copy must not spill into the upload folder, which goes right after
                self.replace_scene(make_scene(session=folder, session_meta=self._meta_in_root(folder),
                                              spill_near=tempfile.gettempdir()))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # the loaded scene keeps its own copy of the frames

        self.submit("open upload", run, client,
                    on_done=lambda _: self.notify(client, "Session opened", upload.name))

    def _meta_in_root(self, folder: Path) -> dict:
        """``folder``'s session.json, with the paths its world names held inside the workspace root."""
        meta = read_session_meta(folder)
        return {**meta, "world": session_world_in_root(self.root, meta.get("world"))}

    def _learned_from_frame(self, event: viser.GuiEvent) -> None:
        self._hand_over(event, "this frame", "continue with the learned model",  # the frames before the cursor
                        lambda scene, notes: continue_with_learned_model(scene))  # come along as memory

    def _learned_from_folder(self, event: viser.GuiEvent) -> None:
        text, frame = self.start_from.value.strip(), int(self.start_frame.value)

        def make(scene: Scene, notes: list[str]) -> Scene:
            folder = path_in_root(self.root, text)
            meant = session_meant_by(folder)  # a run's folder: its session (not its exports as a recording)
            if meant is not None:  # (held inside the root too: its session/ may be a link to a folder outside)
                folder = path_in_root(self.root, str(meant[0]))
                notes.append(f"{text} is {meant[1]}: the learned model goes on from that session")
            if is_session_folder(folder):  # its world's paths held inside the workspace root, as when opened
                source, meta = folder, self._meta_in_root(folder)
            else:  # a recording, with its replay options
                source, meta = world_spec_in_root(self.root, f"replay:{text}").removeprefix("replay:"), None
            return start_learned_from(source, None if frame < 0 else frame, seed=int(self.seed.value),
                                      kinematics=self.steps.for_world("neural", str(source)),
                                      config=dataclasses.replace(scene.config),
                                      session_meta=meta, fit_voxel=True, notes=notes)

        self._hand_over(event, "that frame", "learned model from a folder's frame", make)

    def _hand_over(self, event: viser.GuiEvent, which: str, label: str,
                   make: Callable[[Scene, list[str]], Scene]) -> None:
        """On the worker: ``make(scene, notes)`` the learned world's Scene from the current one (adding to ``notes``
        what a recording's reader assumed) and show it; the tab that asked sees a loading note, then how many
        frames came along as memory and the notes (or why it failed)."""
        note = working_note(event.client, f"The learned model from {which}", "taking the frames so far…")

        def run(scene: Scene) -> tuple[int, list[str]]:
            notes: list[str] = []
            learned = make(scene, notes)
            self.replace_scene(learned)
            return learned.branch.handed, notes

        def done(outcome: tuple[int, list[str]]) -> None:
            kept, notes = outcome
            said = f"with the {kept} frames before it as its memory" if kept else f"from {which} alone"
            settle_note(note, f"The learned model goes on from {which}", "; ".join([said, *notes]))

        def failed(message: str) -> None:
            settle_note(note, f"The learned model from {which} failed", message, error=True)

        self.submit(label, run, event.client, on_done=done, on_error=failed if note is not None else None)

    def _new_world(self, event: viser.GuiEvent) -> None:
        spec, seed = self.world.value.strip(), int(self.seed.value)

        def run(scene: Scene) -> list[str]:
            # at the voxel size fitted to the world (a room's recording: finer than a walk outdoors)
            spec_in_root = world_spec_in_root(self.root, spec)
            opened = make_scene(spec_in_root, seed, size=None, kinematics=self.steps.for_world(spec_in_root),
                                config=dataclasses.replace(scene.config), fit_voxel=True)
            self.replace_scene(opened)
            return recording_notes(opened)  # what its reader noticed (frames skipped, intrinsics...): said

        def done(notes: list[str]) -> None:
            if notes:
                self.notify(event.client, "Recording opened", "; ".join(notes))

        self.submit(f"open world {spec}", run, event.client, on_done=done)
