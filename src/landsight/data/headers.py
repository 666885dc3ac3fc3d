"""Image headers, read without decoding the pixels, and the memory limits checked against them.

This module owns :class:`ImageHeader` (size, bands and sample type of an image file, and the
estimated memory that decoding it needs), :func:`peek_image` (the header read alone, by rasterio
for TIFFs and Pillow otherwise), and the two checks every decoder of :mod:`landsight.data.readers`
runs on the header before reading pixels: the decompression-bomb pixel limit and the
``max_decode_bytes`` budget (default :data:`DEFAULT_MAX_DECODE_BYTES`). Like the readers it needs
only NumPy and Pillow at import; ``rasterio`` is imported lazily.
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from landsight.errors import ImageReadError, ImageTooLargeError

__all__ = ["DEFAULT_MAX_DECODE_BYTES", "ImageHeader", "peek_image", "too_large_reason"]

DEFAULT_MAX_DECODE_BYTES: int = 512 * 1024 * 1024
"""Default largest estimated decoding memory of one image, in bytes (512 MiB), for ``max_decode_bytes``.

The scoring service (``ServeSettings.max_decode_bytes``) and batch prediction
(:func:`landsight.classify.predict.predict`) use it: it admits a 40-megapixel 8-bit RGB image or
a 4000 x 4000 single-band uint16 raster, and refuses a 4000 x 4000 float64 one.
"""

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding its pixels (see :func:`peek_image`).

    Attributes:
        height: Rows, in pixels.
        width: Columns, in pixels.
        bands: Bands (channels) in the file; a palette image counts as 4 (it is expanded to RGB(A)).
        itemsize: Bytes per sample of the widest band (1 for 8-bit, 2 for uint16, 8 for float64).
        dtype: NumPy name of the samples, e.g. ``"uint8"``, ``"uint16"``, ``"float64"``.
        decoder: ``"rasterio"`` or ``"pillow"``: the library that read the header.

    """

    height: int
    width: int
    bands: int
    itemsize: int
    dtype: str
    decoder: str

    @property
    def pixels(self) -> int:
        """``height * width``."""
        return self.height * self.width

    @property
    def raw_bytes(self) -> int:
        """Bytes of the decoded samples: ``height * width * bands * itemsize``."""
        return self.pixels * self.bands * self.itemsize

    @property
    def decode_bytes(self) -> int:
        """Estimated peak memory, in bytes, that :func:`~landsight.data.readers.decode_image` needs.

        ``2 * raw_bytes`` (the decoder's buffer and the NumPy array) plus 3 bytes per pixel (the
        uint8 RGB result) plus, for samples that are not 8-bit, 17 bytes per pixel (the float64
        copy of one band, its finite mask and the percentile sample of the 2-98 % stretch).
        """
        per_pixel = 3 if self.dtype in ("uint8", "bool") else 20
        return 2 * self.raw_bytes + per_pixel * self.pixels


def peek_image(data: bytes, name: str) -> ImageHeader | None:
    """Read an image's size, bands and sample type from its header, without decoding the pixels.

    TIFFs (by magic bytes) are read with rasterio (``MemoryFile``: the header and tags only), then
    Pillow if rasterio cannot; other formats with Pillow (``Image.open`` reads the header only).
    Costs about a millisecond, whatever the image size.

    Args:
        data: The file's bytes.
        name: The file's path or name, used in error messages only.

    Returns:
        The header, or None when neither library recognises it
        (:func:`~landsight.data.readers.decode_image` then fails with the reason).

    Raises:
        ImageReadError: More than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels (reason
            ``"decompression bomb: ..."``).

    Example:
        >>> peek_image(Path("scene.tif").read_bytes(), "scene.tif")  # doctest: +SKIP
        ImageHeader(height=4000, width=4000, bands=1, itemsize=8, dtype='float64', decoder='rasterio')

    """
    header = None
    if data[:4] in _TIFF_MAGIC:
        header = _peek_rasterio(data)
    if header is None:
        header = _peek_pil(data, name)
    if header is not None:
        _check_bomb(header.pixels, name)
    return header


def _peek_rasterio(data: bytes) -> ImageHeader | None:
    import rasterio
    from rasterio.enums import ColorInterp

    _ignore_not_georeferenced()
    try:
        with rasterio.io.MemoryFile(data) as memfile, memfile.open() as src:
            dtypes = [np.dtype(d) for d in src.dtypes] or [np.dtype(np.uint8)]
            widest = max(dtypes, key=lambda d: d.itemsize)
            palette = src.count == 1 and tuple(src.colorinterp)[0] == ColorInterp.palette
            bands = 4 if palette else max(1, src.count)
            return ImageHeader(int(src.height), int(src.width), bands, widest.itemsize, widest.name, "rasterio")
    except Exception:  # noqa: BLE001 - not readable by rasterio: Pillow is tried next
        return None


_PIL_SAMPLES = {"I": (4, "int32"), "F": (4, "float32")}


def _peek_pil(data: bytes, name: str) -> ImageHeader | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            mode = img.mode
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"decompression bomb: {exc}") from None
    except Exception:  # noqa: BLE001 - unidentified or odd headers: decode_image reports them properly
        return None
    return _pil_header(int(height), int(width), mode)


def _pil_header(height: int, width: int, mode: str) -> ImageHeader:
    if mode.startswith("I;16"):
        itemsize, dtype = 2, "uint16"
    else:
        itemsize, dtype = _PIL_SAMPLES.get(mode, (1, "uint8"))
    bands = 4 if mode in ("P", "PA") else Image.getmodebands(mode)
    return ImageHeader(height, width, bands, itemsize, dtype, "pillow")


def _check_budget(header: ImageHeader, name: str, max_decode_bytes: int | None) -> None:
    """Raise :class:`ImageTooLargeError` when decoding ``header`` would need over ``max_decode_bytes``."""
    if max_decode_bytes is not None and header.decode_bytes > max_decode_bytes:
        raise ImageTooLargeError(name, too_large_reason(header, max_decode_bytes))


def too_large_reason(header: ImageHeader, max_decode_bytes: int) -> str:
    """Say why ``header`` is over ``max_decode_bytes`` (for error messages)."""
    return (
        f"too large to decode: {header.height}x{header.width} pixels x {header.bands} band(s) of "
        f"{header.dtype} need about {header.decode_bytes} bytes of memory, over the limit of "
        f"{max_decode_bytes} bytes (max_decode_bytes); cut the image into tiles "
        "(landsight tile) or raise the limit"
    )


def _check_bomb(pixels: int, name: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and pixels > 2 * limit:
        raise ImageReadError(
            name,
            f"decompression bomb: {pixels} pixels exceeds the limit of {2 * limit} "
            "(raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted)",
        )


@functools.cache
def _ignore_not_georeferenced() -> None:
    """Silence rasterio's NotGeoreferencedWarning once, process-wide.

    ``warnings.catch_warnings`` is not thread-safe, and decoding runs in threads.
    """
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
