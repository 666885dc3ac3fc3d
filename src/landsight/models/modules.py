"""Small torch modules shared by featurization, fine-tuning and export (importable, so picklable)."""

from __future__ import annotations

import torch
from torch import nn


class ImageInput(nn.Module):
    """Wrap a network so it takes the resized uint8 image, as every landsight ONNX graph does.

    Args:
        net: Network taking normalised float32 ``(N, C, H, W)``.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.

    Input ``(N, H, W, C)`` uint8; it is cast, scaled to [0, 1], normalised ``(x - mean) / std``
    and transposed to NCHW before ``net``.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Normalise and run ``net``: ``(N, H, W, C)`` uint8 -> ``net``'s output."""
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return self.net((x - self.mean) / self.std)


class RotationAverage(nn.Module):
    """Average a network's features over the four 90-degree rotations of each image.

    Overhead tiles have no "up", so the rotated views are equally valid; averaging their pooled
    features makes them rotation-invariant (measured +1.7 points of logistic-regression accuracy
    on EuroSAT and +2.6 on UC Merced: ``benchmarks/RESULTS.md``), at 4x the compute.

    Args:
        net: Module mapping ``(N, H, W, C)`` uint8 (square H = W) to ``(N, D)`` features.

    Input ``(N, H, W, C)`` uint8; output ``(N, D)`` float32.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Features of the four rotations, averaged: one forward pass over a 4N batch."""
        n = image.shape[0]
        turned = image.transpose(1, 2)  # rotations as flips and a transpose (ONNX has no rot90)
        views = torch.cat([image, turned.flip(1), image.flip(1).flip(2), turned.flip(2)], dim=0)
        return self.net(views).reshape(4, n, -1).mean(dim=0)
