"""Spark MLlib heads on executor-made features, turned into ONNX for a normal landsight bundle.

The MMLSpark (SynapseML) path: featurize on the cluster, then fit ``pyspark.ml`` LogisticRegression or
RandomForestClassifier on the feature DataFrame. The fitted head becomes an ONNX graph, never a
pickle or an MLlib model folder:

* logistic regression (multinomial family): ``softmax(X @ coefficientMatrix.T + interceptVector)``
  as ONNX ``MatMul``/``Add``/``Softmax``, written from the coefficients;
* random forest: the trees' nodes as an ``ai.onnx.ml.TreeEnsembleClassifier``, by onnxmltools'
  Spark ML converter (which reads the trees from the model's saved node table).

The head graph is merged with the backbone graph (:func:`landsight.models.onnx_graph.
merge_backbone_head`) and written by the same code as the local ``train``, so
:func:`landsight.bundle.load_bundle`, ``predict`` and ``serve`` take it unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.models.backbones import DEFAULT_BACKBONE, stages_label
from landsight.models.heads import HEADS
from landsight.recipe import run_params

if TYPE_CHECKING:
    import onnx
    from pyspark.sql import SparkSession

    from landsight.classify.train import TrainResult

#: Default depth of MLlib forest trees (MLlib caps depth at 30 and has no "unlimited").
DEFAULT_FOREST_DEPTH = 12


def make_spark_head(
    kind: str,
    *,
    C: float = 1.0,
    n_train: int = 1,
    standardize: bool = True,
    max_iter: int = 200,
    n_estimators: int = 100,
    max_depth: int | None = None,
    random_state: int = 0,
) -> Any:
    """Build an unfitted MLlib head equivalent to :func:`landsight.models.heads.make_head`.

    scikit-learn's logistic loss is ``0.5 * ||w||^2 + C * sum(loss)``; MLlib's is
    ``mean(loss) + regParam / 2 * ||w||^2``, so ``regParam = 1 / (C * n_train)`` gives the same
    optimum. With ``standardize`` MLlib penalises the standardised coefficients, as the local
    head does after its ``StandardScaler``.

    Args:
        kind: ``"logreg"`` or ``"forest"``.
        C: Inverse L2 regularisation of ``logreg`` (> 0).
        n_train: Training rows (to translate ``C`` to ``regParam``).
        standardize: ``logreg``: standardise features inside the fit.
        max_iter: ``logreg`` L-BFGS iterations.
        n_estimators: ``forest`` trees.
        max_depth: ``forest`` depth (default :data:`DEFAULT_FOREST_DEPTH`, at most 30).
        random_state: ``forest`` seed.

    Returns:
        A ``pyspark.ml.classification`` estimator reading ``features`` / ``label_index``.

    Raises:
        LandsightValueError: Unknown ``kind`` or an out-of-range parameter.

    """
    check_head_params(kind, C=C, n_estimators=n_estimators, max_depth=max_depth)
    return SPARK_HEADS[kind].build(
        C=C, n_train=n_train, standardize=standardize, max_iter=max_iter, n_estimators=n_estimators,
        max_depth=max_depth, random_state=random_state,
    )  # fmt: skip


def _build_logreg(*, C: float, n_train: int, standardize: bool, max_iter: int, **_: Any) -> Any:
    from pyspark.ml.classification import LogisticRegression

    return LogisticRegression(
        featuresCol="features", labelCol="label_index", family="multinomial", regParam=1.0 / (C * max(1, n_train)),
        elasticNetParam=0.0, standardization=standardize, maxIter=max_iter, tol=1e-6,
    )  # fmt: skip


def _build_forest(*, n_estimators: int, max_depth: int | None, random_state: int, **_: Any) -> Any:
    from pyspark.ml.classification import RandomForestClassifier

    return RandomForestClassifier(
        featuresCol="features", labelCol="label_index", numTrees=n_estimators,
        maxDepth=DEFAULT_FOREST_DEPTH if max_depth is None else max_depth, featureSubsetStrategy="sqrt",
        seed=random_state,
    )  # fmt: skip


def _check_logreg(*, C: float, **_: Any) -> None:
    if not C > 0:
        raise LandsightValueError(f"The 'C' parameter of the logreg head must be > 0. Got {C!r} instead.")


def _check_forest(*, n_estimators: int, max_depth: int | None, **_: Any) -> None:
    depth = DEFAULT_FOREST_DEPTH if max_depth is None else max_depth
    if n_estimators < 1 or not 1 <= depth <= 30:
        raise LandsightValueError(
            f"forest needs n_estimators >= 1 and 1 <= max_depth <= 30 (MLlib's limit); "
            f"got n_estimators={n_estimators!r}, max_depth={max_depth!r}"
        )


def check_head_params(kind: str, *, C: float = 1.0, n_estimators: int = 100, max_depth: int | None = None) -> None:
    """Validate MLlib head parameters (no Spark needed), before any heavy work.

    Args:
        kind: ``"logreg"`` or ``"forest"``.
        C: ``logreg`` inverse regularisation (> 0).
        n_estimators: ``forest`` trees (>= 1).
        max_depth: ``forest`` depth, 1 to 30 (MLlib's limit), or ``None``.

    Raises:
        LandsightValueError: Unknown ``kind`` or a parameter out of range.

    """
    if kind not in HEADS:
        raise LandsightValueError(f"unknown head {kind!r}; choose one of {list(HEADS)}")
    if kind not in SPARK_HEADS:
        raise LandsightValueError(
            f"head {kind!r} has no Spark MLlib version; --engine spark supports {list(SPARK_HEADS)}. "
            "Use --engine local for it."
        )
    SPARK_HEADS[kind].check(C=C, n_estimators=n_estimators, max_depth=max_depth)


def logistic_to_onnx(model: Any, num_features: int) -> onnx.ModelProto:
    """Write a fitted multinomial MLlib ``LogisticRegressionModel`` as an ONNX graph.

    Args:
        model: ``pyspark.ml.classification.LogisticRegressionModel`` with
            ``family="multinomial"`` (``coefficientMatrix`` of shape ``(K, D)``).
        num_features: D.

    Returns:
        Graph ``features`` float32 ``(N, D)`` -> ``probabilities`` float32 ``(N, K)``.

    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from landsight.models.onnx_graph import FEATURES_OUTPUT, OPSET, PROBABILITIES_OUTPUT

    weights = np.asarray(model.coefficientMatrix.toArray(), dtype=np.float32).T  # (D, K)
    bias = np.asarray(model.interceptVector.toArray(), dtype=np.float32)  # (K,)
    k = bias.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [FEATURES_OUTPUT, "W"], ["logits_nobias"]),
            helper.make_node("Add", ["logits_nobias", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [PROBABILITIES_OUTPUT], axis=1),
        ],
        "mllib_logistic_regression",
        [helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, [None, num_features])],
        [helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, [None, k])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="landsight")
    onnx.checker.check_model(proto)
    return proto


def forest_to_onnx(model: Any, num_features: int, spark: SparkSession) -> onnx.ModelProto:
    """Convert a fitted MLlib ``RandomForestClassificationModel`` to ONNX with onnxmltools.

    Args:
        model: The fitted forest.
        num_features: D.
        spark: Session onnxmltools uses to read the trees' node table.

    Returns:
        Graph ``features`` float32 ``(N, D)`` -> ``probabilities`` float32 ``(N, K)``
        (an ``ai.onnx.ml.TreeEnsembleClassifier``).

    """
    import contextlib
    import io

    import onnx
    from onnxmltools import convert_sparkml
    from onnxmltools.convert.common.data_types import FloatTensorType

    from landsight.models.onnx_graph import FEATURES_OUTPUT, PROBABILITIES_OUTPUT

    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its attributes
        proto = convert_sparkml(
            model, "mllib_random_forest", [(FEATURES_OUTPUT, FloatTensorType([None, num_features]))],
            spark_session=spark, target_opset=15,
        )  # fmt: skip
    prob = next(o.name for o in proto.graph.output if o.name.startswith("probability"))
    for node in proto.graph.node:
        node.output[:] = [PROBABILITIES_OUTPUT if o == prob else o for o in node.output]
    keep = [o for o in proto.graph.output if o.name == prob]
    keep[0].name = PROBABILITIES_OUTPUT
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    onnx.checker.check_model(proto)
    return proto


def train(
    data: str | Path,
    *,
    out: str | Path = "model.landsight",
    head: str = "logreg",
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = "imagenet",
    bands: tuple[int, ...] | None = None,
    tta: str = "none",
    stages: str | Sequence[str] = "auto",
    C: float | str = 1.0,
    standardize: bool = True,
    n_estimators: int = 100,
    max_depth: int | None = None,
    class_weight: str | None = None,
    test: str | Path | None = None,
    test_size: float = 0.2,
    random_state: int = 0,
    class_names: str | Path | None = None,
    batch_size: int = 32,
    master: str = "local[*]",
    conf: dict[str, str] | None = None,
    spark: SparkSession | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train a head with Spark: featurize on the executors, fit MLlib, write an ONNX bundle.

    The catalog and its stratified split are the local ``train``'s (same ``random_state``, same
    split), so the two engines' accuracies compare directly.

    Args:
        data: Labelled images (see :func:`landsight.data.catalog.build_catalog`).
        out: Bundle folder to write.
        head: ``"logreg"`` (MLlib multinomial LogisticRegression) or ``"forest"``
            (MLlib RandomForestClassifier).
        backbone: Backbone registry name.
        weights: ``"imagenet"``, a weights file, or ``None`` (random, explicit).
        bands: 1-based bands to read (default RGB).
        tta: Only ``"none"`` (rotation averaging is local-only for now).
        stages: Pooled intermediate stages joining the features, as the local ``train``'s
            (default ``"auto"``; see :func:`landsight.models.backbones.resolve_stages`).
        C: ``logreg`` inverse L2 regularisation, as in scikit-learn (``"auto"`` is local-only).
        standardize: ``logreg``: standardise features.
        n_estimators: ``forest`` trees.
        max_depth: ``forest`` depth (default :data:`DEFAULT_FOREST_DEPTH`).
        class_weight: Only ``None`` (``"balanced"`` is local-only for now).
        test: Separate labelled test data (then ``test_size`` is ignored).
        test_size: Held-out fraction of ``data``, stratified (0 = none).
        random_state: Seed of the split and the forest.
        class_names: Class-names file for CNTK map files.
        batch_size: Images per forward pass.
        master: Spark master URL.
        conf: Extra Spark settings.
        spark: Use this session instead of :func:`landsight.spark.session.get_session`.
        tracking_uri: MLflow store.
        track: Record the run in MLflow.
        overwrite: Replace an existing bundle at ``out`` (whole, never merged).

    Returns:
        A :class:`landsight.classify.train.TrainResult` (``head`` is the fitted MLlib model, in memory).

    Raises:
        LandsightValueError: Bad parameters, fewer than two classes, or a class left without
            readable training images.
        OutputExistsError: ``out`` exists and ``overwrite`` is False (checked before any work).
        WeightsUnavailableError: The backbone's weights cannot be had.

    """
    from landsight.bundle import check_bundle_out
    from landsight.classify.train import log_train_result
    from landsight.tracking import tracked_run

    check_bundle_out(out, overwrite=overwrite)
    if not 0 <= test_size < 1:
        raise LandsightValueError(f"test_size must be in [0, 1), got {test_size!r}")
    if tta != "none" or class_weight is not None:
        raise LandsightValueError(
            f"--engine spark supports tta='none' and no class weights; got tta={tta!r}, class_weight={class_weight!r}. "
            "Use --engine local for these."
        )
    try:
        C = float(C)
    except (TypeError, ValueError):
        raise LandsightValueError(f"--engine spark needs a numeric C (no 'auto'), got {C!r}") from None
    check_head_params(head, C=C, n_estimators=n_estimators, max_depth=max_depth)
    params = run_params(
        train, locals(), exclude=("track", "tracking_uri", "overwrite", "class_names", "batch_size", "spark", "conf"),
        engine="spark", stages=stages_label(stages),
    )
    with tracked_run("train", params, tracking_uri=tracking_uri, enabled=track) as run:
        started = time.perf_counter()
        result = _train(
            data, out=out, head=head, backbone=backbone, weights=weights, bands=bands, C=C, standardize=standardize,
            n_estimators=n_estimators, max_depth=max_depth, test=test, test_size=test_size,
            random_state=random_state, class_names=class_names, batch_size=batch_size,
            spark=spark, master=master, conf=conf, overwrite=overwrite, stages=stages,
        )  # fmt: skip
        log_train_result(run, result, started)
    return result


def _train(
    data: str | Path,
    *,
    out: str | Path,
    head: str,
    backbone: str,
    weights: str | Path | None,
    bands: tuple[int, ...] | None,
    stages: str | Sequence[str],
    C: float,
    standardize: bool,
    n_estimators: int,
    max_depth: int | None,
    test: str | Path | None,
    test_size: float,
    random_state: int,
    class_names: str | Path | None,
    batch_size: int,
    spark: SparkSession | None,
    master: str,
    conf: dict[str, str] | None,
    overwrite: bool = False,
) -> TrainResult:
    import hashlib

    import pandas as pd
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    from landsight.classify.evaluate import compute_metrics
    from landsight.classify.featurize import cached_backbone_onnx
    from landsight.classify.train import TrainResult, write_classifier_bundle
    from landsight.data.splitting import training_catalog
    from landsight.models.backbones import create_backbone
    from landsight.spark.featurize import feature_frame
    from landsight.spark.io import paths_frame
    from landsight.spark.session import get_session

    started = time.perf_counter()
    catalog = training_catalog(
        data, test=test, test_size=test_size, random_state=random_state, class_names=class_names
    )
    classes = sorted(catalog.loc[catalog["split"] == "train", "label"].unique())
    index = {c: float(i) for i, c in enumerate(classes)}
    extra = pd.DataFrame({"label": catalog["label"].astype(str), "split": catalog["split"].astype(str)})
    extra["label_index"] = catalog["label"].map(index).fillna(-1.0).astype(float).to_numpy()

    bb = create_backbone(backbone, weights=weights, bands=bands, stages=stages)
    onnx_path = cached_backbone_onnx(bb)
    spark = spark or get_session(master, conf)
    frame = paths_frame(spark, list(catalog["path"]), extra=extra)
    feats = feature_frame(bb, onnx_path, frame, batch_size=batch_size).cache()
    try:
        bad = feats.filter(F.col("error") != "").select("path", "error").collect()
        failures = [(r["path"], r["error"]) for r in bad]
        good = feats.filter(F.col("error") == "").withColumn("features", array_to_vector("features"))
        train_df = good.filter(F.col("split") == "train")
        counts = {r["label"]: r["count"] for r in train_df.groupBy("label").count().collect()}
        lost = [c for c in classes if c not in counts]
        if lost:
            raise LandsightValueError(
                f"classes {lost!r} have no readable training images left after skipping {len(failures)} "
                f"unreadable file(s); see the reasons: {failures[:5]!r}"
            )
        n_train = sum(counts.values())
        estimator = make_spark_head(
            head, C=C, n_train=n_train, standardize=standardize, n_estimators=n_estimators, max_depth=max_depth,
            random_state=random_state,
        )  # fmt: skip
        fitted = estimator.fit(train_df)
        head_graph = SPARK_HEADS[head].to_onnx(fitted, bb.num_features, spark)
        test_rows = (
            fitted.transform(good.filter(F.col("split") == "test"))
            .select("path", "label", "sha256", vector_to_array("probability").alias("probability"))
            .toPandas()
        )
        hashed = good.select("sha256", "label").toPandas()
        pairs = sorted(zip(hashed["sha256"], hashed["label"], strict=True))
    finally:
        feats.unpersist()
    metrics: dict[str, Any] = {}
    test_paths = list(test_rows["path"])
    if test_paths:
        proba = np.stack([np.asarray(p, dtype=np.float64) for p in test_rows["probability"]])
        metrics = compute_metrics(list(test_rows["label"]), proba, classes, paths=test_paths)
    n_test = len(test_paths)
    described = {"kind": head, "estimator": f"pyspark.ml.{type(fitted).__name__}",
                 "params": SPARK_HEADS[head].params(fitted, C)}  # fmt: skip
    bundle_path = write_classifier_bundle(
        out,
        backbone=bb,
        backbone_onnx=onnx_path,
        head_graph=head_graph,
        skipped=failures,
        classes=classes,
        metrics=metrics,
        overwrite=overwrite,
        head=described,
        engine={"name": "spark", "master": spark.sparkContext.master},
        data={
                "source": str(data),
                "test_source": str(test) if test is not None else None,
                "fingerprint": hashlib.sha256(repr(pairs).encode()).hexdigest(),
                "n_train": n_train,
                "n_test": n_test,
                "n_skipped": len(failures),
                "test_size": test_size if test is None else None,
                "random_state": random_state,
        },
        training_seconds=round(time.perf_counter() - started, 2),
    )
    return TrainResult(bundle_path, metrics, n_train, n_test, failures, fitted, test_paths)


def _logreg_params(model: Any, C: float) -> dict[str, Any]:
    """JSON-ready parameters of a fitted MLlib logistic regression."""
    return {"C": C, "regParam": model.getRegParam(), "standardize": model.getStandardization(),
            "maxIter": model.getMaxIter()}  # fmt: skip


def _forest_params(model: Any, C: float) -> dict[str, Any]:
    """JSON-ready parameters of a fitted MLlib random forest (``C`` is unused)."""
    return {"n_estimators": model.getNumTrees, "max_depth": model.getMaxDepth(), "seed": model.getSeed()}


@dataclass(frozen=True)
class SparkHead:
    """The MLlib version of a registered head (:data:`landsight.models.heads.HEADS`).

    Attributes:
        build: Unfitted MLlib estimator from the :func:`make_spark_head` keywords (it takes the
            ones it needs and ignores the others).
        check: Validates the :func:`check_head_params` keywords (no Spark needed).
        to_onnx: ``(fitted model, num_features, spark)`` -> head graph ``features`` ->
            ``probabilities``.
        params: ``(fitted model, C)`` -> ``bundle.json``'s ``head.params``.
    """

    build: Callable[..., Any]
    check: Callable[..., None]
    to_onnx: Callable[[Any, int, SparkSession], onnx.ModelProto]
    params: Callable[[Any, float], dict[str, Any]]


#: MLlib heads, keyed by their names in :data:`landsight.models.heads.HEADS` (a registered head
#: missing here is local-only).
SPARK_HEADS: dict[str, SparkHead] = {
    "logreg": SparkHead(_build_logreg, _check_logreg, lambda m, d, _spark: logistic_to_onnx(m, d), _logreg_params),
    "forest": SparkHead(_build_forest, _check_forest, forest_to_onnx, _forest_params),
}
