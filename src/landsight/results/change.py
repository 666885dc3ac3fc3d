"""Change between two prediction sets of the same tiles (e.g. two years of aerial imagery).

The tiles of the two tables are matched by footprint (``crs`` and bounds, rounded to
``decimals``) when both are georeferenced, otherwise by file name, and each matched tile gets its
class before and after. The transitions table counts tiles per (before, after) pair, as in a
"newly developed" analysis: the row ``undeveloped -> developed`` is the count of tiles that
became developed.

Example:
    >>> from landsight.results.change import compare_predictions
    >>> result = compare_predictions("preds_2014.parquet", "preds_2018.parquet")  # doctest: +SKIP
    >>> result.transitions  # doctest: +SKIP

"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from landsight.errors import LandsightValueError
from landsight.predictions import BOUNDS_COLUMNS, load_predictions

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ChangeResult", "compare_predictions", "write_change"]

MATCH_OPTIONS = ("auto", "bounds", "name", "path")


@dataclass
class ChangeResult:
    """Tiles matched across two prediction sets.

    Attributes:
        table: One row per matched tile: ``path`` (in the newer table), ``path_before``,
            ``before``, ``after`` (class names) and ``changed`` (bool).
        transitions: One row per (``before``, ``after``) pair of changed tiles with ``count``,
            most frequent first.
        n_unmatched: Tiles of the newer table with no counterpart in the older one (or with
            an error in either).

    """

    table: pd.DataFrame
    transitions: pd.DataFrame
    n_unmatched: int

    @property
    def n_changed(self) -> int:
        """Number of matched tiles whose class changed."""
        return int(self.table["changed"].sum())


def _key(table: pd.DataFrame, on: str, decimals: int) -> pd.Series:
    if on == "path":
        return table["path"].astype(str)
    if on == "name":
        return table["path"].map(lambda p: Path(str(p)).name)
    b = table[list(BOUNDS_COLUMNS)].round(decimals).astype(str)
    return table["crs"].astype(str) + "|" + b["minx"] + "|" + b["miny"] + "|" + b["maxx"] + "|" + b["maxy"]


def _georeferenced(table: pd.DataFrame) -> bool:
    cols = {*BOUNDS_COLUMNS, "crs"}
    if not cols <= set(table.columns):
        return False
    ok = table["error"] == ""
    return (
        bool(ok.any())
        and bool(table.loc[ok, list(BOUNDS_COLUMNS)].notna().all().all())
        and bool((table.loc[ok, "crs"].fillna("").astype(str) != "").all())
    )


def compare_predictions(
    before: str | Path | pd.DataFrame,
    after: str | Path | pd.DataFrame,
    *,
    on: str = "auto",
    decimals: int = 2,
) -> ChangeResult:
    """Match the tiles of two predictions tables and list the class changes.

    Args:
        before: The older predictions table (file or DataFrame).
        after: The newer predictions table of the same tiles.
        on: How tiles are matched: ``"bounds"`` (same ``crs`` and bounds rounded to
            ``decimals`` CRS units), ``"name"`` (same file name), ``"path"`` (same path) or
            ``"auto"`` (bounds when both tables are georeferenced, else name).
        decimals: Rounding of bounds before matching (2 = centimetres in a metric CRS).

    Returns:
        A :class:`ChangeResult`.

    Raises:
        LandsightValueError: Bad ``on``, duplicate keys in a table, or no tile matched.

    """
    import pandas as pd

    if on not in MATCH_OPTIONS:
        raise LandsightValueError(f"on must be one of {MATCH_OPTIONS}, got {on!r}")
    old, new = load_predictions(before), load_predictions(after)
    if on == "auto":
        on = "bounds" if _georeferenced(old) and _georeferenced(new) else "name"
    old = old[old["error"] == ""]
    new_ok = new[new["error"] == ""]
    left = pd.DataFrame({"key": _key(old, on, decimals), "path_before": old["path"], "before": old["predicted"]})
    right = pd.DataFrame({"key": _key(new_ok, on, decimals), "path": new_ok["path"], "after": new_ok["predicted"]})
    for name, frame in (("before", left), ("after", right)):
        dup = frame["key"][frame["key"].duplicated()]
        if len(dup):
            raise LandsightValueError(
                f"the {name} table has several tiles with the same {on} key (first {dup.iloc[0]!r}); "
                "match on another key (on='path' | 'name' | 'bounds')"
            )
    table = right.merge(left, on="key", how="inner")[["path", "path_before", "before", "after"]]
    if not len(table):
        raise LandsightValueError(
            f"no tile of the two predictions tables matched on {on!r}; are they predictions of the same tiles?"
        )
    table["changed"] = table["before"] != table["after"]
    transitions = (
        table[table["changed"]]
        .groupby(["before", "after"], as_index=False)
        .size()
        .rename(columns={"size": "count"})
        .sort_values(["count", "before", "after"], ascending=[False, True, True])
        .reset_index(drop=True)
    )
    return ChangeResult(table.reset_index(drop=True), transitions, len(new) - len(table))


def write_change(result: ChangeResult, out: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write the per-tile change table and the transition counts as CSV files (atomically).

    Args:
        result: From :func:`compare_predictions`.
        out: The per-tile CSV (``change.csv``); the counts go beside it as
            ``<stem>_transitions.csv``.
        overwrite: Replace existing files.

    Returns:
        ``{"tiles": path, "transitions": path}``.

    Raises:
        OutputExistsError: A file exists and ``overwrite`` is False.

    """
    from landsight.outputs import atomic_path, check_output

    out = Path(out)
    counts = out.with_name(f"{out.stem}_transitions.csv")
    files = {"tiles": out, "transitions": counts}
    for path in files.values():
        check_output(path, overwrite=overwrite, what="change table")
    for path, frame in ((out, result.table), (counts, result.transitions)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    return files
