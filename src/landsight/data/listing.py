"""Listing unlabelled images for prediction: folders, globs, list files, single images, STAC.

:func:`list_images` is what ``predict``, ``dedup`` and the Spark engine read their inputs with.
The helpers that walk folders (hidden entries skipped) and refuse FIFOs, devices and sockets
before opening them are shared with :mod:`landsight.data.catalog`, which reads labelled sources.

Example:
    >>> list_images("scenes/**/*.tif")  # doctest: +SKIP

"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from landsight.data.readers import IMAGE_EXTENSIONS
from landsight.errors import DataNotFoundError, LandsightValueError

if TYPE_CHECKING:
    from landsight.data.stac import AllowRemote

__all__ = ["NOT_REGULAR", "list_images"]

_LIST_EXTENSIONS = frozenset({".txt", ".lst"})

NOT_REGULAR = "not a regular file (a FIFO, device or socket); not read"
"""Error of a listed path that exists but is not a regular file: reading it could block forever."""


def list_images(source: str | Path, *, asset: str | None = None, allow_remote: AllowRemote = True) -> list[str]:
    """List unlabelled images for prediction.

    Args:
        source: A folder (searched recursively, hidden entries skipped), a glob pattern
            (``*``, ``?``, ``[``; ``**`` matches folders recursively), a list file (``.txt`` or
            ``.lst``: one path per line, relative to the list file; blank lines and ``#``
            comments skipped), a single image file, or a STAC Item / Catalog / Collection /
            ItemCollection JSON (local file or URL; :func:`landsight.data.stac.stac_assets`):
            one asset href per Item, in catalog order (URLs are kept as URLs).
        asset: STAC asset key (``None`` = the first raster asset with role ``"data"`` or type
            ``image/tiff``); only for a STAC ``source``.
        allow_remote: For a STAC ``source``: which hosts it may make landsight contact, True any
            (default), False none (the JSON, every linked document and every asset href must be
            local; ``--no-remote``), or a collection of host names
            (:func:`landsight.data.stac.stac_items`).

    Returns:
        Sorted absolute paths. Folders and globs keep only files with an extension in
        :data:`~landsight.data.readers.IMAGE_EXTENSIONS`; a list file keeps its order. Entries
        that are not regular files (a FIFO, device or socket named ``x.jpg``) are listed too,
        never opened here: the loader gives each an error row (:data:`NOT_REGULAR`) instead of
        blocking on it.

    Raises:
        DataNotFoundError: Nothing matches, a listed path is missing, or a STAC JSON (or a local
            document it links to) does not exist.
        LandsightValueError: ``source`` is a file that is neither an image nor a list file, or a
            list file that is not a regular file; a STAC source without the asset, unreadable,
            with a cycle or with a remote href ``allow_remote`` refuses; ``asset`` given for a
            source that is not STAC.

    Example:
        >>> list_images("scenes/**/*.tif")  # doctest: +SKIP

    """
    from landsight.data.stac import is_stac_source, stac_assets

    if is_stac_source(source):
        return stac_assets(source, asset, allow_remote=allow_remote)
    if asset is not None:
        raise LandsightValueError(f"asset={asset!r} applies to a STAC JSON source, not {str(source)!r}; drop asset=")
    path = Path(source).expanduser()
    text = str(source)
    if path.is_dir():
        found = sorted(walk_images(path))
    elif path.exists():  # a FIFO, device or socket image is listed; the loader gives it an error row
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            found = [os.path.abspath(path)]
        elif suffix in _LIST_EXTENSIONS:
            require_regular(path, "list file")
            found = _read_list_file(path)
        else:
            raise LandsightValueError(
                f"source {text!r} is neither an image ({sorted(IMAGE_EXTENSIONS)}) nor a list "
                "file (.txt/.lst, one path per line); pass a folder, a glob or a list file"
            )
    elif any(ch in text for ch in "*?["):
        found = sorted(
            os.path.abspath(p)
            for p in glob.glob(os.path.expanduser(text), recursive=True)
            if not os.path.isdir(p) and Path(p).suffix.lower() in IMAGE_EXTENSIONS
        )
    else:
        raise DataNotFoundError(
            f"source {text!r} does not exist; pass a folder, a glob pattern, a list file or an image file"
        )
    if not found:
        raise DataNotFoundError(
            f"no images found in {text!r} (extensions: {sorted(IMAGE_EXTENSIONS)}); check the path or pattern"
        )
    return found


def is_listable(path: str) -> bool:
    """A listed image that exists and is not a folder (non-regular files are listed and fail one by one)."""
    return os.path.exists(path) and not os.path.isdir(path)


def require_regular(path: Path, what: str) -> None:
    """Refuse a source / list file that is a FIFO, device or socket before opening it (it could block)."""
    if path.exists() and not path.is_file():
        raise LandsightValueError(f"{what} {str(path)!r} is {NOT_REGULAR}; pass a regular file or a folder")


def is_hidden(name: str) -> bool:
    """A hidden file or folder (``.name``) or macOS zip metadata (``__MACOSX``), skipped everywhere."""
    return name.startswith(".") or name == "__MACOSX"


def _is_image(name: str) -> bool:
    return not is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> Iterable[str]:
    """Absolute paths of the visible image files under ``folder`` (recursive; hidden folders skipped)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        for name in filenames:
            if _is_image(name):
                yield os.path.abspath(os.path.join(dirpath, name))


def _read_list_file(path: Path) -> list[str]:
    base = path.parent
    found = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            found.append(os.path.abspath(base / Path(entry).expanduser()))
    missing = [p for p in found if not is_listable(p)]
    if missing:
        raise DataNotFoundError(
            f"list file {str(path)!r} names {len(missing)} missing file(s), e.g. {missing[:5]}; "
            "relative paths are resolved against the list file's folder"
        )
    return found
