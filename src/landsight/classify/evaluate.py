"""Evaluation of a classifier on labelled held-out images: metrics, confusion matrix, worst errors.

Metrics follow scikit-learn's definitions: precision = TP / (TP + FP), recall = TP / (TP + FN)
F1 their harmonic mean, balanced accuracy the
mean per-class recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.predictions import PROBABILITY_PREFIX

if TYPE_CHECKING:

    from landsight.classify.bundle import Bundle


def compute_metrics(
    y_true: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    n_wrong: int = 20,
) -> dict[str, Any]:
    """Compute classification metrics from true labels and predicted probabilities.

    Args:
        y_true: True class names, length N; each must be in ``classes``.
        proba: ``(N, n_classes)`` float probabilities, columns in ``classes`` order.
        classes: Class names.
        paths: Image paths, length N, for the list of most confidently wrong images.
        n_wrong: How many confidently wrong images to list.

    Returns:
        JSON-ready dict: ``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``,
        ``per_class`` (name -> precision, recall, f1, support), ``confusion_matrix``
        (``labels`` and ``matrix``: rows true, columns predicted),
        ``most_confident_wrong`` (path, true, predicted, confidence; most confident first) and
        ``classes_without_test_images`` (classes with support 0: balanced accuracy, the mean
        recall over the classes present, says nothing about them).

    Raises:
        LandsightValueError: Shapes disagree or a label is not among ``classes``.

    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    classes = list(classes)
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise LandsightValueError(
            f"proba must have shape (n_samples, n_classes) = ({len(y_true)}, {len(classes)}), got {proba.shape}"
        )
    unknown = sorted(set(y_true) - set(classes))
    if unknown:
        raise LandsightValueError(f"labels {unknown!r} are not among the model's classes {classes!r}")
    if len(y_true) == 0:
        raise LandsightValueError("no images to evaluate")
    pred_idx = proba.argmax(axis=1)
    y_pred = [classes[i] for i in pred_idx]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    wrong = [i for i in range(len(y_true)) if y_pred[i] != y_true[i]]
    wrong.sort(key=lambda i: -float(proba[i, pred_idx[i]]))
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f)),
        "per_class": {
            c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
            for k, c in enumerate(classes)
        },
        "confusion_matrix": {"labels": classes, "matrix": cm.tolist()},
        "most_confident_wrong": [
            {
                "path": paths[i] if paths is not None else str(i),
                "true": y_true[i],
                "predicted": y_pred[i],
                "confidence": float(proba[i, pred_idx[i]]),
            }
            for i in wrong[:n_wrong]
        ],
        "classes_without_test_images": [c for k, c in enumerate(classes) if int(s[k]) == 0],
    }


#: Files :func:`write_evaluation` writes into its folder.
EVALUATION_FILES = ("metrics.json", "confusion_matrix.json", "confusion_matrix.png")


def write_evaluation(metrics: dict[str, Any], out_dir: str | Path, *, title: str = "") -> dict[str, Path]:
    """Write ``metrics.json``, ``confusion_matrix.json`` and ``confusion_matrix.png``.

    Args:
        metrics: From :func:`compute_metrics` (extra keys are kept in ``metrics.json``).
        out_dir: Folder to write into (created).
        title: Title of the confusion-matrix figure.

    Returns:
        Name -> path of each file written.

    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    from landsight.outputs import atomic_path, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": out / EVALUATION_FILES[0], "confusion_json": out / EVALUATION_FILES[1]}
    write_json(files["metrics"], metrics)
    write_json(files["confusion_json"], metrics["confusion_matrix"])
    labels = metrics["confusion_matrix"]["labels"]
    cm = np.asarray(metrics["confusion_matrix"]["matrix"])
    size = max(5.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(cm, display_labels=labels).plot(
        ax=ax, cmap="Blues", xticks_rotation="vertical", colorbar=False, values_format="d"
    )
    ax.set_title(title or f"accuracy {metrics['accuracy']:.1%}, n = {metrics['n']}")
    fig.tight_layout()
    files["confusion_png"] = out / EVALUATION_FILES[2]
    with atomic_path(files["confusion_png"]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return files


def evaluate(
    bundle: str | Path | Bundle,
    data: str | Path,
    *,
    out: str | Path | None = None,
    class_names: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a bundle on labelled images (recorded as an MLflow run).

    Args:
        bundle: Bundle folder / zip, or a loaded :class:`landsight.classify.bundle.Bundle`.
        data: Labelled images in any catalog form (class folders, map file, zip).
        out: Folder for ``metrics.json`` and the confusion matrix (nothing written if None).
        class_names: Class-names file for a CNTK-style map file with class indices.
        batch_size: Images per forward pass.
        progress: Show a progress bar.
        tracking_uri: MLflow store (default ``sqlite:///mlruns.db``, or ``$MLFLOW_TRACKING_URI``).
        track: Record the run in MLflow.
        overwrite: Replace the evaluation files of an earlier run in ``out``.

    Returns:
        The metrics dict of :func:`compute_metrics`, plus ``skipped`` (path, reason) for
        images that could not be read.

    Raises:
        LandsightValueError: A label of ``data`` is not among the bundle's classes (raised
            before any image is decoded).
        OutputExistsError: ``out`` holds evaluation files and ``overwrite`` is False.
        BundleError: ``bundle`` is not a valid classification bundle.

    """
    from landsight.classify.bundle import as_bundle
    from landsight.outputs import check_output
    from landsight.tracking import log_evaluation, tracked_run

    model = as_bundle(bundle)
    if out is not None:
        for name in EVALUATION_FILES:
            check_output(Path(out) / name, overwrite=overwrite, what="evaluation file")
    params = {"bundle": str(model.path), "data": str(data), "backbone": model.meta["backbone"]["name"],
              "head": model.meta["head"]["kind"], "retrain": model.meta["head"].get("retrain")}  # fmt: skip
    with tracked_run("evaluate", params, tracking_uri=tracking_uri, enabled=track) as run:
        metrics = _evaluate(model, data, out=out, class_names=class_names, batch_size=batch_size, progress=progress)
        log_evaluation(run, metrics)
        run.log_metrics({"n_skipped": len(metrics["skipped"])})
        if out is not None:
            run.log_artifact(out, "evaluation")
    return metrics


def _evaluate(
    model: Bundle,
    data: str | Path,
    *,
    out: str | Path | None,
    class_names: str | Path | None,
    batch_size: int,
    progress: bool,
) -> dict[str, Any]:
    from landsight.data.catalog import build_catalog

    catalog = build_catalog(data, class_names=class_names, min_classes=1)
    unseen = sorted(set(catalog["label"]) - set(model.classes))
    if unseen:
        raise LandsightValueError(
            f"labels {unseen!r} in {str(data)!r} were not seen in training; the bundle knows {model.classes!r}"
        )
    preds = model.predict(list(catalog["path"]), batch_size=batch_size, progress=progress)
    ok = (preds["error"] == "").to_numpy()
    proba = preds.loc[ok, [f"{PROBABILITY_PREFIX}{c}" for c in model.classes]].to_numpy(dtype=np.float32)
    metrics = compute_metrics(list(catalog["label"][ok]), proba, model.classes, paths=list(preds["path"][ok]))
    metrics["skipped"] = [
        {"path": p, "reason": e} for p, e in zip(preds["path"][~ok], preds["error"][~ok], strict=True)
    ]
    if out is not None:
        write_evaluation(metrics, out)
    return metrics
