"""`python launch.py train`: train the learned world model on walks of the procedural world.

Pipeline: walks are generated once into safetensors shards (parallel processes; reused by later runs), held
in RAM, and sampled as (last frame -> next frame) pairs with the cache render and far field the live engine
gave at that step. Against autoregressive drift the last frame carries noise (its level is a model input),
and a share of the batches is made from the model's own short rollouts: it generates k frames from a true
start and is then trained on the next step with its own frame as the context, and with its frames in the
cache render as the live engine would have fused them into the map (:func:`splat_into_cache`).

Losses: L1 + image-gradient L1 on the blended RGB (gradients keep edges sharp), L1 on log depth where the
truth has a surface, BCE on the sky (no-surface) mask, BCE of the confidence against the realised error,
L1 on the pose residual (true pose minus kinematic pose) for discrete actions; with ``--adversarial W`` also a
patch-adversarial loss on the pixels the model generates (:mod:`learn.adversarial`; its discriminator trains
alongside and is saved with the checkpoint, not with the weights).

Runs on the CPU (bf16 autocast where the CPU has bf16 kernels, else fp32), on a GPU when present, and under
``torchrun --nproc_per_node N`` (DistributedDataParallel: gloo on CPU, NCCL on GPU). Checkpoints are the
pretrained layout (config.json + model.safetensors) plus ``train_state.safetensors`` / ``train_state.json`` for
``--resume``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from learn.adversarial import PatchDiscriminator, discriminator_loss, generator_loss, patch_weights
from learn.data import check_shards_fit, generate_shards, load_shard, shard_path
from scenes.atomic import WriteError, json_safe, remove_empty_folder, replacing, writable_folder, write_error
from worldmodel.neural.inputs import (build_inputs, compose, encode_depth, forward_warp, heading_frame, output_depth,
                                     pose_head_input, relative_motion)
from worldmodel.neural.net import IN_CHANNELS, bf16_is_fast
from worldmodel.neural.weights import (DEFAULT_CONFIG, WeightsError, build_net, check_config, load_pretrained,
                                      resolve, save_pretrained)


class CheckpointError(ValueError):
    """A training checkpoint that cannot be resumed; the message says what to do."""


class OptionError(ValueError):
    """Training options that do not fit together; the message says which to change."""


TRAIN_SEEDS = range(1000, 1320)   # walks the model is trained on
VAL_SEEDS = range(100, 108)       # validation during training (eval uses seeds 0..99, never trained on)


@dataclass
class TrainConfig:
    out: str = "runs/neural"
    data: str = "runs/shards"
    train_seeds: list[int] = field(default_factory=lambda: list(TRAIN_SEEDS))
    val_seeds: list[int] = field(default_factory=lambda: list(VAL_SEEDS))
    steps: int = 20000            # optimiser steps (the run also stops at ``minutes``)
    minutes: float = 60.0
    batch: int = 12
    lr: float = 6e-4
    warmup: int = 200
    rollout_share: float = 0.4    # share of batches made from the model's own rollouts (after rollout_after)
    rollout_after: int = 800
    max_rollout: int = 3
    rollout_into_cache: bool = True  # a rollout's frames enter the caches of its later steps (splat_into_cache)
    noise_max: float = 0.12       # context-noise level range (uniform in [0, noise_max] for 70 % of samples)
    val_every: int = 500
    ckpt_every_min: float = 5.0
    seed: int = 0
    workers: int = 2              # processes that generate missing shards
    walk_steps: int = 80
    widths: list[int] = field(default_factory=lambda: [48, 96, 144, 192])
    bf16: bool | None = None      # bf16 autocast; None: where it is faster (worldmodel.neural.net.bf16_is_fast)
    threads: int = 0              # torch threads per process (0 = torch default)
    model_config: dict = field(default_factory=dict)
    init: str = ""                # start from these weights (folder or hub repo id; their architecture wins)
    adversarial: float = 0.0      # weight of the patch-adversarial loss on generated pixels (0 = off)
    adversarial_warmup: int = 200  # steps the discriminator trains alone before the model gets that loss
    adversarial_context: bool = False  # the discriminator also sees the model's inputs (a conditional GAN)
    disc_lr: float = 2e-4


class WalkBank:
    """All shards of a seed list in RAM; samples training pairs as torch tensors."""

    def __init__(self, paths: list[Path]):
        self.walks = [load_shard(p) for p in paths]
        if not self.walks:
            raise ValueError("no training walks; generate shards first")
        self.lengths = np.array([len(w["rgb"]) for w in self.walks])

    def pick(self, rng: np.random.Generator, n: int, back: int = 0) -> list[tuple[int, int]]:
        """n (walk, t) pairs with t >= 1 + back (so ``back`` earlier true frames exist)."""
        walks = rng.integers(0, len(self.walks), n)
        return [(int(w), int(rng.integers(1 + back, self.lengths[w]))) for w in walks]

    def frames(self, picks: list[tuple[int, int]], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Tensors of rows (walk, t) on ``device`` (images NCHW float, rgb in [0, 1]; poses float64). Rows are
        gathered as stored (uint8, float16) and converted on the device: the gather is the CPU's only work."""
        def stack(key):
            return torch.from_numpy(np.stack([self.walks[w][key][t] for w, t in picks])).to(device)

        def image(key):  # (B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]
            return stack(key).permute(0, 3, 1, 2).float() / 255

        def plane(key):  # (B, H, W) -> (B, 1, H, W) float32
            return stack(key).float()[:, None]

        K = torch.from_numpy(np.stack([self.walks[w]["K"] for w, _ in picks])).to(device).float()
        return {"rgb": image("rgb"), "depth": plane("depth"), "c2w": stack("c2w"), "kin_c2w": stack("kin_c2w"),
                "is_action": stack("is_action").float(), "cache_rgb": image("cache_rgb"),
                "cache_depth": plane("cache_depth"), "far_rgb": image("far_rgb"), "far_valid": plane("far_valid"),
                "K": K}


def corrupt_cache(rgb: torch.Tensor, depth: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cache renders as they are live: sometimes misregistered (shifted 1-3 px, a pose error), with stale or
    missing patches (dropped rectangles, recoloured patches). (B, 3, H, W), (B, 1, H, W) -> same, on their
    device; ``gen`` is a CPU generator (it draws only the few choices)."""
    rgb, depth = rgb.clone(), depth.clone()
    b, _, h, w = rgb.shape
    r = torch.rand(b, 3, generator=gen)

    def corner() -> tuple[int, int]:
        return int(torch.randint(0, h - 8, (1,), generator=gen)), int(torch.randint(0, w - 8, (1,), generator=gen))

    for i in range(b):
        if r[i, 0] < 0.3:
            dy, dx = (int(v) for v in torch.randint(-3, 4, (2,), generator=gen))
            rgb[i], depth[i] = torch.roll(rgb[i], (dy, dx), (1, 2)), torch.roll(depth[i], (dy, dx), (1, 2))
        if r[i, 1] < 0.3:
            for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
                y0, x0 = corner()
                hh, ww = (int(v) for v in torch.randint(8, 48, (2,), generator=gen))
                depth[i, :, y0:y0 + hh, x0:x0 + ww] = 0
                rgb[i, :, y0:y0 + hh, x0:x0 + ww] = 0
        if r[i, 2] < 0.2:
            y0, x0 = corner()
            tint = (torch.rand(3, 1, 1, generator=gen) * 0.4 - 0.2).to(rgb.device)
            rgb[i, :, y0:y0 + 32, x0:x0 + 32] = (rgb[i, :, y0:y0 + 32, x0:x0 + 32] + tint).clamp(0, 1)
    return rgb, depth


def splat_into_cache(cache_rgb: torch.Tensor, cache_depth: torch.Tensor, made: list[dict[str, torch.Tensor]],
                     K: torch.Tensor, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache render (B, 3, H, W) rgb, (B, 1, H, W) z-depth (0 = empty) of camera ``c2w`` (B, 4, 4) with the
    frames a rollout made (oldest first; dicts of "rgb", "depth", "c2w") fused in, as the live map would hold
    them: each frame forward-warped into the camera (same K (B, 3, 3)) takes the pixels where the cache is
    empty or where its surface is not behind the cache's (within 5 %); later frames win."""
    for f in made:
        w_rgb, w_depth, mask = forward_warp(f["rgb"], f["depth"], K, f["c2w"], c2w)
        take = (mask > 0) & ((cache_depth <= 0) | (w_depth <= 1.05 * cache_depth))
        cache_rgb = torch.where(take, w_rgb, cache_rgb)
        cache_depth = torch.where(take, w_depth, cache_depth)
    return cache_rgb, cache_depth


def noisy_context(rgb: torch.Tensor, depth: torch.Tensor, level: torch.Tensor, gen: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Add context noise of ``level`` (B,): Gaussian on RGB, log-normal on depth, and a blur that grows with
    the level (what a drifting model's own frames look like). ``level`` and ``gen`` live on the images' device (drawing
    this much noise on the CPU made a GPU run wait for it)."""
    lv = level.view(-1, 1, 1, 1)
    blurred = F.avg_pool2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = (lv * 4).clamp(0, 1)
    rgb = (rgb * (1 - mix) + blurred * mix + lv * torch.randn(rgb.shape, generator=gen, device=rgb.device)).clamp(0, 1)
    depth = depth * torch.exp(lv * 0.5 * torch.randn(depth.shape, generator=gen, device=depth.device))
    return rgb, depth


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def frame_losses(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-frame losses (see the module docstring); all scalars."""
    rgb_t = target["rgb"]
    logd_t, valid_t = encode_depth(target["depth"])
    err = (out["rgb"] - rgb_t).abs()
    gx, gy = image_gradients(out["rgb"])
    tx, ty = image_gradients(rgb_t)
    grad = (gx - tx).abs().mean() + (gy - ty).abs().mean()
    depth_l1 = ((out["logd"] - logd_t).abs() * valid_t).sum() / valid_t.sum().clamp_min(1)
    sky = F.binary_cross_entropy(out["sky"].float().clamp(1e-5, 1 - 1e-5), 1 - valid_t.float())
    realised = torch.exp(-err.mean(1, keepdim=True).detach() * 10)
    conf = F.binary_cross_entropy(out["conf"].float().clamp(1e-5, 1 - 1e-5), realised.float())
    return {"rgb": err.mean(), "grad": grad, "depth": depth_l1, "sky": sky, "conf": conf}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [0, 1]."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


class Trainer:
    """One training run (one process of it, under DDP)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL's collectives run on the current device
        # decided by each process on its own device (not saved: a resumed run may be on another machine)
        self.bf16 = bf16_is_fast(self.device) if cfg.bf16 is None else cfg.bf16
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model_config = {**DEFAULT_CONFIG, "widths": list(cfg.widths), **cfg.model_config}
        self.init_record: dict | None = None  # what a fine-tune started from (for the model card)
        if cfg.init:  # fine-tune: the architecture and the weights of a trained model (a fresh optimiser)
            init_config, init_net = load_pretrained(cfg.init)
            self.model_config = {k: v for k, v in init_config.items() if k not in ("training", "eval")}
            self.cfg = cfg = replace(cfg, widths=list(self.model_config["widths"]))  # recorded as trained
            self.init_record = base_training_record(cfg.init, resolve(cfg.init), init_config.get("training", {}))
            self.net = init_net.train().to(self.device)
        else:  # the same check the saved weights get, before any data or training (not at the first save)
            self.model_config = check_config(self.model_config, "--widths", fix="pass 2 to 6 widths, each a "
                                             "multiple of 8, e.g. --widths 48 96 144 192")
            self.net = build_net(self.model_config).to(self.device)
        check_walk_camera(self.model_config, cfg.init or cfg.out)
        self.module = self.net
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.net)
        self.opt = torch.optim.AdamW(self.module.parameters(), lr=cfg.lr, weight_decay=1e-4, betas=(0.9, 0.99))
        self.disc = self.disc_module = self.disc_opt = None
        self.disc_from = 0  # the step the discriminator started training at (its warm-up counts from there)
        if cfg.adversarial > 0:
            condition = IN_CHANNELS if cfg.adversarial_context else 0
            self.disc = self.disc_module = PatchDiscriminator(condition_channels=condition).to(self.device)
            if self.world > 1:
                self.disc = torch.nn.parallel.DistributedDataParallel(self.disc)
            self.disc_opt = torch.optim.AdamW(self.disc_module.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.99))
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed * 1000 + self.rank)
        # torch generators: the batches' few random choices (on the CPU), and the context noise, drawn where
        # the batch is (CPU and CUDA draw different streams from the same seed)
        self.choice_gen, self.noise_gen = torch.Generator(), torch.Generator(self.device)
        self.seed_generators()
        self.history: list[dict] = []
        self.replica_fingerprints: list[str] = []
        # a second Ctrl-C while a checkpoint is written waits for the write (a cut-off one mixes two steps)
        self.writing_checkpoint = self.quit_after_checkpoint = False
        self.started, self.elapsed_before = time.time(), 0.0  # seconds trained by earlier (resumed) runs
        self.clock: float | None = None  # seconds trained as all ranks agreed before this step (the LR reads it)

    # ---------------------------------------------------------------- data
    def load_data(self, progress: bool = True) -> None:
        cfg = self.cfg
        seeds, size = cfg.train_seeds + cfg.val_seeds, DEFAULT_CONFIG["size"][0]
        if self.rank == 0:  # one rank generates (it refuses unfit shards first); the others wait
            generate_shards(cfg.data, seeds, cfg.walk_steps, size, workers=cfg.workers, progress=progress)
        else:  # (refusing the same unfit shards as rank 0, instead of waiting for it at the barrier)
            check_shards_fit(cfg.data, seeds, cfg.walk_steps, size)
        if self.world > 1:
            torch.distributed.barrier()
        folder = cfg.data
        self.train_bank = WalkBank([shard_path(folder, s) for s in cfg.train_seeds])
        self.val_bank = WalkBank([shard_path(folder, s) for s in cfg.val_seeds])

    # ---------------------------------------------------------------- model pieces
    def autocast(self):
        kind = self.device.type
        return torch.autocast(kind, dtype=torch.bfloat16, enabled=self.bf16)

    def inputs(self, last: dict, target: dict, noise: torch.Tensor):
        """build_inputs for (last -> target), all on the training device."""
        return build_inputs(last["rgb"], last["depth"], target["K"], last["c2w"], target["c2w"],
                            target["cache_rgb"], target["cache_depth"], target["far_rgb"], target["far_valid"],
                            noise, step_scale=self.model_config["step_m"])

    @torch.no_grad()
    def predict(self, last: dict, target: dict, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """The composed frame for (last -> target), no gradients (rollouts, validation)."""
        x, motion, sources = self.inputs(last, target, noise)
        with self.autocast():
            raw = self.module.frame(x, motion)
        return compose(raw.float(), sources)

    def pose_inputs(self, last: dict, target: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pose head image input, commanded motion, true residual in the last heading frame (B, 3))."""
        kin, truth = target["kin_c2w"], target["c2w"]
        motion = torch.cat([relative_motion(last["c2w"], kin, self.model_config["step_m"]).float(),
                            torch.zeros(len(kin), 1, device=self.device)], dim=1)
        resid = (heading_frame(last["c2w"]).transpose(1, 2) @ (truth[:, :3, 3] - kin[:, :3, 3])[..., None])[..., 0]
        return pose_head_input(last["depth"]), motion, resid.float()

    def pose_error(self, pred: torch.Tensor, resid: torch.Tensor, target: dict) -> torch.Tensor:
        w = target["is_action"][:, None]
        return ((pred - resid).abs() * w).sum() / (w.sum() * 3).clamp_min(1)

    def make_batch(self, bank: WalkBank, n: int, rollout: int) -> tuple[dict, dict, torch.Tensor]:
        """(last, target, noise level) on the training device: teacher-forced, or the last frame made by
        ``rollout`` model steps (run where the model is)."""
        dev = self.device
        picks = bank.pick(self.rng, n, back=rollout)
        target = bank.frames(picks, dev)
        gen = self.choice_gen
        target["cache_rgb"], target["cache_depth"] = corrupt_cache(target["cache_rgb"], target["cache_depth"], gen)
        last = bank.frames([(w, t - 1 - rollout) for w, t in picks], dev)
        noise = torch.rand(n, generator=gen) * self.cfg.noise_max * (torch.rand(n, generator=gen) < 0.7)
        if not rollout:
            noise = noise.to(dev)
            last["rgb"], last["depth"] = noisy_context(last["rgb"], last["depth"], noise, self.noise_gen)
            return last, target, noise
        noise = torch.zeros(n, device=dev)
        made: list[dict[str, torch.Tensor]] = []
        with torch.no_grad():
            for k in range(rollout, 0, -1):
                step_target = bank.frames([(w, t - k) for w, t in picks], dev)
                self.fuse_made(step_target, made)
                out = self.predict(last, step_target, noise)
                last = {"rgb": out["rgb"].clamp(0, 1), "depth": output_depth(out).float(), "c2w": step_target["c2w"]}
                made.append(last)
        self.fuse_made(target, made)
        return last, target, noise

    def fuse_made(self, target: dict[str, torch.Tensor], made: list[dict[str, torch.Tensor]]) -> None:
        """Put a rollout's frames into ``target``'s cache (when ``rollout_into_cache``; in place)."""
        if self.cfg.rollout_into_cache and made:
            target["cache_rgb"], target["cache_depth"] = splat_into_cache(
                target["cache_rgb"], target["cache_depth"], made, target["K"], target["c2w"])

    # ---------------------------------------------------------------- loop
    def progress(self) -> float:
        """Share of the run done: by steps or by time, whichever is further (the LR follows a cosine of it). The
        time is the clock every rank agreed on before the step (:attr:`clock`), else this process's own."""
        elapsed = self.elapsed() if self.clock is None else self.clock
        return min(1.0, max(self.step / self.cfg.steps, elapsed / (60 * self.cfg.minutes)))

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        rollout = 0
        if self.step >= cfg.rollout_after and self.rng.random() < cfg.rollout_share:
            rollout = int(self.rng.integers(1, cfg.max_rollout + 1))
        last, target, noise = self.make_batch(self.train_bank, cfg.batch, rollout)
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * self.progress()))
        for g in self.opt.param_groups:
            g["lr"] = lr
        x, motion, sources = self.inputs(last, target, noise)
        pose_in, pose_motion, resid = self.pose_inputs(last, target)
        with self.autocast():
            raw, pose = self.net(x, motion, pose_in, pose_motion)
        if not (torch.isfinite(raw).all() and torch.isfinite(pose).all()):  # weights a step poisoned: the BCE
            return {"loss": float("nan"), "rollout": rollout, "rgb": float("nan")}  # losses would raise, not say so
        out = compose(raw.float(), sources)
        parts = frame_losses(out, target)
        parts["pose"] = self.pose_error(pose.float(), resid, target)
        loss = (parts["rgb"] + 0.5 * parts["grad"] + 0.5 * parts["depth"] + 0.05 * parts["sky"]
                + 0.02 * parts["conf"] + 0.5 * parts["pose"])
        if self.disc is not None:
            fake_rgb, fake_logd, generated = out["rgb"], out["logd"] * (1 - out["sky"]), out["weights"][:, :1].detach()
            condition = x.detach().float() if cfg.adversarial_context else None
            if self.step - self.disc_from >= cfg.adversarial_warmup:
                parts["adv_g"] = self.adversarial_generator_loss(fake_rgb, fake_logd, generated, condition)
                loss = loss + cfg.adversarial * parts["adv_g"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
        self.opt.step()
        if self.disc is not None:
            parts["adv_d"] = self.discriminator_step(target, fake_rgb.detach(), fake_logd.detach(), generated,
                                                     condition)
        self.step += 1
        return {"loss": loss.item(), "rollout": rollout, **{k: v.item() for k, v in parts.items()}}

    def adversarial_generator_loss(self, rgb: torch.Tensor, logd: torch.Tensor, generated: torch.Tensor,
                                   condition: torch.Tensor | None) -> torch.Tensor:
        """The model's adversarial loss; the discriminator is frozen for it (its weights get no gradient, and
        under DDP its unwrapped module runs, so no gradient exchange is triggered). ``condition``: the model's
        inputs (B, IN_CHANNELS, H, W) with ``adversarial_context``, else None."""
        self.disc_module.requires_grad_(False)
        with self.autocast():
            logits = self.disc_module(rgb, logd, condition)
        self.disc_module.requires_grad_(True)
        return generator_loss(logits, patch_weights(generated, logits))

    def discriminator_step(self, target: dict, fake_rgb: torch.Tensor, fake_logd: torch.Tensor,
                           generated: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """One discriminator update: the true frames against the model's (one forward, as DDP wants), both
        given the same ``condition`` (the model's inputs) when there is one."""
        real_logd, _ = encode_depth(target["depth"])
        both = None if condition is None else torch.cat([condition, condition])
        with self.autocast():
            logits = self.disc(torch.cat([target["rgb"], fake_rgb]), torch.cat([real_logd, fake_logd]), both)
        real, fake = logits.chunk(2)
        d_loss = discriminator_loss(real, fake, patch_weights(generated, fake))
        self.disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.disc_opt.step()
        return d_loss.detach()

    @torch.no_grad()
    def validate(self, n: int = 48) -> dict[str, float]:
        """One-step PSNR on held-out walks: memory on, memory zeroed, and copy-the-last-frame."""
        picks = self.val_bank.pick(np.random.default_rng(12345), n)
        target = self.val_bank.frames(picks, self.device)
        last = self.val_bank.frames([(w, t - 1) for w, t in picks], self.device)
        zero = torch.zeros(n, device=self.device)
        on = self.predict(last, target, zero)
        off_target = {**target, "cache_rgb": torch.zeros_like(target["cache_rgb"]),
                      "cache_depth": torch.zeros_like(target["cache_depth"]),
                      "far_valid": torch.zeros_like(target["far_valid"])}
        off = self.predict(last, off_target, zero)
        pose_in, pose_motion, resid = self.pose_inputs(last, target)
        return {"val_psnr": float(psnr(on["rgb"], target["rgb"]).mean()),
                "val_psnr_memory_off": float(psnr(off["rgb"], target["rgb"]).mean()),
                "val_psnr_copy_last": float(psnr(last["rgb"], target["rgb"]).mean()),
                "val_pose_l1": float(self.pose_error(self.module.pose(pose_in, pose_motion), resid, target))}

    def checkpoint(self) -> None:
        """Write the run to ``cfg.out`` (rank 0): the optimiser state first (its step in its metadata), then the
        model folder (config.json records the step), then train_state.json last. A write cut off between them (a
        kill, a full disk) leaves files of two steps, which :meth:`resume` finds and refuses; a second Ctrl-C
        meanwhile quits only once the write is complete."""
        if self.rank != 0:
            return
        self.writing_checkpoint = True
        try:
            self._write_checkpoint()
        finally:
            self.writing_checkpoint = False
        if self.quit_after_checkpoint:
            raise KeyboardInterrupt

    def _write_checkpoint(self) -> None:
        out = Path(self.cfg.out)
        training = {"steps": self.step, "config": asdict(self.cfg), "hardware": describe_hardware(self.bf16),
                    "minutes_trained": round(self.elapsed() / 60, 1), "history": json_safe(self.history[-20:])}
        if self.init_record:
            training["init"] = self.init_record
        config = {**self.model_config, "training": training}
        out.mkdir(parents=True, exist_ok=True)
        state = optimizer_tensors(self.opt, "opt")
        # rank 0's torch generators (cache corruption, context noise): a resumed run draws what it would have drawn
        state.update({"gen.choice": self.choice_gen.get_state(), "gen.noise": self.noise_gen.get_state().cpu()})
        if self.disc is not None:  # the discriminator is part of the run's state, not of the model
            state.update(optimizer_tensors(self.disc_opt, "disc_opt"))
            state.update({f"disc.{k}": v for k, v in self.disc_module.state_dict().items()})
        with replacing(out / "train_state.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"step": str(self.step)})
        save_pretrained(out, config, self.module, half=False)
        meta = {"step": self.step, "elapsed_s": self.elapsed(), "rng": self.rng.bit_generator.state,
                "history": json_safe(self.history), "world_size": self.world,
                "replica_fingerprints": self.replica_fingerprints}
        if self.disc is not None:
            meta["disc_from"] = self.disc_from
        with replacing(out / "train_state.json") as tmp:
            tmp.write_text(json.dumps(meta))

    def resume(self) -> bool:
        """Continue the run saved in ``cfg.out``; False when there is none there. A checkpoint that cannot be
        read, or was made with other options, raises CheckpointError (one line that says what to do)."""
        out = Path(self.cfg.out)
        if not (out / "train_state.json").is_file():
            return False
        try:
            saved_config, saved_net = load_pretrained(out)
            meta = json.loads((out / "train_state.json").read_text())
            step, elapsed, history = meta["step"], float(meta.get("elapsed_s", 0.0)), meta.get("history", [])
            if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not 0 <= elapsed < math.inf:
                raise ValueError(f"step {step!r} / elapsed_s {elapsed!r} are not a count of steps and seconds")
            if not isinstance(history, list):
                raise ValueError("history is not a list")
            np.random.default_rng().bit_generator.state = meta["rng"]  # a malformed state fails here, not later
            tensors = load_file(str(out / "train_state.safetensors"))
            with safe_open(str(out / "train_state.safetensors"), framework="pt") as f:
                state_step = (f.metadata() or {}).get("step")  # (none in checkpoints written before it was kept)
        except (WeightsError, OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            why = f"train_state.json lacks {e.args[0]!r}" if isinstance(e, KeyError) else e  # not a bare 'step'
            raise CheckpointError(f"{out}: cannot resume, the checkpoint is damaged ({why}); restore it, or start "
                                  "over without --resume (or with another --out)") from None
        training = saved_config.get("training")
        weights_step = training.get("steps") if isinstance(training, dict) else None
        mixed = {f"the weights of step {weights_step}": weights_step is not None and weights_step != step,
                 f"the optimiser state of step {state_step}": state_step is not None and state_step != str(step)}
        if any(mixed.values()):
            raise CheckpointError(f"{out}: its last checkpoint was cut off while it was written (train_state.json is "
                                  f"of step {step}, {' and '.join(k for k, v in mixed.items() if v)}); restore the "
                                  f"folder, or fine-tune from its weights: --init {out} --out ANOTHER_FOLDER")
        try:
            self.module.load_state_dict(saved_net.state_dict())
            load_optimizer_tensors(self.opt, tensors, "opt")
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{out}: the checkpoint is of another model (widths {saved_config['widths']}) or "
                                  f"optimiser ({type(e).__name__}); resume with the options the run started "
                                  "with") from None
        if self.disc is not None:
            disc = {k[len("disc."):]: v for k, v in tensors.items() if k.startswith("disc.")}
            # a fresh discriminator (a run that trained without one) warms up from this step, as a new run's does
            # from step 0: its untrained judgement reached the model at once
            self.disc_from = step
            if disc:
                try:
                    saved = PatchDiscriminator.condition_channels_of(disc)
                except KeyError:
                    raise CheckpointError(f"{out}: its discriminator state is damaged; restore the checkpoint or "
                                          "start over without --resume") from None
                if saved != self.disc_module.condition_channels:
                    raise CheckpointError(f"{out}: its discriminator was trained with{'' if saved else 'out'} "
                                          "--adversarial-context; resume with the options the run started with")
                try:
                    self.disc_module.load_state_dict(disc)
                    load_optimizer_tensors(self.disc_opt, tensors, "disc_opt")
                except (RuntimeError, ValueError, KeyError) as e:
                    raise CheckpointError(f"{out}: its discriminator is of another size ({type(e).__name__}); "
                                          "resume with the options the run started with") from None
                since = meta.get("disc_from", 0)  # (none in checkpoints written before it was kept: warm)
                self.disc_from = since if isinstance(since, int) and 0 <= since <= step else 0
        self.step = step
        self.elapsed_before, self.started = elapsed, time.time()
        self.history = history
        init = training.get("init") if isinstance(training, dict) else None
        if isinstance(init, dict):  # what a fine-tuned run started from stays on its model card
            self.init_record = init
        if self.rank == 0:  # rank 0's state was saved (its torch generators too, below): a 1-process run
            # resumes exactly where it stopped
            self.rng.bit_generator.state = meta["rng"]
        else:  # other ranks draw their own samples, not rank 0's again
            self.rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, self.rank, self.step]))
        self.seed_generators()
        if self.rank == 0 and {"gen.choice", "gen.noise"} <= set(tensors):
            noise = tensors["gen.noise"]
            # the noise is drawn where the batch is: a run checkpointed on another kind of device (a CUDA generator's
            # state is 16 bytes, a CPU one's 5056) draws it from a stream seeded from the step here, as other ranks
            # do (it was refused as damaged: such a run could not be resumed on the other machine)
            same_kind = noise.numel() == self.noise_gen.get_state().numel()
            try:  # (a checkpoint written before they were kept: seeded from the step, as other ranks are)
                self.choice_gen.set_state(tensors["gen.choice"])
                if same_kind:
                    self.noise_gen.set_state(noise.to(self.noise_gen.get_state().device))
            except (RuntimeError, TypeError):
                raise CheckpointError(f"{out}: its random generator state is damaged; restore the checkpoint or start "
                                      "over without --resume") from None
        return True

    def seed_generators(self) -> None:
        """Seed the torch generators from (seed, rank, step): distinct streams per rank, per resumed step and
        for the two generators (the numpy generator's state is saved instead)."""
        base = np.random.SeedSequence([self.cfg.seed, self.rank, self.step])
        choice_seed, noise_seed = (int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in base.spawn(2))
        self.choice_gen.manual_seed(choice_seed)
        self.noise_gen.manual_seed(noise_seed)

    def run(self, progress: bool = True) -> dict[str, float]:
        """Train until ``steps``, ``minutes`` or a stop (SIGTERM, Ctrl-C: the step finishes and a checkpoint is
        saved; a second Ctrl-C quits without one); checkpoints every ``ckpt_every_min`` and at the end."""
        self.started = time.time()
        stop_requested: list[bool] = []
        previous = {}
        if threading.current_thread() is threading.main_thread():  # every rank: torchrun signals them all
            def stop(signum, frame) -> None:  # finish the step, checkpoint; a second Ctrl-C quits at once
                if stop_requested and signum == signal.SIGINT:
                    if self.writing_checkpoint:  # (not halfway through a checkpoint: it would mix two steps)
                        self.quit_after_checkpoint = True
                        print("\nquitting once the checkpoint being written is complete", file=sys.stderr, flush=True)
                        return
                    raise KeyboardInterrupt
                stop_requested.append(True)
                if self.rank == 0:
                    print("\nstopping after this step, then saving a checkpoint (Ctrl-C again to quit now)",
                          file=sys.stderr, flush=True)
            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._train_until_done(stop_requested, progress)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _train_until_done(self, stop_requested: list[bool], progress: bool) -> dict[str, float]:
        from tqdm import tqdm

        cfg = self.cfg
        last_ckpt = time.time()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not progress or self.rank)
        stats: dict[str, float] = {}
        while self.step < cfg.steps:
            # (a stop asked for, the clock the LR schedule reads); NCCL reduces only GPU tensors
            now = torch.tensor([float(bool(stop_requested)), self.elapsed()], dtype=torch.float64, device=self.device)
            if self.world > 1:  # every rank stops at the same step, and reads the same clock (the slowest rank's):
                # each its own made the replicas' LRs differ by their start times, and their weights parted
                torch.distributed.all_reduce(now, op=torch.distributed.ReduceOp.MAX)
            stop, self.clock = now.tolist()
            if stop > 0 or self.clock >= 60 * cfg.minutes:
                break
            stats = self.train_step()
            if not math.isfinite(stats["loss"]):  # the weights are poisoned: keep the last checkpoint as it is
                kept = (f"{cfg.out} holds the last good checkpoint: --resume it with a lower --lr"
                        if (Path(cfg.out) / "train_state.json").is_file() else
                        "no checkpoint was written yet: start again with a lower --lr")
                bar.close()  # (its last line would come after the message)
                raise FloatingPointError(f"the loss became {stats['loss']} at step {self.step}; {kept}")
            bar.update()
            bar.set_postfix(loss=f"{stats['loss']:.3f}", rgb=f"{stats['rgb']:.3f}")
            if self.step % cfg.val_every == 0 and self.rank == 0:
                val = self.validate()
                self.history.append({"step": self.step, "time": time.time(), **val,
                                     **{k: stats[k] for k in ("loss", "rgb", "depth", "pose", "adv_g", "adv_d")
                                        if k in stats}})
                bar.write(json.dumps(self.history[-1]))
            if time.time() - last_ckpt > 60 * cfg.ckpt_every_min:
                self.checkpoint()
                last_ckpt = time.time()
        bar.close()
        self.replica_fingerprints = self.fingerprints()
        self.checkpoint()
        return stats

    def close(self) -> None:
        """Leave the process group (under DDP): every rank waits until all are done (rank 0 has written the
        checkpoint; gloo aborts a rank whose peer tears the group down mid-exchange), then the DDP wrappers,
        which hold the group, are dropped and the group is destroyed while the interpreter is fully alive.
        Left to interpreter exit, gloo's teardown killed a rank with "terminate called without an active
        exception" (SIGABRT) in 2 of 16 runs on a loaded 2-core machine (0 of 52 after). The trainer holds no
        process group afterwards: it is done."""
        if self.world == 1 or not torch.distributed.is_initialized():
            return
        torch.distributed.barrier()
        self.net, self.disc = self.module, self.disc_module
        gc.collect()  # the wrappers' reducers go now, not during interpreter finalisation
        torch.distributed.destroy_process_group()

    def fingerprints(self) -> list[str]:
        """:func:`weights_fingerprint` of every rank's model (one entry per rank): equal entries mean the
        replicas hold bit-identical weights."""
        digest = bytes.fromhex(weights_fingerprint(self.module))
        local = torch.tensor(list(digest), dtype=torch.uint8, device=self.device)
        if self.world == 1:
            return [digest.hex()]
        everyone = [torch.zeros_like(local) for _ in range(self.world)]
        torch.distributed.all_gather(everyone, local)
        return [bytes(v.cpu().tolist()).hex() for v in everyone]


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (hex) of a module's state dict: names, dtypes, shapes and the exact bytes, in key order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """An optimiser's per-parameter state as flat safetensors entries "{prefix}.{param index}.{name}"."""
    return {f"{prefix}.{i}.{k}": v for i, s in opt.state_dict()["state"].items() for k, v in s.items()
            if torch.is_tensor(v)}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Restore what :func:`optimizer_tensors` wrote (other prefixes are ignored)."""
    state = opt.state_dict()
    params = [p for group in opt.param_groups for p in group["params"]]
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            i, k = key[len(prefix) + 1:].split(".", 1)
            i = int(i)
            # (torch checks neither: a wrong one surfaced as a shape error in the first optimiser step)
            if not 0 <= i < len(params) or (v.dim() and (v.shape != params[i].shape or not v.is_floating_point())):
                raise ValueError(f"{key} does not fit the optimiser's parameter {i}")
            state["state"].setdefault(i, {})[k] = v
    opt.load_state_dict(state)


def trained_minutes(folder: str | Path, training: dict) -> float | None:
    """Minutes a model's weights were trained: a checkpoint's own clock (``train_state.json``, to the second),
    else the ``minutes_trained`` its config records (a checkpoint's or a shipped model's); None when neither says."""
    state = Path(folder) / "train_state.json"
    if state.is_file():
        return json.loads(state.read_text()).get("elapsed_s", 0) / 60
    return training.get("minutes_trained")


def base_training_record(source: str, folder: str | Path, training: dict) -> dict | None:
    """What a fine-tune started from (``source`` as given, read from ``folder``): the summary of its training
    (steps, batch, LR, walks, hardware, minutes; its own ``init`` when it was a fine-tune too), for the model
    card. None when the weights carry no training record."""
    if not training:
        return None
    tcfg = training.get("config", {})
    record = {"from": str(source), "steps": training.get("steps"), "hardware": training.get("hardware"),
              "minutes_trained": trained_minutes(folder, training), "batch": tcfg.get("batch"),
              "lr": tcfg.get("lr"), "walks": len(tcfg.get("train_seeds", []))}
    if training.get("init"):
        record["init"] = training["init"]
    return record


def describe_hardware(bf16: bool) -> str:
    precision = "bf16 autocast" if bf16 else "fp32"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, {precision}"
    return (f"CPU ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores, {torch.get_num_threads()} "
            f"torch threads, {precision}")


def check_walk_camera(model_config: dict, where: str) -> None:
    """OptionError when a model's frame size, field of view or steps are not those of the walks ``train`` makes
    (:func:`learn.data.generate_walk`: DEFAULT_CONFIG's size, the simulator's camera, default kinematics): its
    config would go on saying the one while it learned the other (weights of another camera given to ``--init``)."""
    from worldmodel.actions import Kinematics
    from worldmodel.procedural import ProceduralConfig

    walks = {"size": list(DEFAULT_CONFIG["size"]), "fov_y_deg": ProceduralConfig().fov_y_deg,
             "step_m": Kinematics().step_m, "yaw_deg": Kinematics().yaw_deg}
    model = {key: model_config[key] for key in walks}
    if model != walks:
        def said(c: dict) -> str:
            return f"{c['size'][0]}x{c['size'][1]} frames at {c['fov_y_deg']:g} degrees, {c['step_m']:g} m / " \
                   f"{c['yaw_deg']:g} degree steps"
        raise OptionError(f"{where}: the model makes {said(model)}, but train's walks are {said(walks)}; fine-tune "
                          "weights of that camera and those steps (their config would not say what they learned)")


def check_out_folder(out: Path, resume: bool) -> None:
    """Before any work: ``out`` can be written, holds a run to resume when resuming, and holds no model or
    checkpoint a new run would overwrite. CheckpointError / WriteError (one line) otherwise."""
    held = [name for name in ("train_state.json", "model.safetensors", "config.json") if (out / name).exists()]
    if "train_state.json" not in held and held:  # a finished model, or a run whose first checkpoint was cut off
        raise CheckpointError(f"{out} already holds a model ({', '.join(held)}) but no training state to resume "
                              f"(train_state.json); fine-tune from it with --init {out} and another --out, or "
                              "choose another --out")
    if resume and "train_state.json" not in held:
        raise CheckpointError(f"{out}: no run to resume there (train_state.json is missing); start without "
                              "--resume, or point --out at the run's folder")
    if not resume and held:
        raise CheckpointError(f"{out} already holds a model or checkpoint ({', '.join(held)}); --resume it, or "
                              "choose another --out (a new run would overwrite it)")
    writable_folder(out)


def saved_run_config(out: Path) -> dict:
    """The model config a run saved in ``out`` (checked); CheckpointError when it cannot be read."""
    try:
        return check_config(json.loads((out / "config.json").read_text()), str(out / "config.json"))
    except (OSError, ValueError, RecursionError, WeightsError) as e:
        raise CheckpointError(f"{out}: cannot resume, its config.json is unreadable ({str(e)[:120]}); restore the "
                              "checkpoint, or start over without --resume (or with another --out)") from None


RESUMABLE = ("batch", "lr", "seed", "walk_steps", "val_every", "rollout_share", "rollout_after", "max_rollout",
             "adversarial", "adversarial_context")  # TrainConfig fields a resumed run keeps unless given again
RESUME_NOTES = {"batch": "--batch", "lr": "--lr", "seed": "--seed", "rollout_share": "--rollout-share",
                "rollout_after": "--rollout-after", "max_rollout": "--max-rollout",
                "rollout_into_cache": "--rollout-cache-truth", "adversarial": "--adversarial",
                "adversarial_context": "--adversarial-context", "train_seeds": "--walks", "val_seeds": "--val-walks",
                "val_every": "--val-every", "walk_steps": "--walk-steps", "minutes": "--minutes", "steps": "--steps"}


def changed_options(saved: dict, cfg: TrainConfig) -> list[str]:
    """The training options of ``cfg`` that differ from those a run saved (``training.config`` of its
    config.json), as 'FLAG saved -> now' (walk lists by their length); [] when it recorded none."""
    now = asdict(cfg)
    out = []
    for key, flag in RESUME_NOTES.items():
        if key not in saved or saved[key] == now[key] or key in ("steps", "minutes"):  # budgets: meant to change
            continue
        was, new = saved[key], now[key]
        if isinstance(was, list) and isinstance(new, list):
            was, new = f"{len(was)} walks", f"{len(new)} walks"
        if key == "rollout_into_cache":  # the flag says the opposite
            was, new = not was, not new
        out.append(f"{flag} {was} -> {new}")
    return out


def given_options(args) -> dict:
    """The training options given on the command line, as TrainConfig fields (those left out are absent)."""
    given = {field: getattr(args, field) for field in RESUMABLE if getattr(args, field, None) is not None}
    if args.rollout_cache_truth is not None:
        given["rollout_into_cache"] = not args.rollout_cache_truth
    if args.walks is not None:
        given["train_seeds"] = list(range(TRAIN_SEEDS.start, TRAIN_SEEDS.start + args.walks))
    if args.val_walks is not None:
        given["val_seeds"] = list(range(VAL_SEEDS.start, VAL_SEEDS.start + args.val_walks))
    return given


def main(args) -> int:
    given = given_options(args)
    cfg = TrainConfig(out=args.out, data=args.data, steps=args.steps, minutes=args.minutes, workers=args.workers,
                      widths=list(args.widths), init=str(args.init or ""), **given)
    out_existed = Path(cfg.out).exists()
    try:  # the output folder, weights and checkpoints are checked before any walk data is made
        check_out_folder(Path(cfg.out), bool(args.resume))
        if args.resume:  # the run goes on with the model it saved (widths, context noise, camera), and with its
            # training options where none are given again
            saved = saved_run_config(Path(cfg.out))
            options = (saved.get("training") or {}).get("config") or {}
            kept = {k: options[k] for k in (*RESUMABLE, "rollout_into_cache", "train_seeds", "val_seeds")
                    if k in options and k not in given}
            cfg = replace(cfg, init="", widths=list(saved["widths"]), **kept,
                          model_config={k: v for k, v in saved.items() if k not in ("training", "eval")})
            changed = changed_options(options, cfg)
            if changed and int(os.environ.get("RANK", 0)) == 0:
                print(f"note: the resumed run changes options it was trained with ({', '.join(changed)}); its "
                      "config.json and model card record the latest", file=sys.stderr)
        if cfg.walk_steps + 1 < cfg.max_rollout + 2:  # a rollout needs max_rollout frames before its last and target
            raise OptionError(f"--max-rollout {cfg.max_rollout} needs walks of at least {cfg.max_rollout + 1} "
                                  f"steps; lower --max-rollout, or raise --walk-steps ({cfg.walk_steps})")
        trainer = Trainer(cfg)
        if args.resume:
            trainer.resume()
    except (WeightsError, CheckpointError, OptionError, WriteError) as e:
        if not out_existed:  # a run that never started leaves no empty --out folder behind
            remove_empty_folder(Path(cfg.out))
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.resume and trainer.rank == 0:
        print(f"resumed from {cfg.out} at step {trainer.step}")
    try:
        trainer.load_data()
    except (ValueError, OSError) as e:  # a damaged shard (its message says which), a --data that is a file
        if not out_existed:  # (nothing was trained: no empty --out folder left behind)
            remove_empty_folder(Path(cfg.out))
        print(f"error: {e if isinstance(e, ValueError) else write_error(e, Path(cfg.data))}", file=sys.stderr)
        return 2
    try:
        trainer.run()
    except FloatingPointError as e:  # the loss diverged: its message says what to do
        print(f"error: {e}", file=sys.stderr)
        return 1
    if trainer.rank == 0:
        print(f"trained {trainer.step} steps -> {cfg.out}")
    trainer.close()
    return 0
