r"""Train / val / test splits that respect space: random, spatial blocks, or named groups.

Neighbouring aerial tiles look alike (spatial autocorrelation): a random split puts tiles of the
same field, roof or lake on both sides, and the held-out accuracy measures memory of the place
rather than transfer to a new one (Roberts et al., "Cross-validation strategies for data with
temporal, spatial, hierarchical, or phylogenetic structure", Ecography 2017; Ploton et al.,
Nature Communications 2020). Three methods:

* ``"random"``: stratified by class, tile by tile (:func:`sklearn.model_selection.train_test_split`).
  On georeferenced tiles from few scenes a warning says the held-out figure is optimistic.
* ``"spatial"``: each georeferenced tile falls, by its centre, into a square block of
  ``block_size`` CRS units (metres for UTM); whole blocks go to one side
  (:class:`sklearn.model_selection.StratifiedGroupKFold`). Tiles are located from their raster
  header only (rasterio; no pixel is read).
* ``"group"``: whole groups go to one side; the group is a column of the CSV map file
  (``group="scene"`` or ``"column:scene"``) or the first capture group of a regular expression
  searched in the path (``group="regex:(m_\d+)_"``), e.g. the scene id.

:func:`assign_splits` is the single implementation: :func:`landsight.data.splitting.split_catalog`
(frozen-feature training and fine-tuning) and :func:`landsight.segment.pairs.split_pairs`
(segmentation) call it. Its :class:`SplitInfo` goes to ``bundle.json`` ``data.split``. The blocks'
geometry lives in :mod:`landsight.data.spatial_blocks`, the group ids and the split of whole
groups in :mod:`landsight.data.split_groups`.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landsight.data.spatial_blocks import GEO_EXTENSIONS, count_scenes, spatial_blocks, tile_bounds
from landsight.data.split_groups import group_split, read_groups
from landsight.errors import LandsightValueError

__all__ = ["FEW_SCENES", "SPLITS", "SplitInfo", "assign_splits"]

log = logging.getLogger(__name__)

SPLITS = ("random", "spatial", "group")
"""Split methods accepted by ``split=``."""

FEW_SCENES = 10
"""A random split over georeferenced tiles from this many scenes or fewer is warned about."""

_PROBE = 1000  # headers read at most to look for georeferenced tiles under a random split


@dataclass
class SplitInfo:
    """How a catalog was split: ``bundle.json`` ``data.split`` and the metrics report.

    Attributes:
        method: ``"random"``, ``"spatial"``, ``"group"``, or ``"given"`` (a separate test set).
        test_size: Requested held-out test fraction.
        val_size: Requested validation fraction.
        random_state: Seed.
        block_size: Spatial blocks' side in CRS units (``"spatial"`` only).
        crs: CRS of the blocks (one string per CRS met, ``"spatial"`` only).
        group: The group source (``"regex:..."`` or a column name; ``"group"`` only).
        n_groups: Blocks or groups holding at least one image (0 for ``"random"``).
        n_scenes: Scenes (connected clusters of touching georeferenced tiles) found; ``None``
            when the tiles are not georeferenced or were not looked at.
        fractions: Actual share of rows per split (``{"train": 0.8, "test": 0.2}``).
        warnings: Human-readable warnings (also emitted with :mod:`warnings` and logging).
    """

    method: str
    test_size: float = 0.0
    val_size: float = 0.0
    random_state: int = 0
    block_size: float | None = None
    crs: list[str] = field(default_factory=list)
    group: str | None = None
    n_groups: int = 0
    n_scenes: int | None = None
    fractions: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``None`` and empty entries dropped)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != [] and v != {}}

    def warn(self, message: str) -> None:
        """Record a warning here, log it and emit it as a :class:`UserWarning`."""
        self.warnings.append(message)
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def check_split_args(split: str, block_size: float | None, group: str | None) -> None:
    """Validate ``split`` / ``block_size`` / ``group`` before any work.

    Raises:
        LandsightValueError: Unknown ``split``; ``block_size`` not positive or given without
            ``split="spatial"``; ``group`` missing for ``split="group"`` or given without it; a
            ``regex:`` group that does not compile.
    """
    if split not in SPLITS:
        raise LandsightValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if block_size is not None:
        if split != "spatial":
            raise LandsightValueError(f"block_size={block_size!r} applies to split='spatial' only, got split={split!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int | float) or not block_size > 0:
            raise LandsightValueError(
                f"block_size must be a positive length in CRS units (metres for UTM), e.g. 2000; got {block_size!r}"
            )
    if split == "group" and not group:
        raise LandsightValueError(
            "split='group' needs group=: a column of the CSV map file (group='scene') or a regular "
            "expression on the path (group='regex:(m_\\d+)_')"
        )
    if group and split != "group":
        raise LandsightValueError(f"group={group!r} is used by split='group' only; pass split='group' (got {split!r})")
    if group and group.startswith("regex:"):
        try:
            re.compile(group[6:])
        except re.error as exc:
            raise LandsightValueError(f"group regular expression {group[6:]!r} does not compile: {exc}") from exc


def _probe_paths(paths: Sequence[str]) -> list[str]:
    geo = [p for p in paths if Path(str(p)).suffix.lower() in GEO_EXTENSIONS]
    if len(geo) <= _PROBE:
        return geo
    step = len(geo) / _PROBE
    return [geo[int(i * step)] for i in range(_PROBE)]


def assign_splits(
    paths: Sequence[str],
    labels: Sequence[str] | None,
    *,
    split: str = "random",
    test_size: float = 0.2,
    val_size: float = 0.0,
    random_state: int = 0,
    block_size: float | None = None,
    group: str | None = None,
    map_file: str | Path | None = None,
    warn_random: bool = True,
) -> tuple[np.ndarray, SplitInfo]:
    """Split rows into "train" / "val" / "test" by one of :data:`SPLITS` (see the module docstring).

    Args:
        paths: Absolute paths, length N.
        labels: Class labels (length N) to stratify on, or ``None`` (segmentation pairs).
        split: ``"random"``, ``"spatial"`` or ``"group"``.
        test_size: Test fraction in [0, 1).
        val_size: Validation fraction in [0, 1); ``test_size + val_size < 1``.
        random_state: Seed.
        block_size: ``"spatial"``: block side in CRS units (``None`` = from the extent).
        group: ``"group"``: ``"regex:..."`` or a map-file column name.
        map_file: The map file the catalog came from (for a group column).
        warn_random: Under ``"random"``, read up to 1000 raster headers and warn when the tiles
            are georeferenced and come from :data:`FEW_SCENES` scenes or fewer.

    Returns:
        ``(splits, info)``: ``(N,)`` object array of split names and the :class:`SplitInfo`.

    Raises:
        LandsightValueError: Bad arguments, tiles without georeferencing for ``"spatial"``, a
            group that cannot be read, too few groups, or a class too small.
    """
    check_split_args(split, block_size, group)
    info = SplitInfo(method=split, test_size=test_size, val_size=val_size, random_state=random_state)
    y = None if labels is None else np.asarray([str(v) for v in labels], dtype=object)
    if split == "random":
        if y is None:
            n = len(paths)  # whole rasters (segmentation pairs): at least one held out, one kept
            out = np.full(n, "train", dtype=object)
            order = np.random.default_rng(random_state).permutation(n)
            n_test = min(n - 1, max(1, round(test_size * n))) if test_size > 0 else 0
            n_val = min(n - 1 - n_test, max(1, round(val_size * n))) if val_size > 0 else 0
            out[order[:n_test]] = "test"
            out[order[n_test : n_test + n_val]] = "val"
        else:
            out = _random_stratified(y, test_size, val_size, random_state)
        if warn_random and (test_size > 0 or val_size > 0):
            probe = _probe_paths(paths)
            if probe:
                bounds, crs = tile_bounds(probe)
                info.n_scenes = count_scenes(bounds, crs)
                n_geo = sum(b is not None for b in bounds)
                if info.n_scenes is not None and n_geo >= 2 * info.n_scenes and info.n_scenes <= FEW_SCENES:
                    info.warn(
                        f"random split of georeferenced tiles from {info.n_scenes} scene(s): neighbouring tiles of "
                        "the same scene land in both train and test, so held-out accuracy is optimistic; use "
                        "split='spatial' (whole blocks held out) or split='group'"
                    )
    else:
        if split == "spatial":
            groups, info.block_size, tile_crs, bounds = spatial_blocks(list(paths), block_size)
            info.crs = sorted(set(tile_crs))
            info.n_scenes = count_scenes(bounds, tile_crs)
        else:
            assert group is not None
            groups = read_groups(list(paths), group, map_file=map_file)
            info.group = group
        info.n_groups = len(set(groups.tolist()))
        out = group_split(groups, y, test_size=test_size, val_size=val_size, random_state=random_state)
        if y is not None:
            lost = sorted(set(y.tolist()) - set(y[out == "train"].tolist()))
            if lost:
                raise LandsightValueError(
                    f"the {split} split left classes {lost!r} without training images (all their "
                    f"{'blocks' if split == 'spatial' else 'groups'} were held out); use a smaller block_size, "
                    "another random_state, more data, or drop the class"
                )
            for name in ("test", "val"):
                held = out == name
                if held.any():
                    missing = sorted(set(y.tolist()) - set(y[held].tolist()))
                    if missing:
                        info.warn(f"the {split} {name} split holds no images of classes {missing!r}")
    info.fractions = {s: round(float(np.mean(out == s)), 4) for s in ("train", "val", "test") if (out == s).any()}
    return out, info


def _random_stratified(labels: np.ndarray, test_size: float, val_size: float, random_state: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    out = np.full(len(labels), "train", dtype=object)
    index = np.arange(len(labels))
    rest = index
    if test_size > 0:
        rest, test_idx = train_test_split(index, test_size=test_size, stratify=labels, random_state=random_state)
        out[test_idx] = "test"
    if val_size > 0:
        _, val_idx = train_test_split(
            rest, test_size=val_size / (1 - test_size), stratify=labels[rest], random_state=random_state
        )
        out[val_idx] = "val"
    return out
