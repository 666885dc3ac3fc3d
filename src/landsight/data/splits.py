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
(segmentation) call it. Its :class:`SplitInfo` goes to ``bundle.json`` ``data.split``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError

__all__ = [
    "FEW_SCENES",
    "GEO_EXTENSIONS",
    "PATH_HEADERS",
    "SPLITS",
    "SplitInfo",
    "assign_splits",
    "default_block_size",
    "group_split",
    "read_groups",
    "spatial_blocks",
    "tile_bounds",
]

log = logging.getLogger(__name__)

SPLITS = ("random", "spatial", "group")
"""Split methods accepted by ``split=``."""

GEO_EXTENSIONS = frozenset({".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc", ".hdf"})
"""Extensions whose headers may carry a CRS; other files (JPEG, PNG) are taken as not georeferenced."""

FEW_SCENES = 10
"""A random split over georeferenced tiles from this many scenes or fewer is warned about."""

TARGET_BLOCKS = 16
"""The default ``block_size`` is the largest 1-2-5 value giving at least this many occupied blocks."""

PATH_HEADERS = frozenset({"path", "file", "filename", "filepath", "image", "image_path"})
"""Header names of the path column of a map file (shared with :mod:`landsight.data.catalog`)."""

_PROBE = 1000  # headers read at most to look for georeferenced tiles under a random split

Bounds = tuple[float, float, float, float]


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


def tile_bounds(paths: Sequence[str]) -> tuple[list[Bounds | None], list[str | None]]:
    """Read the bounds and CRS of rasters from their headers (no pixel is read).

    Args:
        paths: Image paths; only those with a :data:`GEO_EXTENSIONS` extension are opened.

    Returns:
        ``(bounds, crs)``: per path ``(left, bottom, right, top)`` in CRS units and the CRS as a
        string (``"EPSG:26917"`` or WKT), or ``None`` for both when the file has no CRS, no
        georeferencing transform, or cannot be opened.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    bounds: list[Bounds | None] = []
    crs: list[str | None] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for p in paths:
            b = c = None
            if Path(str(p)).suffix.lower() in GEO_EXTENSIONS:
                try:
                    with rasterio.open(p) as src:
                        if src.crs is not None and not src.transform.is_identity:
                            b = tuple(float(v) for v in src.bounds)
                            c = src.crs.to_string()
                except (RasterioIOError, OSError, ValueError):
                    pass
            bounds.append(b)  # type: ignore[arg-type]
            crs.append(c)
    return bounds, crs


def _nice_sizes(largest: float) -> list[float]:
    """1-2-5 sequence from ``largest`` downwards (``[5000, 2000, 1000, 500, ...]``)."""
    exp = math.floor(math.log10(largest)) if largest > 0 else 0
    out = []
    for e in range(exp, exp - 12, -1):
        out += [m * 10.0**e for m in (5, 2, 1) if m * 10.0**e <= largest]
    return out


def _block_ids(bounds: Sequence[Bounds], crs: Sequence[str], size: float) -> list[str]:
    ids = []
    for (left, bottom, right, top), c in zip(bounds, crs, strict=True):
        cx, cy = (left + right) / 2, (bottom + top) / 2
        ids.append(f"{c}|{math.floor(cx / size)}|{math.floor(cy / size)}")
    return ids


def default_block_size(bounds: Sequence[Bounds], crs: Sequence[str], *, target: int = TARGET_BLOCKS) -> float:
    """Choose a block side from the tiles' extent.

    The largest value of the 1-2-5 sequence (..., 500, 1000, 2000, 5000, ... CRS units) that
    puts the tiles into at least ``target`` occupied blocks, but never smaller than the median
    tile side (a block smaller than a tile would not keep neighbours together).

    Args:
        bounds: Per tile ``(left, bottom, right, top)``.
        crs: Per tile CRS string.
        target: Wanted number of occupied blocks.

    Returns:
        Block side in CRS units.
    """
    arr = np.asarray(bounds, dtype=float)
    tile_side = float(np.median(np.maximum(arr[:, 2] - arr[:, 0], arr[:, 3] - arr[:, 1])))
    extent = float(max(arr[:, 2].max() - arr[:, 0].min(), arr[:, 3].max() - arr[:, 1].min()))
    chosen = None
    for size in _nice_sizes(max(extent, tile_side)):
        if size < tile_side:
            break
        chosen = size
        if len(set(_block_ids(bounds, crs, size))) >= target:
            break
    return chosen if chosen is not None else max(tile_side, 1e-9)


def spatial_blocks(
    paths: Sequence[str], block_size: float | None = None
) -> tuple[np.ndarray, float, list[str], list[Bounds]]:
    """Group georeferenced tiles into square blocks by their centres.

    Args:
        paths: Raster paths (GeoTIFF tiles, e.g. from :func:`landsight.data.tiling.cut_tiles`).
        block_size: Block side in CRS units; ``None`` = :func:`default_block_size`.

    Returns:
        ``(groups, block_size, crs, bounds)``: per path a block id (str, object array of shape
        ``(N,)``: ``"<crs>|<column>|<row>"``), the block side used, and per path the CRS string
        and ``(left, bottom, right, top)`` bounds.

    Raises:
        LandsightValueError: A path is not georeferenced (no CRS or transform).
    """
    bounds, crs = tile_bounds(paths)
    missing = [p for p, b in zip(paths, bounds, strict=True) if b is None]
    if missing:
        raise LandsightValueError(
            f"split='spatial' needs georeferenced rasters (GeoTIFF with a CRS), but {len(missing)} of "
            f"{len(paths)} have none, e.g. {missing[:3]!r}; use split='group' (group='regex:...' on the "
            "scene id in the path, or a column of the map file) or split='random'"
        )
    geo_bounds = [b for b in bounds if b is not None]
    geo_crs = [c or "" for c in crs]
    size = float(block_size) if block_size is not None else default_block_size(geo_bounds, geo_crs)
    return np.asarray(_block_ids(geo_bounds, geo_crs, size), dtype=object), size, geo_crs, geo_bounds


def read_groups(paths: Sequence[str], group: str, *, map_file: str | Path | None = None) -> np.ndarray:
    """Group ids of paths from a regular expression or a column of the CSV map file.

    Args:
        paths: Absolute image paths (as in a catalog).
        group: ``"regex:PATTERN"``: the first capture group of ``re.search(PATTERN, path)`` (the
            whole match without a group); ``"column:NAME"`` or ``"NAME"``: column ``NAME`` of
            ``map_file`` (a CSV/TSV with a header naming the path column and ``NAME``).
        map_file: The catalog's map file (needed for a column).

    Returns:
        ``(N,)`` object array of group ids (str).

    Raises:
        LandsightValueError: The regex does not match a path, the data is not a map file, the
            column is missing, or a path has no row.
    """
    if group.startswith("regex:"):
        pattern = re.compile(group[6:])
        out = []
        for p in paths:
            m = pattern.search(str(p))
            if m is None:
                raise LandsightValueError(
                    f"group regular expression {pattern.pattern!r} does not match path {str(p)!r}; "
                    "write one that matches every path (its first capture group is the group id)"
                )
            out.append(m.group(1) if m.groups() else m.group(0))
        return np.asarray(out, dtype=object)
    column = group.removeprefix("column:")
    if map_file is None or not Path(map_file).is_file():
        raise LandsightValueError(
            f"group={group!r} names a column of a CSV map file, but the data {str(map_file)!r} is not a map "
            "file; pass a map file with a header such as 'path,label,scene', or use group='regex:...'"
        )
    import pandas as pd

    table = pd.read_csv(map_file, sep=None, engine="python", dtype=str, comment="#")
    lower = {c.strip().lower(): c for c in table.columns}
    path_col = next((lower[h] for h in lower if h in PATH_HEADERS), None)
    col = lower.get(column.strip().lower())
    if path_col is None or col is None:
        raise LandsightValueError(
            f"map file {str(map_file)!r} has columns {list(table.columns)!r}; group column {column!r} "
            f"{'and a path column ' if path_col is None else ''}not found; add a header row like 'path,label,{column}'"
        )
    base = Path(map_file).parent
    lookup = {os.path.abspath(base / Path(str(p)).expanduser()): str(g) for p, g in zip(table[path_col], table[col],
                                                                                       strict=True)}  # fmt: skip
    missing = [p for p in paths if p not in lookup]
    if missing:
        raise LandsightValueError(f"map file {str(map_file)!r} gives no {column!r} for {missing[:3]!r}")
    empty = [p for p in paths if lookup[p] in ("", "nan")]
    if empty:
        raise LandsightValueError(f"map file {str(map_file)!r} column {column!r} is empty for {empty[:3]!r}")
    return np.asarray([lookup[p] for p in paths], dtype=object)


def count_scenes(bounds: Sequence[Bounds | None], crs: Sequence[str | None]) -> int | None:
    """Count scenes: clusters of georeferenced tiles that touch or overlap (gap below one tile side).

    Args:
        bounds: Per tile bounds or ``None``.
        crs: Per tile CRS or ``None``.

    Returns:
        The number of clusters, or ``None`` when no tile is georeferenced.
    """
    items = [(b, c) for b, c in zip(bounds, crs, strict=True) if b is not None]
    if not items:
        return None
    arr = np.asarray([b for b, _ in items], dtype=float)
    pad = float(np.median(np.maximum(arr[:, 2] - arr[:, 0], arr[:, 3] - arr[:, 1]))) / 2
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Sort by left edge and sweep: only tiles whose x ranges (padded) overlap can touch.
    order = np.argsort(arr[:, 0])
    active: list[int] = []
    for i in order:
        active = [j for j in active if arr[j, 2] + pad >= arr[i, 0] - pad]
        for j in active:
            if items[i][1] == items[j][1] and arr[j, 1] - pad <= arr[i, 3] + pad and arr[i, 1] - pad <= arr[j, 3] + pad:
                parent[find(i)] = find(j)
        active.append(int(i))
    return len({find(i) for i in range(len(items))})


def _probe_paths(paths: Sequence[str]) -> list[str]:
    geo = [p for p in paths if Path(str(p)).suffix.lower() in GEO_EXTENSIONS]
    if len(geo) <= _PROBE:
        return geo
    step = len(geo) / _PROBE
    return [geo[int(i * step)] for i in range(_PROBE)]


def group_split(
    groups: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    test_size: float,
    val_size: float = 0.0,
    random_state: int = 0,
) -> np.ndarray:
    """Assign whole groups to "train", "val" and "test", stratified by label where possible.

    With labels, ``StratifiedGroupKFold(n_splits=round(1 / test_size), shuffle=True)``: one fold
    is the test split (so the test share is the nearest ``1/k``), drawn with the seed among the
    folds that leave every class in training and hold out the most classes. The validation
    split is cut from the rest the same way. Without labels, ``GroupShuffleSplit`` on the share
    of groups.

    Args:
        groups: ``(N,)`` group id per row.
        labels: ``(N,)`` class label per row, or ``None``.
        test_size: Test fraction in [0, 1).
        val_size: Validation fraction in [0, 1), of all rows.
        random_state: Seed.

    Returns:
        ``(N,)`` object array of ``"train"``, ``"val"``, ``"test"``.

    Raises:
        LandsightValueError: Too few groups for the requested splits.
    """
    n = len(groups)
    out = np.full(n, "train", dtype=object)
    rest = np.arange(n)
    for name, size in (("test", test_size), ("val", val_size)):
        if size <= 0:
            continue
        frac = size / (1 - (test_size if name == "val" else 0.0))
        held = _one_fold(groups[rest], None if labels is None else labels[rest], frac, random_state, name)
        out[rest[held]] = name
        rest = rest[~held]
    return out


def _one_fold(groups: np.ndarray, labels: np.ndarray | None, frac: float, seed: int, name: str) -> np.ndarray:
    """Boolean mask of the rows held out as one fold of about ``frac`` of the rows."""
    distinct = np.unique(groups.astype(str))
    if len(distinct) < 2:
        raise LandsightValueError(
            f"a grouped {name} split needs at least 2 groups (blocks or scenes), found {len(distinct)}: "
            f"{distinct.tolist()!r}; use a smaller block_size, a finer group, or split='random'"
        )
    k = min(len(distinct), max(2, round(1 / frac)))
    if labels is None:
        from sklearn.model_selection import GroupShuffleSplit

        n_test = max(1, min(len(distinct) - 1, round(frac * len(distinct))))
        gss = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
        _, held_idx = next(gss.split(np.zeros(len(groups)), groups=groups))
        mask = np.zeros(len(groups), dtype=bool)
        mask[held_idx] = True
        return mask
    from sklearn.model_selection import StratifiedGroupKFold

    all_classes = set(labels.tolist())
    scored: list[tuple[tuple[int, int], np.ndarray]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for _, held_idx in folds.split(np.zeros(len(groups)), labels, groups):
            mask = np.zeros(len(groups), dtype=bool)
            mask[held_idx] = True
            kept = set(labels[~mask].tolist()) == all_classes
            scored.append(((int(kept), len(set(labels[mask].tolist()))), mask))
    # StratifiedGroupKFold's folds barely depend on the seed (groups are sorted by class mix;
    # shuffling only breaks ties), so the seed picks among the best folds.
    top = max(score for score, _ in scored)
    candidates = [mask for score, mask in scored if score == top]
    return candidates[int(np.random.default_rng(seed).integers(len(candidates)))]


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
