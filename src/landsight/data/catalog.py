"""Catalogs: tables of labelled images built from folders, map files or zip archives.

A catalog is a :class:`pandas.DataFrame` with columns ``path`` (str, absolute) and ``label``
(str), sorted by ``(label, path)`` with a fresh ``RangeIndex``. :func:`split_catalog` adds a
``split`` column.

Accepted sources for :func:`build_catalog`:

* **class folders**: ``root/<label>/**/<image>`` (one sub-folder per class, searched
  recursively; hidden files and folders are ignored). A root holding exactly one sub-folder
  that itself holds sub-folders is descended into (zips often wrap one top folder).
* **map file** (``.csv``, ``.tsv``, ``.txt``, ``.map``): one ``path,label`` or
  ``path<TAB>label`` row per image (delimiter sniffed, optional ``path,label`` header, relative
  paths resolved against the map file's folder). CNTK style ``path<TAB>class_index`` rows take
  their names from ``class_names``, a text file with one class name per line (line i = class i).
* **zip archive**: safely extracted (:func:`safe_extract`), then a map file at its top level,
  class folders, or flat files named ``<label>.<anything>.<ext>`` (Kaggle dogs-vs-cats
  ``train.zip``: ``cat.123.jpg`` -> ``cat``): the label is the text before the first ``.``.

Example:
    >>> catalog = build_catalog("EuroSAT/")  # doctest: +SKIP
    >>> split_catalog(catalog, test_size=0.2, val_size=0.1).split.value_counts()  # doctest: +SKIP

"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from collections.abc import Collection, Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

from landsight.cache import cache_dir, file_digest
from landsight.data.readers import IMAGE_EXTENSIONS
from landsight.data.splits import PATH_HEADERS
from landsight.errors import DataNotFoundError, LandsightValueError, ResourceLimitError, UnsafeArchiveError

__all__ = [
    "MAP_EXTENSIONS",
    "ZIP_KEEP_EXTRACTIONS",
    "ZIP_MAX_BYTES",
    "ZIP_MAX_MEMBERS",
    "ZIP_MAX_RATIO",
    "ZIP_RATIO_MIN_BYTES",
    "build_catalog",
    "check_test_labels",
    "list_images",
    "safe_extract",
    "split_catalog",
    "validate_catalog",
]

MAP_EXTENSIONS: frozenset[str] = frozenset({".csv", ".tsv", ".txt", ".map"})
"""Extensions of map files (``path,label`` rows) accepted by :func:`build_catalog`."""

_LIST_EXTENSIONS = frozenset({".txt", ".lst"})
_PATH_HEADERS = PATH_HEADERS
_LABEL_HEADERS = {"label", "class", "class_name", "class_index", "category"}
_EXTRACTED_MARKER = ".landsight-extracted"
_LAYOUTS = (
    "expected a folder with one sub-folder per class (root/<label>/<image>), a map file "
    "(.csv/.tsv/.txt/.map with 'path,label' rows) or a .zip archive of either"
)


def build_catalog(
    source: str | Path,
    *,
    class_names: str | Path | None = None,
    extract_dir: str | Path | None = None,
    min_classes: int = 2,
) -> pd.DataFrame:
    """Build a catalog of labelled images from class folders, a map file or a zip archive.

    See the module docstring for the accepted layouts. The result is checked with
    :func:`validate_catalog`, so it holds at least ``min_classes`` classes.

    Args:
        source: A folder of class sub-folders, a map file or a ``.zip`` archive.
        class_names: Text file with one class name per line (line i names class i), used when
            the map file's labels are integer class indices (CNTK form). A relative path that
            does not exist is also looked up inside the extracted zip.
        extract_dir: Where a zip is extracted. Default:
            ``<cache>/extracted/<first 16 hex of the zip's sha256>`` (cache:
            :func:`landsight.cache.cache_dir`, ``$LANDSIGHT_CACHE_DIR`` or
            ``~/.cache/landsight``); an earlier complete extraction is reused.
        min_classes: Fewest classes accepted: 2 to train a classifier, 1 for held-out data.

    Returns:
        DataFrame with columns ``path`` (absolute str) and ``label`` (str), sorted by
        ``(label, path)``.

    Raises:
        DataNotFoundError: ``source``, ``class_names`` or a path listed in a map file is missing.
        LandsightValueError: The layout is not recognised, a class folder is empty, a map file
            row is malformed, or there are fewer than two classes.
        UnsafeArchiveError: A zip member would land outside the extraction folder.

    Example:
        >>> build_catalog("data/eurosat_rgb").label.nunique()  # doctest: +SKIP
        10

    """
    src = Path(source).expanduser()
    if not src.exists():
        raise DataNotFoundError(f"source {str(source)!r} does not exist; {_LAYOUTS}")
    if not src.is_dir():
        _require_regular(src, "source")
    if src.is_dir():
        root = _descend(src)
        catalog = _from_class_folders(root)
    elif src.suffix.lower() == ".zip" or zipfile.is_zipfile(src):
        digest = file_digest(src)
        dest = Path(extract_dir) if extract_dir is not None else cache_dir("extracted") / digest[:16]
        root = _extract(src, dest, digest)
        catalog = _from_extracted(root, class_names)
    elif src.suffix.lower() in MAP_EXTENSIONS:
        catalog = _from_map_file(src, class_names)
    else:
        raise LandsightValueError(f"source {str(source)!r} is not a supported source: {_LAYOUTS}")
    validate_catalog(catalog, source=str(source), min_classes=min_classes)
    return catalog


def validate_catalog(catalog: pd.DataFrame, *, source: str, min_classes: int = 2) -> None:
    """Check that a catalog can train a classifier.

    Args:
        catalog: DataFrame with columns ``path`` and ``label``.
        source: Where the catalog came from, for the error message.
        min_classes: Fewest classes accepted (2 to train a classifier).

    Raises:
        LandsightValueError: Columns are missing, the catalog is empty, or it holds fewer than
            two classes.

    """
    missing = [c for c in ("path", "label") if c not in catalog.columns]
    if missing:
        raise LandsightValueError(
            f"catalog from {source!r} lacks column(s) {missing}; a catalog needs columns "
            "'path' and 'label' (build one with build_catalog)"
        )
    if len(catalog) == 0:
        raise LandsightValueError(f"catalog from {source!r} is empty: no labelled images found; {_LAYOUTS}")
    classes = sorted(catalog["label"].astype(str).unique())
    if len(classes) < min_classes:
        raise LandsightValueError(
            f"catalog needs at least two classes, found {len(classes)}: {classes} in {source!r}; "
            "add a sub-folder (or map-file rows) for each other class"
        )


def check_test_labels(train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Check that every label of a test catalog also occurs in the train catalog.

    Args:
        train: Train catalog (column ``label``).
        test: Test catalog (column ``label``).

    Raises:
        LandsightValueError: The test catalog has labels the train catalog lacks.

    """
    known = set(train["label"].astype(str))
    unseen = sorted(set(test["label"].astype(str)) - known)
    if unseen:
        raise LandsightValueError(
            f"test labels {unseen} do not occur in the train catalog (train classes: "
            f"{sorted(known)}); rename the test class folders to match, or add training images"
        )


def split_catalog(
    catalog: pd.DataFrame,
    *,
    test_size: float = 0.2,
    val_size: float = 0.0,
    random_state: int = 0,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
    map_file: str | Path | None = None,
) -> pd.DataFrame:
    """Add a stratified, seeded ``split`` column ("train", "val" or "test") to a catalog.

    The split itself is :func:`landsight.data.splits.assign_splits`; how it was made
    (:class:`~landsight.data.splits.SplitInfo` as a dict, with any warnings) is left in
    ``result.attrs["split"]`` for the training report (``bundle.json`` ``data.split``).

    Args:
        catalog: Catalog with ``path`` and ``label`` columns.
        test_size: Fraction of all rows for "test", in [0, 1); 0 gives no test rows.
        val_size: Fraction of all rows for "val", in [0, 1); ``test_size + val_size < 1``.
        random_state: Seed; the same seed and catalog give the same split.
        split: ``"random"`` (stratified per image), ``"spatial"`` (whole square blocks of
            georeferenced tiles) or ``"group"`` (whole groups); see :mod:`landsight.data.splits`.
        block_size: ``split="spatial"``: block side in CRS units (metres for UTM); ``None``
            chooses one from the tiles' extent.
        group: ``split="group"``: ``"regex:PATTERN"`` (first capture group of the pattern
            searched in each path) or the name of a column of the CSV map file ``map_file``.
        map_file: The map file the catalog was read from (for a ``group`` column).

    Returns:
        A copy of ``catalog`` (same row order) with a ``split`` column.

    Raises:
        LandsightValueError: A fraction is out of range, a class has too few images to
            appear in every requested split, or the spatial / group split cannot be made
            (tiles without a CRS, a regex that misses a path, too few blocks or groups).

    Example:
        >>> split_catalog(catalog, test_size=0.2, random_state=0)  # doctest: +SKIP

    """
    for name, value in (("test_size", test_size), ("val_size", val_size)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise LandsightValueError(
                f"{name} must be a fraction of the whole catalog in [0, 1), e.g. 0.2; got {value!r}"
            )
    if test_size + val_size >= 1:
        raise LandsightValueError(
            f"test_size + val_size must be below 1 to leave training rows; got test_size="
            f"{test_size!r}, val_size={val_size!r}"
        )
    from landsight.data.splits import SplitInfo, assign_splits, check_split_args

    check_split_args(split, block_size, group)
    out = catalog.copy()
    out["split"] = "train"
    if test_size == 0 and val_size == 0:
        out.attrs["split"] = SplitInfo("none", random_state=random_state, fractions={"train": 1.0}).to_dict()
        return out
    labels = out["label"].astype(str).to_numpy()
    needed = 1 + (test_size > 0) + (val_size > 0)
    counts = pd.Series(labels).value_counts()
    small = counts[counts < needed]
    if len(small) and split == "random":
        name, count = small.index[0], int(small.iloc[0])
        raise LandsightValueError(
            f"class {name!r} has only {count} image(s); a stratified train/"
            f"{'val/' if val_size else ''}{'test' if test_size else ''} split needs at least "
            f"{needed} per class; add images, merge or drop the class, or lower test_size/val_size"
        )
    try:
        splits, info = assign_splits(
            list(out["path"]), labels, split=split, test_size=test_size, val_size=val_size,
            random_state=random_state, block_size=block_size, group=group, map_file=map_file,
        )  # fmt: skip
        out["split"] = splits
        out.attrs["split"] = info.to_dict()
    except LandsightValueError:
        raise
    except ValueError as exc:
        raise LandsightValueError(
            f"cannot split {len(out)} images of {len(counts)} classes with test_size="
            f"{test_size!r}, val_size={val_size!r}: {exc}; use larger fractions or more images"
        ) from exc
    return out


def training_catalog(
    data: str | Path,
    *,
    test: str | Path | None,
    test_size: float,
    random_state: int,
    class_names: str | Path | None = None,
    exclude: Collection[str] = (),
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
) -> pd.DataFrame:
    """The catalog of a training command, with its ``split`` column ("train" / "test").

    Args:
        data: Labelled training data (anything :func:`build_catalog` reads).
        test: Separate labelled test data: its rows become "test" (``test_size`` is then ignored).
        test_size: Without ``test``: held-out fraction of ``data``, stratified (0 = all "train").
        random_state: Seed of the split.
        class_names: Class-names file for CNTK map files.
        exclude: Paths left out before splitting (the unreadable images found by featurizing),
            so every class keeps its share of readable test images.
        split: ``"random"``, ``"spatial"`` or ``"group"`` (see :func:`split_catalog`).
        block_size: Spatial block side in CRS units (``None`` = from the extent).
        group: Group source of ``split="group"`` (``"regex:..."`` or a map-file column).

    Returns:
        ``data``'s catalog (then ``test``'s) with a ``split`` column; ``attrs["split"]`` says
        how it was split (see :func:`split_catalog`).

    Raises:
        LandsightValueError: Unreadable data, too few classes, test labels unknown to the
            training data, a class too small to split, or a spatial / group split that cannot
            be made.
    """
    from landsight.data.splits import SplitInfo, check_split_args

    check_split_args(split, block_size, group)
    catalog = build_catalog(data, class_names=class_names)
    if exclude:
        catalog = catalog[~catalog["path"].isin(set(exclude))].reset_index(drop=True)
    if test is not None:
        test_catalog = build_catalog(test, class_names=class_names, min_classes=1)
        if exclude:
            test_catalog = test_catalog[~test_catalog["path"].isin(set(exclude))].reset_index(drop=True)
        check_test_labels(catalog, test_catalog)
        both = pd.concat([catalog.assign(split="train"), test_catalog.assign(split="test")], ignore_index=True)
        both.attrs["split"] = SplitInfo("given", random_state=random_state).to_dict()
        return both
    map_file = data if Path(data).suffix.lower() in MAP_EXTENSIONS else None
    return split_catalog(catalog, test_size=test_size, random_state=random_state, split=split,
                         block_size=block_size, group=group, map_file=map_file)  # fmt: skip


def list_images(source: str | Path, *, asset: str | None = None) -> list[str]:
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

    Returns:
        Sorted absolute paths. Folders and globs keep only files with an extension in
        :data:`~landsight.data.readers.IMAGE_EXTENSIONS`; a list file keeps its order. Entries
        that are not regular files (a FIFO, device or socket named ``x.jpg``) are listed too,
        never opened here: the loader gives each an error row (:data:`NOT_REGULAR`) instead of
        blocking on it.

    Raises:
        DataNotFoundError: Nothing matches, or a listed path is missing.
        LandsightValueError: ``source`` is a file that is neither an image nor a list file, or a
            list file that is not a regular file; a STAC source without the asset; ``asset``
            given for a source that is not STAC.

    Example:
        >>> list_images("scenes/**/*.tif")  # doctest: +SKIP

    """
    from landsight.data.stac import is_stac_source, stac_assets

    if is_stac_source(source):
        return stac_assets(source, asset)
    if asset is not None:
        raise LandsightValueError(f"asset={asset!r} applies to a STAC JSON source, not {str(source)!r}; drop asset=")
    path = Path(source).expanduser()
    text = str(source)
    if path.is_dir():
        found = sorted(_walk_images(path))
    elif path.exists():  # a FIFO, device or socket image is listed; the loader gives it an error row
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            found = [os.path.abspath(path)]
        elif suffix in _LIST_EXTENSIONS:
            _require_regular(path, "list file")
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


ZIP_MAX_BYTES = 32 * 1024**3
"""Largest total uncompressed size, in bytes, of a zip that :func:`safe_extract` extracts (32 GiB).

Environment override: ``LANDSIGHT_ZIP_MAX_BYTES``."""

ZIP_MAX_MEMBERS = 1_000_000
"""Most members (files and folders) in a zip that :func:`safe_extract` extracts.

Environment override: ``LANDSIGHT_ZIP_MAX_MEMBERS``."""

ZIP_MAX_RATIO = 200.0
"""Largest compression ratio (uncompressed / compressed size) of a zip member over
:data:`ZIP_RATIO_MIN_BYTES`; image files compress little, zip bombs by about 1000.

Environment override: ``LANDSIGHT_ZIP_MAX_RATIO``."""

ZIP_RATIO_MIN_BYTES = 8 * 1024**2
"""Members up to this many uncompressed bytes (8 MiB) may compress any amount (a mask of one class
does); larger ones must stay within :data:`ZIP_MAX_RATIO`."""

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
    or a member over :data:`ZIP_RATIO_MIN_BYTES` compressed more than ``max_ratio`` times raise
    :class:`~landsight.errors.ResourceLimitError`. The limits are enforced again while the bytes
    are written (a member that inflates past its declared size stops at once), so a lying header
    does not get past them.

    Members are extracted to a temporary sibling folder that is renamed to ``dest`` only when
    complete, so an interrupted extraction is never reused; on any failure the temporary folder is
    deleted. When ``dest`` already holds a complete extraction of the same archive (same sha256),
    it is returned as is. When ``dest`` lies in the landsight cache (:func:`landsight.cache.cache_dir`:
    ``build_catalog`` and ``load_bundle`` extract there), only the :data:`ZIP_KEEP_EXTRACTIONS`
    most recently used extractions of its cache folder are kept: older ones, and temporary folders
    left by killed processes over an hour ago, are deleted. Folders outside the cache are never
    pruned.

    Args:
        archive: The ``.zip`` file.
        dest: Folder to create; must not exist, be empty, or hold this archive's extraction.
        max_bytes: Largest total uncompressed size in bytes; default :data:`ZIP_MAX_BYTES`
            (``$LANDSIGHT_ZIP_MAX_BYTES``).
        max_ratio: Largest compression ratio of a member over :data:`ZIP_RATIO_MIN_BYTES`; default
            :data:`ZIP_MAX_RATIO` (``$LANDSIGHT_ZIP_MAX_RATIO``).
        max_members: Most members; default :data:`ZIP_MAX_MEMBERS` (``$LANDSIGHT_ZIP_MAX_MEMBERS``).

    Returns:
        ``dest`` as a Path.

    Raises:
        DataNotFoundError: ``archive`` does not exist.
        LandsightValueError: ``archive`` is not a zip file or is corrupt, ``dest`` holds other
            files, or a limit (argument or environment variable) is not a positive number.
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
    return _extract(archive, Path(dest), file_digest(archive), limits)


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
    """Check the central directory against the limits; return the total uncompressed bytes."""
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
    return total


def _write_members(zf: zipfile.ZipFile, archive: Path, root: Path, limits: dict[str, float]) -> None:
    """Write every member under ``root``, counting the bytes as they are written (1 MiB chunks).

    The central directory was checked already; this stops a member whose data inflates past its
    declared size (a lying header) as soon as it does, and keeps the running total and ratio
    within the limits whatever the headers say.
    """
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
                ):
                    raise ResourceLimitError(
                        f"archive {str(archive)!r} member {info.filename!r} inflated to {size} bytes "
                        f"({written} in all) from {info.compress_size} compressed, past its declared "
                        f"{info.file_size} bytes or the limits ({limits['max_bytes']:.0f} bytes, ratio "
                        f"{limits['max_ratio']:g}): its header lies, the archive is corrupt or malicious; "
                        "refusing to extract it, nothing was left behind. Re-create the archive"
                    )
                out.write(chunk)


def _extract(archive: Path, dest: Path, digest: str, limits: dict[str, float] | None = None) -> Path:
    marker = dest / _EXTRACTED_MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
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
            _write_members(zf, archive, tmp, limits)
            (tmp / _EXTRACTED_MARKER).write_text(digest + "\n")
            if dest.exists():
                dest.rmdir()  # empty (checked above)
            os.replace(tmp, dest)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if marker.is_file() and marker.read_text().strip() == digest:
                return dest  # a concurrent extraction of the same archive won the race
            if isinstance(exc, zipfile.BadZipFile | EOFError | zlib.error | NotImplementedError):
                raise LandsightValueError(
                    f"archive {str(archive)!r} is corrupt or uses an unsupported compression ({exc}); "
                    "re-create or re-download it"
                ) from exc
            raise
    _prune_extractions(dest)
    return dest


def _prune_extractions(dest: Path) -> None:
    """Keep the most recently used complete extractions beside ``dest`` when it lies in the cache.

    Only folders holding the extraction marker are deleted (never ``dest``), and temporary
    ``.*.part-*`` folders older than an hour (left by killed processes). Outside the cache nothing
    is touched: extractions the user placed are theirs.
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
    for _, old in done[keep - 1 :]:  # dest counts as one of the kept
        shutil.rmtree(old, ignore_errors=True)


NOT_REGULAR = "not a regular file (a FIFO, device or socket); not read"
"""Error of a listed path that exists but is not a regular file: reading it could block forever."""


def _listable(path: str) -> bool:
    """A listed image that exists and is not a folder (non-regular files are listed and fail one by one)."""
    return os.path.exists(path) and not os.path.isdir(path)


def _require_regular(path: Path, what: str) -> None:
    """Refuse a source / list file that is a FIFO, device or socket before opening it (it could block)."""
    if path.exists() and not path.is_file():
        raise LandsightValueError(f"{what} {str(path)!r} is {NOT_REGULAR}; pass a regular file or a folder")


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_image(name: str) -> bool:
    return not _hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _scan(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Visible sub-folders, image files and map files directly in ``folder`` (sorted)."""
    subdirs, images, maps = [], [], []
    for entry in sorted(folder.iterdir()):
        if _hidden(entry.name):
            continue
        if entry.is_dir():
            subdirs.append(entry)
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        elif entry.is_file() and entry.suffix.lower() in MAP_EXTENSIONS:
            maps.append(entry)
    return subdirs, images, maps


def _walk_images(folder: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for name in filenames:
            if _is_image(name):
                yield os.path.abspath(os.path.join(dirpath, name))


def _descend(root: Path) -> Path:
    """Step into single wrapper folders: one sub-folder that itself holds sub-folders."""
    while True:
        subdirs, images, _ = _scan(root)
        if len(subdirs) == 1 and not images and _scan(subdirs[0])[0]:
            root = subdirs[0]
        else:
            return root


def _from_class_folders(root: Path) -> pd.DataFrame:
    subdirs, images, _ = _scan(root)
    if images:
        examples = [p.name for p in images[:3]]
        raise LandsightValueError(
            f"folder {str(root)!r} holds images directly ({examples}...) instead of class "
            f"sub-folders; {_LAYOUTS}. Move each class's images into root/<label>/"
        )
    if not subdirs:
        raise LandsightValueError(f"folder {str(root)!r} holds no class sub-folders; {_LAYOUTS}")
    rows = []
    for sub in subdirs:
        paths = sorted(_walk_images(sub))
        if not paths:
            raise LandsightValueError(
                f"class folder {str(sub)!r} holds no images (extensions: "
                f"{sorted(IMAGE_EXTENSIONS)}); add images or remove the folder"
            )
        rows.extend((p, sub.name) for p in paths)
    return _frame(rows)


def _frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["path", "label"]).astype({"path": str, "label": str})
    return frame.sort_values(["label", "path"], kind="stable").reset_index(drop=True)


def _looks_like_map(path: Path) -> bool:
    """Tell whether one of the first two data rows starts with an image path (not a README)."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            rows = [line for line in fh if line.strip() and not line.lstrip().startswith("#")]
            rows = rows[:2]
    except (OSError, UnicodeDecodeError):
        return False
    for line in rows:
        delimiter = _sniff(line)
        if delimiter is not None:
            first = line.split(delimiter, 1)[0].strip().strip('"')
            if Path(first).suffix.lower() in IMAGE_EXTENSIONS:
                return True
    return False


def _sniff(line: str) -> str | None:
    for delimiter in ("\t", ",", ";", "|"):
        if delimiter in line:
            return delimiter
    return None


def _from_extracted(root: Path, class_names: str | Path | None) -> pd.DataFrame:
    wrapped: Path | None = None
    while True:
        subdirs, images, maps = _scan(root)
        maps = [m for m in maps if _looks_like_map(m)]
        if len(subdirs) == 1 and not images and not maps:
            wrapped, root = root, subdirs[0]
            continue
        break
    if class_names is not None:
        names = Path(class_names).expanduser()
        if not names.exists() and not names.is_absolute() and (root / names).exists():
            class_names = root / names
    if len(maps) > 1:
        raise LandsightValueError(
            f"archive folder {str(root)!r} holds several map files {[m.name for m in maps]}; "
            "keep one map file at the top level of the zip"
        )
    if maps:
        return _from_map_file(maps[0], class_names)
    if subdirs:
        return _from_class_folders(root)
    if images and all("." in p.stem for p in images):
        return _frame([(os.path.abspath(p), p.name.split(".", 1)[0]) for p in images])
    if images and wrapped is not None:
        return _from_class_folders(wrapped)  # a single class folder: reported by validation
    if images:
        bad = [p.name for p in images if "." not in p.stem][:3]
        raise LandsightValueError(
            f"zip holds loose images whose names carry no label (e.g. {bad}); name them "
            f"'<label>.<id>.<ext>' (like 'cat.12.jpg') or {_LAYOUTS}"
        )
    raise LandsightValueError(f"zip extracted to {str(root)!r} holds no images; {_LAYOUTS}")


def _from_map_file(path: Path, class_names: str | Path | None) -> pd.DataFrame:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LandsightValueError(f"cannot read map file {str(path)!r}: {exc}") from exc
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise LandsightValueError(f"map file {str(path)!r} is empty; add 'path,label' rows")
    delimiter = _sniff(numbered[0][1])
    if delimiter is None:
        raise LandsightValueError(
            f"map file {str(path)!r} line {numbered[0][0]}: no delimiter found in "
            f"{numbered[0][1]!r}; write 'path,label' or 'path<TAB>label' rows"
        )
    rows: list[tuple[str, str]] = []
    columns = (0, 1)  # a header 'path,label,scene,...' may add columns (groups for split='group')
    width = 2
    for (lineno, line), fields in zip(
        numbered, csv.reader((line for _, line in numbered), delimiter=delimiter), strict=True
    ):
        fields = [f.strip() for f in fields]
        if not rows and width == 2:
            names = [f.lower() for f in fields]
            path_at = next((i for i, n in enumerate(names) if n in _PATH_HEADERS), None)
            label_at = next((i for i, n in enumerate(names) if n in _LABEL_HEADERS), None)
            if path_at is not None and label_at is not None:
                columns, width = (path_at, label_at), max(len(names), 2)
                continue  # header row
        while len(fields) > width and not fields[-1]:
            fields.pop()
        if len(fields) != width or not all(fields[i] for i in columns):
            raise LandsightValueError(
                f"map file {str(path)!r} line {lineno}: expected {width} fields "
                f"{'path' + delimiter + 'label' if width == 2 else 'as in the header'}, got {line!r}"
            )
        rows.append((fields[columns[0]], fields[columns[1]]))
    if not rows:
        raise LandsightValueError(f"map file {str(path)!r} has a header but no rows")
    labels = [label for _, label in rows]
    if class_names is not None:
        names = _read_class_names(Path(class_names).expanduser())
        if not all(label.lstrip("-").isdigit() for label in labels):
            raise LandsightValueError(
                f"class_names {str(class_names)!r} was given but map file {str(path)!r} has "
                "non-integer labels; pass class_names only with integer class indices"
            )
        bad = sorted({int(label) for label in labels if not 0 <= int(label) < len(names)})
        if bad:
            raise LandsightValueError(
                f"map file {str(path)!r} uses class indices {bad} but class_names "
                f"{str(class_names)!r} names only {len(names)} classes (0..{len(names) - 1})"
            )
        labels = [names[int(label)] for label in labels]
    base = path.parent
    paths = [os.path.abspath(base / Path(p).expanduser()) for p, _ in rows]
    missing = [p for p in paths if not _listable(p)]
    if missing:
        raise DataNotFoundError(
            f"map file {str(path)!r} lists {len(missing)} missing file(s), e.g. {missing[:5]}; "
            "relative paths are resolved against the map file's folder"
        )
    return _frame(list(zip(paths, labels, strict=True)))


def _read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(
            f"class_names file {str(path)!r} does not exist; pass a text file with one class name per line"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise LandsightValueError(
            f"class_names file {str(path)!r} must hold one non-empty class name per line (line i = class i)"
        )
    return names


def _read_list_file(path: Path) -> list[str]:
    base = path.parent
    found = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            found.append(os.path.abspath(base / Path(entry).expanduser()))
    missing = [p for p in found if not _listable(p)]
    if missing:
        raise DataNotFoundError(
            f"list file {str(path)!r} names {len(missing)} missing file(s), e.g. {missing[:5]}; "
            "relative paths are resolved against the list file's folder"
        )
    return found
