"""Safe extraction of zip archives: no member outside the folder, no zip bombs, one cache.

:func:`safe_extract` checks every member from the central directory before anything is written
(zip slip: absolute paths, ``..`` components, symlinks; zip bombs: member count, total size,
compression ratio of each large member and of the whole archive, free disk space), enforces the
limits again while the bytes are written (counting the bytes actually inflated: declared sizes
can lie), and renames a complete extraction into place (a marker file holds the archive's sha256,
so a complete extraction is reused and an interrupted one never is). Extractions into the
landsight cache (:func:`landsight.cache.cache_dir`) are pruned to the :data:`ZIP_KEEP_EXTRACTIONS`
most recently used that fit in :data:`ZIP_CACHE_BYTES`.

Used by :func:`landsight.data.catalog.build_catalog` (zipped training data) and
:func:`landsight.bundle.load_bundle` (zipped bundles).

Example:
    >>> safe_extract("EuroSAT.zip", "data/eurosat", max_bytes=4 * 1024**3)  # doctest: +SKIP

"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from landsight.cache import cache_dir, file_digest
from landsight.errors import DataNotFoundError, LandsightValueError, ResourceLimitError, UnsafeArchiveError

__all__ = [
    "ZIP_CACHE_BYTES",
    "ZIP_KEEP_EXTRACTIONS",
    "ZIP_MAX_BYTES",
    "ZIP_MAX_MEMBERS",
    "ZIP_MAX_RATIO",
    "ZIP_RATIO_MIN_BYTES",
    "extract_cached",
    "safe_extract",
]

_EXTRACTED_MARKER = ".landsight-extracted"

ZIP_MAX_BYTES = 32 * 1024**3
"""Largest total uncompressed size, in bytes, of a zip that :func:`safe_extract` extracts (32 GiB).

Environment override: ``LANDSIGHT_ZIP_MAX_BYTES``."""

ZIP_MAX_MEMBERS = 1_000_000
"""Most members (files and folders) in a zip that :func:`safe_extract` extracts.

Environment override: ``LANDSIGHT_ZIP_MAX_MEMBERS``."""

ZIP_MAX_RATIO = 200.0
"""Largest compression ratio (uncompressed / compressed size) of a zip member over
:data:`ZIP_RATIO_MIN_BYTES`, and of the whole archive (total uncompressed size / archive file
size) when it inflates to more than :data:`ZIP_RATIO_MIN_BYTES`; image files compress little, zip
bombs by about 1000 (a zip of many members just under 8 MiB is caught by the whole-archive ratio).

Environment override: ``LANDSIGHT_ZIP_MAX_RATIO``."""

ZIP_RATIO_MIN_BYTES = 8 * 1024**2
"""Members up to this many uncompressed bytes (8 MiB) may compress any amount (a mask of one class
does), and so may a whole archive that inflates to no more; larger ones must stay within
:data:`ZIP_MAX_RATIO`."""

ZIP_CACHE_BYTES = 8 * 1024**3
"""Most bytes kept in each cache folder of extractions (8 GiB): after an extraction into the
cache, older extractions are deleted from the oldest until the rest fit (the new one is always
kept).

Environment override: ``LANDSIGHT_ZIP_CACHE_BYTES``."""

ZIP_KEEP_EXTRACTIONS = 5
"""Extractions kept in each cache folder (``<cache>/extracted``, ``<cache>/bundles``): the most
recently used; older ones are deleted after each extraction into the cache.

Environment override: ``LANDSIGHT_ZIP_KEEP_EXTRACTIONS``."""


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    *,
    max_bytes: int | None = None,
    max_ratio: float | None = None,
    max_members: int | None = None,
) -> Path:
    """Extract a zip archive into ``dest``, refusing members that would escape it and zip bombs.

    Every member is checked from the central directory before anything is written: absolute
    paths, ``..`` components and symlink members raise
    :class:`~landsight.errors.UnsafeArchiveError` ("zip slip"); more than ``max_members``
    members, more than ``max_bytes`` uncompressed bytes in all (or more than the free disk space),
    a member over :data:`ZIP_RATIO_MIN_BYTES` compressed more than ``max_ratio`` times, or a whole
    archive that inflates to more than :data:`ZIP_RATIO_MIN_BYTES` and more than ``max_ratio``
    times its file size, raise :class:`~landsight.errors.ResourceLimitError`. The limits are
    enforced again on the bytes actually inflated while they are written (a member that inflates
    past its declared size stops at once), so a lying header does not get past them.

    Members are extracted to a temporary sibling folder that is renamed to ``dest`` only when
    complete, so an interrupted extraction is never reused; on any failure the temporary folder is
    deleted. When ``dest`` already holds a complete extraction of the same archive (same sha256),
    it is returned as is. When ``dest`` lies in the landsight cache (:func:`landsight.cache.cache_dir`:
    ``build_catalog`` and ``load_bundle`` extract there), only the :data:`ZIP_KEEP_EXTRACTIONS`
    most recently used extractions of its cache folder are kept: older ones, and temporary folders
    left by killed processes over an hour ago, are deleted. Folders outside the cache are never
    pruned. The cache also keeps at most :data:`ZIP_CACHE_BYTES` of extractions
    (``$LANDSIGHT_ZIP_CACHE_BYTES``): the oldest are deleted until the rest fit.

    Args:
        archive: The ``.zip`` file.
        dest: Folder to create; must not exist, be empty, or hold this archive's extraction.
        max_bytes: Largest total uncompressed size in bytes; default :data:`ZIP_MAX_BYTES`
            (``$LANDSIGHT_ZIP_MAX_BYTES``).
        max_ratio: Largest compression ratio of a member over :data:`ZIP_RATIO_MIN_BYTES`, and of
            the whole archive; default :data:`ZIP_MAX_RATIO` (``$LANDSIGHT_ZIP_MAX_RATIO``).
        max_members: Most members; default :data:`ZIP_MAX_MEMBERS` (``$LANDSIGHT_ZIP_MAX_MEMBERS``).

    Returns:
        ``dest`` as a Path.

    Raises:
        DataNotFoundError: ``archive`` does not exist.
        LandsightValueError: ``archive`` is not a zip file or is corrupt, ``dest`` holds other
            files, or a limit (argument or environment variable, ``LANDSIGHT_ZIP_CACHE_BYTES``
            included) is not a positive number.
        UnsafeArchiveError: A member would be written outside ``dest`` or is a symlink.
        ResourceLimitError: Over a size, ratio, member-count or disk-space limit; nothing is left
            behind.

    Example:
        >>> safe_extract("EuroSAT.zip", "data/eurosat", max_bytes=4 * 1024**3)  # doctest: +SKIP

    """
    archive = Path(archive)
    if not archive.is_file():
        raise DataNotFoundError(f"archive {str(archive)!r} does not exist; check the path")
    limits = _zip_limits(max_bytes, max_ratio, max_members)
    return extract_cached(archive, Path(dest), file_digest(archive), limits)


# ----------------------------------------------------------------------------- internals


def _check_members(zf: zipfile.ZipFile, archive: Path, dest: Path) -> None:
    base = dest.resolve()
    for info in zf.infolist():
        name = info.filename
        posix = PurePosixPath(name.replace("\\", "/"))
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        absolute = posix.is_absolute() or (len(name) > 1 and name[1] == ":")
        target = (base / posix).resolve()
        if is_link or absolute or ".." in posix.parts or not target.is_relative_to(base):
            what = "is a symlink" if is_link else f"would be written outside {str(dest)!r}"
            raise UnsafeArchiveError(
                f"archive {str(archive)!r} member {name!r} {what}; refusing to extract (zip "
                "slip). Re-create the archive with plain files at relative paths"
            )


_ZIP_ENV = {
    "max_bytes": "LANDSIGHT_ZIP_MAX_BYTES",
    "max_ratio": "LANDSIGHT_ZIP_MAX_RATIO",
    "max_members": "LANDSIGHT_ZIP_MAX_MEMBERS",
}
_STALE_PART_SECONDS = 3600.0


def _zip_limits(
    max_bytes: int | None = None, max_ratio: float | None = None, max_members: int | None = None
) -> dict[str, float]:
    """The extraction limits: arguments, else ``LANDSIGHT_ZIP_*`` variables, else the module constants."""
    given = {"max_bytes": max_bytes, "max_ratio": max_ratio, "max_members": max_members}
    defaults = {"max_bytes": ZIP_MAX_BYTES, "max_ratio": ZIP_MAX_RATIO, "max_members": ZIP_MAX_MEMBERS}
    limits: dict[str, float] = {}
    for key, value in given.items():
        where = f"{key}={value!r}"
        if value is None:
            raw = os.environ.get(_ZIP_ENV[key], "").strip()
            where = f"{_ZIP_ENV[key]}={raw!r}"
            try:
                value = float(raw) if raw else defaults[key]
            except ValueError:
                value = -1
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise LandsightValueError(f"zip extraction limit {where} must be a positive number")
        limits[key] = value
    return limits


def _zip_limit_error(archive: Path, what: str, key: str, needed: str) -> ResourceLimitError:
    return ResourceLimitError(
        f"archive {str(archive)!r} {what} (a zip bomb?); refusing to extract it, nothing was left "
        f"behind. If the archive is trusted, raise the limit: safe_extract(..., {key}={needed}) or "
        f"{_ZIP_ENV[key]}={needed}"
    )


def _check_sizes(zf: zipfile.ZipFile, archive: Path, limits: dict[str, float]) -> int:
    """Check the central directory against the limits; return the total uncompressed bytes.

    Each member over :data:`ZIP_RATIO_MIN_BYTES` must stay within the ratio, and so must the
    whole archive (declared uncompressed total / archive file size) once it inflates past
    :data:`ZIP_RATIO_MIN_BYTES`: many members just under the per-member threshold add up.
    """
    infos = zf.infolist()
    if len(infos) > limits["max_members"]:
        what = f"holds {len(infos)} members, over the limit of {limits['max_members']:.0f}"
        raise _zip_limit_error(archive, what, "max_members", str(len(infos)))
    total = sum(info.file_size for info in infos)
    if total > limits["max_bytes"]:
        what = f"would extract to {total} bytes, over the limit of {limits['max_bytes']:.0f} bytes"
        raise _zip_limit_error(archive, what, "max_bytes", str(total))
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > ZIP_RATIO_MIN_BYTES and ratio > limits["max_ratio"]:
            what = (
                f"member {info.filename!r} inflates {info.compress_size} bytes to {info.file_size} "
                f"(compression ratio {ratio:.0f}, over the limit of {limits['max_ratio']:g})"
            )
            raise _zip_limit_error(archive, what, "max_ratio", f"{ratio + 1:.0f}")
    size = archive.stat().st_size
    ratio = total / max(size, 1)
    if total > ZIP_RATIO_MIN_BYTES and ratio > limits["max_ratio"]:
        what = (
            f"inflates {size} bytes to {total} bytes in all, in {len(infos)} members (compression ratio "
            f"{ratio:.0f}, over the limit of {limits['max_ratio']:g})"
        )
        raise _zip_limit_error(archive, what, "max_ratio", f"{ratio + 1:.0f}")
    return total


def _write_members(zf: zipfile.ZipFile, archive: Path, root: Path, limits: dict[str, float]) -> int:
    """Write every member under ``root``, counting the bytes as they are written (1 MiB chunks).

    The central directory was checked already; this stops a member whose data inflates past its
    declared size (a lying header) as soon as it does, and keeps the running total, each member's
    ratio and the whole archive's ratio within the limits whatever the headers say.

    Returns:
        The bytes written.
    """
    archive_size = max(archive.stat().st_size, 1)
    written = 0
    for info in zf.infolist():
        parts = [p for p in info.filename.split("/") if p not in ("", ".")]
        if not parts:
            continue
        target = root.joinpath(*parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                size += len(chunk)
                written += len(chunk)
                ratio = size / max(info.compress_size, 1)
                if (
                    size > info.file_size
                    or written > limits["max_bytes"]
                    or (size > ZIP_RATIO_MIN_BYTES and ratio > limits["max_ratio"])
                    or (written > ZIP_RATIO_MIN_BYTES and written / archive_size > limits["max_ratio"])
                ):
                    raise ResourceLimitError(
                        f"archive {str(archive)!r} member {info.filename!r} inflated to {size} bytes "
                        f"({written} in all) from {info.compress_size} compressed, past its declared "
                        f"{info.file_size} bytes or the limits ({limits['max_bytes']:.0f} bytes, ratio "
                        f"{limits['max_ratio']:g}): its header lies, the archive is corrupt or malicious; "
                        "refusing to extract it, nothing was left behind. Re-create the archive"
                    )
                out.write(chunk)
    return written


def extract_cached(archive: Path, dest: Path, digest: str, limits: dict[str, float] | None = None) -> Path:
    """:func:`safe_extract` for a caller that already hashed the archive (to choose ``dest``).

    Args:
        archive: The ``.zip`` file (it must exist).
        dest: Folder to create; must not exist, be empty, or hold this archive's extraction.
        digest: The archive's sha256 (:func:`landsight.cache.file_digest`), stored in the marker.
        limits: The limits (see ``_zip_limits``); default the ``LANDSIGHT_ZIP_*`` variables, else
            the module constants.

    Returns:
        ``dest``.

    Raises:
        LandsightValueError: Not a zip, corrupt, ``dest`` holds other files, or
            ``LANDSIGHT_ZIP_CACHE_BYTES`` is not a positive number.
        UnsafeArchiveError: A member would be written outside ``dest`` or is a symlink.
        ResourceLimitError: Over a limit (see :func:`safe_extract`).
    """
    marker = dest / _EXTRACTED_MARKER
    if _marked_digest(marker) == digest:
        os.utime(marker)  # most recently used: kept by _prune_extractions
        return dest
    if not zipfile.is_zipfile(archive):
        raise LandsightValueError(
            f"archive {str(archive)!r} is not a zip file; pass a .zip archive or the extracted folder"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise LandsightValueError(
            f"extract_dir {str(dest)!r} already exists and holds other files; pass an empty or new folder"
        )
    limits = limits if limits is not None else _zip_limits()
    quota = _cache_quota()
    with zipfile.ZipFile(archive) as zf:
        _check_members(zf, archive, dest)
        total = _check_sizes(zf, archive, limits)
        dest.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest.parent).free
        if total > free:
            raise ResourceLimitError(
                f"archive {str(archive)!r} would extract to {total} bytes but {str(dest.parent)!r} has only "
                f"{free} bytes free; free some space or extract it elsewhere (build_catalog(extract_dir=...), "
                "$LANDSIGHT_CACHE_DIR)"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.part-", dir=dest.parent))
        try:
            written = _write_members(zf, archive, tmp, limits)
            (tmp / _EXTRACTED_MARKER).write_text(f"{digest}\n{written}\n")  # the size: for the cache quota
            if dest.exists():
                dest.rmdir()  # empty (checked above)
            os.replace(tmp, dest)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if _marked_digest(marker) == digest:
                return dest  # a concurrent extraction of the same archive won the race
            if isinstance(exc, zipfile.BadZipFile | EOFError | zlib.error | NotImplementedError):
                raise LandsightValueError(
                    f"archive {str(archive)!r} is corrupt or uses an unsupported compression ({exc}); "
                    "re-create or re-download it"
                ) from exc
            raise
    _prune_extractions(dest, quota)
    return dest


def _marked_digest(marker: Path) -> str | None:
    """The archive digest in an extraction marker (its first line), or None without one."""
    try:
        lines = marker.read_text().split()
    except OSError:
        return None
    return lines[0] if lines else ""


def _extraction_bytes(folder: Path) -> int:
    """Bytes of an extraction: from its marker (second line), else by walking the folder."""
    try:
        lines = (folder / _EXTRACTED_MARKER).read_text().split()
        if len(lines) > 1 and lines[1].isdigit():
            return int(lines[1])
    except OSError:
        pass
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _cache_quota() -> int:
    """Most bytes of extractions kept per cache folder: ``$LANDSIGHT_ZIP_CACHE_BYTES``, else :data:`ZIP_CACHE_BYTES`.

    Raises:
        LandsightValueError: The variable is set but not a positive number.
    """
    raw = os.environ.get("LANDSIGHT_ZIP_CACHE_BYTES", "").strip()
    if not raw:
        return ZIP_CACHE_BYTES
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if not value > 0:
        raise LandsightValueError(
            f"LANDSIGHT_ZIP_CACHE_BYTES={raw!r} must be a positive number of bytes (default {ZIP_CACHE_BYTES})"
        )
    return int(value)


def _prune_extractions(dest: Path, quota: int = ZIP_CACHE_BYTES) -> None:
    """Keep the most recently used complete extractions beside ``dest`` when it lies in the cache.

    Kept: ``dest``, then the most recently used others while they are fewer than
    ``$LANDSIGHT_ZIP_KEEP_EXTRACTIONS`` and all of them fit in ``quota`` bytes; the older ones are
    deleted. Only folders holding the extraction marker are deleted (never ``dest``), and
    temporary ``.*.part-*`` folders older than an hour (left by killed processes). Outside the
    cache nothing is touched: extractions the user placed are theirs.
    """
    parent = dest.parent.resolve()
    if not parent.is_relative_to(cache_dir().resolve()):
        return
    raw = os.environ.get("LANDSIGHT_ZIP_KEEP_EXTRACTIONS", "").strip()
    keep = int(raw) if raw.isdigit() and int(raw) > 0 else ZIP_KEEP_EXTRACTIONS
    now = time.time()
    done: list[tuple[float, Path]] = []
    for entry in parent.iterdir():
        try:
            if entry.name.startswith(".") and ".part-" in entry.name and entry.is_dir():
                if now - entry.stat().st_mtime > _STALE_PART_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir() and entry.resolve() != dest.resolve() and (entry / _EXTRACTED_MARKER).is_file():
                done.append(((entry / _EXTRACTED_MARKER).stat().st_mtime, entry))
        except OSError:
            continue  # vanished meanwhile (another process pruned it)
    done.sort(reverse=True)
    used, kept, full = _extraction_bytes(dest), 1, False  # dest counts as one of the kept
    for _, entry in done:
        size = _extraction_bytes(entry)
        full = full or kept >= keep or used + size > quota
        if full:  # this one and every older one
            shutil.rmtree(entry, ignore_errors=True)
        else:
            used, kept = used + size, kept + 1
