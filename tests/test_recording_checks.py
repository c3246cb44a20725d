"""Recordings are checked per frame and each bad one is named: corrupt or odd-sized images, 8-bit depth,
decompression bombs, absurd intrinsics, bad depth scales."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenes.export import depth_to_png_mm
from worldmodel.recordings import SequenceError, open_sequence


def generic(folder: Path, frames, K=None, depth_scale=None) -> Path:
    """A generic sequence folder: rgb/*.png, 16-bit depth/*.png (mm), poses.txt, K in worldstudio.json."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    cfg = {"K": (frames[0].K if K is None else K).tolist()}
    if depth_scale is not None:
        cfg["depth_scale"] = depth_scale
    (folder / "worldstudio.json").write_text(json.dumps(cfg))
    with open(folder / "poses.txt", "w") as fp:
        for i, f in enumerate(frames):
            Image.fromarray(f.rgb).save(folder / "rgb" / f"{i:04d}.png")
            Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "depth" / f"{i:04d}.png")
            fp.write(" ".join(repr(float(v)) for v in f.c2w.reshape(-1)) + "\n")
    return folder


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("damage, says", [
    ("corrupt_rgb", "0003.png: not a valid image"),
    ("small_rgb", "every frame must have one size"),
    ("depth_size", "0003.png: depth is"),
    ("depth_8bit", "8-bit PNG has lost the depth precision"),
    ("bomb", "claims 12000x12000 pixels"),
    ("depth_empty", r"0003\.npy: depth \.npy must be an \(H, W\) array .* got float32 \(0, 0\)"),
])
def test_a_bad_later_frame_is_named(walk_frames, tmp_path, damage, says):
    folder = generic(tmp_path / "seq", walk_frames[:5])
    rgb, depth = folder / "rgb" / "0003.png", folder / "depth" / "0003.png"
    if damage == "corrupt_rgb":
        rgb.write_bytes(rgb.read_bytes()[:200])
    elif damage == "small_rgb":
        Image.fromarray(walk_frames[3].rgb[::2, ::2]).save(rgb)
        Image.fromarray(depth_to_png_mm(walk_frames[3].depth)[::2, ::2]).save(depth)
    elif damage == "depth_size":
        Image.fromarray(depth_to_png_mm(walk_frames[3].depth)[:-4]).save(depth)
    elif damage == "depth_8bit":
        Image.fromarray((walk_frames[3].depth * 10).clip(0, 255).astype(np.uint8)).save(depth)
    elif damage == "depth_empty":  # (a 0x0 array passed the size checks and failed in the resize)
        depth.unlink()
        np.save(depth.with_suffix(".npy"), np.zeros((0, 0), np.float32))
    else:
        rgb.write_bytes(png_claiming(12000, 12000))
    seq = open_sequence(folder)
    for i in range(3):
        seq[i]
    with pytest.raises(SequenceError, match=says) as e, warnings.catch_warnings():
        warnings.simplefilter("error")  # one line: no warning of PIL's beside it (a bomb's header warned)
        seq[3]
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("scale", [float("nan"), -0.001, 0, "mm", True])
def test_bad_depth_scale_is_refused_at_open(walk_frames, tmp_path, scale):
    folder = generic(tmp_path / "seq", walk_frames[:2], depth_scale=scale)
    if isinstance(scale, float) and scale != scale:  # json.dumps writes NaN as NaN
        assert "NaN" in (folder / "worldstudio.json").read_text()
    with pytest.raises(SequenceError, match="depth_scale must be a positive number"):
        open_sequence(folder)


def test_a_setting_that_worldstudio_json_does_not_have_is_named_with_the_one_meant(walk_frames, tmp_path):
    """A misspelt key in a recording's worldstudio.json ("up" for world_up) was ignored without a word: the
    recording opened with the format's default up axis. Now one line names it, the setting it is nearest and
    the settings there are; the settings themselves still open."""
    folder = generic(tmp_path / "seq", walk_frames[:2])
    cfg = json.loads((folder / "worldstudio.json").read_text())
    for key, meant in (("up", "'world_up'"), ("depthScale", "'depth_scale'"), ("k", "'K'"), ("rotate", None)):
        (folder / "worldstudio.json").write_text(json.dumps({**cfg, key: 1}))
        with pytest.raises(SequenceError, match=f"'{key}' is not a setting" + (rf" \(did you mean {meant}\?\)"
                                                                              if meant else "; the settings are")):
            open_sequence(folder)
    (folder / "worldstudio.json").write_text(json.dumps({**cfg, "world_up": "+y", "level": False, "camera": "opencv"}))
    assert len(open_sequence(folder)) == 2


def test_absurd_intrinsics_are_refused(walk_frames, tmp_path):
    K = walk_frames[0].K.copy()
    K[0, 0] = K[1, 1] = 1e-6
    with pytest.raises(SequenceError, match="do not fit a 160x120 image"):
        open_sequence(generic(tmp_path / "seq", walk_frames[:2], K=K))[0]


def test_each_reader_named_for_a_folder_it_cannot_read_says_what_it_needs(tmp_path):
    """open_sequence(format=...) on an empty folder: one line naming what that format needs (the Stray Scanner
    reader raised FileNotFoundError, the Open3D one StopIteration)."""
    from worldmodel.recordings import FORMATS

    for fmt in FORMATS:
        with pytest.raises(SequenceError) as e:
            open_sequence(tmp_path, format=fmt)
        assert str(tmp_path) in str(e.value) and "\n" not in str(e.value), (fmt, str(e.value))
    (tmp_path / "rgbd_dataset_freiburg1_desk.tgz").write_bytes(b"\x1f\x8b")  # a dataset as downloaded
    with pytest.raises(SequenceError, match=r"desk.tgz is an archive; extract it and pass the sequence folder"):
        open_sequence(tmp_path / "rgbd_dataset_freiburg1_desk.tgz")


def test_every_kind_of_sequence_declares_its_per_frame_lists():
    """Sequence.subset (stride, max_frames) keeps the fields PER_FRAME names in step: a list field left out of it
    reads the wrong frame after a stride (as Record3D's capture frame numbers once did)."""
    import dataclasses

    from worldmodel.recordings import base, hypersim, phones, pointclouds, scanners, scannetpp, sun3d, tartanair

    kinds = [base._ImageSequence, base._VideoSequence, phones._Record3DSequence, scanners._SensSequence,
             pointclouds._PlySequence, tartanair._TartanAirSequence, scannetpp._ScanNetPPSequence,
             sun3d._SUN3DSequence, hypersim._HypersimSequence]
    assert {k.__name__ for k in kinds} == {k.__name__ for k in _subclasses(base.Sequence)}, "a new kind: list it here"
    for kind in kinds:
        lists = {f.name for f in dataclasses.fields(kind) if "list" in str(f.type)} - {"notes"}
        assert lists <= set(kind.PER_FRAME), (kind.__name__, lists - set(kind.PER_FRAME))


def _subclasses(cls) -> list:
    return [s for c in cls.__subclasses__() for s in [c, *_subclasses(c)]]
