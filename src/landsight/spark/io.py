"""Inputs for the Spark engine: local paths, globs, list files and fsspec URLs, as path rows.

Only path strings travel through the driver; the image bytes are read on the executors by
:func:`read_bytes` (plain files directly, ``s3://``, ``gs://``, ``az://``, ``http(s)://`` and any
other fsspec protocol through ``fsspec.open``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from landsight.errors import DataNotFoundError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

_LIST_SUFFIXES = (".txt", ".lst")


def is_url(path: str) -> bool:
    """Return True when ``path`` names a remote resource (``scheme://...``, other than ``file://``)."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() != "file" and scheme.isidentifier()


def list_inputs(inputs: str | Path | Sequence[str | Path]) -> list[str]:
    """Resolve prediction inputs to image paths or URLs, listing only (no image is opened).

    Local inputs resolve exactly as the local engine's
    :func:`landsight.data.listing.list_images` does (so both engines name images alike). URLs
    resolve with fsspec: a glob (``s3://bucket/tiles/*.png``) is expanded, a ``.txt`` / ``.lst``
    URL is read as a list file (one path or URL per line), a folder is listed recursively, and
    anything else is taken as one image. A local list file may also hold URLs.

    Args:
        inputs: A folder, glob, list file, image, URL, or a sequence of paths / URLs taken as
            they are (missing ones then become error rows when scored).

    Returns:
        Paths and URLs, in the order the local engine would use.

    Raises:
        DataNotFoundError: Nothing matches.

    """
    from landsight.data.listing import list_images
    from landsight.data.readers import IMAGE_EXTENSIONS

    if not isinstance(inputs, (str, Path)):
        return [str(p) for p in inputs]
    text = str(inputs)
    if not is_url(text):
        path = Path(text).expanduser()
        if path.is_file() and path.suffix.lower() in _LIST_SUFFIXES and _has_urls(path):
            return _list_lines(path.read_text(encoding="utf-8-sig"), base=str(path.parent))
        return list_images(text)
    import fsspec

    if any(ch in text for ch in "*?["):
        found = sorted(f.full_name for f in fsspec.open_files(text))
        found = [p for p in found if Path(p).suffix.lower() in IMAGE_EXTENSIONS]
    elif text.lower().endswith(_LIST_SUFFIXES):
        with fsspec.open(text, "rt", encoding="utf-8-sig") as f:
            found = _list_lines(f.read(), base=text.rsplit("/", 1)[0])
    else:
        fs, root = fsspec.core.url_to_fs(text)
        if fs.isdir(root):
            found = sorted(fs.unstrip_protocol(p) for p in fs.find(root) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            found = [text]
    if not found:
        raise DataNotFoundError(f"no images found in {text!r}; check the URL, pattern and credentials")
    return found


def _has_urls(path: Path) -> bool:
    with path.open(encoding="utf-8-sig") as f:
        return any(is_url(line.strip()) for line in f)


def _list_lines(text: str, base: str) -> list[str]:
    found = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_url(entry) or os.path.isabs(entry):
            found.append(entry)
        elif is_url(base):
            found.append(f"{base}/{entry}")
        else:
            found.append(os.path.abspath(os.path.join(base, entry)))
    return found


def paths_frame(
    spark: SparkSession, paths: Sequence[str], *, extra: pd.DataFrame | None = None, partitions: int | None = None
) -> DataFrame:
    """Make a Spark DataFrame of paths (and optional extra columns), spread over partitions.

    Args:
        spark: The session.
        paths: Image paths / URLs.
        extra: Optional columns aligned with ``paths`` (e.g. ``label``, ``split``).
        partitions: Number of partitions (default :func:`default_partitions`).

    Returns:
        DataFrame with a ``path`` string column first, then ``extra``'s columns.

    """
    import pandas as pd

    from landsight.spark.session import default_parallelism

    pdf = pd.DataFrame({"path": [str(p) for p in paths]})
    if extra is not None:
        pdf = pd.concat([pdf, extra.reset_index(drop=True)], axis=1)
    n = partitions or default_partitions(len(pdf), default_parallelism(spark))
    return spark.createDataFrame(pdf).repartition(n)


def default_partitions(n_images: int, parallelism: int, per_partition: int = 256) -> int:
    """Partitions for ``n_images``: at least 2 per core (load balance), at most ``per_partition`` each.

    Args:
        n_images: Rows to score.
        parallelism: Cores Spark can use.
        per_partition: Largest partition wanted (smaller ones resume and balance better).

    Returns:
        Partition count, between 1 and ``n_images``.

    """
    want = max(2 * parallelism, -(-n_images // per_partition))
    return max(1, min(want, n_images))


def read_bytes(path: str) -> bytes:
    """Read one image's bytes on an executor: plain files directly, URLs through fsspec.

    Args:
        path: Local path or fsspec URL.

    Returns:
        The bytes.

    Raises:
        OSError: The file cannot be opened (fsspec errors are re-raised as ``OSError``).

    """
    if not is_url(path):
        return Path(path.removeprefix("file://")).read_bytes()
    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp...)
        raise OSError(str(exc)) from exc
