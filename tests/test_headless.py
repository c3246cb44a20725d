"""Headless runs keep what they made: autosave survives kill -9, a failure mid-walk saves the frames so far,
--resume goes on, and spill folders never outlive their process."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scenes.session import load_session, save_session
from studio.bench_util import free_port

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--size", "48", "36", "--voxel", "0.5", "--no-video"]


def start_run(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "run", "--steps", "100000", *SMALL,
                             "--out", str(out), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def wait_for_saves(folder: Path, proc: subprocess.Popen, saves: int = 2, timeout: float = 120.0) -> None:
    """Wait until session.json has been written ``saves`` times."""
    seen, last = 0, None
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            stamp = (folder / "session.json").stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp != last:
            seen, last = seen + 1, stamp
            if seen >= saves:
                return
        time.sleep(0.05)
    raise AssertionError(f"no autosave after {timeout} s: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}")


def spill_folders(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if "worldstudio-frames-" in p.name)


def test_kill_9_loses_at_most_one_autosave_interval_and_resume_goes_on(tmp_path, capsys):
    from launch import main

    out = tmp_path / "out"
    proc = start_run(out, "--autosave", "15", "--autosave-seconds", "0")
    try:
        wait_for_saves(out / "session", proc, saves=2)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(30)
    assert spill_folders(out), "the killed run's spill folder is there (it could not clean up)"
    scene = load_session(out / "session")
    saved = scene.length
    scene.close()
    assert saved >= 31 and (saved - 1) % 15 == 0  # only whole autosave intervals, each one complete
    # `launch.py info` is how a user checks what survived
    assert main(["info", str(out / "session")]) == 0
    printed = capsys.readouterr().out
    assert f"frames    {saved} (cursor at {saved - 1} of main)" in printed and "procedural seed 0" in printed
    assert "map points" not in printed and " points at 0.5 m voxels" in printed and "MB" in printed
    assert main(["info", str(out)]) == 2 and f"is a run's folder; its session is in {out / 'session'}: pass " in \
        capsys.readouterr().err
    # the session's own session.json: said to be that, with the folder to pass (it said "no session.json")
    assert main(["info", str(out / "session" / "session.json")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {out / 'session' / 'session.json'} is the session file of "
                                               f"{out / 'session'}: pass {out / 'session'}")
    # the same command with --resume: the steps already made are not repeated; the dead run's spill is removed
    assert main(["run", "--steps", str(saved + 4), *SMALL, "--out", str(out), "--resume", str(out / "session")]) == 0
    scene = load_session(out / "session")
    assert scene.length == saved + 5
    scene.close()
    assert spill_folders(out) == []


def test_a_failure_mid_walk_saves_what_was_made(tmp_path, monkeypatch, capsys):
    from launch import main
    from worldmodel.procedural import ProceduralWorld

    real, calls = ProceduralWorld.step, []

    def failing(self, action, context):
        calls.append(1)
        if len(calls) == 25:
            raise OSError(5, "Input/output error reading the recording")
        return real(self, action, context)

    monkeypatch.setattr(ProceduralWorld, "step", failing)
    assert main(["run", "--steps", "60", *SMALL, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "step 25 failed" in err and "25 frames made so far are saved in" in err and "--resume" in err
    scene = load_session(tmp_path / "out" / "session")
    assert scene.length == 25
    scene.close()
    assert spill_folders(tmp_path / "out") == []


def test_sigterm_saves_and_cleans_up(tmp_path):
    out = tmp_path / "out"
    proc = start_run(out, "--autosave", "10", "--autosave-seconds", "0")
    wait_for_saves(out / "session", proc, saves=1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"stopped by a signal" in err
    assert spill_folders(out) == []
    scene = load_session(out / "session")
    assert scene.length >= 11
    scene.close()


def test_spill_folders_do_not_outlive_a_script_that_forgets_close(tmp_path):
    script = ("from scenes.scene import Scene, SceneConfig\n"
              "from worldmodel.registry import create_world\n"
              "from worldmodel.actions import parse_actions\n"
              "s = Scene(create_world('procedural', width=32, height=24), SceneConfig(ram_frames=1))\n"
              "s.reset(0)\n"
              "s.run(parse_actions('(FN)' * 4))\n"
              "import glob, tempfile; assert glob.glob(tempfile.gettempdir() + '/worldstudio-frames-*/frames/*')\n")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)
    assert spill_folders(tmp_path) == []
    # a folder left by a process that is gone (kill -9) is removed when the next store starts there
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"worldstudio-frames-{dead.pid}-0123abcd"
    (stale / "frames").mkdir(parents=True)
    mine = tmp_path / f"worldstudio-frames-{os.getpid()}-0123abcd"
    mine.mkdir()
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)
    assert spill_folders(tmp_path) == [mine.name]  # the dead one went; a live process's folder stays


def test_sigterm_of_the_studio_removes_its_spill_folder(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "view", "--world", "procedural", "--port",
                             str(port), "--size", "48", "36"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        for line in proc.stdout:
            if b"WorldStudio is running" in line:
                break
        assert spill_folders(tmp_path), "the studio's frame store spills in TMPDIR"
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert spill_folders(tmp_path) == []


def test_a_rerun_or_a_resume_that_disagrees_with_the_saved_walk_is_refused(tmp_path, capsys, monkeypatch):
    """The same command run again without --resume would overwrite the session (a long walk lost at the first
    autosave); --resume with other actions or another seed would graft another walk onto it; an --out that
    cannot be written was found after the whole walk. Each is one line, before any step."""
    from launch import main

    out = tmp_path / "my walks" / "out"
    assert main(["run", "--steps", "12", "--seed", "3", *SMALL, "--out", str(out)]) == 0
    before = (out / "session" / "session.json").read_bytes()
    capsys.readouterr()
    assert main(["run", "--steps", "5", "--seed", "3", *SMALL, "--out", str(out)]) == 2
    assert f"holds a saved session; add --resume '{out / 'session'}' to go on" in capsys.readouterr().err  # pastable
    for other in (["--steps", "20", "--walk", "orbit"], ["--actions", "(BN)" * 20]):
        assert main(["run", *other, *SMALL, "--out", str(out), "--resume", str(out / "session")]) == 2
        assert "made with other actions (step 1 differs)" in capsys.readouterr().err
    assert (out / "session" / "session.json").read_bytes() == before
    # a step in the middle of a long walk that differs is found too (every step is compared)
    middle = tmp_path / "middle"
    assert main(["run", "--actions", "(FN)" * 70, *SMALL, "--out", str(middle)]) == 0
    capsys.readouterr()
    assert main(["run", "--actions", "(FN)" * 40 + "(BN)" + "(FN)" * 39, *SMALL, "--out", str(middle), "--resume",
                 str(middle / "session")]) == 2
    assert "made with other actions (step 41 differs)" in capsys.readouterr().err
    assert main(["run", "--actions", "(FN)" * 80, *SMALL, "--out", str(middle), "--resume", str(middle)]) == 2
    assert f"{middle} is a run's folder; its session is in {middle / 'session'}" in capsys.readouterr().err
    assert main(["run", "--actions", "(FN)" * 80, *SMALL, "--out", str(middle), "--resume",
                 str(middle / "session" / "session.json")]) == 2
    assert f"is the session file of {middle / 'session'}: pass --resume" in capsys.readouterr().err
    # the walk of the session's own seed goes on when --seed is left out
    assert main(["run", "--steps", "16", *SMALL, "--out", str(out), "--resume", str(out / "session")]) == 0
    scene = load_session(out / "session")
    assert scene.length == 17
    scene.close()
    (tmp_path / "a_file").write_text("x")
    capsys.readouterr()
    assert main(["run", "--steps", "3", *SMALL, "--out", str(tmp_path / "a_file" / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and len(err.splitlines()) == 1


def test_a_resumed_run_autosaves_and_one_failed_autosave_does_not_stop_it(tmp_path, capsys, monkeypatch):
    """A resumed run autosaves at the whole walk's interval (it computed one from the steps left, and turned
    autosave off); one failed autosave (a full disk that clears) warns and the walk goes on; two in a row stop it
    with what was made saved."""
    from launch import main
    import scenes.autosave as autosave

    out = tmp_path / "out"
    monkeypatch.setattr(autosave, "AUTOSAVE_FROM_STEPS", 20)  # as for 300+ steps, with a small walk
    monkeypatch.setattr(autosave, "DEFAULT_EVERY_STEPS", 6)
    real = autosave.Autosaver.save
    saves = []

    def save_failing_once(self):
        saves.append(self.scene.length - 1)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        return real(self)

    monkeypatch.setattr(autosave.Autosaver, "save", save_failing_once)
    assert main(["run", *SMALL, "--out", str(out), "--actions", "(FN)" * 9]) == 0
    assert saves == []  # 9 steps: no autosave
    assert main(["run", *SMALL, "--out", str(out), "--resume", str(out / "session"), "--actions", "(FN)" * 22]) == 0
    err = capsys.readouterr().err
    assert saves == [15, 21] and "warning: autosave after step 21 failed" in err, (saves, err)  # retried at 27
    monkeypatch.setattr(autosave.Autosaver, "save", lambda self: (_ for _ in ()).throw(OSError(28, "No space")))
    assert main(["run", *SMALL, "--out", str(out), "--resume", str(out / "session"), "--actions", "(FN)" * 40]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "autosave failed twice, the last after step 34" in err and "--resume" in err, err  # 28, then 34
    scene = load_session(out / "session")  # what was made is saved once more
    assert scene.length == 35
    scene.close()
    # a disk that stays full: the last save fails too, and the line says the earlier autosave is whole
    monkeypatch.setattr("scenes.headless.save_session", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    assert main(["run", *SMALL, "--out", str(out), "--resume", str(out / "session"), "--actions", "(FN)" * 50]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "could not be saved either" in err and f"{out / 'session'} holds the 35 frames of an earlier save" in err


def _disk_full(*args, **kwargs):
    """A write that meets a full disk (patched over a save's writes)."""
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_run_whose_last_save_meets_a_full_disk_says_what_its_folder_holds(tmp_path, capsys, monkeypatch):
    """The session at the end of a resumed run fails (disk full) while the other exports are written: the line
    names the run's folder to free space in (it named the save's work folder, already removed) and says that the
    session holds the earlier save's frames, not those the trajectory now holds, and how to go on."""
    from launch import main

    out = tmp_path / "walk"
    assert main(["run", *SMALL, "--steps", "3", "--out", str(out)]) == 0

    monkeypatch.setattr("scenes.session.save_file", _disk_full)
    capsys.readouterr()
    assert main(["run", *SMALL, "--steps", "6", "--out", str(out), "--resume", str(out / "session")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"disk full: free space in {out} (or" in err and ".saving-" not in err, err
    assert f"{out / 'session'} holds the 4 frames of an earlier save, not the 7 made" in err, err
    assert "--resume" in err and "trajectory" in err
    assert len((out / "trajectory.txt").read_text().strip().splitlines()) == 2 + 7  # (two header lines)
    monkeypatch.undo()
    assert main(["run", *SMALL, "--steps", "6", "--out", str(out), "--resume", str(out / "session")]) == 0


def test_a_full_disk_at_the_last_save_of_a_session_with_branches_says_what_it_holds(tmp_path, capsys, monkeypatch):
    """The session resumed has a second branch: what the earlier save holds is said by its current branch's frames
    (the one the run goes on with), as the frames made are; every branch's were counted, 10 held >= 9 made, and the
    line said nothing of the earlier save."""
    from launch import main
    from scenes.factory import make_scene
    from worldmodel.actions import parse_actions

    out = tmp_path / "walk"
    assert main(["run", *SMALL, "--steps", "6", "--out", str(out)]) == 0
    scene = make_scene(session=out / "session")
    scene.seek(2)
    scene.run(parse_actions("(FN)(FN)(FN)"))  # a branch of 3 new frames
    scene.switch_branch("main")
    save_session(scene, out / "session")
    assert (len(scene.branches), scene.length) == (2, 7)
    scene.close()

    monkeypatch.setattr("scenes.session.save_file", _disk_full)
    capsys.readouterr()
    assert main(["run", *SMALL, "--steps", "8", "--out", str(out), "--resume", str(out / "session")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{out / 'session'} holds the 7 frames of an earlier save, not the 9 made" in err, err


def test_a_resumed_run_keeps_the_memory_it_was_made_with(tmp_path, capsys):
    """--resume goes on with the session's memory: none for a --no-memory session (it gained the default memory),
    its own settings otherwise; --no-memory on a session made with memory is refused (it dropped them)."""
    import json

    from launch import main

    plain, with_memory = tmp_path / "plain", tmp_path / "mem"
    assert main(["run", "--steps", "4", *SMALL, "--no-memory", "--out", str(plain)]) == 0
    assert main(["run", "--steps", "6", *SMALL, "--out", str(plain), "--resume", str(plain / "session")]) == 0
    assert json.loads((plain / "session" / "session.json").read_text())["memory"] is None
    assert main(["run", "--steps", "4", *SMALL, "--retrieval", "deepverse", "--out", str(with_memory)]) == 0
    capsys.readouterr()
    assert main(["run", "--steps", "6", *SMALL, "--no-memory", "--out", str(with_memory), "--resume",
                 str(with_memory / "session")]) == 2
    assert "made with memory; resume it without --no-memory" in capsys.readouterr().err
    assert main(["run", "--steps", "6", *SMALL, "--out", str(with_memory), "--resume", str(with_memory / "session")]) == 0
    assert json.loads((with_memory / "session" / "session.json").read_text())["memory"]["retrieval_rule"] == "deepverse"


def test_a_second_run_into_the_same_out_folder_is_refused_while_the_first_runs(tmp_path, capsys):
    """Two runs saving one session break each other's saves (a --resume started while the first run still
    lived): the second is refused in one line while the first holds the folder."""
    from launch import main

    out = tmp_path / "out"
    proc = start_run(out, "--autosave", "5", "--autosave-seconds", "0")
    try:
        wait_for_saves(out / "session", proc, saves=1)
        assert main(["run", "--steps", "100000", *SMALL, "--out", str(out), "--resume", str(out / "session")]) == 2
        assert "another `launch.py run` is writing to" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait(30)
    assert main(["run", "--steps", "3", *SMALL, "--out", str(out), "--resume", str(out / "session"),
                 "--autosave", "0"]) == 0  # the lock went with the killed process


def test_run_starts_the_learned_model_from_a_recorded_frame_and_resume_counts_only_its_steps(tmp_path, capsys):
    """`run --start-from RECORDING --start-frame 6`: the learned model goes on from recorded frame 6 with frames
    0-5 handed over as the branch's first frames (at the model's size, at their recorded poses). --resume counts
    the steps after the model's first frame, not the frames handed over (it took all 8 frames of the session for
    steps and made none)."""
    from launch import main
    from worldmodel.actions import Action
    from worldmodel.registry import create_world

    tum = ROOT.parent / "shared" / "data" / "tum_fr1_rpy"
    out = tmp_path / "out"
    start = ["run", "--start-from", str(tum), "--start-frame", "6", "--voxel", "0.05", "--no-video", "--out", str(out)]
    assert main([*start, "--actions", "(FN)(SL)"]) == 0
    scene = load_session(out / "session")
    recording = create_world(f"replay:{tum}").sequence
    try:
        assert scene.model.name == "neural" and scene.length == 6 + 1 + 2 and scene.branch.handed == 6
        assert all(np.allclose(scene.frame_at(i).c2w, recording.c2ws[i]) for i in range(7))
        assert scene.current.rgb.shape == (128, 128, 3)
        assert [str(scene.frame_at(i).action) for i in (7, 8)] == [str(Action("F", "N")), str(Action("S", "L"))]
        made = [scene.frame_at(i).rgb.copy() for i in range(9)]
    finally:
        scene.close()
        recording.close()
    assert main([*start, "--actions", "(FN)(SL)(FN)", "--resume", str(out / "session")]) == 0
    scene = load_session(out / "session")
    try:
        assert scene.length == 10 and scene.branch.handed == 6  # one step more, none repeated
        assert all(np.array_equal(scene.frame_at(i).rgb, made[i]) for i in range(9))
    finally:
        scene.close()
    capsys.readouterr()
    assert main(["info", str(out / "session")]) == 0
    assert "main (10 frames, the first 6 handed over, current)" in capsys.readouterr().out
    assert main([*start, "--actions", "(FN)(SR)(FN)(FN)", "--resume", str(out / "session")]) == 2
    assert "step 2 differs" in capsys.readouterr().err
    # a frame the recording does not have is one line, and no --out folder is left behind
    assert main(["run", "--start-from", str(tum), "--start-frame", "90", "--steps", "1",
                 "--out", str(tmp_path / "none")]) == 2
    assert "frame 90 is not in the recording" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert main(["run", "--start-from", f"{tum}?stride=x", "--steps", "1", "--out", str(tmp_path / "none")]) == 2
    assert "bad replay options" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_a_run_started_from_a_session_walks_its_seed_and_counts_its_own_steps(tmp_path, capsys, monkeypatch):
    """`run --start-from SESSION --steps N` walks the session's seed (the scene keeps it): resumed, it finds the
    same walk (it made the walk of --seed's default 0 and, resumed, of seed 2: 'step 1 differs'). A step that
    fails is numbered among the run's own steps, not among the frames handed over."""
    from launch import main
    from worldmodel.neural.world import NeuralWorld

    assert main(["run", "--seed", "2", "--steps", "3", "--size", "128", "128", "--no-video",
                 "--out", str(tmp_path / "walk")]) == 0
    start = ["run", "--start-from", str(tmp_path / "walk" / "session"), "--steps", "4", "--no-video"]
    assert main([*start, "--out", str(tmp_path / "on")]) == 0
    capsys.readouterr()
    # the run's folder: its session (it read the run's transforms.json export as a recording, without a word:
    # depth in millimetres, no ground truth to compare with)
    assert main(["run", "--start-from", str(tmp_path / "walk"), "--steps", "4", "--no-video",
                 "--out", str(tmp_path / "via_run_folder")]) == 0
    assert f"{tmp_path / 'walk'} is a run's folder; its session is in" in capsys.readouterr().err
    via_session, via_run = (load_session(tmp_path / name / "session") for name in ("on", "via_run_folder"))
    assert np.array_equal(via_session.poses(), via_run.poses()) and len(via_run.map) == len(via_session.map)
    assert via_run.model.describe()["simulator_is_truth"] and via_session.model.describe()["simulator_is_truth"]
    via_session.close(), via_run.close()
    # with a recording's options the run's folder is read as a recording, as asked, and that is said (it was without
    # a word); a session's folder has no recording to read: one line says to drop them (it said it was neither)
    assert main(["run", "--start-from", f"{tmp_path / 'walk'}?stride=2", "--steps", "4", "--no-video",
                 "--out", str(tmp_path / "with_options")]) == 0
    assert (f"note: {tmp_path / 'walk'} is a run's folder; its session is in {tmp_path / 'walk' / 'session'}: with "
            "the options ?stride=2 its files are read as a recording") in capsys.readouterr().err
    read = load_session(tmp_path / "with_options" / "session")
    assert "simulator_is_truth" not in read.model.describe()
    read.close()
    assert main(["run", "--start-from", f"{tmp_path / 'walk' / 'session'}?stride=2", "--steps", "4", "--no-video",
                 "--out", str(tmp_path / "session_with_options")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'walk' / 'session'} is a saved session: the options ?stride=2 are a recording's; drop" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "session_with_options").exists()
    assert main([*start, "--world", "neural", "--out", str(tmp_path / "on"), "--resume",
                 str(tmp_path / "on" / "session")]) == 0
    captured = capsys.readouterr()
    assert "already holds all 4 steps" in captured.out
    # the same --world: not said to be unused (the handed-over world's description also records the frame's camera)
    assert "note: --start-from" in captured.err and "--world" not in captured.err, captured.err
    # a recording that holds a session saved in it is not a run's folder: --start-from reads the recording
    from tests.test_replay import small_tum_copy

    recording = tmp_path / "recording"
    recording.mkdir()
    small_tum_copy(ROOT.parent / "shared" / "data" / "tum_fr1_rpy", recording, n=3)
    shutil.copytree(tmp_path / "walk" / "session", recording / "session")
    assert main(["run", "--start-from", str(recording), "--steps", "1", "--no-video",
                 "--out", str(tmp_path / "from_recording")]) == 0
    assert "run's folder" not in capsys.readouterr().err
    read = load_session(tmp_path / "from_recording" / "session")
    assert read.branch.handed == 2 and "simulator_is_truth" not in read.model.describe()  # TUM's frames, not the walk's
    read.close()
    real_step, calls = NeuralWorld.step, []

    def second_step_fails(self, action, context):
        calls.append(action)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real_step(self, action, context)

    monkeypatch.setattr(NeuralWorld, "step", second_step_fails)
    assert main([*start, "--out", str(tmp_path / "failed")]) == 2
    err = capsys.readouterr().err
    assert "step 2 failed: boom; the 5 frames made so far are saved" in err
