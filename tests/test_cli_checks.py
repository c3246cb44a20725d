"""Bad command-line values are one usage line before anything is made."""

from __future__ import annotations

import numpy as np
import pytest

from launch import main


@pytest.mark.parametrize("bad, says", [
    (["--voxel", "0"], "--voxel: 0 is outside"), (["--step-m", "nan"], "--step-m: nan is outside"),
    (["--yaw-deg", "inf"], "--yaw-deg: inf is outside"), (["--size", "-5", "10"], "--size: -5 is outside"),
    (["--size", "0", "0"], "--size: 0 is outside"), (["--seed", "-1"], "--seed: -1 is outside 0..4294967295"),
    (["--voxel", "big"], "'big' is not a number"), (["--autosave", "-2"], "--autosave: -2 is outside"),
])
def test_bad_run_values_are_one_line_and_write_nothing(tmp_path, capsys, bad, says):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["run", "--steps", "2", "--out", str(out), *bad])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "launch.py run --help lists the options" in err[0]
    assert not out.exists()


def test_bad_view_and_eval_values_are_refused(capsys):
    for argv in (["view", "--port", "70000"], ["eval-recon", "x", "--voxel", "-1"],
                 ["eval-recon", "x", "--max-frames", "0"], ["run", "--steps", "0", "--out", "x"],
                 ["train", "--lr", "nan"], ["train", "--batch", "0"], ["train", "--rollout-share", "1.5"],
                 ["train", "--widths", "48", "-1"], ["eval", "--walks", "101"], ["eval", "--steps", "3"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "is outside" in capsys.readouterr().err


def test_a_studio_on_an_address_it_cannot_listen_on_says_so_at_once(capsys):
    """viser retries 1000 ports on an address that is not this machine's, then waits for ever: the studio hung
    without a word. Now one line and exit 2, before any world is made."""
    import time

    for host in ("10.123.45.67", "no-such-host.invalid"):
        started = time.monotonic()
        assert main(["view", "--world", "procedural", "--host", host]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot listen on {host} (") and time.monotonic() - started < 20, err


def test_bench_checks_its_json_path_first_and_keeps_the_figures_of_sections_that_ran(tmp_path, capsys, monkeypatch):
    """A --json that cannot be written was a traceback after the whole bench; a section that failed lost the
    figures of every other; --only ',' ran nothing and exited 0."""
    import json

    import studio.bench as bench

    assert main(["bench", "--only", ","]) == 2 and "--only names no section" in capsys.readouterr().err
    assert main(["bench", "--only", "procedural", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    bench._load_optional_sections()
    monkeypatch.setitem(bench.SECTIONS, "good", lambda quick: {"good_ms": 1.5})
    monkeypatch.setitem(bench.SECTIONS, "bad", lambda quick: (_ for _ in ()).throw(RuntimeError("no chromium")))
    assert main(["bench", "--only", "bad,good", "--json", str(tmp_path / "b.json")]) == 1
    assert "bench section bad failed: no chromium" in capsys.readouterr().err
    assert json.loads((tmp_path / "b.json").read_text())["good_ms"] == 1.5


@pytest.mark.parametrize("bad, says", [
    (["--start-frame", "3"], "--start-frame needs --start-from PATH"),
    (["--start-from", "x", "--world", "procedural"], "--start-from hands over to the learned model; drop --world"),
    (["--start-from", "x", "--size", "64", "64"], "--size does not apply with --start-from"),
])
def test_start_from_refuses_what_it_cannot_honour(tmp_path, capsys, bad, says):
    """--start-from hands over to the learned model: another world, a size, or a frame without a source is one
    usage line, and nothing is made."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["run", "--steps", "2", "--out", str(out), *bad])
    assert e.value.code == 2 and says in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):
        main(["view", "--start-from", "x", "--session", "y"])
    assert "give one of them" in capsys.readouterr().err


def test_start_from_a_session_says_which_options_it_does_not_use(tmp_path, capsys):
    """--start-from a session keeps the session's seed, voxel size and steps: --seed, --voxel, --step-m and
    --yaw-deg given with it were dropped without a word (as --resume's were); now a note names them."""
    first = tmp_path / "first"
    assert main(["run", "--world", "neural", "--actions", "(FN)", "--no-video", "--out", str(first)]) == 0
    capsys.readouterr()
    assert main(["run", "--world", "neural", "--start-from", str(first / "session"), "--seed", "3", "--step-m", "2",
                 "--actions", "(FN)", "--no-video", "--out", str(tmp_path / "second")]) == 0
    err = capsys.readouterr().err
    assert ("note: --seed 3 (the session's: 0), --step-m 2.0 (the session's: 0.5) not used: --start-from a session "
            "goes on with the session's own") in err
    assert main(["run", "--world", "neural", "--start-from", str(first / "session"), "--actions", "(FN)",
                 "--no-video", "--out", str(tmp_path / "third")]) == 0
    assert "not used" not in capsys.readouterr().err


def test_view_of_a_session_says_which_options_it_does_not_use(tmp_path, capsys, monkeypatch):
    """`view --session` opens the session with its own settings: --voxel, --seed, --size, --step-m given with it
    were dropped without a word; now a note names those that differ from the session's (the scene is built as the
    studio builds it; the server is not started)."""
    import studio.app

    assert main(["run", "--seed", "7", "--size", "48", "36", "--voxel", "0.2", "--steps", "1", "--no-video",
                 "--out", str(tmp_path / "run")]) == 0
    session = str(tmp_path / "run" / "session")
    monkeypatch.setattr(studio.app, "main", lambda args: studio.app.build_scene(args).close() or 0)
    capsys.readouterr()
    assert main(["view", "--session", session, "--voxel", "0.05", "--seed", "7", "--step-m", "2"]) == 0
    assert ("note: --voxel 0.05 (the session's: 0.2), --step-m 2.0 (the session's: 0.5) not used: --session opens "
            "the session with its own") in capsys.readouterr().err
    assert main(["view", "--session", session, "--seed", "7", "--size", "48", "36", "--voxel", "0.2"]) == 0
    assert "not used" not in capsys.readouterr().err  # (the session's own values: it said they were not used)


def test_run_never_writes_over_a_recording_or_another_runs_files(tmp_path, capsys):
    """--out was written into whatever it held: a run replaying a nerfstudio folder into that folder rewrote the
    recording it read (transforms.json, frame_00001), and a folder's own scene.ply was replaced. Now: --out
    inside the recording read, or holding files of the bundle (without --resume), or empty, is one line and
    nothing changes."""
    first = tmp_path / "first"
    assert main(["run", "--size", "64", "48", "--steps", "2", "--no-video", "--out", str(first)]) == 0
    capsys.readouterr()
    recording = tmp_path / "recording"  # the run's frames as a recording: transforms.json, images/, depth/
    recording.mkdir()
    for name in ("transforms.json", "images", "depth"):
        (first / name).rename(recording / name)
    before = {p: p.read_bytes() for p in recording.rglob("*") if p.is_file()}
    for out in (recording, recording / "sub"):
        assert main(["run", "--world", f"replay:{recording}?stride=2", "--steps", "1", "--no-video",
                     "--out", str(out)]) == 2
        assert f"is inside {recording}, which the run reads from" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in recording.rglob("*") if p.is_file()} == before
    assert not (recording / "sub").exists()

    (first / "session").rename(tmp_path / "elsewhere")  # an earlier run's files without its session
    own = (first / "scene.ply").read_bytes()
    assert main(["run", "--size", "64", "48", "--steps", "2", "--no-video", "--out", str(first)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{first} already holds scene.ply" in err[0] and "choose an empty --out" in err[0]
    assert (first / "scene.ply").read_bytes() == own and not (first / "session").exists()
    with pytest.raises(SystemExit) as e:
        main(["run", "--steps", "2", "--out", " "])  # "" is the current folder to Path
    assert e.value.code == 2 and "an empty path is not a folder" in capsys.readouterr().err

    # a resumed replay reads its recording again: --out there is refused too (it also wrote worldstudio.json
    # over the recording's own settings)
    walk = tmp_path / "walk"
    assert main(["run", "--world", f"replay:{recording}", "--steps", "1", "--no-video", "--out", str(walk)]) == 0
    capsys.readouterr()
    assert main(["run", "--steps", "2", "--no-video", "--out", str(recording), "--resume",
                 str(walk / "session")]) == 2
    assert f"is inside {recording}, which the run reads from" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in recording.rglob("*") if p.is_file()} == before
    assert main(["run", "--steps", "2", "--no-video", "--out", str(walk), "--resume", str(walk / "session")]) == 0
    elsewhere = tmp_path / "cwd"  # "replay:" names no folder: the world says so, not "--out is inside ."
    elsewhere.mkdir()
    import os

    here = os.getcwd()
    try:
        os.chdir(elsewhere)
        assert main(["run", "--world", "replay:", "--steps", "1", "--no-video", "--out", "rel"]) == 2
    finally:
        os.chdir(here)
    assert "replay needs a folder" in capsys.readouterr().err


def test_bad_replay_options_are_named_and_neural_world_is_importable(tmp_path, walk_frames):
    """An unknown option after a folder that exists said "no such folder"; a repeated one was taken silently.
    And `from worldmodel.neural import NeuralWorld` (as the README names it) raised ImportError."""
    from tests.test_recording_checks import generic
    from worldmodel.registry import WorldSpecError, create_world

    folder = generic(tmp_path / "seq", walk_frames[:2])
    with pytest.raises(WorldSpecError, match=r"bad replay option 'bogus=1' .* the options are up=, stride="):
        create_world(f"replay:{folder}?bogus=1")
    with pytest.raises(WorldSpecError, match=r"bad replay option 'stride'"):
        create_world(f"replay:{folder}?stride")
    with pytest.raises(WorldSpecError, match="stride is given twice"):
        create_world(f"replay:{folder}?stride=2&stride=3")
    from worldmodel.neural import NeuralWorld
    from worldmodel.neural.world import NeuralWorld as defined

    assert NeuralWorld is defined


def test_a_resume_says_which_options_it_does_not_use(tmp_path, capsys):
    """`run --resume` keeps the session's world and settings: a --world, --seed or --size given with it was
    dropped without a word; now a note names those that differ from the session's (the same command given again
    with --resume, as the README says to, was told its --world, --size and --voxel were not used). Asking fewer
    steps than the session holds says so."""
    out = tmp_path / "out"
    first = ["run", "--world", "procedural:fly", "--seed", "3", "--size", "64", "48", "--voxel", "0.2", "--steps", "3",
             "--no-video", "--out", str(out)]
    assert main(first) == 0
    capsys.readouterr()
    assert main(["run", "--world", "procedural", "--seed", "7", "--size", "96", "64", "--steps", "1",
                 "--no-video", "--out", str(out), "--resume", str(out / "session")]) == 0
    captured = capsys.readouterr()
    assert ("note: --world procedural, --seed 7 (the session's: 3), --size 96 64 (the session's: 64 48) not used: "
            "--resume goes on with the world and settings") in captured.err
    assert "already holds 3 steps, more than the 1 asked; writing the exports" in captured.out
    assert main([*first, "--resume", str(out / "session")]) == 0  # the same command again
    assert "not used" not in capsys.readouterr().err
    assert main(["run", "--steps", "3", "--no-video", "--out", str(out), "--resume", str(out / "session")]) == 0
    assert "not used" not in capsys.readouterr().err
    (out / "session" / "memory.safetensors").write_bytes(b"")  # what a full disk's copy leaves
    assert main(["info", str(out / "session")]) == 0
    assert "memory.safetensors unreadable: the memory is rebuilt from the frames" in capsys.readouterr().out


def test_a_run_whose_map_stays_empty_says_why(tmp_path, capsys, walk_frames):
    """A recording whose depth lies beyond the fuse range (millimetres read as metres) or is invalid everywhere
    (NaN) made an empty map and exited 0 without a word; now a warning says which, and a .npy of Python objects
    is named as such (never loaded)."""
    from tests.test_recording_checks import generic

    far = generic(tmp_path / "far", walk_frames[:2], depth_scale=1.0)
    assert main(["run", "--world", f"replay:{far}", "--steps", "1", "--no-video", "--out", str(tmp_path / "o1")]) == 0
    assert "no frame had depth within the fuse range" in capsys.readouterr().err
    nan = generic(tmp_path / "nan", walk_frames[:2])
    for f in (nan / "depth").iterdir():
        f.unlink()
        np.save(f.with_suffix(".npy"), np.full(walk_frames[0].depth.shape, np.nan, np.float32))
    assert main(["run", "--world", f"replay:{nan}", "--steps", "1", "--no-video", "--out", str(tmp_path / "o2")]) == 0
    assert "the frames have no valid depth (all 0, NaN or negative)" in capsys.readouterr().err
    np.save(nan / "depth" / "0000.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["run", "--world", f"replay:{nan}", "--steps", "1", "--no-video", "--out", str(tmp_path / "o3")]) == 2
    assert "0000.npy: it holds Python objects, which are never loaded" in capsys.readouterr().err


def test_a_studio_on_a_busy_port_says_which_port_it_took(capsys, monkeypatch):
    """viser moves on from a port in use; the studio says so, and prints the address it really listens on."""
    import socket
    from types import SimpleNamespace

    import studio.app

    def stop(_seconds):  # the studio's wait for Ctrl-C: stop at once
        raise KeyboardInterrupt

    monkeypatch.setattr(studio.app, "time", SimpleNamespace(sleep=stop, perf_counter=studio.app.time.perf_counter))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["view", "--world", "procedural", "--size", "64", "48", "--port", str(port)]) == 0
    captured = capsys.readouterr()
    taken = int(captured.out.split("http://127.0.0.1:")[1].split("/")[0].split()[0])
    assert taken != port and f"note: port {port} is in use; listening on {taken} instead" in captured.err


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """`launch.py info X | head -1`: the reader of stdout closes its end. That ended in a BrokenPipeError
    traceback (or "Exception ignored ... BrokenPipeError" as Python flushed stdout at exit); now the command stops
    quietly with 141, as a shell tool that meets a closed pipe does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    assert main(["run", "--steps", "1", "--size", "32", "32", "--no-video", "--out", str(tmp_path / "run")]) == 0
    root = Path(__file__).resolve().parents[1]
    for argv in (["worlds"], ["info", str(tmp_path / "run" / "session")]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the command writes a byte
        try:
            res = subprocess.run([sys.executable, str(root / "launch.py"), *argv], cwd=root, stdout=write_end,
                                 stderr=subprocess.PIPE, text=True, timeout=120)
        finally:
            os.close(write_end)
        assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, (argv, res.stderr)
        assert res.returncode == 141, (argv, res.returncode, res.stderr)
    # started with stdout closed (`launch.py worlds >&-`, a daemon's): Python has no sys.stdout; the command ends
    # as it did before, 0 and no traceback (the flush at the end met None)
    res = subprocess.run([sys.executable, str(root / "launch.py"), "worlds"], cwd=root, stderr=subprocess.PIPE,
                         text=True, timeout=120, preexec_fn=lambda: os.close(1))
    assert res.returncode == 0 and "Traceback" not in res.stderr, (res.returncode, res.stderr)
