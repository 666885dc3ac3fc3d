"""The data side of fine-tuning (:mod:`landsight.classify.finetune`): from labelled images to datasets.

This module owns everything between the labelled images and the training loop: the catalog and
its train/validation/test split (split again when unreadable images drop out), the split of the
network into a frozen trunk and a trained tail for ``retrain="fc"`` (with the backbone's pooled
stages cached in front), the one-time read of every image (the featurization of cached
``retrain="last"``, the cached output of the frozen trunk, else a decoding check), and the
training and validation datasets with the model they feed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from landsight.errors import LandsightValueError
from landsight.outputs import scratch_dir

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from landsight.models.trunk import TrunkSplit


class ImagesRead(NamedTuple):
    """What :func:`_read_once` produced.

    Attributes:
        catalog: The split catalog, of the readable images only.
        skipped: ``(path, reason)`` of unreadable images.
        features: The featurization of cached ``retrain="last"``, else None.
        trunk_out: The cached trunk output per image (cached ``retrain="fc"``), else empty.
        work: The scratch folder of the trunk cache (a ``TemporaryDirectory``), else None.
    """

    catalog: pd.DataFrame
    skipped: list[tuple[str, str]]
    features: Any
    trunk_out: dict[str, np.ndarray]
    work: Any


def _catalog_splitter(
    data: str | Path,
    test: str | Path | None,
    *,
    class_names: str | Path | None,
    test_size: float,
    val_size: float,
    random_state: int,
    split_method: str,
    block_size: float | None,
    group: str | None,
) -> tuple[pd.DataFrame, Callable[[pd.DataFrame], pd.DataFrame]]:
    """The labelled images (with the given test images appended) and the function that splits a catalog of them."""
    import pandas as pd

    from landsight.data.catalog import build_catalog, check_test_labels
    from landsight.data.splitting import split_catalog

    labelled = build_catalog(data, class_names=class_names)
    test_catalog = build_catalog(test, class_names=class_names, min_classes=1) if test is not None else None
    if test_catalog is not None:
        check_test_labels(labelled, test_catalog)

    from landsight.data.catalog import MAP_EXTENSIONS

    how = {"random_state": random_state, "split": split_method, "block_size": block_size, "group": group,
           "map_file": data if Path(data).suffix.lower() in MAP_EXTENSIONS else None}  # fmt: skip

    def split(frame: pd.DataFrame) -> pd.DataFrame:
        if test_catalog is None:
            return split_catalog(frame, test_size=test_size, val_size=val_size, **how)
        held = test_catalog[test_catalog["path"].isin(frame["path"])].assign(split="test")
        train_val = split_catalog(frame[~frame["path"].isin(held["path"])], test_size=0, val_size=val_size, **how)
        both = pd.concat([train_val, held], ignore_index=True)
        both.attrs["split"] = {**train_val.attrs.get("split", {}), "test": "given"}
        return both

    everything = labelled if test_catalog is None else pd.concat([labelled, test_catalog], ignore_index=True)
    return everything, split


def _read_once(
    catalog: pd.DataFrame,
    everything: pd.DataFrame,
    split: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    classes: list[str],
    backbone: Any,
    use_cache: bool,
    split_net: TrunkSplit | None,
    progress: bool,
) -> ImagesRead:
    """Read every image once before training; split again without the unreadable ones.

    Unreadable images are reported and left out, so no worker fails mid-epoch. For cached
    ``retrain="last"`` this pass is the featurization itself, for a cached trunk the trunk's pass
    over the training and validation images.

    Raises:
        LandsightValueError: The training or validation split lacks a class once the unreadable
            images are left out.
    """
    from landsight.classify.featurize import featurize

    bb = backbone
    feats = featurize(list(catalog["path"]), bb, num_workers=2, progress=progress, cache=True) if use_cache else None
    trunk_out: dict[str, np.ndarray] = {}
    work = scratch_dir("trunk") if split_net is not None else None

    def cache_views(paths: list[str]) -> list[tuple[str, str]]:
        from landsight.models.trunk import cache_trunk
        from landsight.progress import progress_bar

        assert split_net is not None and work is not None
        todo = [p for p in paths if p not in trunk_out]
        with progress_bar(len(todo), "frozen trunk, 4 rotations", enabled=progress) as bar:
            out, failed = cache_trunk(split_net.cached, todo, bb.preprocessing, Path(work.name), progress=bar.advance)
        trunk_out.update(out)
        return failed

    if feats is not None:
        skipped = feats.failures
    elif split_net is not None:
        fitted_paths = list(catalog.loc[catalog["split"] != "test", "path"])
        skipped = cache_views(fitted_paths) + _scan(list(catalog.loc[catalog["split"] == "test", "path"]),
                                                    bb.preprocessing, progress)  # fmt: skip
    else:
        skipped = _scan(list(catalog["path"]), bb.preprocessing, progress)
    bad = {p for p, _ in skipped}
    if bad:  # split the readable images only, so no class loses its validation or test images to bad files
        catalog = split(everything[~everything["path"].isin(bad)].reset_index(drop=True))
        if split_net is not None:  # images that moved out of the test split
            skipped += cache_views(list(catalog.loc[catalog["split"] != "test", "path"]))
    for part in ("train", "val"):
        missing = sorted(set(classes) - set(catalog.loc[catalog["split"] == part, "label"]))
        if missing:
            raise LandsightValueError(
                f"after skipping {len(skipped)} unreadable image(s) the {part} split lacks classes {missing!r}; "
                f"add readable images (first reasons: {skipped[:3]!r})"
            )
    return ImagesRead(catalog, skipped, feats, trunk_out, work)


def _datasets(
    parts: dict[str, pd.DataFrame],
    index: dict[str, int],
    labels: Callable[[str], torch.Tensor],
    read: ImagesRead,
    *,
    classifier: Any,
    backbone: Any,
    split_net: TrunkSplit | None,
    augment: bool,
    batch_size: int,
    num_workers: int,
    notices: list[str],
) -> tuple[Any, Any, torch.nn.Module, Any, dict[str, Any]]:
    """The training and validation datasets, the model they feed, its augmentation and the loader arguments.

    Cached features feed the final layer, a cached trunk the trained tail (augmented by its
    rotations), else the images the whole classifier (augmented by ``augment``). What the run trains
    on is appended to ``notices``.
    """
    import torch

    from landsight.data.augment import AerialAugment
    from landsight.data.dataset import ImageDataset, TensorDictDataset

    loader_args: dict[str, Any] = {"batch_size": batch_size}
    augment_fn: Any = AerialAugment() if augment else None
    if read.features is not None:
        feats = read.features
        row_of = {p: i for i, p in enumerate(feats.paths)}

        def tensors(split: str) -> TensorDictDataset:
            rows = [row_of[p] for p in parts[split]["path"]]
            return TensorDictDataset(image=torch.from_numpy(feats.X[rows]), label=labels(split))

        train_set, val_set = tensors("train"), tensors("val")
        model: torch.nn.Module = classifier.fc
        notices.append("retrain='last' on cached features: the backbone runs once, augmentation is off")
    elif split_net is not None:
        from landsight.models.trunk import CachedTail, random_view

        def views(split: str) -> TensorDictDataset:
            stacked = np.stack([read.trunk_out[p] for p in parts[split]["path"]])
            return TensorDictDataset(image=torch.from_numpy(stacked), label=labels(split))

        train_set, val_set = views("train"), views("val")
        model = CachedTail(split_net.tail, classifier.fc, pooled=split_net.pooled, shape=split_net.shape)
        augment_fn = random_view
        notices.append("retrain='fc' on a cached frozen trunk: augmentation is the 4 rotations")
    else:
        train_set, val_set = (
            ImageDataset(list(parts[s]["path"]), [index[c] for c in parts[s]["label"]], backbone.preprocessing)
            for s in ("train", "val")
        )
        model = classifier
        loader_args.update(num_workers=num_workers, persistent_workers=num_workers > 0)
    return train_set, val_set, model, augment_fn, loader_args


def _probe_features(
    model: torch.nn.Module,
    train_set: Any,
    train_paths: list[str],
    *,
    backbone: Any,
    split_net: TrunkSplit | None,
    progress: bool,
) -> np.ndarray:
    """The frozen features of the training images that the probe-initialised final layer is fitted on."""
    import torch
    from torch.utils.data import DataLoader

    if isinstance(model, torch.nn.Linear):
        return train_set.tensors["image"].numpy()
    if split_net is not None:  # the rotation-averaged features the exported rot4 graph computes
        with torch.no_grad():
            split_net.tail.eval()
            return torch.cat([model.features(b["image"]) for b in DataLoader(train_set, batch_size=64)]).numpy()
    from landsight.classify.featurize import featurize

    frozen = featurize(train_paths, backbone, num_workers=2, progress=progress, cache=True)
    row_of_path = {str(p): i for i, p in enumerate(frozen.paths)}
    return frozen.X[[row_of_path[p] for p in train_paths]]


def _trunk_and_tail(classifier: Any, backbone: Any) -> TrunkSplit | None:
    """The frozen trunk and trained tail of ``retrain="fc"`` (:func:`landsight.models.trunk.split_trunk`), or None.

    The trunk's own output is what gets cached (no pooled stages yet: :func:`_with_cached_stages`).
    """
    import torch

    from landsight.models.classifier import fc_block_prefix
    from landsight.models.trunk import TrunkSplit, split_trunk

    net = classifier.network.eval()
    try:
        prefix = fc_block_prefix(net)
    except LandsightValueError:
        return None
    h, w = backbone.preprocessing.input_size
    example = torch.randn(2, len(backbone.preprocessing.mean), h, w, generator=torch.Generator().manual_seed(0))
    split = split_trunk(net, prefix, example)
    if split is None:
        return None
    with torch.no_grad():
        shape = tuple(split[0](example[:1]).shape[1:])
    return TrunkSplit(split[0], split[1], split[0], 0, shape)


def _with_cached_stages(split: TrunkSplit, classifier: Any, backbone: Any) -> TrunkSplit | None:
    """The trunk split with the backbone's pooled stages cached in front of the activations, or None.

    None when a stage is not inside the frozen trunk (its output would change during training).
    """
    import math

    import torch

    from landsight.models.trunk import TrunkStages

    trunk, shape = split.trunk, split.shape
    inside = {id(m) for m in trunk.modules()}
    stages = [classifier.network.get_submodule(name) for name in backbone.stages]
    if not all(id(m) in inside for m in stages):
        return None
    cached = TrunkStages(trunk, stages)
    h, w = backbone.preprocessing.input_size
    with torch.no_grad():
        width = int(cached(torch.zeros(1, len(backbone.preprocessing.mean), h, w)).shape[1])
    return split._replace(cached=cached, pooled=width - math.prod(shape))


def _scan(paths: list[str], preprocessing: Any, progress: bool) -> list[tuple[str, str]]:
    """Decode every image once; return ``(path, reason)`` of the unreadable ones."""
    from landsight.data.loader import iter_batches
    from landsight.progress import progress_bar

    failures: list[tuple[str, str]] = []
    with progress_bar(len(paths), "check images", enabled=progress) as bar:
        for batch in iter_batches(paths, preprocessing, batch_size=64):
            failures += [(it.path, it.error) for it in batch.items if it.error]
            bar.advance(len(batch.items))
    return failures
