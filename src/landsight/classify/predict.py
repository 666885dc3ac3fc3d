"""Batch prediction over a folder, glob or list file, to Parquet or CSV, resumable.

Rows are written in chunks to ``<out>.parts/`` as they are scored; at the end the parts and any
earlier output are combined into ``out`` atomically. Re-running into the same ``out`` (after a
crash, or with more images) scores only the paths not already there.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    import pandas as pd

    from landsight.classify.bundle import Bundle

FORMATS = (".parquet", ".csv")


def read_table(path: Path) -> pd.DataFrame:
    """Read a predictions table written by :func:`predict` (or ``--engine spark``).

    Args:
        path: A ``.csv`` file or a ``.parquet`` file / folder of Parquet parts.

    Returns:
        The table (``error`` and ``crs`` as strings for CSV; empty cells as missing values).
    """
    import pandas as pd

    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"error": str, "crs": str})
    return pd.read_parquet(path)


def _write_table(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        df.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def predict(
    bundle: str | Path | Bundle,
    inputs: str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    chunk_size: int = 1024,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
) -> pd.DataFrame:
    """Predict every image of ``inputs`` with a bundle.

    Args:
        bundle: Bundle folder / zip, or a loaded :class:`landsight.bundle.Bundle`.
        inputs: A folder (recursive), a glob pattern, a list file (one path per line) or one
            image (see :func:`landsight.data.catalog.list_images`).
        out: ``.parquet`` or ``.csv`` file. When it (or its ``.parts`` folder) already holds
            rows, those paths are skipped (resume). ``None`` = return only.
        batch_size: Images per forward pass.
        num_workers: Decoding threads.
        chunk_size: Images scored between two writes of a part file.
        progress: Show a progress bar.
        tracking_uri: MLflow store (default ``sqlite:///mlruns.db``, or ``$MLFLOW_TRACKING_URI``).
        track: Record the run in MLflow (parameters, image and error counts, images/s).

    Returns:
        All rows (earlier ones included), columns as in
        :meth:`landsight.bundle.Bundle.predict`: ``path``, ``predicted``, ``confidence``,
        ``prob_<class>``..., ``error``, ``minx``, ``miny``, ``maxx``, ``maxy``, ``crs``.
        A bad image gives a row with ``error`` set.

    Raises:
        LandsightValueError: ``out`` has an unsupported suffix.
        DataNotFoundError: ``inputs`` holds no images.

    """
    from landsight.classify.bundle import as_bundle
    from landsight.data.catalog import list_images
    from landsight.tracking import tracked_run

    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.suffix not in FORMATS:
        raise LandsightValueError(f"out must end in one of {FORMATS}, got {str(out_path)!r}")
    model = as_bundle(bundle)
    paths = list_images(inputs)
    params = {"bundle": str(model.path), "inputs": str(inputs), "out": str(out_path) if out_path else None,
              "backbone": model.meta["backbone"]["name"], "batch_size": batch_size}  # fmt: skip
    with tracked_run("predict", params, tracking_uri=tracking_uri, enabled=track) as run:
        started = time.perf_counter()
        result, n_new = _predict(model, paths, out_path, batch_size, num_workers, chunk_size, progress)
        seconds = time.perf_counter() - started
        run.log_metrics({"n_images": len(result), "n_scored": n_new, "n_errors": int((result["error"] != "").sum()),
                         "images_per_second": n_new / seconds if n_new else 0.0})  # fmt: skip
    return result


def _predict(
    model: Bundle,
    paths: list[str],
    out_path: Path | None,
    batch_size: int,
    num_workers: int,
    chunk_size: int,
    progress: bool,
) -> tuple[pd.DataFrame, int]:
    import pandas as pd

    done: list[pd.DataFrame] = []
    parts_dir = out_path.with_name(out_path.name + ".parts") if out_path is not None else None
    if out_path is not None and out_path.exists():
        done.append(read_table(out_path))
    if parts_dir is not None and parts_dir.is_dir():
        done.extend(read_table(p) for p in sorted(parts_dir.glob(f"part-*{out_path.suffix}")))  # type: ignore[union-attr]
    seen = set().union(*(set(d["path"]) for d in done)) if done else set()
    todo = [p for p in paths if p not in seen]

    new: list[pd.DataFrame] = []
    if todo:
        from landsight.progress import progress_bar

        n_parts = len(list(parts_dir.glob("part-*"))) if parts_dir is not None and parts_dir.is_dir() else 0
        with progress_bar(len(todo), "predict", enabled=progress) as bar:
            for start in range(0, len(todo), chunk_size):
                chunk = model.predict(todo[start : start + chunk_size], batch_size=batch_size, num_workers=num_workers)
                new.append(chunk)
                if parts_dir is not None:
                    parts_dir.mkdir(parents=True, exist_ok=True)
                    _write_table(chunk, parts_dir / f"part-{n_parts:06d}{out_path.suffix}")  # type: ignore[union-attr]
                    n_parts += 1
                bar.advance(len(chunk))
    frames = [d for d in done + new if len(d)]
    result = pd.concat(frames, ignore_index=True) if frames else model.predict([])
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _write_table(result, out_path)
        if parts_dir is not None and parts_dir.is_dir():
            shutil.rmtree(parts_dir)
    return result, len(todo)
