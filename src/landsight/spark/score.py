"""Scoring on the executors: ``mapInPandas`` over path rows, onnxruntime, batched.

Each Python worker keeps one onnxruntime session per model (keyed by the model's SHA-256) in a
module-level cache, so a session is built once per worker process, not per batch or partition;
with ``spark.python.worker.reuse`` (Spark's default) a worker serves many tasks. The model bytes
reach the executors as a broadcast variable, so the bundle need not be on a shared file system.
Each session uses ``spark.task.cpus`` intra-op threads (the cores Spark gives one task; an
executor with C cores runs C such tasks at once), or ``landsight.spark.threads`` when set.

Rows are built by :func:`landsight.predictions.prediction_rows`, the same function the local engine
uses, and images are read, decoded and resized by :func:`landsight.data.loader.load_bytes`
exactly as there, so both engines write the same rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from landsight.classify.bundle import Bundle
    from landsight.data.loader import LoadedImage

#: Per Python worker: model digest -> onnxruntime session wrapper.
_SESSIONS: dict[str, Any] = {}

THREADS_CONF = "landsight.spark.threads"


def worker_session(digest: str, model: Any, threads: int) -> Any:
    """Return this worker's onnxruntime session for a model, creating it on first use.

    Args:
        digest: SHA-256 of the model bytes (the cache key).
        model: A broadcast variable holding the ``.onnx`` bytes (read only on a cache miss).
        threads: Intra-op threads of the session.

    Returns:
        A :class:`landsight.runtime.OnnxModel` (one call per batch, no extra parallel slices).

    """
    session = _SESSIONS.get(digest)
    if session is None:
        from landsight.runtime import OnnxModel

        session = OnnxModel(model.value, device="cpu", threads=threads, parallel=1)
        _SESSIONS[digest] = session
    return session


def broadcast_model(spark: SparkSession, onnx_path: str | Path) -> tuple[str, Any]:
    """Send an ONNX graph to the executors once.

    Args:
        spark: The session.
        onnx_path: The ``.onnx`` file on the driver.

    Returns:
        ``(digest, broadcast)``: the SHA-256 of the bytes (the workers' session cache key) and
        the broadcast variable holding them.
    """
    data = Path(onnx_path).read_bytes()
    return hashlib.sha256(data).hexdigest(), spark.sparkContext.broadcast(data)


def configured_threads(spark: SparkSession) -> int | None:
    """``landsight.spark.threads`` of the session (``--conf landsight.spark.threads=N``), read on the driver."""
    value = spark.conf.get(THREADS_CONF, None)
    if value in (None, ""):
        return None
    try:
        threads = int(value)
    except ValueError:
        raise LandsightValueError(f"{THREADS_CONF} must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise LandsightValueError(f"{THREADS_CONF} must be a positive integer, got {value!r}")
    return threads


def task_threads(configured: int | None = None, default: int = 1) -> int:
    """The onnxruntime threads of the running Spark task.

    Args:
        configured: :func:`configured_threads` of the session, passed from the driver; wins when set.
        default: Outside a Spark task.

    Returns:
        ``configured``, else the task's cores (``spark.task.cpus``), else ``default``.
    """
    from pyspark import TaskContext

    if configured:
        return configured
    ctx = TaskContext.get()
    if ctx is None:
        return default
    try:
        return max(1, int(ctx.cpus()))
    except Exception:  # noqa: BLE001 - older pyspark without TaskContext.cpus
        return default


def load_path(path: str, preprocessing: Any) -> LoadedImage:
    """Read (via :func:`landsight.spark.io.read_bytes`), decode and resize one image; never raises.

    Args:
        path: Local path or fsspec URL.
        preprocessing: :class:`landsight.models.backbones.Preprocessing` of the model.

    Returns:
        The loaded image; on failure ``error`` holds the same reason the local engine gives.

    """
    from landsight.data.loader import LoadedImage, load_bytes
    from landsight.spark.io import read_bytes

    try:
        data = read_bytes(path)
    except OSError as exc:
        return LoadedImage(path=path, error=f"cannot open file: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - a bad URL or a missing fsspec driver is this image's error, not the job's
        return LoadedImage(path=path, error=f"cannot open file: {type(exc).__name__}: {exc}")
    try:
        return load_bytes(path, data, preprocessing)
    except Exception as exc:  # noqa: BLE001 - never fail the task for one image
        return LoadedImage(path=path, error=f"cannot read image: {type(exc).__name__}: {exc}")


def map_batches(
    frames: Iterator[pd.DataFrame],
    *,
    model: Any,
    digest: str,
    preprocessing: dict[str, Any],
    batch_size: int,
    build: Callable[[Sequence[LoadedImage], list[int], np.ndarray, pd.DataFrame], pd.DataFrame],
    out_dim: int,
    threads: int | None = None,
) -> Iterator[pd.DataFrame]:
    """The ``mapInPandas`` body: load images, run the ONNX graph per batch, build output rows.

    Args:
        frames: Pandas chunks of the partition, each with a ``path`` column.
        model: Broadcast ``.onnx`` bytes.
        digest: SHA-256 of those bytes.
        preprocessing: ``Preprocessing.to_dict()`` of the model.
        batch_size: Images per forward pass.
        build: Makes the output frame from (items, decoded positions, graph output, input chunk).
        out_dim: Width of the graph output (for empty batches).
        threads: onnxruntime threads (default: the task's cores, see :func:`task_threads`).

    Yields:
        One output frame per batch.

    """
    import pandas as pd

    from landsight.data.loader import ImageBatch
    from landsight.data.preprocessing import Preprocessing

    prep = Preprocessing.from_dict(preprocessing)
    session = worker_session(digest, model, task_threads(threads))
    for frame in frames:
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start : start + batch_size]
            batch = ImageBatch([load_path(str(p), prep) for p in chunk["path"]])
            idx, stack = batch.stack()
            if stack is not None:
                out = np.asarray(session(np.ascontiguousarray(stack, dtype=np.uint8)), dtype=np.float32)
            else:
                out = np.empty((0, out_dim), np.float32)
            result = build(batch.items, idx, out, chunk)
            yield result if isinstance(result, pd.DataFrame) else pd.DataFrame(result)


def prediction_schema(classes: Sequence[str]) -> StructType:
    """Spark schema of prediction rows (:func:`landsight.predictions.prediction_columns`)."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    from landsight.predictions import prediction_columns

    strings = {"path", "predicted", "error", "crs"}
    return StructType(
        [StructField(c, StringType() if c in strings else DoubleType(), True) for c in prediction_columns(classes)]
    )


def score_frame(
    bundle: Bundle, paths: DataFrame, *, batch_size: int = 32, graph: tuple[str, Any] | None = None
) -> DataFrame:
    """Lazily score a DataFrame of paths with a bundle on the executors.

    Args:
        bundle: The loaded bundle.
        paths: DataFrame with a ``path`` string column.
        batch_size: Images per forward pass.
        graph: :func:`broadcast_model` of the bundle's ``model.onnx``, made once for several
            frames; by default it is broadcast here.

    Returns:
        DataFrame of prediction rows (columns of :func:`landsight.predictions.prediction_columns`).

    """
    from landsight.bundle import MODEL_FILE
    from landsight.predictions import prediction_columns, prediction_rows

    digest, shared = graph or broadcast_model(paths.sparkSession, bundle.path / MODEL_FILE)
    classes = list(bundle.classes)
    columns = prediction_columns(classes)
    prep = bundle.preprocessing.to_dict()
    threads = configured_threads(paths.sparkSession)

    def build(items: Sequence[LoadedImage], idx: list[int], proba: np.ndarray, chunk: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(prediction_rows(items, idx, proba, classes), columns=columns)

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from map_batches(
            frames, model=shared, digest=digest, preprocessing=prep, batch_size=batch_size, build=build,
            out_dim=len(classes), threads=threads,
        )  # fmt: skip

    return paths.select("path").mapInPandas(run, prediction_schema(classes))


@dataclass
class SparkPredictResult:
    """Summary of a Spark prediction run (the rows stay in the Parquet output).

    Attributes:
        out: The Parquet dataset folder written.
        n_images: Rows in ``out`` after this run (earlier runs included).
        n_scored: Images scored by this run (the rest were already in ``out``).
        n_errors: Error rows in ``out``.
        seconds: Wall time of the scoring job.
        errors: Up to 20 ``(path, error)`` of the error rows in ``out``.

    """

    out: str
    n_images: int
    n_scored: int
    n_errors: int
    seconds: float
    errors: list[tuple[str, str]]

    @property
    def images_per_second(self) -> float:
        """Images scored per second of wall time (0 when nothing was scored)."""
        return self.n_scored / self.seconds if self.n_scored and self.seconds > 0 else 0.0


def predict(
    bundle: str | Path | Bundle,
    inputs: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    master: str = "local[*]",
    conf: dict[str, str] | None = None,
    batch_size: int = 32,
    partitions: int | None = None,
    chunk_size: int = 4096,
    spark: SparkSession | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
) -> SparkPredictResult:
    """Predict images on Spark executors into a Parquet dataset, resumable.

    The output folder holds Parquet part files whose rows are those of the local engine
    (:func:`landsight.classify.predict.predict`) for the same images, though not in input order (the
    paths are spread over partitions; sort by ``path`` to compare); ``pandas.read_parquet(out)``
    reads it. The images are scored in chunks of ``chunk_size``, each appended to ``out`` by its own
    Spark job, so a crash loses at most the chunk in flight. When ``out`` already holds rows,
    the paths in it are skipped and only the new images are scored and appended: re-running
    after a crash or with more images never duplicates a row. A bad, missing or unreadable
    image gives an error row (appended rows are never rewritten, so unlike the local engine a
    resume does not retry error rows; use ``overwrite`` to score everything again).

    A local ``out`` folder records the bundle that wrote it in ``_landsight.json``
    (:func:`landsight.predictions.provenance`; Spark and pandas skip ``_`` files): a resume
    with another bundle, or into a folder of Parquet files without that record, is refused
    unless ``overwrite``. A URL ``out`` (``s3a://``...) is not checked.

    Args:
        bundle: Bundle folder / zip, or a loaded :class:`landsight.bundle.Bundle`.
        inputs: See :func:`landsight.spark.io.list_inputs` (local paths, globs, list files,
            ``s3://`` / ``gs://`` / ``az://`` / ``http(s)://`` URLs, or a sequence of paths).
        out: Output Parquet folder (local path or a URL Spark can write, e.g. ``s3a://``).
        master: Spark master URL (``local[*]``, ``spark://host:7077``...).
        conf: Extra Spark settings.
        batch_size: Images per forward pass.
        partitions: Partitions of each chunk (default: 2 per core, at most 256 images each).
        chunk_size: Images per Spark job (one append to ``out`` each).
        spark: Use this session instead of :func:`landsight.spark.session.get_session`.
        tracking_uri: MLflow store (default ``sqlite:///mlruns.db``, or ``$MLFLOW_TRACKING_URI``).
        track: Record the run in MLflow.
        overwrite: Delete the part files (and record) of an existing local ``out`` first and
            score every image afresh.

    Returns:
        A :class:`SparkPredictResult`.

    Raises:
        LandsightValueError: ``out`` is not a Parquet folder name, ``batch_size`` or
            ``chunk_size`` < 1, or ``bundle`` is not an image classifier.
        OutputExistsError: Without ``overwrite``: a local ``out`` holds Parquet files written
            with another bundle, or without a landsight record; the message names both.
        DataNotFoundError: ``inputs`` holds no images.

    """
    from pyspark.sql import functions as F

    from landsight.bundle import MODEL_FILE
    from landsight.classify.bundle import as_bundle
    from landsight.spark.io import list_inputs, paths_frame
    from landsight.spark.session import get_session
    from landsight.tracking import tracked_run

    out_text = str(out)
    if out_text.endswith(".csv"):
        raise LandsightValueError(
            f"--engine spark writes a Parquet folder; got out={out_text!r}, use e.g. preds.parquet"
        )
    if Path(out_text).is_file():
        raise LandsightValueError(
            f"out {out_text!r} is a single file (from --engine local?); the Spark engine writes a Parquet folder: "
            "give another name"
        )
    if batch_size < 1 or chunk_size < 1:
        raise LandsightValueError(f"batch_size and chunk_size must be >= 1, got {batch_size!r}, {chunk_size!r}")
    model = as_bundle(bundle)
    record = _claim_output(out_text, model, overwrite)  # refused here, before Spark starts
    spark = spark or get_session(master, conf)
    paths = list_inputs(inputs)
    params = {"bundle": str(model.path), "inputs": str(inputs), "out": out_text, "engine": "spark",
              "master": spark.sparkContext.master, "backbone": model.meta["backbone"]["name"],
              "batch_size": batch_size}  # fmt: skip
    with tracked_run("predict", params, tracking_uri=tracking_uri, enabled=track) as run:
        started = time.perf_counter()
        done = _existing_paths(spark, out_text)
        todo = [p for p in paths if p not in done]
        graph = broadcast_model(spark, model.path / MODEL_FILE) if todo else None  # once for all chunks
        if todo and record is not None:
            from landsight.outputs import write_json

            write_json(Path(out_text) / OUTPUT_RECORD, record)  # before the first part file
        for start in range(0, len(todo), chunk_size):
            frame = paths_frame(spark, todo[start : start + chunk_size], partitions=partitions)
            score_frame(model, frame, batch_size=batch_size, graph=graph).write.mode("append").parquet(out_text)
        seconds = time.perf_counter() - started
        written = spark.read.parquet(out_text)
        bad = written.filter(F.col("error") != "")
        n_images, n_errors = written.count(), bad.count()
        errors = [(r["path"], r["error"]) for r in bad.select("path", "error").limit(20).collect()]
        result = SparkPredictResult(out_text, n_images, len(todo), n_errors, seconds, errors)
        run.log_metrics({"n_images": n_images, "n_scored": len(todo), "n_errors": n_errors,
                         "images_per_second": result.images_per_second})  # fmt: skip
    return result


OUTPUT_RECORD = "_landsight.json"
"""File in a Spark output folder recording the bundle that wrote its rows (a ``_`` file: not read as data)."""


def _claim_output(out: str, model: Bundle, overwrite: bool) -> dict[str, str] | None:
    """Check the provenance record of a local output folder before any work.

    With ``overwrite`` the folder's part files and Spark / landsight markers are deleted first
    (only those: anything else in the folder is left alone).

    Returns:
        The record to write into ``out`` before its first part file (``None``: a URL, or the
        record is there already).

    Raises:
        OutputExistsError: See :func:`predict`.
    """
    import json

    from landsight.predictions import check_provenance, provenance
    from landsight.spark.io import is_url

    if is_url(out):
        return None
    folder = Path(out)
    expected = provenance(model)
    record = folder / OUTPUT_RECORD
    if folder.is_dir() and overwrite:
        for pattern in ("part-*", ".part-*", "_SUCCESS", "._SUCCESS.crc", OUTPUT_RECORD):
            for f in folder.glob(pattern):
                if f.is_file():
                    f.unlink()
    elif folder.is_dir() and (record.exists() or any(folder.glob("*.parquet"))):
        try:
            found = json.loads(record.read_text()) if record.is_file() else {}
        except (OSError, ValueError):
            found = {}
        check_provenance(found if isinstance(found, dict) else {}, expected, where=out)
        if record.is_file():
            return None
    return expected


def _existing_paths(spark: SparkSession, out: str) -> set[str]:
    """Paths already in the output dataset (empty when it does not exist yet)."""
    from pyspark.errors import AnalysisException

    from landsight.spark.io import is_url

    if not is_url(out) and not Path(out).is_dir():
        return set()
    try:
        return {r["path"] for r in spark.read.parquet(out).select("path").distinct().toLocalIterator()}
    except AnalysisException:
        return set()
