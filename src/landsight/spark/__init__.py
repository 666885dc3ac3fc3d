"""Scoring, featurizing and training at cluster scale on Apache Spark (pyspark).

Executors need only onnxruntime and the bundle's ``model.onnx`` (broadcast to them), never torch.
Nothing here is imported by ``import landsight``: the CLI imports it only for ``--engine spark``.

* :func:`get_session` - one cached ``SparkSession`` per process (``--master``, ``--conf``).
* :func:`predict` - images -> prediction Parquet, row for row like the local engine, resumable.
* :func:`featurize` - images -> feature Parquet with the ONNX backbone on the executors.
* :func:`train` - featurize on executors, MLlib logistic regression / random forest, ONNX bundle.
"""

from __future__ import annotations

from landsight.spark.featurize import featurize
from landsight.spark.heads import train
from landsight.spark.score import predict
from landsight.spark.session import get_session, parse_conf, stop_session

__all__ = ["featurize", "get_session", "parse_conf", "predict", "stop_session", "train"]
