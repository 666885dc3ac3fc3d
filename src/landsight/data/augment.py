"""Augmentation for aerial tiles: flips, 90-degree rotations, small colour jitter, random resized crop.

Overhead imagery has no "up", so all eight dihedral transforms are label-preserving (as in
EuroSAT and UC Merced practice); colour jitter stays small because colour carries the class
(water, vegetation). Applied per sample to a uint8 batch, on whatever device the batch is on.
"""

from __future__ import annotations

import torch
from torch import nn


class AerialAugment(nn.Module):
    """Random dihedral transform, resized crop and colour jitter, independently per sample.

    Args:
        crop_scale: Range of the crop's area fraction for the random resized crop
            (``(1.0, 1.0)`` disables it).
        brightness: Maximum relative brightness change (0.1 = +/-10 %).
        contrast: Maximum relative contrast change.

    Input and output: ``(N, H, W, C)`` uint8 tensors of the same shape.
    """

    def __init__(self, crop_scale: tuple[float, float] = (0.7, 1.0), brightness: float = 0.1, contrast: float = 0.1):
        super().__init__()
        self.crop_scale, self.brightness, self.contrast = crop_scale, brightness, contrast

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a ``(N, H, W, C)`` uint8 batch; returns the same shape and dtype."""
        from torchvision.transforms.v2 import functional as F  # noqa: N812

        n, h, w, _ = images.shape
        out = []
        for x in images.permute(0, 3, 1, 2).float():  # (C, H, W) float in 0..255
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            x = torch.rot90(x, int(torch.randint(4, ())), dims=(-2, -1))
            lo, hi = self.crop_scale
            if hi - lo > 0 or lo < 1:
                area = float(torch.empty(()).uniform_(lo, hi))
                ch, cw = max(1, round(h * area**0.5)), max(1, round(w * area**0.5))
                top, left = int(torch.randint(h - ch + 1, ())), int(torch.randint(w - cw + 1, ()))
                x = F.resized_crop(x, top, left, ch, cw, [h, w], antialias=True)
            b = 1 + float(torch.empty(()).uniform_(-self.brightness, self.brightness))
            c = 1 + float(torch.empty(()).uniform_(-self.contrast, self.contrast))
            mean = x.mean()
            x = (x - mean) * c + mean * b
            out.append(x)
        return torch.stack(out).clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
