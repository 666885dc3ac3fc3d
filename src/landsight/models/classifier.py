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
from typing import Any

import numpy as np
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
        self.features = backbone.input_module()  # normalisation + network (+ pooled stages), pooled features
        self.fc = nn.Linear(backbone.num_features, num_classes)

    @property
    def network(self) -> nn.Module:
        """The backbone network itself (inside the input normalisation and any stage pooling)."""
        from landsight.models.modules import StagePooling

        net = self.features.net
        return net.net if isinstance(net, StagePooling) else net

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
    net = classifier.network
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


HEAD_INITS = ("probe", "random")


def probe_init(
    fc: nn.Linear, X: np.ndarray, y: np.ndarray, *, C: float | str = "auto", random_state: int = 0
) -> dict[str, Any]:
    """Set a final layer to the logistic regression fitted on frozen features (a linear probe).

    Fine-tuning from a fitted head instead of a random one ("LP-FT": Kumar et al., "Fine-Tuning
    can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022) starts at
    the frozen-feature accuracy and lets the first epochs adapt the backbone rather than spend
    large, noisy gradients from a random head on it. The probe is the ``train`` head
    (:func:`landsight.models.heads.make_head`, standardised, ``C`` cross-validated by default);
    its standardisation is folded into the layer: ``W = coef / scale``, ``b = intercept - W mean``.

    Args:
        fc: The final ``nn.Linear(D, K)``; its weight and bias are overwritten.
        X: Frozen features of the training images, float32 ``(N, D)``, as the backbone computes them.
        y: Class indices ``0..K-1``, int ``(N,)``; every class present.
        C: The probe's inverse L2 strength, or ``"auto"``.
        random_state: Seed of the cross-validation folds.

    Returns:
        ``{"C": chosen C, "train_accuracy": probe accuracy on X in %}``.

    Raises:
        LandsightValueError: ``X`` / ``y`` do not match ``fc`` or a class is missing.
    """
    from landsight.models.heads import fit_head, make_head

    k = fc.out_features
    if X.ndim != 2 or X.shape[1] != fc.in_features or sorted(set(np.asarray(y).tolist())) != list(range(k)):
        raise LandsightValueError(
            f"probe_init needs features (N, {fc.in_features}) and labels covering classes 0..{k - 1}, "
            f"got {X.shape} and {sorted(set(np.asarray(y).tolist()))[:10]}"
        )
    head = make_head("logreg", C=C, standardize=True, random_state=random_state)
    fit_head(head, X, np.asarray(y))
    scaler, clf = head[0], head[-1]
    coef = np.asarray(clf.coef_, dtype=np.float64) / scaler.scale_
    intercept = np.asarray(clf.intercept_, dtype=np.float64) - coef @ scaler.mean_
    if coef.shape[0] == 1:  # binary: one logit z for class 1 == softmax over (-z/2, z/2)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(coef).to(fc.weight.dtype))
        fc.bias.copy_(torch.from_numpy(intercept).to(fc.bias.dtype))
    chosen = getattr(clf, "C_", getattr(clf, "C", C))
    return {"C": float(np.ravel(chosen)[0]), "train_accuracy": round(100 * float(head.score(X, np.asarray(y))), 2)}


def with_tta(classifier: ImageClassifier, tta: str) -> nn.Module:
    """The classifier as exported: ``tta="rot4"`` averages the features of the four rotations.

    The final layer is linear, so this equals averaging its logits over the rotations; the
    frozen-feature default (:class:`landsight.models.modules.RotationAverage`) does the same.

    Args:
        classifier: A trained :class:`ImageClassifier` (shared, not copied).
        tta: ``"none"`` or ``"rot4"``.

    Returns:
        A module mapping ``(N, H, W, C)`` uint8 to ``(N, K)`` logits.

    Raises:
        LandsightValueError: Unknown ``tta``.
    """
    from landsight.models.backbones import SUPPORTED_TTA
    from landsight.models.modules import RotationAverage
    from landsight.recipe import check_tta

    if check_tta(tta, SUPPORTED_TTA, task="classification") == "none":
        return classifier
    return nn.Sequential(RotationAverage(classifier.features), classifier.fc)
