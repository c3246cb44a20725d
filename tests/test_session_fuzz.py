"""Session fuzzer: seeded corruptions of a small saved session (bytes, JSON values, shapes, dtypes, missing
files). Each must open cleanly (and then step) or fail with one SessionError line; never another exception,
and never a change to the saved folder."""

from __future__ import annotations

import hashlib
import os
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from memory.bank import GeometricMemory
from scenes.scene import Scene, SceneConfig
from scenes.session import SessionError, load_session, save_session
from worldmodel.actions import Action, parse_actions
from worldmodel.registry import create_world

CASES = 300
ODD_VALUES = [None, -3, 0, 1, -1, 0.5, 1e6, 2**70, "big", "", [], {}, True, [1, 2], {"a": 1}, 1e308,
              "1e999", "nan", "-inf"]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    scene = Scene(create_world("procedural", width=64, height=48), SceneConfig(voxel_size=0.4), memory=GeometricMemory())
    scene.reset(1)
    scene.run(parse_actions("(FN)(FL)(FN)"))
    scene.seek(1)
    scene.step(Action("R", "N"))  # a second branch
    folder = save_session(scene, tmp_path_factory.mktemp("fuzz") / "session")
    scene.close()
    return folder


def json_paths(value, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from json_paths(v, prefix + (i,))


def set_path(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def mutate(folder: Path, rng: np.random.Generator) -> str:
    """Corrupt ``folder`` in one seeded way -> a description of what was done."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    kind = rng.choice(["bytes", "bytes", "json", "json", "json", "array", "missing", "rawjson"])
    if kind == "bytes":
        path = files[rng.integers(len(files))]
        data = bytearray(path.read_bytes())
        how = rng.choice(["flip", "truncate", "append", "header"])
        if how == "flip" and data:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        elif how == "truncate":
            data = data[: int(rng.integers(len(data) + 1))]
        elif how == "append":
            data += bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
        else:  # a lying header size or header text
            pos = int(rng.integers(min(len(data), 200) or 1))
            data[pos:pos + 1] = bytes([int(rng.integers(256))])
        path.write_bytes(bytes(data))
        return f"{how} bytes of {path.relative_to(folder)}"
    if kind in ("json", "rawjson"):
        meta = json.loads((folder / "session.json").read_text())
        paths = [p for p, _ in json_paths(meta) if p]
        path = paths[rng.integers(len(paths))]
        value = ODD_VALUES[rng.integers(len(ODD_VALUES))]
        if kind == "rawjson":  # values JSON can hold that Python reads oddly: overflow, NaN, deep nesting
            token = rng.choice(["1e999", "-1e999", "NaN", "Infinity", "[" * 100_000 + "]" * 100_000, "1" * 5000])
            set_path(meta, path, "@@TOKEN@@")
            (folder / "session.json").write_text(json.dumps(meta).replace('"@@TOKEN@@"', str(token)))
            return f"session.json {list(path)} = {str(token)[:20]}"
        set_path(meta, path, value)
        (folder / "session.json").write_text(json.dumps(meta))
        return f"session.json {list(path)} = {value!r}"
    if kind == "array":
        frames = sorted((folder / "frames").iterdir())
        path = frames[rng.integers(len(frames))] if rng.random() < 0.8 else folder / "map.safetensors"
        arrays = load_file(str(path))
        key = sorted(arrays)[rng.integers(len(arrays))]
        a = arrays[key]
        how = rng.choice(["dtype", "shape", "nan", "negative", "zeros", "drop"])
        if how == "dtype":
            arrays[key] = a.astype(rng.choice([np.uint8, np.float16, np.int64, np.float32]))
        elif how == "shape":
            arrays[key] = np.ascontiguousarray(a.reshape(-1)[: max(1, a.size // 2)])
        elif how == "nan" and a.dtype.kind == "f":
            arrays[key] = np.full_like(a, np.nan)
        elif how == "negative" and a.dtype.kind in "fi":
            arrays[key] = -np.abs(a) - 1
        elif how == "zeros":
            arrays[key] = np.zeros_like(a)
        else:
            del arrays[key]
        save_file(arrays, str(path))
        return f"{how} {key} in {path.relative_to(folder)}"
    path = files[rng.integers(len(files))]
    path.unlink()
    return f"missing {path.relative_to(folder)}"


def test_corrupt_sessions_open_cleanly_or_fail_with_one_line(saved, tmp_path):
    rng = np.random.default_rng(int(os.environ.get("WORLDSTUDIO_FUZZ_SEED", "11")))
    outcomes = {"opened": 0, "refused": 0}
    for case in range(CASES):
        folder = tmp_path / f"case{case}"
        shutil.copytree(saved, folder)
        what = mutate(folder, rng)
        before = digest(folder)
        try:
            scene = load_session(folder, memory=GeometricMemory())
        except SessionError as e:
            message = str(e)
            assert message and "\n" not in message and len(message) < 600, (what, message)
            assert str(folder) in message, (what, message)  # names the session, not a private copy
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"case {case} ({what}): {type(e).__name__}: {str(e)[:300]}")
        else:
            try:
                for position in (0, scene.length - 1):
                    scene.seek(position)
                    scene.current  # every frame it opened can be shown
                scene.step(Action("F", "N"))
                outcomes["opened"] += 1
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"case {case} ({what}) opened but then failed: {type(e).__name__}: {str(e)[:300]}")
            finally:
                scene.close()
        assert digest(folder) == before, f"case {case} ({what}) changed the saved folder"
        shutil.rmtree(folder)
    assert outcomes["opened"] > 20 and outcomes["refused"] > 100, outcomes


def edit_json(folder: Path, path: tuple, raw: str) -> None:
    meta = json.loads((folder / "session.json").read_text())
    set_path(meta, path, "@@RAW@@")
    (folder / "session.json").write_text(json.dumps(meta).replace('"@@RAW@@"', raw))


@pytest.mark.parametrize("path, raw, says", [
    (("cursor",), "1e999", "cursor"),
    (("cursor",), "[" * 50_000 + "]" * 50_000, "nested too deeply"),
    (("scene", "voxel_size"), '"big"', "scene.voxel_size"),
    (("scene", "recent_frames"), "-3", "scene.recent_frames"),
    (("world", "config", "load_radius_chunks"), "1e6", "load_radius_chunks"),
    (("world", "config", "width"), "200000", "world.config.width"),
    (("seed",), "-1", "seed must be a whole number between 0 and 9223372036854775807, got -1"),
    (("retrievals",), '"big"', "retrievals must be"), (("memory",), "5", "memory must be"),
])
def test_each_bad_session_value_is_one_line_naming_it(saved, tmp_path, path, raw, says):
    folder = tmp_path / "s"
    shutil.copytree(saved, folder)
    edit_json(folder, path, raw)
    with pytest.raises(SessionError, match=says) as e:
        load_session(folder)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("raw, says", [
    ('{"1": {"fids": [1e999], "scores": [0.5]}}', r"retrievals\[1\]\.fids"),
    ('{"1": {"fids": [0], "scores": []}}', r"retrievals\[1\]\.scores must be"),
    ('{"1": {"fids": [0], "scores": ["nan"]}}', r"retrievals\[1\]\.scores\[0\]"),
    ('{"1": [0]}', r"retrievals\[1\] must be"), ('{"99": {"fids": [0], "scores": [0.5]}}', "frame 99 is not in"),
    ('{"x": {"fids": [0], "scores": [0.5]}}', "not a frame id"),
])
def test_bad_retrieval_records_are_one_line_naming_them(saved, tmp_path, raw, says):
    folder = tmp_path / "s"
    shutil.copytree(saved, folder)
    edit_json(folder, ("retrievals",), raw)
    with pytest.raises(SessionError, match=says) as e:
        load_session(folder)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)
    edit_json(folder, ("retrievals",), '{"1": {"fids": [0], "scores": [0.5]}}')  # a good one opens
    scene = load_session(folder)
    assert scene.retrievals == {1: ([0], [0.5])}
    scene.close()


def test_bad_memory_settings_in_session_json_are_one_line_everywhere(saved, tmp_path, capsys):
    """A session.json whose memory block holds an unknown rule or a setting out of range: `info`, `run --resume`
    and load_session each say which, in one line naming the session (it was a traceback, or a failure at the
    first step that named neither)."""
    from launch import main

    for key, value, said in (("retrieval_rule", "zzz", "memory.retrieval_rule must be one of ours"),
                             ("zbuffer_width", -3, "memory.zbuffer_width must be a whole number between 1 and")):
        folder = tmp_path / key
        shutil.copytree(saved, folder)
        meta = json.loads((folder / "session.json").read_text())
        meta["memory"][key] = value
        (folder / "session.json").write_text(json.dumps(meta))
        with pytest.raises(SessionError, match=f"{folder} is not a usable WorldStudio session: {said}"):
            load_session(folder, memory=GeometricMemory())
        assert main(["info", str(folder)]) == 2
        assert main(["run", "--actions", "(FN)(FN)(FN)(FN)(FN)", "--resume", str(folder), "--out",
                     str(tmp_path / f"out_{key}")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 2 and all(said in line and str(folder) in line for line in lines), lines


def test_bad_frames_and_memory_are_caught_at_open(saved, tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(saved, folder)
    middle = sorted((folder / "frames").iterdir())[2]
    arrays = load_file(str(middle))
    arrays["c2w"] = np.full((4, 4), np.nan)
    save_file(arrays, str(middle))
    with pytest.raises(SessionError, match=f"frame file {middle}.*not a finite rigid"):
        load_session(folder)
    arrays = load_file(str(middle := sorted((saved / "frames").iterdir())[2]))
    arrays["depth"] = (arrays["depth"] * 10).astype(np.uint8)  # a wrong-dtype depth in the middle
    save_file(arrays, str(folder / "frames" / middle.name))
    with pytest.raises(SessionError, match=f"frame file {folder / 'frames' / middle.name} holds depth as uint8, not float32"):
        load_session(folder)  # found at open, not at scrub or export
    shutil.rmtree(folder)
    shutil.copytree(saved, folder)
    # memory keyframes naming frames that do not exist: the memory is rebuilt from the frames and steps work
    state = load_file(str(folder / "memory.safetensors"))
    state["fid"] = state["fid"] + 1000
    save_file(state, str(folder / "memory.safetensors"))
    scene = load_session(folder, memory=GeometricMemory())
    scene.step(Action("F", "N"))
    assert all(fid < 1000 for fid in scene.last_step.memory_fids)
    scene.close()
    # the observed frames it had not fused yet, named by ids the session does not have: rebuilt the same way
    state = load_file(str(saved / "memory.safetensors"))
    assert len(state["observed_pending_fid"]) > 0  # a simulator's frames are saved by id, never fused
    state["observed_pending_fid"] = state["observed_pending_fid"] + 1000
    save_file(state, str(folder / "memory.safetensors"))
    scene = load_session(folder, memory=GeometricMemory())
    assert scene.memory.state_dict()["observed_pending_fid"].max() < 1000
    scene.step(Action("F", "N"))
    scene.close()
    # a 0-d array where the observed layer (or the map) has a column: rebuilt (or one line), not a TypeError
    state = load_file(str(saved / "memory.safetensors"))
    state["observed.weight"] = np.array(3.0, np.float32)
    save_file(state, str(folder / "memory.safetensors"))
    scene = load_session(folder, memory=GeometricMemory())
    scene.step(Action("F", "N"))
    scene.close()
    arrays = load_file(str(saved / "map.safetensors"))
    arrays["keys"] = np.array(5, np.int64)
    save_file(arrays, str(folder / "map.safetensors"))
    with pytest.raises(SessionError, match="map.safetensors is corrupt"):
        load_session(folder)
