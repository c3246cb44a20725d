"""Training checkpoints that a kill, a full disk or a second Ctrl-C cut off halfway: found and refused on resume
with one line that says what to do, never resumed as a mix of two steps, never a dead end."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from learn.data import WalkSpec, generate_walk
from learn.train import CheckpointError, TrainConfig, Trainer, WalkBank, check_out_folder
from worldmodel.neural.weights import DEFAULT_CONFIG, build_net, save_pretrained

TINY = {**DEFAULT_CONFIG, "widths": [8, 16]}


def tiny_config(out: Path) -> TrainConfig:
    return TrainConfig(out=str(out), data=str(out.parent / "data"), train_seeds=[1000], val_seeds=[100], steps=4,
                       batch=1, warmup=1, rollout_after=10 ** 9, widths=[8, 16], minutes=60)


def checkpoint_at(cfg: TrainConfig, step: int) -> None:
    trainer = Trainer(cfg)
    trainer.step = step
    trainer.checkpoint()


@pytest.mark.parametrize("kept_old", [("train_state.json",), ("train_state.json", "config.json", "model.safetensors")],
                         ids=["cut before train_state.json", "cut after train_state.safetensors"])
def test_a_checkpoint_cut_off_while_written_is_refused_not_resumed_as_a_mix(tmp_path, kept_old):
    cfg = tiny_config(tmp_path / "run")
    out = Path(cfg.out)
    checkpoint_at(cfg, 3)
    old = {name: (out / name).read_bytes() for name in kept_old}
    checkpoint_at(cfg, 6)
    for name, data in old.items():  # as a write cut off after the other files were replaced
        (out / name).write_bytes(data)
    with pytest.raises(CheckpointError, match=r"cut off while it was written \(train_state.json is of step 3, "
                                              r"the .* of step 6\).* --init"):
        Trainer(cfg).resume()
    shutil.rmtree(out)
    checkpoint_at(cfg, 6)  # a whole checkpoint resumes
    trainer = Trainer(cfg)
    assert trainer.resume() and trainer.step == 6


def test_a_folder_with_weights_but_no_training_state_says_how_to_go_on(tmp_path):
    """A first checkpoint cut off after the weights: --resume found no run and a new run found a model, and each
    message sent the user to the other."""
    folder = save_pretrained(tmp_path / "run", TINY, build_net(TINY), half=False)
    for resume in (True, False):
        with pytest.raises(CheckpointError, match=f"no training state to resume .* --init {folder}"):
            check_out_folder(folder, resume)


def test_a_second_ctrl_c_during_a_checkpoint_waits_for_it_to_be_whole(tmp_path, monkeypatch):
    import learn.train as train

    data = tmp_path / "data"
    generate_walk(WalkSpec(1000, "loop", steps=6), data / "walk-001000.safetensors")
    cfg = tiny_config(tmp_path / "run")
    trainer = Trainer(cfg)
    trainer.train_bank = WalkBank([data / "walk-001000.safetensors"])
    real_save = train.save_pretrained

    def interrupted_save(*args, **kwargs):  # Ctrl-C twice while the weights are being written
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(train, "save_pretrained", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(progress=False)
    resumed = Trainer(cfg)
    assert resumed.resume() and resumed.step == trainer.step


def test_weights_that_diverged_stop_the_run_with_the_guards_one_line(tmp_path, monkeypatch, capsys):
    """Non-finite weights made the sky BCE raise RuntimeError inside the step (a traceback), and a NaN loss's
    FloatingPointError was not caught by the command either."""
    from launch import build_parser
    from learn.train import main

    data = tmp_path / "data"
    for seed in (1000, 100):
        generate_walk(WalkSpec(seed, "loop", steps=6), data / f"walk-{seed:06d}.safetensors")
    real_step = Trainer.train_step

    def diverging_step(self):
        if self.step == 1:  # as an optimiser step that overflowed
            with __import__("torch").no_grad():
                self.module.frame.head.weight.fill_(float("inf"))
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", diverging_step)
    args = build_parser().parse_args(["train", "--data", str(data), "--walks", "1", "--val-walks", "1",
                                      "--walk-steps", "6", "--widths", "8", "16", "--batch", "1", "--steps", "3",
                                      "--out", str(tmp_path / "run")])
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the loss became nan at step 1; no checkpoint was written yet"), err[-1]


def test_saved_weights_are_readable_as_the_other_files_are_and_their_training_record_is_checked(tmp_path):
    """model.safetensors came out 0o600 beside 0o644 files (another user could not load the weights); a training
    record of the wrong shape loaded, then `learn.ship` and `train --init` stopped with AttributeError."""
    import json

    from learn.ship import main as ship_main
    from worldmodel.neural.weights import WeightsError, load_pretrained

    old = os.umask(0o022)
    try:
        folder = save_pretrained(tmp_path / "w", TINY, build_net(TINY))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes == {"config.json": 0o644, "model.safetensors": 0o644, "README.md": 0o644}, modes
    config = json.loads((folder / "config.json").read_text())
    for bad in ({"config": "x"}, {"init": [1]}, {"steps": "many"}, {"minutes_trained": True}):
        (folder / "config.json").write_text(json.dumps({**config, "training": bad}))
        with pytest.raises(WeightsError, match=r"training\.\w+ must be"):
            load_pretrained(folder)
        assert ship_main([str(folder), str(tmp_path / "shipped")]) == 2



def test_a_resume_keeps_the_training_options_not_given_again_and_says_which_change(tmp_path, capsys):
    """`train --resume` goes on with the run's training options (they fell back to their defaults without a word,
    and the model card recorded those); an option given again that differs is said."""
    from launch import build_parser
    from learn.train import main

    data = tmp_path / "data"
    for seed in (1000, 1001, 100):
        generate_walk(WalkSpec(seed, "loop", steps=6), data / f"walk-{seed:06d}.safetensors")

    def train(*extra: str) -> str:
        args = build_parser().parse_args(["train", "--data", str(data), "--val-walks", "1", "--walk-steps", "6",
                                          "--widths", "8", "16", "--out", str(tmp_path / "run"), *extra])
        assert main(args) == 0
        return capsys.readouterr().err

    assert "note:" not in train("--walks", "2", "--batch", "2", "--lr", "1e-4", "--rollout-cache-truth", "--steps", "1")
    assert "note:" not in train("--steps", "2", "--resume")
    options = json.loads((tmp_path / "run" / "config.json").read_text())["training"]["config"]
    assert (options["batch"], options["lr"], len(options["train_seeds"]), options["rollout_into_cache"]) == \
        (2, 1e-4, 2, False)
    err = train("--walks", "1", "--lr", "2e-4", "--steps", "3", "--resume")
    assert "note: the resumed run changes options it was trained with (--lr 0.0001 -> 0.0002, --walks 2 walks -> " \
           "1 walks)" in err, err
    options = json.loads((tmp_path / "run" / "config.json").read_text())["training"]["config"]
    assert (options["batch"], options["lr"], len(options["train_seeds"])) == (2, 2e-4, 1)


def test_a_learned_world_saves_its_weights_in_the_precision_it_loaded_them(tmp_path):
    """NeuralWorld.save_pretrained always wrote fp16: an fp32 checkpoint (what `train` writes) came back changed."""
    import torch
    from safetensors.torch import load_file

    from worldmodel.neural.world import NeuralWorld, SHIPPED_WEIGHTS

    net = build_net(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1e-4 * torch.randn_like(p))  # not representable in fp16
    fp32 = save_pretrained(tmp_path / "fp32", TINY, net, half=False)
    copy = NeuralWorld.from_pretrained(fp32).save_pretrained(tmp_path / "copy")
    a, b = load_file(str(fp32 / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    assert all(b[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in a)
    shipped = NeuralWorld.from_pretrained(SHIPPED_WEIGHTS).save_pretrained(tmp_path / "shipped")
    assert (shipped / "model.safetensors").read_bytes() == (SHIPPED_WEIGHTS / "model.safetensors").read_bytes()
    halved = NeuralWorld.from_pretrained(fp32).save_pretrained(tmp_path / "half", half=True)
    assert next(iter(load_file(str(halved / "model.safetensors")).values())).dtype == torch.float16


def test_a_one_process_run_resumed_trains_exactly_as_the_run_not_stopped(tmp_path):
    """The torch generators (cache corruption, context noise) were re-seeded from the step on resume, so a
    resumed run drew other noise than the run would have, and its losses and weights parted from there."""
    from learn.train import weights_fingerprint

    data = tmp_path / "data"
    generate_walk(WalkSpec(1000, "loop", steps=6), data / "walk-001000.safetensors")

    def trainer(out: str) -> Trainer:
        t = Trainer(tiny_config(tmp_path / out))
        t.train_bank = WalkBank([data / "walk-001000.safetensors"])
        return t

    straight = trainer("a")
    losses = [straight.train_step()["loss"] for _ in range(4)]
    first = trainer("b")
    resumed_losses = [first.train_step()["loss"] for _ in range(2)]
    first.checkpoint()
    second = trainer("b")
    assert second.resume()
    resumed_losses += [second.train_step()["loss"] for _ in range(2)]
    assert resumed_losses == losses
    assert weights_fingerprint(second.module) == weights_fingerprint(straight.module)


def test_a_run_checkpointed_on_a_gpu_resumes_on_a_cpu_and_keeps_its_sampling(tmp_path):
    """The context noise is drawn on the batch's device: a GPU run's checkpoint holds a CUDA generator's state (16
    bytes: seed and offset), which a CPU generator refused, and the run could not be resumed there ("its random
    generator state is damaged"). It resumes, its batches' choices as they would have gone on; a CPU state cut
    short is still refused."""
    import torch
    from safetensors.torch import load_file, save_file

    cfg = tiny_config(tmp_path / "run")
    trainer = Trainer(cfg)
    trainer.step = 2
    trainer.checkpoint()
    expected = torch.rand(4, generator=trainer.choice_gen)
    path = Path(cfg.out) / "train_state.safetensors"
    state = load_file(str(path))
    cpu_noise = state["gen.noise"]
    state["gen.noise"] = torch.tensor([7, 0], dtype=torch.int64).view(torch.uint8)  # a CUDA generator's state
    save_file(state, str(path), metadata={"step": "2"})
    resumed = Trainer(cfg)
    assert resumed.resume() and resumed.step == 2
    assert torch.equal(torch.rand(4, generator=resumed.choice_gen), expected)
    state["gen.noise"], state["gen.choice"] = cpu_noise, state["gen.choice"][:100].contiguous()
    save_file(state, str(path), metadata={"step": "2"})
    with pytest.raises(CheckpointError, match="random generator state is damaged"):
        Trainer(cfg).resume()


@pytest.mark.parametrize("damage", ["step -5", "step 2.7", "optimiser tensor of another shape",
                                    "optimiser state of a parameter the model lacks"])
def test_a_damaged_training_state_is_one_line_at_resume_not_a_traceback_later(tmp_path, damage):
    import json

    import torch
    from safetensors.torch import load_file, save_file

    cfg = tiny_config(tmp_path / "run")
    trainer = Trainer(cfg)
    data = tmp_path / "data"
    generate_walk(WalkSpec(1000, "loop", steps=6), data / "walk-001000.safetensors")
    trainer.train_bank = WalkBank([data / "walk-001000.safetensors"])
    trainer.train_step()
    trainer.checkpoint()
    out = Path(cfg.out)
    if damage.startswith("step"):
        meta = json.loads((out / "train_state.json").read_text())
        meta["step"] = float(damage.split()[1]) if "." in damage else int(damage.split()[1])
        (out / "train_state.json").write_text(json.dumps(meta))
    else:
        state = load_file(str(out / "train_state.safetensors"))
        if "shape" in damage:
            state["opt.0.exp_avg"] = state["opt.0.exp_avg"][:1].contiguous()
        else:
            state["opt.9999.exp_avg"] = torch.zeros(3)
        save_file(state, str(out / "train_state.safetensors"), metadata={"step": "1"})
    with pytest.raises(CheckpointError):
        Trainer(cfg).resume()


def test_a_run_stopped_by_its_walk_data_leaves_no_empty_out_folder(tmp_path, capsys):
    from launch import build_parser
    from learn.train import main

    (tmp_path / "data_file").write_text("x")
    args = build_parser().parse_args(["train", "--data", str(tmp_path / "data_file"), "--walks", "1", "--val-walks",
                                      "1", "--walk-steps", "6", "--widths", "8", "16", "--out", str(tmp_path / "run")])
    assert main(args) == 2 and "error: " in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
