"""Linear probe / frozen-feature classifier: pretrained features + a logistic-regression or random-forest head.

The chain: catalog -> checks (before any heavy work) -> stratified split -> featurize (cached) ->
fit the head on the training split -> evaluate on the held-out split -> refit the head on every
image (``refit=True``, the default) -> bundle (one ONNX graph, backbone and head) with
``metrics.json`` (the held-out figures of the split head), the confusion matrix and the list of
skipped files.

The defaults are the best recipe measured in ``benchmarks/defaults.py`` (RESULTS.md, "Choosing
the defaults"): features averaged over the 4 rotations (``tta="rot4"``), standardised, and a
logistic regression whose ``C`` is cross-validated on the cached features (``C="auto"``), on the
final features joined by the pooled outputs of three intermediate stages (``stages="auto"``).
:data:`FAST` is the single-view preset (``landsight train --fast``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.classify.heldout import check_test_source, drop_shared_test_paths, warn, warn_same_content
from landsight.errors import LandsightValueError
from landsight.models.backbones import DEFAULT_BACKBONE, stages_label
from landsight.ranges import check_ranges
from landsight.recipe import EXECUTION_ARGS, PRESETS, resolve_preset, run_params

#: Pooled intermediate stages of the default recipe (:func:`landsight.models.backbones.resolve_stages`).
DEFAULT_STAGES = "auto"

#: The ``--fast`` preset: one view and a fixed C (4x less featurization, no cross-validation).
FAST: dict[str, Any] = PRESETS["fast"]

if TYPE_CHECKING:
    import onnx

    from landsight.models.backbones import Backbone


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        bundle_path: The bundle folder.
        metrics: Held-out metrics (see :func:`landsight.classify.evaluate.compute_metrics`); empty when
            ``test_size=0`` and no ``test`` data was given.
        n_train: Training images used.
        n_test: Test images used.
        skipped: ``(path, reason)`` of images that could not be read.
        head: The fitted scikit-learn head (in memory only; never pickled).
        test_paths: The held-out images that were evaluated.
        run_id: MLflow run id ("" when tracking is off).
        refit: Whether ``head`` was refit on every image after the evaluation (then ``metrics``
            are those of ``split_head``, fitted on the ``n_train`` training images only).
        split_head: The head fitted on the training split and evaluated (``head`` itself when
            there was no refit).
        n_fit: Images the shipped ``head`` was fitted on.

    """

    bundle_path: Path
    metrics: dict[str, Any]
    n_train: int
    n_test: int
    skipped: list[tuple[str, str]]
    head: Any
    test_paths: list[str]
    run_id: str = ""
    refit: bool = False
    split_head: Any = None
    n_fit: int = 0


def train(
    data: str | Path,
    *,
    out: str | Path = "model.landsight",
    test: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = "imagenet",
    bands: tuple[int, ...] | None = None,
    tta: str = "rot4",
    stages: str | Sequence[str] = DEFAULT_STAGES,
    head: str = "logreg",
    C: float | str = "auto",
    standardize: bool = True,
    refit: bool = True,
    n_estimators: int = 300,
    max_depth: int | None = None,
    class_weight: str | None = None,
    test_size: float = 0.2,
    random_state: int = 0,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
    class_names: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    device: str = "auto",
    cache: bool = True,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    dedup: bool = False,
    dedup_threshold: int = 4,
    overwrite: bool = False,
) -> TrainResult:
    """Train a classifier on frozen backbone features and write a model bundle.

    Args:
        data: Labelled images: a folder of class folders, a CSV/TSV map file, or a zip of either
            (see :func:`landsight.data.catalog.build_catalog`).
        out: Bundle folder to write (``*.landsight``).
        test: Separate labelled test images; when given, ``test_size`` is ignored and all of
            ``data`` is used for training. ``data`` itself is refused; test images that are also
            in ``data`` (same file) are left out of the test set, and those with the same content
            as a training image are named, each with a one-line warning on stderr.
        backbone: Backbone registry name (default ``tf_efficientnet_lite0``, offline weights).
        weights: ``"imagenet"``, a weights file, or ``None`` (random; explicit only).
        bands: 1-based bands to read (default R, G, B).
        tta: ``"rot4"`` (default) averages features over the four 90-degree rotations, in
            training and in the bundle's graph (4x the featurization; benchmarks/RESULTS.md,
            "Choosing the defaults"); ``"none"``: one view (the :data:`FAST` preset).
        stages: Intermediate backbone stages whose global-average-pooled outputs are
            concatenated before the final features, in training and in the bundle's graph:
            ``"auto"`` (default; ``blocks.3-5`` of the EfficientNet-Lite backbones, +0.9 points
            on EuroSAT, +2 on Dubai chips, at no extra featurization: RESULTS.md), ``"none"``, or
            stage names (see :func:`landsight.models.backbones.resolve_stages`).
        head: ``"logreg"`` or ``"forest"``.
        C: Logistic-regression inverse regularisation, or ``"auto"`` (default: chosen by 5-fold
            cross-validation of the log-loss on the cached features; falls back to ``C=1`` when a
            class has fewer than 2 training images).
        standardize: Standardise features before logistic regression.
        refit: After evaluating on the held-out split, fit the head again on every image
            (training and held-out) and ship that one; ``bundle.json`` records the split's
            metrics, ``data.refit`` and ``data.n_fit``. Nothing to refit with ``test`` given
            or ``test_size=0``.
        n_estimators: Random-forest trees.
        max_depth: Random-forest depth limit.
        class_weight: ``None`` or ``"balanced"``.
        test_size: Fraction of ``data`` held out for testing, stratified (0 = none).
        random_state: Seed of the split and the head.
        split: How ``test_size`` is held out: ``"random"`` (stratified per image; warned about
            on georeferenced tiles from few scenes), ``"spatial"`` (whole square blocks of
            georeferenced tiles) or ``"group"`` (whole groups); see :mod:`landsight.data.splits`.
            Recorded in ``bundle.json`` ``data.split`` and ``metrics.json`` (``split``, ``warnings``).
        block_size: ``split="spatial"``: block side in CRS units (metres for UTM); ``None``
            chooses one giving about 16 blocks from the tiles' extent.
        group: ``split="group"``: ``"regex:PATTERN"`` (first capture group searched in each path,
            e.g. ``"regex:(m_[0-9]+)_"``) or a column of the CSV map file (``"scene"``).
        class_names: Class-names file for CNTK-style map files with class indices.
        batch_size: Images per forward pass.
        num_workers: Decoding threads.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        cache: Use the Parquet feature cache.
        progress: Show progress bars.
        tracking_uri: MLflow store (default ``sqlite:///mlruns.db``, or ``$MLFLOW_TRACKING_URI``).
        track: Record the run in MLflow (parameters, metrics, bundle as artifact).
        dedup: Before featurizing, drop test images whose perceptual hash (pHash) is within
            ``dedup_threshold`` bits of a training image's (see
            :func:`landsight.dedup.drop_cross_split_duplicates`); the dropped images are listed in
            ``bundle.json`` under ``data.dropped_duplicates``.
        dedup_threshold: Hamming-distance threshold of ``dedup``, bits of 64.
        overwrite: Replace an existing bundle at ``out`` (whole: no file of the old bundle
            survives). Without it an existing ``out`` is refused before any work.

    Returns:
        A :class:`TrainResult`.

    Raises:
        LandsightValueError: Fewer than two classes, an empty class, a test label unseen in
            training, bad parameters (all before featurization), or a class left without
            readable images; ``test`` is ``data`` itself, or every test image is also in ``data``.
        WeightsUnavailableError: The backbone's weights cannot be had.
        OutputExistsError: ``out`` exists and ``overwrite`` is False, or is not a bundle.

    Example:
        >>> result = train("eurosat/", out="eurosat.landsight", head="logreg")  # doctest: +SKIP
        >>> result.metrics["accuracy"]  # doctest: +SKIP

    """
    from landsight.bundle import check_bundle_out
    from landsight.models.heads import make_head
    from landsight.tracking import tracked_run

    check_bundle_out(out, overwrite=overwrite)
    check_test_source(data, test)
    if not 0 <= test_size < 1:
        raise LandsightValueError(f"test_size must be in [0, 1), got {test_size!r}")
    check_ranges(batch_size=batch_size, num_workers=num_workers, dedup_threshold=dedup_threshold)
    estimator = make_head(  # validates head parameters before any heavy work
        head,
        C=C,
        standardize=standardize,
        n_estimators=n_estimators,
        max_depth=max_depth,
        class_weight=class_weight,
        random_state=random_state,
    )
    params = run_params(
        train, locals(), exclude=EXECUTION_ARGS, stages=stages_label(stages),
        dedup_threshold=dedup_threshold if dedup else None,
    )
    with tracked_run("train", params, tracking_uri=tracking_uri, enabled=track) as run:
        started = time.perf_counter()
        result = _train(
            data, estimator, out=out, test=test, backbone=backbone, weights=weights, bands=bands, tta=tta,
            stages=stages, test_size=test_size, random_state=random_state, class_names=class_names,
            batch_size=batch_size, num_workers=num_workers, device=device, cache=cache, progress=progress, dedup=dedup,
            dedup_threshold=dedup_threshold, overwrite=overwrite, split=split, block_size=block_size, group=group,
            refit=refit,
        )  # fmt: skip
        log_train_result(run, result, started)
    return result


def resolve_recipe(*, fast: bool = False, engine: str = "local", tta: str | None = None,
                   C: float | str | None = None) -> dict[str, Any]:  # fmt: skip
    """The effective ``tta`` and ``C`` of a training: the one place where presets and defaults resolve.

    Values given win; then the :data:`FAST` preset when ``fast`` is set or the engine is Spark
    (which has neither rotation averaging nor a cross-validated C yet); then :func:`train`'s own
    defaults, read off its signature.

    Args:
        fast: The ``--fast`` preset.
        engine: ``"local"`` or ``"spark"``.
        tta: The test-time augmentation mode given, or None.
        C: The logistic-regression C given (a number, ``"auto"``, or its text), or None.

    Returns:
        ``{"tta": str, "C": float | "auto"}``, never None.

    Raises:
        LandsightValueError: ``C`` is neither a positive number nor ``"auto"``.
    """
    import inspect

    defaults = {k: inspect.signature(train).parameters[k].default for k in ("tta", "C")}
    values = resolve_preset("fast" if fast or engine == "spark" else None, {"tta": tta, "C": C}, defaults)
    if values["C"] != "auto":
        try:
            values["C"] = float(values["C"])
        except (TypeError, ValueError):
            raise LandsightValueError(f"C must be a positive number or 'auto', got {values['C']!r}") from None
    return values


def log_train_result(run: Any, result: TrainResult, started: float) -> None:
    """Record a finished training in its open MLflow run and set ``result.run_id``.

    Args:
        run: The run of :func:`landsight.tracking.tracked_run`.
        result: The training's result: its test metrics, counts and bundle are logged.
        started: ``time.perf_counter()`` when the training began (for ``duration_seconds``).
    """
    from landsight.tracking import log_evaluation

    log_evaluation(run, result.metrics)
    run.log_metrics({"duration_seconds": time.perf_counter() - started, "n_train": result.n_train,
                     "n_skipped": len(result.skipped)})  # fmt: skip
    run.log_artifact(result.bundle_path, "bundle")
    result.run_id = run.run_id


def _train(
    data: str | Path,
    estimator: Any,
    *,
    out: str | Path,
    test: str | Path | None,
    backbone: str,
    weights: str | Path | None,
    bands: tuple[int, ...] | None,
    tta: str,
    test_size: float,
    stages: str | Sequence[str],
    random_state: int,
    class_names: str | Path | None,
    batch_size: int,
    num_workers: int,
    device: str,
    cache: bool,
    progress: bool,
    dedup: bool = False,
    dedup_threshold: int = 4,
    overwrite: bool = False,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
    refit: bool = False,
) -> TrainResult:
    from landsight.classify.featurize import featurize
    from landsight.data.splitting import training_catalog
    from landsight.models.heads import describe_head, fit_head
    from landsight.models.onnx_graph import head_to_onnx

    started = time.perf_counter()
    split_args = {"test": test, "test_size": test_size, "random_state": random_state, "class_names": class_names,
                  "split": split, "block_size": block_size, "group": group}  # fmt: skip
    catalog = training_catalog(data, **split_args)  # every check before the heavy work
    catalog, shared = drop_shared_test_paths(catalog)
    if shared:
        warn(
            f"{len(shared)} of {len(shared) + int((catalog['split'] == 'test').sum())} --test images are also in DATA "
            f"(same file, e.g. {shared[0]!r}); they were left out of the test set, which now holds only held-out "
            "images"
        )
    classes = sorted(catalog.loc[catalog["split"] == "train", "label"].unique())
    features = featurize(
        list(catalog["path"]),
        backbone,
        weights=weights,
        bands=bands,
        tta=tta,
        stages=stages,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        cache=cache,
        progress=progress,
    )
    if features.failures:  # split the readable images only, so no class loses its test images to bad files
        catalog = training_catalog(data, **split_args, exclude=[p for p, _ in features.failures])
        catalog, _ = drop_shared_test_paths(catalog)
    split_info = dict(catalog.attrs.get("split", {}))
    dropped: list[dict[str, str]] = []
    if dedup and (catalog["split"] == "test").any():
        from landsight.data.duplicates import drop_cross_split_duplicates

        catalog, gone = drop_cross_split_duplicates(catalog, threshold=dedup_threshold, progress=progress)
        dropped = gone[["path", "duplicate_of"]].to_dict("records")
    if test is not None:
        warn_same_content(catalog, features.paths, features.sha256, dedup=dedup)
    kept = set(catalog["path"])
    features = features.subset([p in kept for p in features.paths]) if len(kept) < len(features.paths) else features
    by_path = catalog.set_index("path")
    labels = np.asarray(by_path.loc[features.paths, "label"], dtype=object)
    splits = np.asarray(by_path.loc[features.paths, "split"], dtype=object)
    is_train = splits == "train"
    left = set(labels[is_train])
    lost = [c for c in classes if c not in left]
    if lost:
        raise LandsightValueError(
            f"classes {lost!r} have no readable training images left after skipping "
            f"{len(features.failures)} unreadable file(s); see the reasons: {features.failures[:5]!r}"
        )
    estimator = _cross_validation_fallback(estimator, labels[is_train])
    fit_head(estimator, features.X[is_train], labels[is_train])
    head_classes = [str(c) for c in estimator.classes_]

    metrics: dict[str, Any] = {}
    is_test = splits == "test"
    test_paths = [p for p, t in zip(features.paths, is_test, strict=True) if t]
    if test_paths:
        from landsight.classify.evaluate import compute_metrics

        proba = estimator.predict_proba(features.X[is_test])
        metrics = compute_metrics(list(labels[is_test]), proba, head_classes, paths=test_paths)
        metrics.update(split=split_info.get("method", split), warnings=list(split_info.get("warnings", [])))
    shipped, did_refit = estimator, bool(refit and test_paths and test is None)
    if did_refit:  # the figures above stay those of the split head; the shipped head sees every image
        from sklearn.base import clone

        shipped = fit_head(_cross_validation_fallback(clone(estimator), labels), features.X, labels)
    n_fit = len(labels) if did_refit else int(is_train.sum())
    bundle_path = write_classifier_bundle(
        out,
        overwrite=overwrite,
        backbone=features.backbone,
        backbone_onnx=features.extractor.onnx_path,
        head_graph=head_to_onnx(shipped, features.backbone.num_features),
        skipped=features.failures,
        classes=head_classes,
        metrics=metrics,
        head={**describe_head(shipped), **({"evaluated": describe_head(estimator)["params"]} if did_refit else {})},
        data={
                "source": str(data),
                "test_source": str(test) if test is not None else None,
                "fingerprint": features.fingerprint(list(labels)),
                "n_train": int(is_train.sum()),
                "n_test": int(is_test.sum()),
                "n_skipped": len(features.failures),
                "test_size": test_size if test is None else None,
                "random_state": random_state,
                "split": split_info,
                "refit": did_refit,
                "n_fit": n_fit,
                **({"dropped_duplicates": dropped} if dedup else {}),
        },
        training_seconds=round(time.perf_counter() - started, 2),
    )
    return TrainResult(
        bundle_path, metrics, int(is_train.sum()), int(is_test.sum()), features.failures, shipped, test_paths,
        refit=did_refit, split_head=estimator, n_fit=n_fit,
    )  # fmt: skip


def _cross_validation_fallback(estimator: Any, labels: np.ndarray) -> Any:
    """``C="auto"`` with a class of fewer than 2 images cannot cross-validate: use ``C=1`` then.

    Args:
        estimator: An unfitted head from :func:`landsight.models.heads.make_head`.
        labels: The labels it is about to be fitted on.

    Returns:
        ``estimator``, or its head's :attr:`~landsight.models.heads.HeadSpec.without_cv` version
        (for ``logreg``: a fixed-``C=1`` logistic regression with the same other settings).
    """
    from landsight.models.heads import HEADS, head_kind

    without_cv = HEADS[head_kind(estimator)].without_cv
    if without_cv is None or np.unique(labels, return_counts=True)[1].min() >= 2:
        return estimator
    return without_cv(estimator)


def write_classifier_bundle(
    out: str | Path,
    *,
    backbone: Backbone,
    backbone_onnx: str | Path,
    head_graph: onnx.ModelProto,
    classes: list[str],
    metrics: dict[str, Any],
    head: dict[str, Any],
    data: dict[str, Any],
    skipped: list[tuple[str, str]],
    overwrite: bool = False,
    **extra: Any,
) -> Path:
    """Merge backbone and head into one ONNX graph and write the bundle with its reports.

    Args:
        out: Bundle folder to write.
        backbone: The backbone (preprocessing and description go to ``bundle.json``).
        backbone_onnx: Its exported graph (``image`` -> ``features``).
        head_graph: The head as ONNX (``features`` -> ``probabilities``): skl2onnx for the local
            heads, :mod:`landsight.spark.heads` for MLlib ones.
        classes: Class names, in probability order.
        metrics: Held-out metrics (:func:`landsight.classify.evaluate.compute_metrics`; empty for none).
        head: ``kind`` and parameters of the head (``bundle.json``'s ``head``).
        data: Training-data description (``bundle.json``'s ``data``).
        skipped: ``(path, reason)`` of unreadable images (``skipped.csv``).
        overwrite: Replace an existing bundle at ``out``; it is replaced whole, only once the
            new one is complete (:func:`landsight.bundle.staged_bundle`).
        **extra: More ``bundle.json`` entries (``training_seconds``...).

    Returns:
        The bundle folder.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False, or is not a bundle.
    """
    import onnx

    from landsight.bundle import staged_bundle, write_bundle, write_skipped
    from landsight.classify.bundle import classifier_meta
    from landsight.classify.evaluate import write_evaluation
    from landsight.models.onnx_graph import merge_backbone_head

    graph = merge_backbone_head(onnx.load(str(backbone_onnx)), head_graph)
    meta = classifier_meta(classes=classes, backbone=backbone, head=head, metrics=metrics, data=data, **extra)
    with staged_bundle(out, overwrite=overwrite) as stage:
        write_bundle(stage, model=graph, meta=meta)
        if metrics:
            write_evaluation(metrics, stage)
        write_skipped(stage, skipped)
    return Path(out)
