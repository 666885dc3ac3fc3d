"""Auxiliary categorical rasters as extra input bands (e.g. low-resolution NLCD land cover).

Robinson et al. (CVPR 2019) showed that the coarse National Land Cover Database (30 m, nationwide)
carries much of what a 1 m land-cover model must learn; here it is simply one more input: each
image raster has an *auxiliary raster* (found through a path template), read window by window on
the image's grid and one-hot encoded over the codes seen in the training rasters (one input
channel per code; codes unseen in training and nodata give all-zero channels). The network then
takes ``len(bands) + len(codes)`` channels; the bundle records the template and the codes, so
prediction and evaluation read the same encoding.

Alignment: an auxiliary raster of the image's size without CRS (or with the image's CRS and
transform) is read directly; a georeferenced one on another grid (NLCD at 30 m beside 1 m NAIP)
is warped onto the image's grid with nearest-neighbour resampling (GDAL ``WarpedVRT``), window
by window.

References:
    Robinson, Hou, Malkin, Soobitsky, Czawlytko, Dilkina, Jojic, "Large Scale High-Resolution
    Land Cover Mapping with Multi-Resolution Data", CVPR 2019.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import DataNotFoundError, LandsightValueError

MAX_CODES = 64
"""Most distinct codes one-hot encoded (a continuous raster passed by mistake is refused)."""


@dataclass(frozen=True)
class AuxSpec:
    """How auxiliary rasters are found and encoded.

    Attributes:
        template: Path template of an image's auxiliary raster, formatted with ``{stem}`` (image
            file name without suffix), ``{name}`` (file name) and ``{dir}`` (the image's folder),
            e.g. ``"{dir}/../nlcd/{stem}_nlcd.tif"``; a plain path (no braces) is used as is.
        codes: Category codes, one input channel each (sorted).
        band: 1-based band of the auxiliary raster read.
    """

    template: str
    codes: tuple[int, ...]
    band: int = 1

    @property
    def channels(self) -> int:
        """Input channels added to the network."""
        return len(self.codes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``aux`` in ``bundle.json``)."""
        return {"template": self.template, "codes": list(self.codes), "band": self.band, "encoding": "onehot"}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AuxSpec | None:
        """Inverse of :meth:`to_dict` (``None`` stays ``None``)."""
        if not d:
            return None
        return cls(str(d["template"]), tuple(int(c) for c in d["codes"]), int(d.get("band", 1)))

    def path_for(self, image: str | Path) -> str:
        """The auxiliary raster of ``image`` (the template formatted; see :attr:`template`).

        Raises:
            LandsightValueError: The template has a field other than ``stem``, ``name``, ``dir``.
        """
        return aux_path(self.template, image)


def aux_path(template: str, image: str | Path) -> str:
    """Format an auxiliary-raster template for one image (see :attr:`AuxSpec.template`).

    Raises:
        LandsightValueError: Unknown template field.
    """
    p = Path(image)
    try:
        return template.format(stem=p.stem, name=p.name, dir=str(p.parent))
    except (KeyError, IndexError, ValueError) as exc:
        raise LandsightValueError(
            f"aux raster template {template!r} may use {{stem}}, {{name}} and {{dir}} only ({exc})"
        ) from exc


def scan_codes(paths: Sequence[str | Path], band: int = 1, *, window: int = 1024) -> tuple[int, ...]:
    """Distinct codes (nodata left out) of categorical rasters, read window by window.

    Args:
        paths: Auxiliary rasters.
        band: 1-based band read.
        window: Block side in pixels.

    Returns:
        Sorted codes.

    Raises:
        DataNotFoundError: A raster does not exist.
        LandsightValueError: A float raster, or more than :data:`MAX_CODES` codes (not categorical).
    """
    from landsight.segment.raster import iter_blocks, open_raster, read_window

    codes: set[int] = set()
    for path in paths:
        with open_raster(path) as src:
            if np.dtype(src.dtypes[band - 1]).kind == "f":
                raise LandsightValueError(f"aux raster {str(path)!r} is {src.dtypes[band - 1]}: categorical codes "
                                          "(integers) only")  # fmt: skip
            for r, c, h, w in iter_blocks(src.height, src.width, window):
                data, valid = read_window(src, r, c, h, w, bands=[band], masks=True)
                codes.update(int(v) for v in np.unique(data[0][valid]))
            if len(codes) > MAX_CODES:
                raise LandsightValueError(f"aux rasters hold more than {MAX_CODES} distinct codes (first "
                                          f"{sorted(codes)[:8]!r}...): not a categorical raster")  # fmt: skip
    return tuple(sorted(codes))


@contextmanager
def open_aligned(path: str | Path, image_src: Any) -> Iterator[Any]:
    """Open an auxiliary raster on the grid of an open image raster.

    Args:
        path: Auxiliary raster.
        image_src: The open image dataset whose rows / columns the result shares.

    Yields:
        A rasterio dataset (the raster itself, or a nearest-neighbour ``WarpedVRT`` onto the
        image's CRS, transform and size) with the image's height and width.

    Raises:
        DataNotFoundError: ``path`` does not exist.
        LandsightValueError: The grids differ and either raster has no CRS.
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from landsight.segment.raster import open_raster

    if not Path(path).is_file():
        raise DataNotFoundError(f"aux raster {str(path)!r} (of image {str(image_src.name)!r}) does not exist")
    with open_raster(path) as src:
        same_size = (src.height, src.width) == (image_src.height, image_src.width)
        if same_size and (not src.crs or not image_src.crs or (
                src.crs == image_src.crs and src.transform.almost_equals(image_src.transform))):  # fmt: skip
            yield src
            return
        if not src.crs or not image_src.crs:
            raise LandsightValueError(
                f"aux raster {str(path)!r} is {src.height}x{src.width} and image {str(image_src.name)!r} "
                f"{image_src.height}x{image_src.width}: without a CRS on both they must have the same size"
            )
        with WarpedVRT(src, crs=image_src.crs, transform=image_src.transform, width=image_src.width,
                       height=image_src.height, resampling=Resampling.nearest) as vrt:  # fmt: skip
            yield vrt


def read_onehot(
    src: Any, spec: AuxSpec, row: int, col: int, height: int, width: int, *, pad: str = "constant"
) -> np.ndarray:
    """One-hot channels of an auxiliary-raster window (see :func:`landsight.segment.raster.read_window`).

    Args:
        src: Aligned auxiliary dataset (:func:`open_aligned`).
        spec: Codes and band.
        row: Top row (may be negative).
        col: Left column (may be negative).
        height: Window height.
        width: Window width.
        pad: ``"constant"`` or ``"reflect"`` past the edges.

    Returns:
        ``(len(spec.codes), height, width)`` float32 of 0 / 1; all zero where nodata, outside the
        raster (constant padding) or a code not in ``spec.codes``.
    """
    from landsight.segment.raster import read_window

    data, valid = read_window(src, row, col, height, width, bands=[spec.band], pad=pad, masks=True)
    values = data[0]
    if pad == "reflect":  # reflected context is as valid as the pixels it mirrors
        valid = np.ones_like(valid)
    codes = np.asarray(spec.codes)
    return ((values[None] == codes[:, None, None]) & valid[None]).astype(np.float32)
