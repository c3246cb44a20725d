"""A patch-adversarial loss for the pixels the model must invent (training only: no cost at inference).

L1 on a view the model cannot know paints the mean of the possible views: fog where the world has tiles, trees
and windows. A small patch discriminator (PatchGAN, spectral norm, hinge loss) tells patches of true frames
from patches of generated ones; the model is pushed towards patches it cannot tell apart *where it generates*
(the generation weight of its blend, so copied pixels are left to the copy). Both see colour and normalised
log depth (0 where there is no surface), so a generated patch must look like the world in both. Given the
model's inputs too (``condition_channels``, pix2pix-style), it judges a patch against what the cache, the last
frame and the ray map show around it: a building the cache shows half of must go on, not turn into grass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """rgb (B, 3, H, W) in [0, 1], normalised log depth (B, 1, H, W) [, condition (B, condition_channels, H, W):
    the model's inputs] -> (B, 1, H/8, W/8) realness logits; each output sees a 54x54-pixel patch (0.7M
    parameters at width 48)."""

    IMAGE_CHANNELS = 4  # rgb + normalised log depth, before the condition channels

    def __init__(self, width: int = 48, condition_channels: int = 0):
        super().__init__()
        w = width
        self.condition_channels = condition_channels
        self.layers = nn.Sequential(
            spectral_norm(nn.Conv2d(self.IMAGE_CHANNELS + condition_channels, w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 1, 3, 1, 1)))

    @classmethod
    def condition_channels_of(cls, state: dict[str, torch.Tensor]) -> int:
        """The ``condition_channels`` a saved state dict of this discriminator was built with."""
        return state["layers.0.parametrizations.weight.original"].shape[1] - cls.IMAGE_CHANNELS

    def forward(self, rgb: torch.Tensor, logd: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        given = 0 if condition is None else condition.shape[1]
        if given != self.condition_channels:
            raise ValueError(f"the discriminator takes {self.condition_channels} condition channels, got {given}")
        parts = [rgb * 2 - 1, logd] + ([] if condition is None else [condition])
        return self.layers(torch.cat(parts, dim=1))


def patch_weights(pixel_weight: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) per-pixel weight -> its mean over each output's stride cell, (B, 1, h, w) like ``logits``."""
    return F.adaptive_avg_pool2d(pixel_weight.float(), logits.shape[-2:])


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, fake_weight: torch.Tensor
                       ) -> torch.Tensor:
    """Hinge loss: every true patch is real; generated patches count by the share of generated pixels in them."""
    real = F.relu(1 - real_logits.float()).mean()
    fake = (F.relu(1 + fake_logits.float()) * fake_weight).sum() / fake_weight.sum().clamp_min(1e-6)
    return real + fake


def generator_loss(fake_logits: torch.Tensor, fake_weight: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss over the generated patches (weighted by their share of generated pixels)."""
    return -(fake_logits.float() * fake_weight).sum() / fake_weight.sum().clamp_min(1e-6)
