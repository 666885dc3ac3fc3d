"""Where georeferenced tiles lie: the geometry behind ``split="spatial"`` (:mod:`landsight.data.splits`).

This module owns reading tile bounds and CRS from raster headers (rasterio; no pixel is read),
grouping tiles into square blocks of ``block_size`` CRS units by their centres, choosing a
default block side from the tiles' extent, and counting scenes (clusters of touching tiles), which
the random split uses to warn that its held-out figure is optimistic.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from landsight.errors import LandsightValueError

__all__ = ["GEO_EXTENSIONS", "Bounds", "count_scenes", "default_block_size", "spatial_blocks", "tile_bounds"]

GEO_EXTENSIONS = frozenset({".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc", ".hdf"})
"""Extensions whose headers may carry a CRS; other files (JPEG, PNG) are taken as not georeferenced."""

TARGET_BLOCKS = 16
"""The default ``block_size`` is the largest 1-2-5 value giving at least this many occupied blocks."""

Bounds = tuple[float, float, float, float]


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
