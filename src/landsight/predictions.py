"""The predictions table: the one contract between scoring and the tools that read its output.

A predictions table has one row per image, in this column order (:func:`prediction_columns`):

* ``path``: the image as given;
* ``predicted``: the class with the highest probability (empty when the image could not be read);
* ``confidence``: that probability;
* ``prob_<class>`` per class (:data:`PROBABILITY_PREFIX`), float, rows summing to 1;
* ``error``: why the image was skipped (empty when it was scored);
* ``minx``, ``miny``, ``maxx``, ``maxy`` (:data:`BOUNDS_COLUMNS`): the tile's bounds in units of
  its ``crs`` (NaN when not georeferenced), and ``crs`` (empty when not georeferenced);
* only when the inputs were a STAC source (:data:`STAC_COLUMNS`, :func:`add_stac_columns`):
  ``stac_item``, the id of the Item the image is an asset of, and ``datetime``, the Item's
  ``datetime`` (else ``start_datetime``) as the Item writes it (RFC 3339), ``""`` when it has none.
  Tables of plain files keep the columns above only, so their layout does not change.

It is written by :func:`landsight.classify.predict.predict` (``.parquet`` or ``.csv``) and by the
Spark engine (a folder of Parquet parts), and read by maps, change detection and reports through
:func:`load_predictions`. The headline classification metrics every tool reports are
:data:`HEADLINE_METRICS`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import DataNotFoundError, LandsightValueError
from landsight.outputs import tmp_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BOUNDS_COLUMNS",
    "FORMATS",
    "STAC_COLUMNS",
    "add_stac_columns",
    "HEADLINE_METRICS",
    "PROBABILITY_PREFIX",
    "PROVENANCE_KIND",
    "check_provenance",
    "load_predictions",
    "prediction_columns",
    "prediction_rows",
    "probability_columns",
    "provenance",
    "read_metadata",
    "read_table",
    "sidecar_path",
    "write_table",
]

PROBABILITY_PREFIX = "prob_"
"""Prefix of the per-class probability columns: ``prob_<class name>``."""

BOUNDS_COLUMNS = ("minx", "miny", "maxx", "maxy")
"""Columns that hold a tile's bounds, in units of its ``crs``."""

STAC_COLUMNS = ("stac_item", "datetime")
"""Columns after ``crs`` in a table of STAC inputs: the Item's id and datetime (strings)."""

FORMATS = (".parquet", ".csv")
"""File suffixes a predictions table can be written to."""

HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "n")
"""The classification metrics shown in tables, reports and run logs (``n`` = images scored)."""


def prediction_columns(classes: Sequence[str], *, stac: bool = False) -> list[str]:
    """Return the columns of a predictions table, in order.

    Args:
        classes: Class names in the bundle's order.
        stac: The inputs were a STAC source: :data:`STAC_COLUMNS` follow.

    Returns:
        ``path``, ``predicted``, ``confidence``, ``prob_<class>`` per class, ``error``,
        ``minx``, ``miny``, ``maxx``, ``maxy``, ``crs`` (then ``stac_item``, ``datetime``).

    """
    columns = ["path", "predicted", "confidence", *(f"{PROBABILITY_PREFIX}{c}" for c in classes)]
    return [*columns, "error", *BOUNDS_COLUMNS, "crs", *(STAC_COLUMNS if stac else ())]


def add_stac_columns(table: pd.DataFrame, assets: Sequence[Any]) -> pd.DataFrame:
    """Add :data:`STAC_COLUMNS` to a predictions table of STAC inputs, matched by asset href.

    Args:
        table: Predictions table whose ``path`` column holds asset hrefs.
        assets: The :class:`landsight.data.stac.StacAsset` the paths were listed from.

    Returns:
        A copy with ``stac_item`` and ``datetime`` after ``crs`` (replacing any already there);
        ``""`` for a path that is no listed asset (a row of an earlier run) or an Item without a
        datetime.
    """
    by_href = {str(a.href): (str(a.item_id), a.datetime or "") for a in assets}
    out = table.drop(columns=[c for c in STAC_COLUMNS if c in table.columns])
    found = [by_href.get(str(p), ("", "")) for p in out["path"]]
    out["stac_item"] = [item for item, _ in found]
    out["datetime"] = [when for _, when in found]
    return out


def probability_columns(table: pd.DataFrame | Sequence[str]) -> list[str]:
    """Return the ``prob_<class>`` columns of a table (or of a list of column names), in order."""
    columns = table.columns if hasattr(table, "columns") else table
    return [str(c) for c in columns if str(c).startswith(PROBABILITY_PREFIX)]


def prediction_rows(
    items: Sequence[Any], idx: Sequence[int], proba: np.ndarray, classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Build predictions-table rows for one batch of loaded images.

    Shared by the local engine and ``landsight.spark`` so both write identical rows.

    Args:
        items: :class:`landsight.data.loader.LoadedImage` of the batch, in input order.
        idx: Positions in ``items`` of the decoded images (from ``ImageBatch.stack``).
        proba: ``(len(idx), n_classes)`` float32 probabilities of those images.
        classes: Class names, the columns of ``proba``.

    Returns:
        One dict per item, keyed by :func:`prediction_columns`.

    """
    by_item = dict(zip(idx, proba, strict=True))
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        row: dict[str, Any] = {"path": item.path}
        p = by_item.get(i)
        k = int(np.argmax(p)) if p is not None else -1
        row["predicted"] = classes[k] if p is not None else ""
        row["confidence"] = float(p[k]) if p is not None else float("nan")
        for c, name in enumerate(classes):
            row[f"{PROBABILITY_PREFIX}{name}"] = float(p[c]) if p is not None else float("nan")
        row["error"] = item.error
        b = item.bounds or (float("nan"),) * 4
        row.update(dict(zip(BOUNDS_COLUMNS, b, strict=True)), crs=item.crs or "")
        rows.append(row)
    return rows


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a predictions table file.

    Args:
        path: A ``.csv`` file or a ``.parquet`` file / folder of Parquet parts.

    Returns:
        The table. For CSV, ``path``, ``predicted``, ``error``, ``crs`` (and the STAC columns) are strings (a path
        ``001.tif`` or a class ``1`` stays text) and their empty cells are ``""`` (not NaN), so a
        CSV round trip keeps "no error" as ``""``; empty numeric cells are NaN.

    """
    import pandas as pd

    path = Path(path)
    if path.suffix == ".csv":
        strings = {"path": str, "predicted": str, "error": str, "crs": str, **dict.fromkeys(STAC_COLUMNS, str)}
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=strings)
        for col in ("error", "crs", "predicted", "path", *STAC_COLUMNS):
            if col in table.columns:
                table[col] = table[col].fillna("").astype(str)
        return table
    return pd.read_parquet(path)


def write_table(df: pd.DataFrame, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write a table atomically (temporary file in the same folder, then rename).

    Args:
        df: The table.
        path: ``.csv`` or ``.parquet`` file; an existing file is replaced only once the new one is
            complete, so a failed write leaves it as it was.
        metadata: Key -> value strings stored in the Parquet schema metadata (``.parquet``) or in
            a sidecar ``<path>.meta.json`` (``.csv``).

    Returns:
        ``path``.

    """
    import json

    path = Path(path)
    tmp = tmp_name(path)
    try:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if metadata:
                merged = dict(table.schema.metadata or {})
                merged.update({k.encode(): v.encode() for k, v in metadata.items()})
                table = table.replace_schema_metadata(merged)
            pq.write_table(table, tmp)
        os.replace(tmp, path)
        if metadata and path.suffix == ".csv":
            # After the table: a crash in between leaves the old record, which a resume refuses as
            # another model's, never a new record over old rows.
            side = sidecar_path(path)
            side_tmp = tmp_name(side)
            try:
                side_tmp.write_text(json.dumps(metadata, indent=2))
                os.replace(side_tmp, side)
            finally:
                side_tmp.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sidecar_path(path: str | Path) -> Path:
    """The metadata sidecar of a CSV predictions table: ``<path>.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def read_metadata(path: str | Path) -> dict[str, str]:
    """Read what :func:`write_table` stored as ``metadata`` (empty dict when none).

    Args:
        path: A ``.parquet`` or ``.csv`` predictions table.

    Returns:
        The key -> value strings (Parquet schema metadata without pandas' own entries, or the
        CSV's sidecar).

    """
    import json

    path = Path(path)
    if path.suffix == ".csv":
        side = sidecar_path(path)
        if not side.is_file():
            return {}
        try:
            data = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    import pyarrow.parquet as pq

    try:
        raw = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"pandas")}


PROVENANCE_KIND = "landsight-predictions"
"""Value of the ``landsight.kind`` metadata entry of every predictions table landsight writes."""


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (model.onnx, size, mtime) -> sha256, hashed once per process


def provenance(bundle: Any) -> dict[str, str]:
    """What produced a predictions table: stored with it so that a resume never mixes two models.

    Args:
        bundle: The loaded classification bundle (:class:`landsight.classify.bundle.Bundle`).

    Returns:
        ``landsight.kind`` (:data:`PROVENANCE_KIND`), ``landsight.model_sha256`` (SHA-256 of the
        bundle's ``model.onnx``, hex), ``landsight.classes`` (JSON list of the class names) and
        ``landsight.bundle`` (the bundle folder, for messages only), all strings, as
        :func:`write_table` takes them.

    """
    import json

    from landsight.bundle import MODEL_FILE
    from landsight.cache import file_digest

    model = Path(bundle.path) / MODEL_FILE
    st = model.stat()
    key = (str(model.resolve()), st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = file_digest(model)
    return {
        "landsight.kind": PROVENANCE_KIND,
        "landsight.model_sha256": digest,
        "landsight.classes": json.dumps(list(bundle.classes)),
        "landsight.bundle": str(bundle.path),
    }


def _describe(meta: dict[str, str]) -> str:
    digest, classes = meta.get("landsight.model_sha256", "?")[:12], meta.get("landsight.classes", "?")
    return f"bundle {meta.get('landsight.bundle', '?')!r} (model.onnx sha256 {digest}..., classes {classes})"


def check_provenance(found: dict[str, str], expected: dict[str, str], *, where: str) -> None:
    """Refuse to add rows of one model to a table written by another (or by something else).

    Args:
        found: :func:`read_metadata` of the existing table (or a ``.parts`` folder's record).
        expected: :func:`provenance` of this run's bundle.
        where: The existing table / folder, for the message.

    Raises:
        OutputExistsError: ``found`` is not a landsight predictions table (no provenance: a
            user's own file, or one written before provenance was recorded), or it was written
            by another model (different ``model.onnx`` digest or class list). The message names
            both and the fixes: another output path, or ``overwrite`` (``--overwrite``) to start
            afresh.

    """
    from landsight.errors import OutputExistsError

    if found.get("landsight.kind") != PROVENANCE_KIND:
        raise OutputExistsError(
            f"{where!r} exists but is not a landsight predictions table (it records no bundle), so it is not "
            "resumed or merged into; choose another output path, or pass --overwrite (overwrite=True) to replace it"
        )
    keys = ("landsight.model_sha256", "landsight.classes")
    if any(found.get(k) != expected[k] for k in keys):
        raise OutputExistsError(
            f"{where!r} holds predictions of {_describe(found)}, but this run uses {_describe(expected)}; "
            "resuming would mix two models' rows. Choose another output path, or pass --overwrite "
            "(overwrite=True) to score everything afresh with this bundle"
        )


def load_predictions(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Read a predictions table (``.parquet`` or ``.csv``) written by ``landsight predict``.

    Args:
        source: The file, or a DataFrame (returned as a copy).

    Returns:
        The table, with at least the columns ``path``, ``predicted`` and ``error`` (strings,
        ``""`` when empty).

    Raises:
        DataNotFoundError: The file does not exist.
        LandsightValueError: Unsupported suffix, or a required column is missing.

    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        table = source.copy()
        name = "the predictions table"
    else:
        path = Path(source)
        name = repr(str(path))
        if path.suffix not in FORMATS:
            raise LandsightValueError(f"predictions file {name} must end in one of {FORMATS}")
        if not path.exists():
            raise DataNotFoundError(f"predictions file {name} does not exist; write one with `landsight predict`")
        table = read_table(path)
    missing = [c for c in ("path", "predicted") if c not in table.columns]
    if missing:
        raise LandsightValueError(f"{name} lacks the column(s) {missing!r}; is it a `landsight predict` output?")
    if "error" not in table.columns:
        table["error"] = ""
    table["error"] = table["error"].fillna("").astype(str)
    table["predicted"] = table["predicted"].fillna("").astype(str)
    return table
