"""Splitting catalogs: the ``split`` column of a catalog, and the catalog of a training command.

:func:`split_catalog` checks the fractions and class sizes of a catalog and calls
:func:`landsight.data.splits.assign_splits` (the one implementation of random, spatial and group
splits); :func:`training_catalog` reads the training data (and any separate test data) with
:func:`landsight.data.catalog.build_catalog` and splits it (``train``, ``tune``, ``quantize`` and
the Spark heads). These two live apart from :mod:`landsight.data.splits`, which holds the
split methods themselves and is over 500 lines already; this module is where catalogs
(:mod:`landsight.data.catalog`) and split methods meet.

Example:
    >>> catalog = build_catalog("EuroSAT/")  # doctest: +SKIP
    >>> split_catalog(catalog, test_size=0.2, val_size=0.1).split.value_counts()  # doctest: +SKIP

"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pandas as pd

from landsight.data.catalog import MAP_EXTENSIONS, build_catalog, check_test_labels
from landsight.data.splits import SplitInfo, assign_splits, check_split_args
from landsight.errors import LandsightValueError

__all__ = ["split_catalog", "training_catalog"]


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
