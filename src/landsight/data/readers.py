"""Decode one image (JPEG, PNG, TIFF/GeoTIFF, ...) into an (H, W, C) uint8 array.

This is the only module that decodes rasters (:mod:`landsight.data.headers` reads their
headers). TIFF and GeoTIFF files (recognised by their magic bytes, not their extension) go
through rasterio, which handles multiband, 16-bit and float data and keeps the georeference;
everything else goes through Pillow. ``rasterio`` is imported lazily
so that ``import landsight.data.readers`` needs only NumPy and Pillow.

Memory limits: every decoder checks the image header before decoding the pixels. Pillow refuses
images over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels (179 million by default) and the rasterio path
applies the same pixel limit, both as an :class:`~landsight.errors.ImageReadError` whose reason
starts with ``"decompression bomb"``. ``max_decode_bytes`` (a keyword of :func:`read_image` and
:func:`decode_image`, off by default; the scoring service and batch ``predict`` set it, by default
to :data:`DEFAULT_MAX_DECODE_BYTES`) also refuses images whose estimated decoding memory
(:attr:`ImageHeader.decode_bytes`) is over a byte budget, with
:class:`~landsight.errors.ImageTooLargeError`. :func:`peek_image` reads that header alone; the
header, its estimate and both checks live in :mod:`landsight.data.headers`.

Example:
    >>> from landsight.data.readers import read_image
    >>> image = read_image("tile.tif", bands=(1, 2, 3, 4))  # doctest: +SKIP
    >>> image.array.shape, image.array.dtype, image.crs  # doctest: +SKIP
    ((260, 260, 4), dtype('uint8'), 'EPSG:26917')

"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from landsight.data.headers import (
    _TIFF_MAGIC,
    DEFAULT_MAX_DECODE_BYTES,
    ImageHeader,
    _check_bomb,
    _check_budget,
    _ignore_not_georeferenced,
    _pil_header,
    peek_image,
)
from landsight.errors import DataNotFoundError, ImageReadError, ImageTooLargeError, LandsightValueError

__all__ = [
    "DEFAULT_MAX_DECODE_BYTES",
    "IMAGE_EXTENSIONS",
    "ImageHeader",
    "RasterImage",
    "decode_image",
    "peek_image",
    "read_image",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
"""File extensions (lower case, with the dot) that landsight treats as images."""


@dataclass(frozen=True, eq=False)
class RasterImage:
    """A decoded image and, for GeoTIFFs, where it lies on the Earth.

    Attributes:
        array: Pixels of shape (H, W, C), dtype uint8 (C = 3 by default, or ``len(bands)``).
        bounds: ``(left, bottom, right, top)`` in units of ``crs``; None when the file carries
            no coordinate reference system.
        crs: ``"EPSG:<code>"`` when the CRS has an EPSG code, its WKT otherwise; None when the
            file has no CRS.

    """

    array: np.ndarray
    bounds: tuple[float, float, float, float] | None = None
    crs: str | None = None


def read_image(
    path: str | Path, bands: Sequence[int] | None = None, *, max_decode_bytes: int | None = None
) -> RasterImage:
    """Read an image file into an (H, W, C) uint8 array.

    Args:
        path: Image file (JPEG, PNG, TIFF/GeoTIFF, BMP, GIF, WebP, ...).
        bands: 1-based band indices to keep, as in rasterio (``(1, 2, 3)`` = R, G, B of a
            4-band NAIP tile, ``(1, 2, 3, 4)`` keeps NIR). None gives 3-channel RGB.
        max_decode_bytes: Refuse images whose estimated decoding memory
            (:attr:`ImageHeader.decode_bytes`) is over this many bytes; None: no byte limit.

    Returns:
        The decoded :class:`RasterImage`; see :func:`decode_image`.

    Raises:
        DataNotFoundError: ``path`` does not exist.
        ImageReadError: The file cannot be read or decoded, or a band is out of range.
        ImageTooLargeError: Over ``max_decode_bytes`` (an ImageReadError too).
        LandsightValueError: ``bands`` is not a non-empty sequence of positive integers.

    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(
            f"image file {str(path)!r} does not exist; check the path (relative paths are "
            f"resolved against the current folder {str(Path.cwd())!r})"
        )
    if path.is_dir():
        raise ImageReadError(str(path), "is a folder, not an image file")
    if not path.is_file():  # a FIFO would block the read forever
        raise ImageReadError(str(path), "not a regular file (a FIFO, device or socket); not read")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(str(path), f"cannot read the file: {exc}") from exc
    return decode_image(data, str(path), bands, max_decode_bytes=max_decode_bytes)


def decode_image(
    data: bytes, name: str, bands: Sequence[int] | None = None, *, max_decode_bytes: int | None = None
) -> RasterImage:
    """Decode the bytes of an image file into an (H, W, C) uint8 array.

    TIFFs (by magic bytes) are decoded with rasterio and keep ``bounds`` and ``crs`` when the
    file has a CRS; if rasterio fails, Pillow is tried before giving up. Plain 8-bit RGB or
    grayscale TIFFs without GeoTIFF tags go straight to Pillow (twice as fast). Other formats are
    decoded with Pillow, fully loaded (so truncated files are detected) and rotated upright
    according to their EXIF orientation.

    With ``bands=None`` the result is 3-channel RGB: grayscale is replicated to 3 channels,
    palette images are expanded, alpha is dropped, CMYK is converted, and multiband rasters keep
    bands 1, 2, 3. Data that is not uint8 (16-bit, float) is mapped to uint8 by a per-band
    2-98 percentile linear stretch (see :func:`_to_uint8`).

    Both decoders check the header of the very file they decode before reading its pixels:
    over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels is a decompression bomb, and with
    ``max_decode_bytes`` an estimated decoding memory (:attr:`ImageHeader.decode_bytes`) over
    that many bytes raises :class:`~landsight.errors.ImageTooLargeError`.

    Args:
        data: The file's bytes.
        name: The file's path or name, used in error messages only.
        bands: 1-based band indices to keep, in the order given. None gives RGB.
        max_decode_bytes: Largest estimated decoding memory in bytes; None: no byte limit.

    Returns:
        RasterImage whose ``array`` has shape (H, W, C), dtype uint8.

    Raises:
        ImageReadError: Empty, unidentified, truncated or corrupt data, a decompression bomb,
            or a band index above the file's band count.
        ImageTooLargeError: Over ``max_decode_bytes`` (an ImageReadError too).
        LandsightValueError: ``bands`` is not a non-empty sequence of positive integers.

    Example:
        >>> decode_image(Path("a.png").read_bytes(), "a.png").array.shape  # doctest: +SKIP
        (64, 64, 3)

    """
    band_list = check_bands(bands)
    if len(data) == 0:
        raise ImageReadError(name, "zero-byte file")
    if data[:4] in _TIFF_MAGIC and not _plain_8bit_tiff(data):
        try:
            return _decode_rasterio(data, name, band_list, max_decode_bytes)
        except _BandError as exc:
            raise ImageReadError(name, str(exc)) from None
        except ImageReadError:
            raise
        except _NotForRasterio:
            pass  # e.g. CMYK TIFF: Pillow converts it properly
        except Exception as exc:  # noqa: BLE001 - rasterio raises many types; try Pillow
            try:
                return _decode_pil(data, name, band_list, max_decode_bytes)
            except ImageTooLargeError:
                raise
            except ImageReadError:
                raise ImageReadError(name, f"truncated or corrupt: {exc}") from exc
    return _decode_pil(data, name, band_list, max_decode_bytes)


# GeoTIFF georeferencing tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEOTIFF_TAGS = frozenset({33550, 33922, 34264, 34735})


def _plain_8bit_tiff(data: bytes) -> bool:
    """True for an 8-bit RGB / grayscale TIFF without georeferencing (decoded faster by Pillow).

    Reads the header only. Such files (UC Merced, scanned photos) lose nothing in Pillow, which
    decodes them in about half of rasterio's time; everything else goes to rasterio.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            tags = set(img.tag_v2.keys())  # type: ignore[attr-defined]
            return img.mode in ("RGB", "L") and not tags & _GEOTIFF_TAGS
    except Exception:  # noqa: BLE001 - anything odd goes to rasterio, which reports it
        return False


class _BandError(Exception):
    """A requested band is out of range (internal; re-raised as ImageReadError)."""


class _NotForRasterio(Exception):
    """The TIFF is better decoded by Pillow (internal)."""


def check_bands(bands: Sequence[int] | None, count: int | None = None, source: str = "") -> list[int] | None:
    """Validate 1-based band indices (as rasterio numbers bands), optionally against a band count.

    Args:
        bands: Band indices, e.g. ``(1, 2, 3)``; ``None`` passes through.
        count: Bands of the raster they will be read from; ``None`` checks the syntax only.
        source: The raster's name, for the message.

    Returns:
        The indices as a list of ints, or ``None``.

    Raises:
        LandsightValueError: Not a non-empty sequence of integers >= 1, or an index above ``count``.
    """
    if bands is None:
        return None
    if isinstance(bands, int | str | bytes) or not isinstance(bands, Sequence) or not bands:
        raise LandsightValueError(
            f"bands must be a non-empty sequence of 1-based band indices such as (1, 2, 3); got {bands!r}"
        )
    out = []
    for band in bands:
        if isinstance(band, bool) or not isinstance(band, int | np.integer) or band < 1:
            raise LandsightValueError(
                f"bands must hold 1-based band indices (1 = first band), as in rasterio; got {bands!r}"
            )
        out.append(int(band))
    bad = [b for b in out if count is not None and b > count]
    if bad:
        where = f"{source!r} has" if source else "the file has"
        raise LandsightValueError(f"band {bad[0]} requested but {where} {count} band(s); use indices 1..{count}")
    return out


def _select(array: np.ndarray, bands: list[int] | None) -> np.ndarray:
    """Pick channels from an (H, W, C) array: RGB by default, else the 1-based ``bands``.

    Gray (or gray + alpha) gives one channel when ``bands`` is None: :func:`_rgb` replicates it
    after the (cheaper, per-band) mapping to uint8.
    """
    count = array.shape[2]
    if bands is None:
        return array[:, :, :3] if count >= 3 else array[:, :, :1]
    try:
        check_bands(bands, count)
    except LandsightValueError as exc:
        raise _BandError(str(exc)) from None
    return array[:, :, [b - 1 for b in bands]]


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Map an (H, W, C) array of any dtype to uint8.

    uint8 passes through unchanged (bool becomes 0/255). Anything else is stretched linearly
    per band so that its 2nd percentile maps to 0 and its 98th to 255 (values outside are
    clipped); NaN and infinities become 0 and a constant band becomes all zeros.

    Works one band at a time, in place: about 17 bytes per pixel beyond the input and the output
    (a float64 copy of the band, its finite mask, the sample handed to the percentile).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    out = np.zeros(array.shape, dtype=np.uint8)
    for c in range(array.shape[2]):
        band = array[:, :, c].astype(np.float64)
        finite = np.isfinite(band)
        if not finite.any():
            continue
        sample = band[finite]
        lo, hi = np.percentile(sample, [2, 98], overwrite_input=True)
        del sample
        if hi <= lo:
            continue
        band -= lo  # in place, same arithmetic as (band - lo) / (hi - lo) * 255
        band /= hi - lo
        band *= 255.0
        np.clip(band, 0, 255, out=band)
        np.round(band, out=band)
        np.logical_not(finite, out=finite)
        band[finite] = 0
        out[:, :, c] = band
    return out


def _rgb(array: np.ndarray, bands: list[int] | None) -> np.ndarray:
    """Replicate a one-channel uint8 array to RGB when no ``bands`` were asked for; contiguous."""
    if bands is None and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def _decode_rasterio(data: bytes, name: str, bands: list[int] | None, max_decode_bytes: int | None) -> RasterImage:
    import rasterio
    from rasterio.enums import ColorInterp

    _ignore_not_georeferenced()
    with rasterio.io.MemoryFile(data) as memfile, memfile.open() as src:
        interp = tuple(src.colorinterp)
        if bands is None and interp[:4] == (
            ColorInterp.cyan,
            ColorInterp.magenta,
            ColorInterp.yellow,
            ColorInterp.black,
        ):
            raise _NotForRasterio
        _check_bomb(src.width * src.height, name)
        if src.count == 0:
            raise _BandError("the file has no bands")
        widest = max((np.dtype(d) for d in src.dtypes), key=lambda d: d.itemsize)
        palette = src.count == 1 and interp[0] == ColorInterp.palette
        bands_in = 4 if palette else src.count
        header = ImageHeader(src.height, src.width, bands_in, widest.itemsize, widest.name, "rasterio")
        _check_budget(header, name, max_decode_bytes)
        if bands is None and palette:
            lut = np.zeros((256, 3), dtype=np.uint8)
            for index, rgba in src.colormap(1).items():
                if 0 <= index < 256:
                    lut[index] = rgba[:3]
            index = src.read(1)
            array = lut[index if index.dtype == np.uint8 else index.astype(np.intp).clip(0, 255)]
        else:
            wanted = bands if bands is not None else [1, 2, 3] if src.count >= 3 else [1]
            bad = [b for b in wanted if b > src.count]
            if bad:
                raise _BandError(
                    f"band {bad[0]} requested but the file has {src.count} band(s); use indices 1..{src.count}"
                )
            array = np.moveaxis(src.read(wanted), 0, -1)  # (C, H, W) -> (H, W, C)
        bounds: tuple[float, float, float, float] | None = None
        crs: str | None = None
        if src.crs is not None:
            epsg = src.crs.to_epsg()
            crs = f"EPSG:{epsg}" if epsg is not None else src.crs.to_wkt()
            bounds = tuple(float(v) for v in src.bounds)  # type: ignore[assignment]
    return RasterImage(_rgb(_to_uint8(array), bands), bounds, crs)


def _decode_pil(data: bytes, name: str, bands: list[int] | None, max_decode_bytes: int | None) -> RasterImage:
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_budget(_pil_header(img.size[1], img.size[0], img.mode), name, max_decode_bytes)
            img.load()
            image: Any = ImageOps.exif_transpose(img)
            image = _normalise_mode(image)
            array = np.asarray(image)
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(name, "not an image (unidentified format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(name, f"truncated or corrupt: {exc}") from exc
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    try:
        array = _select(array, bands)
    except _BandError as exc:
        raise ImageReadError(name, str(exc)) from None
    return RasterImage(_rgb(_to_uint8(array), bands))


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Bring a Pillow image to a mode NumPy understands band by band."""
    mode = img.mode
    if mode in {"L", "LA", "RGB", "RGBA", "I", "F"} or mode.startswith("I;16"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in {"P", "PA"}:
        has_alpha = mode == "PA" or "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
