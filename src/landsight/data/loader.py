"""Batched, threaded image loading: read bytes, hash, decode, resize; bad files reported, not fatal.

Decoding and resizing run in a small thread pool (PIL and rasterio release the GIL), so the
network runtime on the main thread overlaps with them. Threads rather than DataLoader worker
processes: on a 2-core CPU, processes cost more in pickling the uint8 batches than they save.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from landsight.data.preprocessing import Preprocessing
from landsight.data.readers import decode_image
from landsight.errors import ImageReadError, LandsightError


@dataclass
class LoadedImage:
    """One input after loading.

    Attributes:
        path: The path as given.
        sha256: Hex digest of the file's bytes (empty when the file could not be read).
        array: ``(H, W, C)`` uint8 resized to the network input, or ``None`` when skipped
            (cached) or failed.
        bounds: ``(left, bottom, right, top)`` in ``crs`` units, for georeferenced images.
        crs: CRS string (``"EPSG:26917"``) or ``None``.
        error: Why the image could not be used (empty when fine).

    """

    path: str
    sha256: str = ""
    array: np.ndarray | None = None
    bounds: tuple[float, float, float, float] | None = None
    crs: str | None = None
    error: str = ""


@dataclass
class ImageBatch:
    """A batch of :class:`LoadedImage`, in input order."""

    items: list[LoadedImage] = field(default_factory=list)

    def stack(self) -> tuple[list[int], np.ndarray | None]:
        """Return the positions of decoded items and their ``(n, H, W, C)`` uint8 stack."""
        idx = [i for i, it in enumerate(self.items) if it.array is not None]
        if not idx:
            return idx, None
        return idx, np.stack([self.items[i].array for i in idx])  # type: ignore[misc]


def load_one(
    path: str,
    preprocessing: Preprocessing,
    skip: Callable[[str], bool] | None = None,
    *,
    max_decode_bytes: int | None = None,
) -> LoadedImage:
    """Read, hash, decode and resize one image; never raises for a bad file.

    Args:
        path: Image path.
        preprocessing: Band choice and input size.
        skip: Called with the content hash; when it returns True the image is not decoded
            (e.g. its features are already cached).
        max_decode_bytes: Skip (with an ``error``) an image whose estimated decoding memory,
            read from its header, is over this many bytes; None: no byte limit.

    Returns:
        The loaded image, with ``error`` set instead of ``array`` when it failed.

    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read forever
            from landsight.data.listing import NOT_REGULAR

            return LoadedImage(path=path, error=NOT_REGULAR)
        data = Path(path).read_bytes()
    except OSError as exc:
        return LoadedImage(path=path, error=f"cannot open file: {exc.strerror or exc}")
    return load_bytes(path, data, preprocessing, skip, max_decode_bytes=max_decode_bytes)


def load_bytes(
    path: str,
    data: bytes,
    preprocessing: Preprocessing,
    skip: Callable[[str], bool] | None = None,
    *,
    max_decode_bytes: int | None = None,
) -> LoadedImage:
    """Hash, decode and resize the bytes of one image already read; never raises for a bad file.

    The part of :func:`load_one` after the read, shared with engines that read the bytes
    themselves (``landsight.spark`` reads them on the executors through fsspec).

    Args:
        path: The image's path or URL as given (names the image in rows and messages).
        data: The file's bytes.
        preprocessing: Band choice and input size.
        skip: See :func:`load_one`.
        max_decode_bytes: See :func:`load_one`.

    Returns:
        The loaded image, with ``error`` set instead of ``array`` when it failed.

    """
    item = LoadedImage(path=path)
    item.sha256 = hashlib.sha256(data).hexdigest()
    if skip is not None and skip(item.sha256):
        return item
    try:
        image = decode_image(data, path, bands=preprocessing.bands, max_decode_bytes=max_decode_bytes)
    except ImageReadError as exc:
        item.error = exc.reason
        return item
    except LandsightError as exc:
        item.error = str(exc)
        return item
    n_chans = len(preprocessing.mean)
    if image.array.shape[2] != n_chans:
        item.error = f"has {image.array.shape[2]} channels after band selection, the model needs {n_chans}"
        return item
    item.array = preprocessing.resize(image.array)
    item.bounds, item.crs = image.bounds, image.crs
    return item


def iter_batches(
    paths: Sequence[str],
    preprocessing: Preprocessing,
    *,
    batch_size: int = 32,
    num_workers: int = 2,
    skip: Callable[[str], bool] | None = None,
    max_decode_bytes: int | None = None,
) -> Iterator[ImageBatch]:
    """Yield batches of loaded images in input order, decoding ahead in threads.

    Args:
        paths: Image paths.
        preprocessing: Band choice and input size.
        batch_size: Images per batch (>= 1).
        num_workers: Decoding threads (0 = decode on the calling thread).
        skip: See :func:`load_one`.
        max_decode_bytes: See :func:`load_one`.

    Yields:
        :class:`ImageBatch` of up to ``batch_size`` items.

    """
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

    def load(path: str) -> LoadedImage:
        return load_one(path, preprocessing, skip, max_decode_bytes=max_decode_bytes)

    if num_workers <= 0:
        for chunk in chunks:
            yield ImageBatch([load(p) for p in chunk])
        return
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        pending = []
        ahead = 2  # chunks decoded ahead of the consumer
        for chunk in chunks[:ahead]:
            pending.append([pool.submit(load, p) for p in chunk])
        next_chunk = ahead
        while pending:
            futures = pending.pop(0)
            if next_chunk < len(chunks):
                pending.append([pool.submit(load, p) for p in chunks[next_chunk]])
                next_chunk += 1
            yield ImageBatch([f.result() for f in futures])
