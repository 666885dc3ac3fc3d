"""Windowed raster I/O for segmentation: the only segmentation module that opens rasters.

Rasters bigger than memory are never read whole: every read is a window (``rasterio.windows``),
padded where it runs past the raster's edge. Any GDAL format rasterio reads works (GeoTIFF,
COG, JPEG, PNG), any band count, uint8 / uint16 / other numeric types.

Label maps are written the same way (:func:`open_label_writer`): window by window, on the
input's grid (:func:`label_profile` copies its size, CRS and transform), optionally with a
probability raster beside them and as Cloud Optimized GeoTIFFs; the writer counts the pixels
of each class as it writes (:class:`ClassCounts`), so the statistics of a map just written need
no second read of it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.data.readers import check_bands
from landsight.errors import DataNotFoundError, ImageReadError

if TYPE_CHECKING:
    from landsight.segment.classmap import ClassMap


@contextmanager
def open_raster(path: str | Path) -> Iterator[Any]:
    """Open a raster for windowed reading.

    Args:
        path: Raster file (GeoTIFF, COG, JPEG, PNG, ...).

    Yields:
        The open ``rasterio.DatasetReader``.

    Raises:
        DataNotFoundError: ``path`` does not exist.
        ImageReadError: GDAL cannot open it.
    """
    src = open_dataset(path)
    try:
        yield src
    finally:
        src.close()


def open_dataset(path: str | Path) -> Any:
    """Open a raster and return the dataset (the caller closes it; prefer :func:`open_raster`).

    ``path`` may be a URL (``https://``, ``s3://``: a STAC asset's COG), opened by GDAL's
    virtual file systems and read window by window.

    Raises:
        DataNotFoundError: ``path`` does not exist.
        ImageReadError: GDAL cannot open it.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    path = str(path) if "://" in str(path) else Path(path)  # type: ignore[assignment]
    if isinstance(path, Path) and not path.is_file():
        raise DataNotFoundError(f"raster {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise ImageReadError(str(path), f"not a raster GDAL can open ({exc})") from exc


def raster_bands(src: Any, bands: Sequence[int] | None) -> list[int]:
    """Validate 1-based band indices against an open raster.

    Args:
        src: Open rasterio dataset.
        bands: 1-based band indices, or ``None`` for all bands.

    Returns:
        The band list.

    Raises:
        LandsightValueError: A band outside ``1..src.count``.
    """
    if bands is None:
        return list(range(1, src.count + 1))
    return check_bands(bands, src.count, src.name) or []


def read_window(
    src: Any,
    row: int,
    col: int,
    height: int,
    width: int,
    *,
    bands: Sequence[int] | None = None,
    pad: str = "constant",
    fill: float = 0,
    masks: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read a window that may extend past the raster's edges, padding the outside.

    Args:
        src: Open rasterio dataset.
        row: Top row of the window (may be negative).
        col: Left column (may be negative).
        height: Window height in pixels.
        width: Window width in pixels.
        bands: 1-based bands (``None`` = all).
        pad: ``"constant"`` (``fill``) or ``"reflect"`` (mirror the edge; for model context).
        fill: Constant pad value.
        masks: Also return the validity mask (GDAL's dataset mask: 0 where the input is nodata
            or outside the raster).

    Returns:
        ``(bands, height, width)`` array in the raster's dtype; with ``masks=True`` also a
        ``(height, width)`` bool array, True where valid.
    """
    from rasterio.windows import Window

    band_list = raster_bands(src, bands)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, src.height), min(col + width, src.width)
    dtype = np.dtype(src.dtypes[band_list[0] - 1])
    if r1 <= r0 or c1 <= c0:
        data = np.full((len(band_list), height, width), fill, dtype=dtype)
        return (data, np.zeros((height, width), dtype=bool)) if masks else data
    window = Window(c0, r0, c1 - c0, r1 - r0)
    with _read_errors(src, window):
        inner = src.read(band_list, window=window)
    widths = ((0, 0), (r0 - row, row + height - r1), (c0 - col, col + width - c1))
    padded = _pad(inner, widths, pad, fill)
    if not masks:
        return padded
    with _read_errors(src, window):
        valid = valid_mask(src, window, band_list)
    return padded, np.pad(valid, widths[1:], mode="constant", constant_values=False)


@contextmanager
def _read_errors(src: Any, window: Any) -> Iterator[None]:
    """Turn GDAL's read failure of a window (truncated or corrupt data) into one :class:`ImageReadError`."""
    from rasterio.errors import RasterioIOError

    try:
        yield
    except RasterioIOError as exc:
        detail = exc.__cause__ or exc
        r, c = int(window.row_off), int(window.col_off)
        raise ImageReadError(
            str(src.name),
            f"pixel data is truncated or corrupt: rows {r}..{r + int(window.height) - 1}, columns "
            f"{c}..{c + int(window.width) - 1} cannot be read ({detail}); re-download or re-export the file",
        ) from exc


def check_readable(src: Any, *, window: int = 1024) -> None:
    """Read every pixel of a raster once, window by window, so that a damaged file fails early.

    A raster whose header is intact but whose data is truncated opens fine and fails only when
    a damaged block is read; pairing (:func:`landsight.segment.pairs.pair_rasters`) calls this
    so that such a file is skipped with its reason before training or evaluation starts, not
    halfway through. Memory stays bounded (one ``window x window`` block of all bands at a time).

    Args:
        src: Open rasterio dataset.
        window: Block side in pixels.

    Raises:
        ImageReadError: A block (or its mask) cannot be read; the message names the file and
            the rows / columns.
    """
    bands = list(range(1, src.count + 1))
    for r, c, h, w in iter_blocks(src.height, src.width, window):
        read_window(src, r, c, h, w, bands=bands, masks=True)


def valid_mask(src: Any, window: Any, bands: Sequence[int]) -> np.ndarray:
    """Validity of a window's pixels: False where every selected band is nodata / masked.

    GDAL's per-band masks are used (nodata value, internal mask), except masks derived from an
    alpha band: 4-band NAIP GeoTIFFs often tag their near-infrared band as alpha, and a NIR of 0
    is data, not a hole.

    Args:
        src: Open rasterio dataset.
        window: ``rasterio.windows.Window`` inside the raster.
        bands: 1-based selected bands.

    Returns:
        ``(window.height, window.width)`` bool.
    """
    from rasterio.enums import MaskFlags

    masked = [b for b in bands if not ({MaskFlags.all_valid, MaskFlags.alpha} & set(src.mask_flag_enums[b - 1]))]
    shape = (int(window.height), int(window.width))
    if not masked:
        return np.ones(shape, dtype=bool)
    from rasterio.errors import NodataShadowWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NodataShadowWarning)  # nodata wins over alpha, as wanted here
        return (src.read_masks(masked, window=window) > 0).any(axis=0)


def _pad(array: np.ndarray, widths: tuple[tuple[int, int], ...], pad: str, fill: float) -> np.ndarray:
    if not any(a or b for a, b in widths):
        return array
    if pad == "reflect":  # numpy reflects repeatedly when the pad is wider than the array
        return np.pad(array, widths, mode="reflect" if min(array.shape[1:]) > 1 else "edge")
    return np.pad(array, widths, mode="constant", constant_values=fill)


def iter_blocks(height: int, width: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    """Tile a ``height x width`` grid into ``(row, col, h, w)`` blocks of at most ``size`` pixels a side."""
    for r in range(0, height, size):
        for c in range(0, width, size):
            yield r, c, min(size, height - r), min(size, width - c)


def label_palette(src: Any, class_map: ClassMap) -> np.ndarray | None:
    """The colour table of a 1-band palette label raster, when its colours are the class map's.

    Colour masks are sometimes saved as palette PNGs (some of the Dubai masks are). A palette
    raster is read as colours when at least one palette entry is a ``mask_colours`` entry of
    the class map; otherwise its values are label codes (a coded raster that merely carries a
    display palette).

    Args:
        src: Open label raster.
        class_map: The class map.

    Returns:
        ``(256, 3)`` uint8 palette, or ``None`` to read values as codes.
    """
    from rasterio.enums import ColorInterp

    if src.count != 1 or src.colorinterp[0] != ColorInterp.palette:
        return None
    try:
        table = src.colormap(1)
    except ValueError:
        return None
    palette = np.zeros((256, 3), dtype=np.uint8)
    for value, rgba in table.items():
        if 0 <= value < 256:
            palette[value] = rgba[:3]
    known = {m for c in class_map.classes for m in c.mask_colours} | set(class_map.ignore_colours)
    return palette if any(tuple(int(v) for v in rgba[:3]) in known for rgba in table.values()) else None


def read_labels(src: Any, row: int, col: int, height: int, width: int, class_map: ClassMap) -> np.ndarray:
    """Read a label window as class indices (codes, RGB colour masks or palette colour masks).

    Args:
        src: Open label raster.
        row: Top row (may be negative).
        col: Left column.
        height: Window height.
        width: Window width.
        class_map: Maps codes / colours to class indices.

    Returns:
        ``(height, width)`` uint8 class indices; :data:`~landsight.segment.classmap.IGNORE_INDEX`
        outside the raster, where the label raster is nodata, and where the class map ignores.
    """
    from landsight.segment.classmap import IGNORE_INDEX, labels_to_index

    data = np.asarray(read_window(src, row, col, height, width))
    nodata = (data == src.nodata).all(axis=0) if src.nodata is not None else None
    palette = label_palette(src, class_map)
    if palette is not None:
        data = np.moveaxis(palette[data[0]], -1, 0)
    out = labels_to_index(data, class_map)
    if nodata is not None:
        out[nodata] = IGNORE_INDEX  # the label raster's own nodata value
    r0, c0 = max(0, -row), max(0, -col)
    r1, c1 = min(height, src.height - row), min(width, src.width - col)
    outside = np.ones((height, width), dtype=bool)
    outside[r0:r1, c0:c1] = False
    out[outside] = IGNORE_INDEX
    return out


# --- writing label rasters ----------------------------------------------------------------------

LABEL_CODES = 65536
"""Class codes counted by :class:`ClassCounts`: every uint8 / uint16 value."""


class ClassCounts:
    """Pixels per class code of a label raster, accumulated window by window.

    The label writer (:class:`LabelRasterWriter`) fills one while it writes, so the class areas
    of a map just written need no second read of it; :func:`landsight.segment.vector.class_areas`
    fills one from an existing raster. Per-row counts are kept only where the area of a pixel
    depends on its row (geographic CRSs): ``len(codes present) x height`` int64, not the pixels.

    Attributes:
        height: Rows of the raster.
        nodata: Code left out (``None`` = none).
        pixels: ``(LABEL_CODES,)`` int64 valid pixels per code (codes < 0 or >= ``LABEL_CODES``
            are left out).
        rows: With ``by_row``: code -> ``(height,)`` int64 pixels of that code in each raster row,
            for the codes seen; empty otherwise.
    """

    def __init__(self, height: int, *, nodata: int | None, by_row: bool = False) -> None:
        """Start empty.

        Args:
            height: Rows of the raster.
            nodata: Code that is not a class (the raster's nodata).
            by_row: Also count pixels per raster row (for geodesic areas).
        """
        self.height = height
        self.nodata = nodata
        self.by_row = by_row
        self.pixels = np.zeros(LABEL_CODES, dtype=np.int64)
        self.rows: dict[int, np.ndarray] = {}

    def add(self, labels: np.ndarray, row: int) -> None:
        """Count a window of class codes.

        Args:
            labels: ``(h, w)`` class codes (any integer dtype; float values are truncated).
            row: Raster row of the window's top line (``0 <= row``, ``row + h <= height``).
        """
        data = np.asarray(labels).astype(np.int64, copy=False)
        valid = (data >= 0) & (data < LABEL_CODES)
        if self.nodata is not None:
            valid &= data != self.nodata
        codes = data[valid]
        counts = np.bincount(codes, minlength=LABEL_CODES)
        self.pixels += counts
        present = np.flatnonzero(counts)
        if not self.by_row or not present.size:
            return
        h = data.shape[0]
        column = np.zeros(LABEL_CODES, dtype=np.int64)
        column[present] = np.arange(present.size)
        per_row = np.bincount(np.nonzero(valid)[0] * present.size + column[codes], minlength=h * present.size)
        per_row = per_row.reshape(h, present.size)
        for j, code in enumerate(present.tolist()):
            self.rows.setdefault(code, np.zeros(self.height, dtype=np.int64))[row : row + h] += per_row[:, j]


class LabelRasterWriter:
    """An open label raster (and optional probability raster), written window by window.

    Made by :func:`open_label_writer`. Every window written is also counted
    (:attr:`counts`), so statistics of the whole map are known when the last window is written.

    Attributes:
        counts: Valid pixels per class code written so far (:class:`ClassCounts`; per row in a
            geographic CRS).
    """

    def __init__(self, labels: Any, probabilities: Any, counts: ClassCounts) -> None:
        """Wrap open datasets (use :func:`open_label_writer`)."""
        self._labels = labels
        self._probabilities = probabilities
        self.counts = counts

    @property
    def writes_probabilities(self) -> bool:
        """Whether a probability raster is written beside the labels."""
        return self._probabilities is not None

    def write(self, window: Any, labels: np.ndarray, probabilities: np.ndarray | None = None) -> None:
        """Write one window of the map and count its classes.

        Args:
            window: ``rasterio.windows.Window`` inside the raster (integer offsets and size).
            labels: ``(window.height, window.width)`` uint8 class codes, nodata where not mapped.
            probabilities: ``(K, window.height, window.width)`` uint8 scaled probabilities, written
                to the probability raster (ignored when there is none).
        """
        self._labels.write(labels, 1, window=window)
        if self._probabilities is not None and probabilities is not None:
            self._probabilities.write(probabilities, window=window)
        self.counts.add(labels, int(window.row_off))


def label_profile(src: Any, *, nodata: int, block: int = 256, cog: bool = False) -> dict[str, Any]:
    """Creation options of a uint8 label GeoTIFF on the grid of ``src``.

    Args:
        src: Open input raster: its size, CRS and transform are copied.
        nodata: Nodata code of the labels.
        block: Tile side, pixels.
        cog: The file is converted to a COG afterwards (band interleaving).

    Returns:
        A 1-band rasterio profile (GTiff, tiled, deflate, BigTIFF if needed).
    """
    return {
        "driver": "GTiff", "dtype": "uint8", "count": 1, "height": src.height, "width": src.width,
        "crs": src.crs, "transform": src.transform, "nodata": nodata, "tiled": True,
        "blockxsize": block, "blockysize": block, "compress": "deflate", "BIGTIFF": "IF_SAFER",
        "interleave": "band" if cog else "pixel",
    }  # fmt: skip


@contextmanager
def gdal_cache(cache_mb: int) -> Iterator[None]:
    """Limit GDAL's block cache (``GDAL_CACHEMAX``, MB) inside the block."""
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=cache_mb):
        yield


@contextmanager
def open_label_writer(
    path: str | Path,
    profile: dict[str, Any],
    *,
    colormap: dict[int, tuple[int, ...]] | None = None,
    tags: dict[str, str] | None = None,
    probabilities: str | Path | None = None,
    band_names: Sequence[str] = (),
    prob_scale: float | None = None,
    cog: bool = False,
) -> Iterator[LabelRasterWriter]:
    """Open a label raster (and optionally a probability raster) for writing window by window.

    With ``cog``, the windows go to plain GeoTIFFs beside the targets
    (``<stem>.plain<suffix>``), copied to Cloud Optimized GeoTIFFs (GDAL's COG driver, deflate)
    when the block ends without an exception, and deleted in any case. The caller chooses the
    paths (temporary ones: see :func:`landsight.outputs.atomic_path`).

    Args:
        path: Label raster to write.
        profile: Its rasterio profile (:func:`label_profile`); its ``crs`` decides whether
            :attr:`LabelRasterWriter.counts` keeps per-row counts (geographic CRS).
        colormap: Colour table of band 1 (code -> RGBA).
        tags: Tags of band 1.
        probabilities: Optional probability raster: the same profile with one band per name in
            ``band_names``.
        band_names: Band descriptions of the probability raster (one per class).
        prob_scale: GDAL scale of every probability band (e.g. ``1 / 254``).
        cog: Write Cloud Optimized GeoTIFFs.

    Yields:
        The :class:`LabelRasterWriter`; its datasets are closed (and converted) when the block ends.

    Raises:
        rasterio.errors.RasterioIOError: GDAL cannot create or convert a file.
    """
    import contextlib

    import rasterio

    targets = [(Path(path), dict(profile))]
    if probabilities is not None:
        targets.append((Path(probabilities), {**profile, "count": len(band_names)}))
    plain = [p.with_name(f"{p.stem}.plain{p.suffix}") if cog else p for p, _ in targets]
    crs = profile.get("crs")
    counts = ClassCounts(int(profile["height"]), nodata=profile.get("nodata"),
                         by_row=bool(crs) and bool(crs.is_geographic))  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            dsts = [stack.enter_context(rasterio.open(tmp, "w", **prof))
                    for (_, prof), tmp in zip(targets, plain, strict=True)]  # fmt: skip
            if colormap is not None:
                dsts[0].write_colormap(1, colormap)
            if tags:
                dsts[0].update_tags(1, **tags)
            if len(dsts) > 1:
                dsts[1].descriptions = tuple(band_names)
                if prob_scale is not None:
                    dsts[1].scales = (prob_scale,) * len(band_names)
            yield LabelRasterWriter(dsts[0], dsts[1] if len(dsts) > 1 else None, counts)
        if cog:
            from rasterio.shutil import copy as gdal_copy

            for (target, _), tmp in zip(targets, plain, strict=True):
                gdal_copy(tmp, target, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER")
    finally:
        if cog:
            for tmp in plain:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
