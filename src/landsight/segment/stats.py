"""Per-band normalisation statistics computed from the training rasters, window by window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation of each selected band, in the rasters' own units.

    Attributes:
        bands: 1-based band indices the statistics belong to.
        mean: Per-band mean over valid (non-nodata) pixels.
        std: Per-band population standard deviation (at least 1e-6).
        pixels: Valid pixels counted per band.
    """

    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``band_stats`` in ``bundle.json``)."""
        return {"bands": list(self.bands), "mean": list(self.mean), "std": list(self.std), "pixels": self.pixels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BandStats:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["bands"]), tuple(d["mean"]), tuple(d["std"]), int(d["pixels"]))


def band_stats(
    paths: Sequence[str | Path],
    bands: Sequence[int] | None = None,
    *,
    window: int = 1024,
    max_pixels: int = 50_000_000,
    progress: bool = False,
) -> BandStats:
    """Compute per-band mean and standard deviation over the valid pixels of rasters.

    Reads ``window x window`` blocks, so memory stays bounded whatever the raster size. Rasters
    with more than ``max_pixels`` pixels are subsampled: every k-th block row and column of
    blocks is read (a regular sample), which keeps the cost bounded too.

    Args:
        paths: Image rasters (all with the same band count).
        bands: 1-based bands (``None`` = all).
        window: Block size in pixels.
        max_pixels: Per-raster budget above which blocks are subsampled.
        progress: Show a rich progress bar.

    Returns:
        The :class:`BandStats` (float64 accumulation).

    Raises:
        LandsightValueError: No valid pixel at all.
    """
    from landsight.progress import progress_bar
    from landsight.segment.raster import iter_blocks, open_raster, raster_bands, read_window

    total = s1 = s2 = None
    band_list: list[int] = []
    with progress_bar(len(paths), "band statistics", enabled=progress, unit="rasters") as bar:
        for path in paths:
            with open_raster(path) as src:
                band_list = raster_bands(src, bands)
                # over budget: every k-th block row and column (a grid over the whole raster)
                k = max(1, int(np.ceil(np.sqrt(src.height * src.width / max_pixels))))
                for r, c, h, w in iter_blocks(src.height, src.width, window):
                    if (r // window) % k or (c // window) % k:
                        continue
                    data, valid = read_window(src, r, c, h, w, bands=band_list, masks=True)
                    x = data[:, valid].astype(np.float64)
                    if total is None:
                        total, s1, s2 = 0, np.zeros(len(band_list)), np.zeros(len(band_list))
                    total += x.shape[1]
                    s1 += x.sum(axis=1)
                    s2 += (x * x).sum(axis=1)
            bar.advance()
    if not total:
        raise LandsightValueError(f"no valid pixels in {len(paths)} raster(s) (all nodata?): {list(paths)[:3]!r}")
    mean = s1 / total
    std = np.sqrt(np.maximum(s2 / total - mean * mean, 0.0))
    return BandStats(tuple(band_list), tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std), total)
