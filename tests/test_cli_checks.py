"""Bad command-line values are one usage line before anything is made."""

from __future__ import annotations

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
    assert says in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_bad_view_and_eval_values_are_refused(capsys):
    for argv in (["view", "--port", "70000"], ["eval-recon", "x", "--voxel", "-1"],
                 ["eval-recon", "x", "--max-frames", "0"], ["run", "--steps", "0", "--out", "x"],
                 ["train", "--lr", "nan"], ["train", "--batch", "0"], ["train", "--rollout-share", "1.5"],
                 ["train", "--widths", "48", "-1"], ["eval", "--walks", "101"], ["eval", "--steps", "3"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "is outside" in capsys.readouterr().err
