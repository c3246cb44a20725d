"""The 3D view: fused map (streamed by chunks), current camera frustum with its image, camera trail,
retrieved memory keyframes. Called only from the worker thread (after each command)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import viser
import viser.transforms as vtf

from scenes.scene import Scene, StepResult
from studio.stream import COLOUR_MODES, ChunkPayload, ColourContext, MapStreamer
from worldmodel.camera import fov_y_deg_of
from worldmodel.frame import Frame

TRAIL_BLOCK = 64          # camera-trail segments per scene node (bounded bytes per step)
CURRENT_COLOUR = (255, 60, 200)
TRAIL_COLOUR = (255, 140, 40)
MEMORY_COLOUR = (40, 200, 255)


def c2w_to_wxyz_position(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV c2w -> viser (wxyz quaternion, position); viser cameras use OpenCV axes too."""
    return vtf.SO3.from_matrix(np.asarray(c2w[:3, :3], dtype=np.float64)).wxyz, np.asarray(c2w[:3, 3], dtype=np.float64)


def display_thumbnail(rgb: np.ndarray, max_side: int = 96) -> np.ndarray:
    step = max(1, int(math.ceil(max(rgb.shape[:2]) / max_side)))
    return np.ascontiguousarray(rgb[::step, ::step])


def update_in_place(server: viser.ViserServer, handle, **props) -> None:
    """Set properties of an existing viser node (clients apply them as one update). Cheaper than re-adding the
    node: a new node costs ~1 ms of viser's handle set-up."""
    with server.atomic():
        for name, value in props.items():
            setattr(handle, name, value)


class ViserSink:
    """Applies chunk payloads to a viser scene (one point-cloud node per payload name)."""

    def __init__(self, server: viser.ViserServer):
        self.server = server
        self.handles: dict[str, viser.PointCloudHandle] = {}
        self.point_size = 0.08
        self.bytes_sent = 0

    def apply(self, payloads: list[ChunkPayload]) -> None:
        """A chunk seen before is updated in place (points and colours, applied by clients as one update);
        a new one gets a node. Re-adding a changed chunk costs ~1 ms in viser's handle set-up."""
        for p in payloads:
            old = self.handles.get(p.name)
            if len(p.points) == 0:
                if old is not None:
                    self.handles.pop(p.name).remove()
                continue
            if old is not None and old.precision == p.precision and np.array_equal(old.position, p.origin):
                update_in_place(self.server, old, points=p.points, colors=p.colors)
            else:
                if old is not None:
                    old.remove()
                self.handles[p.name] = self.server.scene.add_point_cloud(
                    p.name, p.points, p.colors, point_size=self.point_size, point_shape="square",
                    precision=p.precision, position=tuple(p.origin), point_shading="flat")
            self.bytes_sent += p.nbytes_on_wire

    def set_point_size(self, size: float) -> None:
        self.point_size = float(size)
        for h in self.handles.values():
            h.point_size = self.point_size

    @property
    def points_shown(self) -> int:
        return sum(len(h.points) for h in self.handles.values())


@dataclass
class ViewSettings:
    show_trail: bool = True
    thumbnail_every: int = 10


class SceneView:
    """Keeps the viser scene in step with a Scene: incremental map, trail, current camera, memory."""

    def __init__(self, server: viser.ViserServer):
        self.server = server
        self.sink = ViserSink(server)
        self.streamer = MapStreamer()
        self.settings = ViewSettings()
        # Colours of the scalar modes are fixed when the mode is picked (distance from the camera there,
        # age relative to the frames then), so chunks sent at different times stay comparable.
        self.colour = ColourContext("rgb")
        self.size = 0.6  # metres: frustum depth; trail and labels scale with it (see set_scale)
        self._trail_key: tuple | None = None   # (branch name, length) the trail was drawn for
        self._trail_blocks: dict[int, viser.LineSegmentsHandle] = {}
        self._thumbs: dict[int, viser.CameraFrustumHandle] = {}
        self._current: viser.CameraFrustumHandle | None = None
        self._memory_nodes: list[tuple[viser.CameraFrustumHandle, viser.LabelHandle]] = []
        self.last_stream_bytes = 0

    # ------------------------------------------------------------------ map
    def sync_map(self, scene: Scene, full: bool = False) -> int:
        """Send what changed in the map; returns bytes sent."""
        upto = None if scene.cursor >= scene.length - 1 else scene.cursor
        payloads = self.streamer.update(scene.map, upto_frame=upto, ctx=self.colour, full=full)
        self.sink.apply(payloads)
        self.last_stream_bytes = self.streamer.last_bytes
        return self.last_stream_bytes

    def set_scale(self, voxel_size: float) -> None:
        """Size cameras and trail for the scene: a desk at 2 cm voxels or a landscape at 10 cm."""
        self.size = float(np.clip(6.0 * voxel_size, 0.1, 0.6))

    def set_colour_mode(self, mode: str, scene: Scene) -> None:
        """Colour the map by ``mode`` from now on (the caller re-sends the whole map once)."""
        if mode not in COLOUR_MODES:
            raise ValueError(f"unknown colour mode {mode!r}; choose one of {', '.join(COLOUR_MODES)}")
        self.colour = ColourContext(mode, scene.current.position.copy(), scene.length)

    # ------------------------------------------------------------------ cameras
    def sync_cameras(self, scene: Scene) -> None:
        frame = scene.current
        self._current_camera(frame)
        self._sync_trail(scene)

    def _current_camera(self, frame: Frame) -> None:
        """The current camera's frustum with its image, updated in place (a new viser node costs ~1 ms)."""
        wxyz, pos = c2w_to_wxyz_position(frame.c2w)
        shape = dict(fov=math.radians(fov_y_deg_of(frame.K, frame.height)), aspect=frame.width / frame.height,
                     scale=self.size, thickness=self.size / 20)
        image = display_thumbnail(frame.rgb, 128)
        h = self._current
        if h is None:
            self._current = self.server.scene.add_camera_frustum(
                "/camera/current", color=CURRENT_COLOUR, image=image, format="jpeg", jpeg_quality=80, wxyz=wxyz,
                position=pos, **shape)
            return
        update_in_place(self.server, h, **shape, image=image, wxyz=wxyz, position=pos)

    def _sync_trail(self, scene: Scene) -> None:
        """Draw the camera path in blocks of TRAIL_BLOCK segments (only the last block changes per step)
        and a thumbnail frustum on every ``thumbnail_every``-th frame."""
        key = (scene.branch_name, scene.length)
        if key == self._trail_key:
            return
        previous = self._trail_key
        if previous is None or previous[0] != key[0] or key[1] < previous[1]:
            self.clear_trail()
            first_block = 0
        else:
            first_block = max(0, (previous[1] - 2) // TRAIL_BLOCK)
        self._trail_key = key
        if not self.settings.show_trail:
            return
        n = scene.length
        block = first_block
        while block * TRAIL_BLOCK < n - 1:
            lo, hi = block * TRAIL_BLOCK, min(n - 1, (block + 1) * TRAIL_BLOCK)
            pts = np.stack([scene.position_at(i) for i in range(lo, hi + 1)]).astype(np.float32)
            self._trail_blocks[block] = self.server.scene.add_line_segments(
                f"/trail/block_{block}", np.stack([pts[:-1], pts[1:]], axis=1), TRAIL_COLOUR,
                thickness=self.size / 12)
            block += 1
        for i in range(0, n, max(1, self.settings.thumbnail_every)):
            if i in self._thumbs:
                continue
            f = scene.frame_at(i)
            wxyz, pos = c2w_to_wxyz_position(f.c2w)
            self._thumbs[i] = self.server.scene.add_camera_frustum(
                f"/trail/thumb_{i}", fov=math.radians(fov_y_deg_of(f.K, f.height)), aspect=f.width / f.height,
                scale=0.6 * self.size, color=TRAIL_COLOUR, image=display_thumbnail(f.rgb, 64), format="jpeg",
                jpeg_quality=70, wxyz=wxyz, position=pos, thickness=self.size / 30)

    def clear_trail(self) -> None:
        for h in [*self._trail_blocks.values(), *self._thumbs.values()]:
            h.remove()
        self._trail_blocks.clear()
        self._thumbs.clear()
        self._trail_key = None

    def set_trail_visible(self, scene: Scene, visible: bool) -> None:
        self.settings.show_trail = visible
        self.clear_trail()
        if visible:
            self._sync_trail(scene)

    # ------------------------------------------------------------------ memory
    def clear_memory(self) -> None:
        """Remove the retrieved keyframes' frustums and labels (another world: they belong to the old one)."""
        while self._memory_nodes:
            for h in self._memory_nodes.pop():
                h.remove()

    def show_memory(self, step: StepResult) -> None:
        """Highlight the keyframes retrieved for ``step`` with their scores (poses come with the step; the
        frustums take the new frame's field of view). Nodes are kept per rank and updated in place."""
        f = step.frame
        shape = dict(fov=math.radians(fov_y_deg_of(f.K, f.height)), aspect=f.width / f.height,
                     scale=0.8 * self.size, thickness=self.size / 15)
        picks = list(zip(step.memory_indices, step.memory_scores, step.memory_poses))
        while len(self._memory_nodes) > len(picks):
            for h in self._memory_nodes.pop():
                h.remove()
        for rank, (index, score, c2w) in enumerate(picks):
            wxyz, pos = c2w_to_wxyz_position(c2w)
            text, label_pos = f"#{rank + 1} frame {index}: {score:.2f}", pos + [0, 0.7 * self.size, 0]
            if rank == len(self._memory_nodes):
                self._memory_nodes.append((
                    self.server.scene.add_camera_frustum(f"/memory/kf_{rank}", color=MEMORY_COLOUR, wxyz=wxyz,
                                                         position=pos, **shape),
                    self.server.scene.add_label(f"/memory/label_{rank}", text, position=label_pos)))
                continue
            frustum, label = self._memory_nodes[rank]
            update_in_place(self.server, frustum, **shape, wxyz=wxyz, position=pos)
            update_in_place(self.server, label, text=text, position=label_pos)
