"""A fine-tunable image classifier: pretrained backbone + a new final layer, at a retraining depth.

Retraining depth (CNTK's ``last_only`` / ``fully_connected`` / ``all``):

* ``last``: only the new final linear layer learns; the backbone is frozen.
* ``fc``: the fully connected block and the new final layer. Networks that have one keep its
  name: torchvision AlexNet's ``classifier`` (fc6, fc7). Networks without one (ResNet,
  EfficientNet, ConvNeXt, most timm models) train their **last stage and everything after it**
  (the head convolution and its norm) plus the final layer: timm's ``feature_info[-1]`` stage
  (``layer4`` of ResNet, ``blocks.6`` + ``conv_head`` + ``bn2`` of EfficientNet-Lite),
  torchvision ResNet's ``layer4``.
* ``all``: every layer; the backbone learns at ``lr * backbone_lr_mult`` (discriminative
  learning rates, Howard & Ruder, ULMFiT, ACL 2018), the final layer at ``lr``.

BatchNorm layers of frozen parts stay in eval mode, so their running statistics do not drift.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from landsight.errors import LandsightValueError
from landsight.models.backbones import Backbone

RETRAIN_DEPTHS = ("last", "fc", "all")
def fc_block_prefix(model: nn.Module) -> str:
    """Name of the module where the ``fc`` retraining depth starts (see the module docstring).

    Args:
        model: A timm or torchvision backbone.

    Returns:
        Parameter-name prefix; it and every parameter after it are trained at depth ``fc``.

    Raises:
        LandsightValueError: The architecture has neither a classifier block nor stages.
    """
    if isinstance(getattr(model, "classifier", None), nn.Sequential) and any(
        isinstance(m, nn.Linear) for m in model.classifier
    ):
        return "classifier"
    info = getattr(model, "feature_info", None)
    if info is not None:
        entry = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return str(entry["module"])
    if hasattr(model, "layer4"):
        return "layer4"
    raise LandsightValueError(
        f"cannot find the fully connected block or last stage of {type(model).__name__}; use retrain='last' or 'all'"
    )


class ImageClassifier(nn.Module):
    """Backbone + final linear layer, taking the resized uint8 image.

    Args:
        backbone: A :class:`landsight.models.backbones.Backbone`.
        num_classes: Output classes K.

    Input ``(N, H, W, C)`` uint8; output ``(N, K)`` logits.
    """

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.features = backbone.input_module()  # normalisation + network, pooled features
        self.fc = nn.Linear(backbone.num_features, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` uint8 -> ``(N, K)`` logits."""
        return self.fc(self.features(image))


class Probabilities(nn.Module):
    """Softmax over a classifier's logits: the graph exported into the bundle."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` uint8 -> ``(N, K)`` probabilities."""
        return torch.softmax(self.classifier(image), dim=1)


def trainable_parameters(classifier: ImageClassifier, retrain: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Freeze according to ``retrain``; return (backbone parameters that learn, final-layer parameters).

    Raises:
        LandsightValueError: Unknown ``retrain``.
    """
    if retrain not in RETRAIN_DEPTHS:
        raise LandsightValueError(f"retrain must be one of {list(RETRAIN_DEPTHS)}, got {retrain!r}")
    net = classifier.features.net
    names = [n for n, _ in net.named_parameters()]
    if retrain == "all":
        start = 0
    elif retrain == "fc":
        prefix = fc_block_prefix(net)
        start = next(i for i, n in enumerate(names) if re.match(rf"{re.escape(prefix)}(\.|$)", n))
    else:
        start = len(names)
    learn = []
    for i, (_, p) in enumerate(net.named_parameters()):
        p.requires_grad_(i >= start)
        if i >= start:
            learn.append(p)
    return learn, list(classifier.fc.parameters())
