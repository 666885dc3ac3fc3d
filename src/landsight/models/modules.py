"""Small torch modules shared by featurization, fine-tuning and export (importable, so picklable)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def pooled_outputs(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Collect the global-average-pooled output of each module while the block runs (forward hooks).

    Args:
        modules: Modules whose outputs are ``(N, C_i, H_i, W_i)`` feature maps.

    Yields:
        A list that fills with one ``(N, C_i)`` float32 tensor per module call, in execution order.
    """
    pooled: list[torch.Tensor] = []

    def pool(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        pooled.append(output.mean(dim=(2, 3)))

    handles = [module.register_forward_hook(pool) for module in modules]
    try:
        yield pooled
    finally:
        for handle in handles:
            handle.remove()


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


class StagePooling(nn.Module):
    """Concatenate the global-average-pooled outputs of intermediate stages with a net's features.

    Mid-level stages of an ImageNet CNN carry texture and pattern detail that the last stage has
    partly abstracted away, and aerial land-use classes (crops, forest, water, built-up) are
    largely texture: pooling them next to the final features is multi-layer feature fusion
    (Hariharan et al., "Hypercolumns", CVPR 2015; Yosinski et al., NeurIPS 2014 on the
    transferability of features by depth). For ``tf_efficientnet_lite0`` with ``blocks.3-5``
    (80 + 112 + 192 channels) a logistic-regression head gains +0.9 points on EuroSAT, +0.2 on
    UC Merced and +1.9 on Dubai chips over the final 1280 features alone (rot4, 5 splits:
    ``benchmarks/RESULTS.md``).

    Args:
        net: Network taking ``(N, C, H, W)`` float32 and returning pooled ``(N, D)`` features.
        stages: Names of submodules of ``net`` (``named_modules`` keys, e.g. ``"blocks.4"``)
            whose outputs are ``(N, C_i, H_i, W_i)`` feature maps.

    Input ``(N, C, H, W)`` float32; output ``(N, sum(C_i) + D)`` float32: the pooled stages in
    execution order, then ``net``'s own features.
    """

    def __init__(self, net: nn.Module, stages: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self.stages = tuple(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``net`` once, pooling each stage's output on the way (:func:`pooled_outputs`)."""
        with pooled_outputs([self.net.get_submodule(name) for name in self.stages]) as pooled:
            final = self.net(x)
        return torch.cat([*pooled, final], dim=1)
