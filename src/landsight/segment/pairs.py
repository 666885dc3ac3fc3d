"""Image / label raster pairs, matched by glob patterns or listed in a CSV file.

Glob patterns are matched on what their wildcards capture: ``naip/*.tif`` and
``labels/*_lc.tif`` pair ``naip/m_1.tif`` with ``labels/m_1_lc.tif`` (both capture ``m_1``);
``tile_*/images/*.jpg`` and ``tile_*/labels/*.png`` pair on ``(tile, name)``. A CSV file has
columns ``image,label`` (paths relative to the CSV file). Unpaired files and pairs whose sizes
differ are reported and skipped, never fatal; no pair at all is an error.
"""

from __future__ import annotations

import csv
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from landsight.errors import DataNotFoundError, LandsightValueError

if TYPE_CHECKING:
    from landsight.data.splits import SplitInfo


@dataclass(frozen=True)
class RasterPair:
    """An image raster and the label raster covering the same pixels.

    Attributes:
        image: Image raster path.
        label: Label raster path (codes, or an RGB colour mask).
        height: Rows of both rasters.
        width: Columns of both rasters.
    """

    image: str
    label: str
    height: int
    width: int


@dataclass
class PairSet:
    """Matched pairs and what was left out.

    Attributes:
        pairs: Pairs in a stable (sorted) order.
        skipped: ``(path, reason)`` of files that were unpaired or unreadable or mismatched.
    """

    pairs: list[RasterPair]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Regex for a glob pattern with one capture group per wildcard (``*``, ``**``, ``?``, ``[...]``)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*?/?)", i + 3
        elif pattern[i] == "*":
            out, i = out + "([^/]*)", i + 1
        elif pattern[i] == "?":
            out, i = out + "([^/])", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out, i = out + "([" + ("^" + body[1:] if body.startswith("!") else body) + "])", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _match(pattern: str) -> dict[tuple[str, ...], str]:
    regex = _glob_regex(pattern)
    found: dict[tuple[str, ...], str] = {}
    for path in sorted(glob.glob(pattern, recursive=True)):
        m = regex.match(path)
        if m and Path(path).is_file():
            found[m.groups()] = path
    return found


def pair_rasters(images: str | Path, labels: str | Path | None = None, *, check_data: bool = True) -> PairSet:
    """Pair image and label rasters.

    Args:
        images: A glob pattern of image rasters (quote it in a shell), or a CSV file with
            columns ``image,label`` (then ``labels`` is ``None``).
        labels: A glob pattern of label rasters whose wildcards capture the same strings as
            those of ``images``.
        check_data: Read every pixel of both rasters once
            (:func:`landsight.segment.raster.check_readable`), so that a file whose header is
            intact but whose data is truncated or corrupt is skipped here, with its reason,
            instead of failing training or evaluation halfway. Costs one decompression pass
            over the data (less than band statistics plus training or prediction read).

    Returns:
        The :class:`PairSet`; pairs whose sizes differ or that cannot be opened or read are in
        ``skipped`` with the reason (a damaged file is listed under its own path).

    Raises:
        DataNotFoundError: No file matches, or the CSV does not exist.
        LandsightValueError: Nothing pairs up, or the CSV lacks the columns.

    Example:
        >>> pair_rasters("naip/*.tif", "labels/*_lc.tif")  # doctest: +SKIP
    """
    skipped: list[tuple[str, str]] = []
    if labels is None:
        candidates = _read_csv(Path(images))
    else:
        found_images, found_labels = _match(str(images)), _match(str(labels))
        if not found_images:
            raise DataNotFoundError(f"no image raster matches {str(images)!r}")
        if not found_labels:
            raise DataNotFoundError(f"no label raster matches {str(labels)!r}")
        keys = sorted(set(found_images) & set(found_labels))
        skipped += [(found_images[k], "no label raster pairs with it") for k in sorted(set(found_images) - set(keys))]
        skipped += [(found_labels[k], "no image raster pairs with it") for k in sorted(set(found_labels) - set(keys))]
        candidates = [(found_images[k], found_labels[k]) for k in keys]
    pairs = []
    from landsight.errors import ImageReadError, LandsightError
    from landsight.segment.raster import check_readable, open_raster

    for image, label in candidates:
        try:
            with open_raster(image) as a, open_raster(label) as b:
                if (a.height, a.width) != (b.height, b.width):
                    skipped.append((image, f"size {a.height}x{a.width} differs from label {label!r} "
                                           f"{b.height}x{b.width}"))  # fmt: skip
                    continue
                if a.crs and b.crs and (a.crs != b.crs or not a.transform.almost_equals(b.transform)):
                    skipped.append((image, f"CRS / transform ({a.crs}, {tuple(a.transform)[:6]}) differ from label "
                                           f"{label!r} ({b.crs}, {tuple(b.transform)[:6]})"))  # fmt: skip
                    continue
                if check_data:
                    check_readable(a)
                    check_readable(b)
                pairs.append(RasterPair(str(image), str(label), int(a.height), int(a.width)))
        except ImageReadError as exc:
            also = "" if exc.path == str(image) else f" (its image {str(image)!r} is skipped with it)"
            skipped.append((exc.path, f"{exc}{also}"))
        except LandsightError as exc:
            skipped.append((image, str(exc)))
    if not pairs:
        raise LandsightValueError(
            f"no usable image/label pairs from images={str(images)!r} labels={str(labels)!r}; "
            f"first problems: {skipped[:3]!r}. Check that both patterns' wildcards capture the same names."
        )
    return PairSet(pairs, skipped)


def _read_csv(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DataNotFoundError(f"pairs file {str(path)!r} does not exist (or pass a labels pattern too)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise LandsightValueError(f"pairs file {str(path)!r} needs the header 'image,label' and at least one row")
    root = path.parent
    return [(str(root / r["image"]), str(root / r["label"])) for r in rows]


def split_pairs(
    pairs: list[RasterPair],
    val_size: float,
    random_state: int,
    *,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
) -> tuple[list[RasterPair], list[RasterPair]]:
    """Hold out whole pairs for validation (never chips of training rasters).

    Args:
        pairs: All pairs.
        val_size: Fraction of pairs held out; at least one when there are two or more pairs.
        random_state: Seed of the shuffle.
        split: ``"random"`` (whole rasters at random), ``"spatial"`` (georeferenced rasters
            grouped by square blocks of ``block_size`` CRS units, by their centres, so adjacent
            rasters stay on one side) or ``"group"`` (whole groups of ``group``); see
            :mod:`landsight.data.splits`.
        block_size: ``split="spatial"``: block side in CRS units (``None`` = from the extent).
        group: ``split="group"``: ``"regex:PATTERN"`` searched in each image path.

    Returns:
        ``(train, val)``; with a single pair, both are that pair (and validation is not held out).

    Raises:
        LandsightValueError: Bad split arguments, rasters without a CRS for ``"spatial"``, or
            fewer than two blocks / groups.
    """
    train, val, _ = split_pairs_info(pairs, val_size, random_state, split=split, block_size=block_size, group=group)
    return train, val


def split_pairs_info(
    pairs: list[RasterPair],
    val_size: float,
    random_state: int,
    *,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
) -> tuple[list[RasterPair], list[RasterPair], SplitInfo]:
    """:func:`split_pairs`, plus the :class:`~landsight.data.splits.SplitInfo` for ``bundle.json``.

    Args:
        pairs: All pairs.
        val_size: Fraction of pairs held out.
        random_state: Seed.
        split: ``"random"``, ``"spatial"`` or ``"group"``.
        block_size: Spatial block side in CRS units.
        group: Group source (``"regex:..."``).

    Returns:
        ``(train, val, info)``.

    Raises:
        LandsightValueError: As :func:`split_pairs`.
    """
    from landsight.data.splits import SplitInfo, assign_splits, check_split_args

    check_split_args(split, block_size, group)
    if len(pairs) < 2 or val_size <= 0:
        info = SplitInfo("none", val_size=val_size, random_state=random_state, fractions={"train": 1.0})
        if len(pairs) < 2 and val_size > 0:
            info.warnings.append("a single image/label pair: validation runs on the training raster")
        return list(pairs), list(pairs), info
    sides, info = assign_splits(
        [p.image for p in pairs], None, split=split, test_size=0.0, val_size=val_size, random_state=random_state,
        block_size=block_size, group=group,
    )  # fmt: skip
    return (
        [p for p, s in zip(pairs, sides, strict=True) if s == "train"],
        [p for p, s in zip(pairs, sides, strict=True) if s == "val"],
        info,
    )
