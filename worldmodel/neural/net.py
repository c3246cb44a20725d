"""The networks of the learned world model: a FiLM-conditioned U-Net that makes the next frame, and a small
pose head that predicts where the camera really ends up.

Shapes: B = batch, H = W = 128 by default. Every image input is a float tensor (B, C, H, W).

WorldNet
    in : (B, IN_CHANNELS, H, W)  the stacked inputs of :mod:`worldmodel.neural.inputs` (last frame, last frame
         warped into the target camera, cache render of the fused map, far-field panorama, world ray map)
         (B, MOTION_DIM)         relative camera motion last -> target and the context-noise level
    out: (B, OUT_CHANNELS, H, W) raw heads, see :data:`OUT` (rgb, log depth, sky logit, confidence logit and
         three blend logits: generate / copy the warped last frame / copy the cache)

    Layout: a pixel-unshuffle stem (128^2 -> 64^2, 4x the channels) keeps the costly convolutions at half
    resolution; four levels (48, 96, 144, 192 channels at 64^2..8^2) of residual blocks whose GroupNorm is
    modulated by FiLM from the motion embedding; skip connections; a pixel-shuffle back to full resolution
    and a small full-resolution refinement that also sees the raw inputs (so copied pixels stay crisp).

PoseHead
    in : (B, 2, 32, 32) last frame log depth + validity at 32^2, (B, MOTION_DIM)
    out: (B, 3) where the camera ends up relative to the kinematic target, in the heading frame of the
         last camera (forward, up, left), metres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

IN_CHANNELS = 22       # the layout: worldmodel.neural.inputs' module docstring
MOTION_DIM = 10        # translation (3, last-camera frame) + rotation 6D (6) + context-noise level (1)
OUT = {"rgb": slice(0, 3), "logd": slice(3, 4), "sky": slice(4, 5), "conf": slice(5, 6), "blend": slice(6, 9)}
OUT_CHANNELS = 9


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether the model should run in bf16 autocast on ``device``: a CUDA GPU with native bf16 (Ampere or
    newer), or a CPU for which oneDNN has bf16 kernels (AVX-512 or AMX; on such a 2-core CPU a 128^2 forward took
    ~20 ms in bf16 against ~25 ms in fp32). Elsewhere bf16 falls back to reference code: on a 2-core AVX2-only
    AMD EPYC a forward took 8.2 s in bf16 against 0.057 s in fp32, so the model runs in fp32 there."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # torch's own test suite asks the same
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def bf16_inference_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` to run under bf16 autocast, its convolution and linear weights stored in bf16: autocast
    casts fp32 weights again on every forward (3.5 ms of a 44 ms 128^2 forward on one CPU thread). The outputs
    are bit-identical (autocast casts the same weights the same way); normalisation layers keep fp32, as autocast
    runs them. The original stays fp32, for saving and training."""
    import copy

    fast = copy.deepcopy(net)
    for module in fast.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(torch.bfloat16)
    return fast


class FiLMResBlock(nn.Module):
    """GroupNorm -> FiLM(scale, shift from the motion embedding) -> SiLU -> conv, twice, plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = rearrange(self.film(emb), "b (two c) -> two b c 1 1", two=2)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class WorldNet(nn.Module):
    """Next-frame generator (see the module docstring)."""

    def __init__(self, widths: tuple[int, ...] = (48, 96, 144, 192), emb_dim: int = 256, refine: int = 32):
        super().__init__()
        self.widths = tuple(widths)
        self.motion_mlp = nn.Sequential(nn.Linear(MOTION_DIM, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim),
                                        nn.SiLU())
        self.stem = nn.Conv2d(4 * IN_CHANNELS, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, w in enumerate(widths):
            self.down_blocks.append(nn.ModuleList([FiLMResBlock(w, w, emb_dim), FiLMResBlock(w, w, emb_dim)]))
            if i + 1 < len(widths):
                self.downsample.append(nn.Conv2d(w, widths[i + 1], 3, stride=2, padding=1))
        self.mid = FiLMResBlock(widths[-1], widths[-1], emb_dim)
        self.up_blocks = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(widths) - 1)):
            self.upsample.append(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1))
            self.up_blocks.append(FiLMResBlock(2 * widths[i], widths[i], emb_dim))
        self.head = nn.Conv2d(widths[0], 4 * 16, 3, padding=1)
        self.refine = nn.Sequential(nn.Conv2d(16 + IN_CHANNELS, refine, 3, padding=1), nn.SiLU(),
                                    nn.Conv2d(refine, OUT_CHANNELS, 3, padding=1))

    def forward(self, x: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        emb = self.motion_mlp(motion)
        h = self.stem(F.pixel_unshuffle(x, 2))
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for up, block in zip(self.upsample, self.up_blocks):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        h = F.pixel_shuffle(self.head(F.silu(h)), 2)
        return self.refine(torch.cat([h, x], dim=1))


class PoseHead(nn.Module):
    """Residual camera motion (forward, up, left metres) beyond the commanded kinematics (see module doc)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(2, 16, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU())
        self.mlp = nn.Sequential(nn.Linear(64 * 16 + MOTION_DIM, hidden), nn.SiLU(), nn.Linear(hidden, 3))

    def forward(self, depth32: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        h = rearrange(self.conv(depth32), "b c h w -> b (c h w)")
        return self.mlp(torch.cat([h, motion], dim=1))


class WorldModelNet(nn.Module):
    """Both networks in one module, so one state dict / safetensors file holds the whole model."""

    def __init__(self, widths: tuple[int, ...] = (48, 96, 144, 192), emb_dim: int = 256, refine: int = 32):
        super().__init__()
        self.frame = WorldNet(widths, emb_dim, refine)
        self.pose = PoseHead()

    def forward(self, x: torch.Tensor, motion: torch.Tensor, pose_in: torch.Tensor, pose_motion: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads at once (one call, so DistributedDataParallel sees every parameter): (raw, pose)."""
        return self.frame(x, motion), self.pose(pose_in, pose_motion)
