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
