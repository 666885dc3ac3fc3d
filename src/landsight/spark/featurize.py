"""Featurizing on the executors: the backbone's ONNX graph in onnxruntime, no torch there.

The driver builds the backbone once (torch + timm, offline weights) only to export its ONNX graph
(cached by :func:`landsight.classify.featurize.cached_backbone_onnx`); executors receive the graph bytes as
a broadcast and run it like :mod:`landsight.spark.score` runs a bundle.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.models.backbones import DEFAULT_BACKBONE

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from landsight.data.loader import LoadedImage
    from landsight.models.backbones import Backbone


def feature_frame(backbone: Backbone, onnx_path: str | Path, paths: DataFrame, *, batch_size: int = 32) -> DataFrame:
    """Lazily featurize a DataFrame of paths on the executors.

    Args:
        backbone: The backbone (its preprocessing and feature width).
        onnx_path: Its exported graph (``image`` uint8 ``(N, H, W, C)`` -> ``features`` float32
            ``(N, D)``), from :func:`landsight.classify.featurize.cached_backbone_onnx`.
        paths: DataFrame with a ``path`` string column; its other columns are carried through.
        batch_size: Images per forward pass.

    Returns:
        ``paths``' columns plus ``sha256`` (string), ``features`` (array<float>, length D; null
        on error) and ``error`` (string, empty when fine).

    """
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    from landsight.spark.score import broadcast_model, configured_threads, map_batches

    digest, model = broadcast_model(paths.sparkSession, onnx_path)
    prep = backbone.preprocessing.to_dict()
    dim = backbone.num_features
    threads = configured_threads(paths.sparkSession)
    schema = StructType(
        [
            *paths.schema.fields,
            StructField("sha256", StringType(), True),
            StructField("features", ArrayType(FloatType(), False), True),
            StructField("error", StringType(), True),
        ]
    )

    def build(items: Sequence[LoadedImage], idx: list[int], feats: np.ndarray, chunk: pd.DataFrame) -> pd.DataFrame:
        by_item = dict(zip(idx, feats, strict=True))
        out = chunk.reset_index(drop=True).copy()
        out["sha256"] = [it.sha256 for it in items]
        out["features"] = [by_item[i] if i in by_item else None for i in range(len(items))]
        out["error"] = [it.error for it in items]
        return out

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from map_batches(
            frames, model=model, digest=digest, preprocessing=prep, batch_size=batch_size, build=build, out_dim=dim,
            threads=threads,
        )  # fmt: skip

    return paths.mapInPandas(run, schema)


@dataclass
class SparkFeaturizeResult:
    """Summary of a Spark featurize run.

    Attributes:
        out: The Parquet folder written (``path``, ``sha256``, ``features``).
        n_images: Images featurized.
        num_features: Feature width D.
        failures: ``(path, reason)`` of the images that could not be read.
        seconds: Wall time.

    """

    out: str
    n_images: int
    num_features: int
    failures: list[tuple[str, str]]
    seconds: float


def featurize(
    inputs: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = "imagenet",
    bands: tuple[int, ...] | None = None,
    stages: str | Sequence[str] = (),
    batch_size: int = 32,
    master: str = "local[*]",
    conf: dict[str, str] | None = None,
    partitions: int | None = None,
    spark: SparkSession | None = None,
) -> SparkFeaturizeResult:
    """Featurize images on Spark executors into a Parquet folder.

    Columns are those of ``landsight featurize --engine local``: ``path``, ``sha256`` and
    ``features`` (float32 list of length D), one row per readable image; unreadable images are
    reported in the result's ``failures``, not written.

    Args:
        inputs: See :func:`landsight.spark.io.list_inputs`.
        out: Output Parquet folder (overwritten).
        backbone: Backbone registry name (see :func:`landsight.models.backbones.create_backbone`).
        weights: ``"imagenet"``, a weights file, or ``None`` (random, explicit).
        bands: 1-based bands to read (default RGB).
        stages: Pooled intermediate stages before the final features (default none; ``"auto"``
            gives ``train``'s features; see :func:`landsight.models.backbones.resolve_stages`).
        batch_size: Images per forward pass.
        master: Spark master URL.
        conf: Extra Spark settings.
        partitions: Partitions of the path list (default: 2 per core, at most 256 images each).
        spark: Use this session instead of :func:`landsight.spark.session.get_session`.

    Returns:
        A :class:`SparkFeaturizeResult`.

    Raises:
        LandsightValueError: ``batch_size`` < 1.
        DataNotFoundError: ``inputs`` holds no images.
        WeightsUnavailableError: The backbone's weights cannot be had.

    """
    from pyspark.sql import functions as F

    from landsight.classify.featurize import cached_backbone_onnx
    from landsight.models.backbones import create_backbone
    from landsight.spark.io import list_inputs, paths_frame
    from landsight.spark.session import get_session

    if batch_size < 1:
        raise LandsightValueError(f"batch_size must be >= 1, got {batch_size!r}")
    bb = create_backbone(backbone, weights=weights, bands=bands, stages=stages)
    onnx_path = cached_backbone_onnx(bb)
    spark = spark or get_session(master, conf)
    started = time.perf_counter()
    frame = paths_frame(spark, list_inputs(inputs), partitions=partitions)
    feats = feature_frame(bb, onnx_path, frame, batch_size=batch_size).cache()
    try:
        good = feats.filter(F.col("error") == "").select("path", "sha256", "features")
        good.write.mode("overwrite").parquet(str(out))
        bad = feats.filter(F.col("error") != "").select("path", "error").collect()
    finally:
        feats.unpersist()
    n_ok = spark.read.parquet(str(out)).count()
    failures = [(r["path"], r["error"]) for r in bad]
    return SparkFeaturizeResult(str(out), n_ok, bb.num_features, failures, time.perf_counter() - started)


def features_to_numpy(values: Any) -> np.ndarray:
    """Stack a column of feature lists (from Parquet or ``toPandas``) into one array.

    Args:
        values: N sequences of D floats (a pandas ``features`` column read from the output).

    Returns:
        ``(N, D)`` float32.

    """
    return np.asarray([np.asarray(v, dtype=np.float32) for v in values], dtype=np.float32).reshape(len(values), -1)
