"""Fine-tuning the last stage on a cached frozen trunk: the frozen layers run once per rotated view.

At retraining depth ``fc`` (:mod:`landsight.models.classifier`) everything before the last
stage is frozen, and for EfficientNet-Lite that trunk is about nine tenths of the network's
compute. Its output does not change during training, so it is computed once, for each of the
four 90-degree rotations of every image (the label-preserving augmentation of overhead imagery
that needs no new pixels), kept in memory as float16, and every epoch trains only the last
stage and the final layer on it: a random rotation per image and epoch in training, the four
averaged in validation, as the exported ``rot4`` graph scores. This is TensorFlow's "bottleneck"
caching of ``retrain.py`` (Donahue et al., "DeCAF", ICML 2014, for cached frozen features),
moved one stage down so that the stage still learns.

Pooled intermediate stages inside the trunk (``stages``, :class:`TrunkStages`) are cached with
it, in front of the flattened activations, so the final layer sees the same features as the
frozen-feature default's head.

The split is taken from the network's own module order (``children`` up to the stage's
parent ``nn.Sequential``) and checked numerically against the whole network before use;
architectures where that order is not the forward order are trained on images instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from landsight.models.modules import pooled_outputs

VIEWS = 4  # the four 90-degree rotations


def split_trunk(net: nn.Module, prefix: str, example: torch.Tensor) -> tuple[nn.Module, nn.Module] | None:
    """Split a backbone into a frozen trunk and the trained tail starting at module ``prefix``.

    Args:
        net: A timm backbone without classifier (``num_classes=0``) in eval mode, mapping
            normalised float32 ``(N, C, H, W)`` to pooled features ``(N, D)``.
        prefix: The first trained module, ``"blocks.6"`` style (a child of a top-level
            ``nn.Sequential``) or a top-level child's name.
        example: A normalised float32 input ``(N, C, H, W)`` for the numerical check.

    Returns:
        ``(trunk, tail)`` sharing ``net``'s modules, with ``tail(trunk(x)) == net(x)`` (checked
        on ``example``, 1e-4 relative), or ``None`` when the network is not a plain sequence of
        its children there.
    """
    parts = prefix.split(".")
    children = list(net.named_children())
    names = [n for n, _ in children]
    if parts[0] not in names or len(parts) > 2:
        return None
    at = names.index(parts[0])
    head, rest = [m for _, m in children[:at]], [m for _, m in children[at + 1 :]]
    stage = children[at][1]
    if len(parts) == 2:
        if not isinstance(stage, nn.Sequential) or not re.fullmatch(r"\d+", parts[1]):
            return None
        k = int(parts[1])
        trunk = nn.Sequential(*head, *stage[:k])
        tail = nn.Sequential(*stage[k:], *rest)
    else:
        trunk, tail = nn.Sequential(*head), nn.Sequential(stage, *rest)
    try:
        with torch.no_grad():
            whole, split = net(example), tail(trunk(example))
    except Exception:  # noqa: BLE001  (children that are not a forward sequence)
        return None
    if whole.shape != split.shape or not torch.allclose(whole, split, rtol=1e-4, atol=1e-4 * float(whole.abs().max())):
        return None
    return trunk, tail


class TrunkSplit(NamedTuple):
    """A network split for fine-tuning on a cached trunk.

    Attributes:
        trunk: The frozen layers, normalised float32 ``(N, C, H, W)`` -> ``(N, C', H', W')``.
        tail: The trained layers, trunk output -> pooled features ``(N, D)``.
        cached: The module whose output is cached: ``trunk``, or :class:`TrunkStages` around it.
        pooled: ``P``, pooled stage values in front of the cached activations (0: none).
        shape: ``(C', H', W')`` of the trunk's activations.
    """

    trunk: nn.Module
    tail: nn.Module
    cached: nn.Module
    pooled: int
    shape: tuple[int, ...]


class TrunkStages(nn.Module):
    """The trunk with pooled intermediate stages, as one flat row per image (for the trunk cache).

    Args:
        trunk: Normalised float32 ``(N, C, H, W)`` -> activations ``(N, C', H', W')``.
        stages: Submodules of ``trunk`` whose outputs are pooled, as
            :class:`landsight.models.modules.StagePooling` pools them for the whole network.

    Output ``(N, P + C' * H' * W')``: the pooled stages (``P`` values, execution order), then the
    flattened activations.
    """

    def __init__(self, trunk: nn.Module, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        self.trunk, self.stages = trunk, list(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled stages and flattened activations, ``(N, P + C' * H' * W')``."""
        with pooled_outputs(self.stages) as pooled:
            out = self.trunk(x)
        return torch.cat([*pooled, out.flatten(1)], dim=1)


class CachedTail(nn.Module):
    """The trained tail and final layer over cached trunk outputs.

    Args:
        tail: Trunk output -> pooled features ``(N, D)``.
        fc: The final ``nn.Linear(P + D, K)``.
        pooled: ``P``, the pooled stage values cached in front of the activations
            (:class:`TrunkStages`; 0 = plain activations).
        shape: ``(C', H', W')`` of the activations when ``pooled`` > 0.

    Input, ``pooled`` = 0: float ``(N, C', H', W')`` (one view per image, training) or
    ``(N, V, C', H', W')`` (every view: features averaged over them, as the ``rot4`` graph does);
    ``pooled`` > 0: flat rows ``(N, P + C' * H' * W')`` or ``(N, V, P + C' * H' * W')``.
    Output ``(N, K)`` logits; the features are the pooled stages, then the tail's.
    """

    def __init__(self, tail: nn.Module, fc: nn.Linear, *, pooled: int = 0, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.tail, self.fc = tail, fc
        self.pooled, self.shape = pooled, tuple(shape)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, averaged over views when ``x`` has a view axis: ``(N, P + D)`` float32."""
        views = x.ndim == (3 if self.pooled else 5)
        n, v = x.shape[:2]
        x = (x.flatten(0, 1) if views else x).float()
        if self.pooled:
            stages, x = x[:, : self.pooled], x[:, self.pooled :].reshape(-1, *self.shape)
            feats = torch.cat([stages, self.tail(x)], dim=1)
        else:
            feats = self.tail(x)
        return feats.reshape(n, v, -1).mean(dim=1) if views else feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)``."""
        return self.fc(self.features(x))


def random_view(x: torch.Tensor) -> torch.Tensor:
    """Training augmentation on cached views: one random rotation per image, ``(N, V, ...) -> (N, ...)``."""
    pick = torch.randint(x.shape[1], (x.shape[0],), device=x.device)
    return x[torch.arange(x.shape[0], device=x.device), pick]


def cache_trunk(
    trunk: nn.Module,
    paths: Sequence[str],
    preprocessing: Any,
    work: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Trunk outputs of the four rotations of each image, through onnxruntime.

    Args:
        trunk: Normalised float32 ``(N, C, H, W)`` -> activations (or :class:`TrunkStages`' flat
            rows); exported with the uint8 input normalisation
            (:class:`landsight.models.modules.ImageInput`) to ``work``.
        paths: Image files.
        preprocessing: The backbone's :class:`landsight.data.preprocessing.Preprocessing`.
        work: Scratch folder for the exported trunk.
        progress: Called with the number of images done after each batch.

    Returns:
        ``({path: float16 (4, *trunk output)}, [(path, reason) of unreadable images])``. Memory:
        4 x C' x H' x W' x 2 bytes per image (lite0 at 224 px: 75 KB; pooled stages add 4 x P).
    """
    from landsight.data.loader import iter_batches
    from landsight.models.modules import ImageInput
    from landsight.models.onnx_graph import export_image_model
    from landsight.runtime import OnnxModel

    graph = export_image_model(
        ImageInput(trunk, preprocessing.mean, preprocessing.std).eval(), preprocessing, work / "trunk.onnx", "trunk"
    )
    model = OnnxModel(graph, device="cpu")
    cached: dict[str, np.ndarray] = {}
    failures: list[tuple[str, str]] = []
    for batch in iter_batches(list(paths), preprocessing, batch_size=16):
        failures += [(it.path, it.error) for it in batch.items if it.error]
        idx, stack = batch.stack()
        if stack is not None:
            views = np.concatenate([np.rot90(stack, k, axes=(1, 2)) for k in range(VIEWS)])
            out = np.asarray(model(np.ascontiguousarray(views)), dtype=np.float16)
            out = out.reshape(VIEWS, len(idx), *out.shape[1:]).swapaxes(0, 1)
            for j, i in enumerate(idx):
                cached[batch.items[i].path] = out[j]
        if progress is not None:
            progress(len(batch.items))
    return cached, failures
