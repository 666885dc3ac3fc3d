"""Grouped held-out splits: the group ids of ``split="group"`` and the split of whole groups.

This module owns reading a group id per image (the first capture group of a regular expression on
the path, or a column of the CSV map file) and assigning whole groups (named groups, or the
spatial blocks of :mod:`landsight.data.spatial_blocks`) to train, validation and test, stratified
by label where possible. :func:`landsight.data.splits.assign_splits` calls both.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from landsight.errors import LandsightValueError

__all__ = ["PATH_HEADERS", "group_split", "read_groups"]

PATH_HEADERS = frozenset({"path", "file", "filename", "filepath", "image", "image_path"})
"""Header names of the path column of a map file (shared with :mod:`landsight.data.catalog`)."""


def read_groups(paths: Sequence[str], group: str, *, map_file: str | Path | None = None) -> np.ndarray:
    """Group ids of paths from a regular expression or a column of the CSV map file.

    Args:
        paths: Absolute image paths (as in a catalog).
        group: ``"regex:PATTERN"``: the first capture group of ``re.search(PATTERN, path)`` (the
            whole match without a group); ``"column:NAME"`` or ``"NAME"``: column ``NAME`` of
            ``map_file`` (a CSV/TSV with a header naming the path column and ``NAME``).
        map_file: The catalog's map file (needed for a column).

    Returns:
        ``(N,)`` object array of group ids (str).

    Raises:
        LandsightValueError: The regex does not match a path, the data is not a map file, the
            column is missing, or a path has no row.
    """
    if group.startswith("regex:"):
        pattern = re.compile(group[6:])
        out = []
        for p in paths:
            m = pattern.search(str(p))
            if m is None:
                raise LandsightValueError(
                    f"group regular expression {pattern.pattern!r} does not match path {str(p)!r}; "
                    "write one that matches every path (its first capture group is the group id)"
                )
            out.append(m.group(1) if m.groups() else m.group(0))
        return np.asarray(out, dtype=object)
    column = group.removeprefix("column:")
    if map_file is None or not Path(map_file).is_file():
        raise LandsightValueError(
            f"group={group!r} names a column of a CSV map file, but the data {str(map_file)!r} is not a map "
            "file; pass a map file with a header such as 'path,label,scene', or use group='regex:...'"
        )
    import pandas as pd

    table = pd.read_csv(map_file, sep=None, engine="python", dtype=str, comment="#")
    lower = {c.strip().lower(): c for c in table.columns}
    path_col = next((lower[h] for h in lower if h in PATH_HEADERS), None)
    col = lower.get(column.strip().lower())
    if path_col is None or col is None:
        raise LandsightValueError(
            f"map file {str(map_file)!r} has columns {list(table.columns)!r}; group column {column!r} "
            f"{'and a path column ' if path_col is None else ''}not found; add a header row like 'path,label,{column}'"
        )
    base = Path(map_file).parent
    lookup = {os.path.abspath(base / Path(str(p)).expanduser()): str(g) for p, g in zip(table[path_col], table[col],
                                                                                       strict=True)}  # fmt: skip
    missing = [p for p in paths if p not in lookup]
    if missing:
        raise LandsightValueError(f"map file {str(map_file)!r} gives no {column!r} for {missing[:3]!r}")
    empty = [p for p in paths if lookup[p] in ("", "nan")]
    if empty:
        raise LandsightValueError(f"map file {str(map_file)!r} column {column!r} is empty for {empty[:3]!r}")
    return np.asarray([lookup[p] for p in paths], dtype=object)


def group_split(
    groups: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    test_size: float,
    val_size: float = 0.0,
    random_state: int = 0,
) -> np.ndarray:
    """Assign whole groups to "train", "val" and "test", stratified by label where possible.

    With labels, ``StratifiedGroupKFold(n_splits=round(1 / test_size), shuffle=True)``: one fold
    is the test split (so the test share is the nearest ``1/k``), drawn with the seed among the
    folds that leave every class in training and hold out the most classes. The validation
    split is cut from the rest the same way. Without labels, ``GroupShuffleSplit`` on the share
    of groups.

    Args:
        groups: ``(N,)`` group id per row.
        labels: ``(N,)`` class label per row, or ``None``.
        test_size: Test fraction in [0, 1).
        val_size: Validation fraction in [0, 1), of all rows.
        random_state: Seed.

    Returns:
        ``(N,)`` object array of ``"train"``, ``"val"``, ``"test"``.

    Raises:
        LandsightValueError: Too few groups for the requested splits.
    """
    n = len(groups)
    out = np.full(n, "train", dtype=object)
    rest = np.arange(n)
    for name, size in (("test", test_size), ("val", val_size)):
        if size <= 0:
            continue
        frac = size / (1 - (test_size if name == "val" else 0.0))
        held = _one_fold(groups[rest], None if labels is None else labels[rest], frac, random_state, name)
        out[rest[held]] = name
        rest = rest[~held]
    return out


def _one_fold(groups: np.ndarray, labels: np.ndarray | None, frac: float, seed: int, name: str) -> np.ndarray:
    """Boolean mask of the rows held out as one fold of about ``frac`` of the rows."""
    distinct = np.unique(groups.astype(str))
    if len(distinct) < 2:
        raise LandsightValueError(
            f"a grouped {name} split needs at least 2 groups (blocks or scenes), found {len(distinct)}: "
            f"{distinct.tolist()!r}; use a smaller block_size, a finer group, or split='random'"
        )
    k = min(len(distinct), max(2, round(1 / frac)))
    if labels is None:
        from sklearn.model_selection import GroupShuffleSplit

        n_test = max(1, min(len(distinct) - 1, round(frac * len(distinct))))
        gss = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
        _, held_idx = next(gss.split(np.zeros(len(groups)), groups=groups))
        mask = np.zeros(len(groups), dtype=bool)
        mask[held_idx] = True
        return mask
    from sklearn.model_selection import StratifiedGroupKFold

    all_classes = set(labels.tolist())
    scored: list[tuple[tuple[int, int], np.ndarray]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for _, held_idx in folds.split(np.zeros(len(groups)), labels, groups):
            mask = np.zeros(len(groups), dtype=bool)
            mask[held_idx] = True
            kept = set(labels[~mask].tolist()) == all_classes
            scored.append(((int(kept), len(set(labels[mask].tolist()))), mask))
    # StratifiedGroupKFold's folds barely depend on the seed (groups are sorted by class mix;
    # shuffling only breaks ties), so the seed picks among the best folds.
    top = max(score for score, _ in scored)
    candidates = [mask for score, mask in scored if score == top]
    return candidates[int(np.random.default_rng(seed).integers(len(candidates)))]
