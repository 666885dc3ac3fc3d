"""Catalogs: tables of labelled images built from folders, map files or zip archives.

A catalog is a :class:`pandas.DataFrame` with columns ``path`` (str, absolute) and ``label``
(str), sorted by ``(label, path)`` with a fresh ``RangeIndex``.
:func:`landsight.data.splitting.split_catalog` adds a ``split`` column.

Accepted sources for :func:`build_catalog`:

* **class folders**: ``root/<label>/**/<image>`` (one sub-folder per class, searched
  recursively; hidden files and folders are ignored). A root holding exactly one sub-folder
  that itself holds sub-folders is descended into (zips often wrap one top folder).
* **map file** (``.csv``, ``.tsv``, ``.txt``, ``.map``): one ``path,label`` or
  ``path<TAB>label`` row per image (delimiter sniffed, optional ``path,label`` header, relative
  paths resolved against the map file's folder). CNTK style ``path<TAB>class_index`` rows take
  their names from ``class_names``, a text file with one class name per line (line i = class i).
* **zip archive**: safely extracted (:func:`landsight.data.archive.safe_extract`), then a map
  file at its top level, class folders, or flat files named ``<label>.<anything>.<ext>`` (Kaggle
  dogs-vs-cats ``train.zip``: ``cat.123.jpg`` -> ``cat``): the label is the text before the
  first ``.``.

Unlabelled images for prediction are listed by :func:`landsight.data.listing.list_images`.

Example:
    >>> build_catalog("EuroSAT/").label.value_counts()  # doctest: +SKIP

"""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

import pandas as pd

from landsight.cache import cache_dir, file_digest
from landsight.data.archive import extract_cached
from landsight.data.listing import is_hidden, is_listable, require_regular, walk_images
from landsight.data.readers import IMAGE_EXTENSIONS
from landsight.data.split_groups import PATH_HEADERS
from landsight.errors import DataNotFoundError, LandsightValueError

__all__ = [
    "MAP_EXTENSIONS",
    "build_catalog",
    "check_test_labels",
    "validate_catalog",
]

MAP_EXTENSIONS: frozenset[str] = frozenset({".csv", ".tsv", ".txt", ".map"})
"""Extensions of map files (``path,label`` rows) accepted by :func:`build_catalog`."""

_PATH_HEADERS = PATH_HEADERS
_LABEL_HEADERS = {"label", "class", "class_name", "class_index", "category"}
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
        require_regular(src, "source")
    if src.is_dir():
        root = _descend(src)
        catalog = _from_class_folders(root)
    elif src.suffix.lower() == ".zip" or zipfile.is_zipfile(src):
        digest = file_digest(src)
        dest = Path(extract_dir) if extract_dir is not None else cache_dir("extracted") / digest[:16]
        root = extract_cached(src, dest, digest)
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


# ----------------------------------------------------------------------------- internals


def _scan(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Visible sub-folders, image files and map files directly in ``folder`` (sorted)."""
    subdirs, images, maps = [], [], []
    for entry in sorted(folder.iterdir()):
        if is_hidden(entry.name):
            continue
        if entry.is_dir():
            subdirs.append(entry)
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        elif entry.is_file() and entry.suffix.lower() in MAP_EXTENSIONS:
            maps.append(entry)
    return subdirs, images, maps


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
        paths = sorted(walk_images(sub))
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
    missing = [p for p in paths if not is_listable(p)]
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
