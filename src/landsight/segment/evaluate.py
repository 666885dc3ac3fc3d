"""Pixel-level evaluation over whole rasters: accuracy, per-class IoU and F1, mean IoU, confusion.

Predictions come tile by tile from the windowed predictor
(:func:`landsight.segment.predict.iter_predictions`) and are compared with the label window of
the same core, so memory stays bounded whatever the raster size. Pixels whose label is ignored
(unknown, unmapped) or whose input is nodata are left out. IoU of class k is
``TP / (TP + FP + FN)`` and F1 ``2 TP / (2 TP + FP + FN)``; the mean IoU averages the classes
that occur in the labels or the predictions (a class absent from both has no IoU).

The output also holds ``areas``: per class, the labelled and the predicted area (m² from each
raster's transform and CRS, :func:`landsight.segment.vector.pixel_area_rows`; pixels for rasters
without a CRS, ``areas_unit`` says which) and their shares of the scored pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.outputs import write_json
from landsight.segment.classmap import IGNORE_INDEX

METRICS_FILE = "segmentation_metrics.json"

if TYPE_CHECKING:
    from landsight.segment.pairs import RasterPair


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix of class indices, ignoring :data:`IGNORE_INDEX` in ``y_true``.

    Args:
        y_true: Label class indices, any shape, uint8.
        y_pred: Predicted class indices, same shape.
        num_classes: K.

    Returns:
        ``(K, K)`` int64; rows are true classes, columns predicted ones.
    """
    keep = y_true != IGNORE_INDEX
    t, p = y_true[keep].astype(np.int64), y_pred[keep].astype(np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(matrix: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Metrics from a confusion matrix.

    Args:
        matrix: ``(K, K)`` counts, rows true, columns predicted.
        names: Class names.

    Returns:
        ``pixel_accuracy``, ``mean_iou``, ``mean_f1`` (over classes present in labels or
        predictions), ``n_pixels``, ``per_class`` (name -> ``iou``, ``f1``, ``precision``,
        ``recall``, ``support``; NaN where undefined), ``classes`` and ``confusion_matrix``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    fp, fn = m.sum(axis=0) - tp, m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        precision, recall = tp / (tp + fp), tp / (tp + fn)
    present = (tp + fp + fn) > 0
    total = m.sum()
    per_class = {
        n: {"iou": float(iou[k]), "f1": float(f1[k]), "precision": float(precision[k]), "recall": float(recall[k]),
            "support": int(m[k].sum())}
        for k, n in enumerate(names)
    }  # fmt: skip
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_iou": float(iou[present].mean()) if present.any() else float("nan"),
        "mean_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "n_pixels": int(total),
        "per_class": per_class,
        "classes": list(names),
        "confusion_matrix": np.asarray(matrix, dtype=np.int64).tolist(),
    }


def evaluate_segmentation(
    bundle: Any,
    pairs: Sequence[RasterPair],
    *,
    window_size: int = 576,
    batch_size: int = 2,
    progress: bool = True,
    write_to: str | Path | None = None,
    aux_rasters: str | None = None,
    tta: str | bool = "none",
) -> dict[str, Any]:
    """Score a segmentation bundle on whole labelled rasters.

    Args:
        bundle: The bundle.
        pairs: Image / label pairs (:func:`landsight.segment.pairs.pair_rasters`).
        window_size: Prediction window side (multiple of 32).
        batch_size: Tiles per onnxruntime call.
        progress: Rich progress bars.
        write_to: Folder for ``segmentation_metrics.json`` (optional).
        aux_rasters: Auxiliary raster template for a bundle trained with one (default: the
            bundle's own template, :class:`~landsight.segment.auxiliary.AuxSpec`).
        tta: ``"d4"`` (dihedral test-time augmentation, 8 views) or ``"none"``
            (:func:`landsight.segment.predict.predict_tiles`).

    Returns:
        :func:`segmentation_metrics` output plus ``areas`` / ``areas_unit`` (see the module
        docstring), ``rasters`` (per-raster pixel accuracy and mean IoU) and ``skipped``:
        ``(path, reason)`` of the pairs left out because a raster could not be opened or read
        (truncated or corrupt data); the metrics count the others.
    """
    import contextlib

    from landsight.errors import ImageReadError
    from landsight.segment.auxiliary import aux_path, open_aligned
    from landsight.segment.pairs import open_labels
    from landsight.segment.predict import iter_predictions
    from landsight.segment.raster import open_raster
    from landsight.segment.vector import label_areas, pixel_area_rows

    k = bundle.class_map.num_classes
    total = np.zeros((k, k), dtype=np.int64)
    areas = np.zeros((2, k), dtype=np.float64)
    units: set[str] = set()
    spec = getattr(bundle, "aux", None)
    rasters = []
    skipped: list[tuple[str, str]] = []
    for pair in pairs:
        matrix = np.zeros((k, k), dtype=np.int64)
        one_areas = np.zeros((2, k), dtype=np.float64)
        try:
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(open_raster(pair.image))
                lab = stack.enter_context(open_labels(pair))
                aux_src = None
                if spec is not None:
                    aux_src = stack.enter_context(open_aligned(aux_path(aux_rasters or spec.template, pair.image), src))
                for t in iter_predictions(src, bundle, window_size=window_size, batch_size=batch_size,
                                          progress=progress, aux_src=aux_src, tta=tta):  # fmt: skip
                    h, w = t.valid.shape
                    y = lab.read(t.row, t.col, h, w, bundle.class_map)
                    y = np.where(t.valid, y, IGNORE_INDEX)
                    pred = t.probabilities.argmax(axis=0)
                    matrix += confusion(y, pred, k)
                    rows = pixel_area_rows(src.crs, src.transform, t.row, h)
                    weight = np.ones((h, w)) if rows is None else np.broadcast_to(rows[:, None], (h, w))
                    keep = y != IGNORE_INDEX
                    one_areas[0] += np.bincount(y[keep], weights=weight[keep], minlength=k)[:k]
                    one_areas[1] += np.bincount(pred[keep], weights=weight[keep], minlength=k)[:k]
                units.add("pixels" if rows is None else "m2")
        except ImageReadError as exc:  # one damaged raster leaves out its pair, not the whole evaluation
            skipped.append((exc.path, str(exc)))
            continue
        one = segmentation_metrics(matrix, bundle.class_map.names)
        rasters.append({"image": pair.image, "label": pair.label_path, "pixel_accuracy": one["pixel_accuracy"],
                        "mean_iou": one["mean_iou"], "n_pixels": one["n_pixels"]})  # fmt: skip
        total += matrix
        areas += one_areas
    metrics = segmentation_metrics(total, bundle.class_map.names)
    # mixed georeferenced / plain rasters: m² and pixels cannot be added, so report pixels
    metrics["areas_unit"] = "m2" if units == {"m2"} else "pixels"
    if metrics["areas_unit"] == "pixels" and "m2" in units:
        areas = np.stack([total.sum(axis=1), total.sum(axis=0)]).astype(np.float64)
    metrics["areas"] = label_areas(areas, bundle.class_map.names)
    metrics["rasters"] = rasters
    metrics["skipped"] = skipped
    if write_to is not None:
        path = Path(write_to)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / METRICS_FILE, metrics)
    return metrics


def evaluate_rasters(
    bundle: str | Path,
    images: str | Path,
    labels: str | Path | None = None,
    *,
    out: str | Path | None = None,
    window_size: int = 576,
    batch_size: int = 2,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
    aux_rasters: str | None = None,
    tta: str | bool = "none",
    label_field: str | None = None,
) -> dict[str, Any]:
    """Evaluate a segmentation bundle on image / label rasters (the ``segment evaluate`` verb).

    Args:
        bundle: Segmentation bundle folder or zip.
        images: Glob pattern of image rasters, or a CSV of pairs.
        labels: Glob pattern of label rasters (``None`` with a CSV), or a vector file of
            polygons (see :mod:`landsight.segment.pairs`); pixels outside them are not scored.
        out: Folder for ``segmentation_metrics.json``.
        window_size: Prediction window side (multiple of 32).
        batch_size: Tiles per onnxruntime call.
        progress: Progress bars.
        tracking_uri: MLflow store.
        track: Record an MLflow run.
        overwrite: Replace the ``segmentation_metrics.json`` of an earlier run in ``out``.
        aux_rasters: Extra-input path template, for bundles trained with ``aux_rasters`` (see
            :func:`evaluate_segmentation`).
        tta: ``"d4"`` (dihedral test-time augmentation, 8 views) or ``"none"`` (see
            :func:`evaluate_segmentation`).
        label_field: Vector ``labels``: the attribute of class names or label codes.

    Returns:
        :func:`evaluate_segmentation` output; its ``skipped`` also lists the files left out
        while pairing (unpaired, mismatched, unreadable: ``(path, reason)``).

    Raises:
        BundleError: ``bundle`` is not a segmentation bundle.
        OutputExistsError: ``out`` holds metrics and ``overwrite`` is False.
    """
    from landsight.bundle import load_bundle
    from landsight.outputs import check_output
    from landsight.recipe import check_tta
    from landsight.segment.pairs import pair_rasters
    from landsight.segment.predict import SUPPORTED_TTA
    from landsight.tracking import tracked_run

    tta = check_tta(tta, SUPPORTED_TTA, task="segmentation")  # before the bundle is read
    loaded = load_bundle(bundle, task="segmentation")
    if out is not None:
        check_output(Path(out) / METRICS_FILE, overwrite=overwrite, what="metrics file")
    found = pair_rasters(images, labels, label_field=label_field, class_map=loaded.class_map)
    params = {"bundle": str(bundle), "images": str(images), "labels": str(labels), "window_size": window_size,
              "tta": tta, "aux_rasters": aux_rasters, "label_field": label_field}  # fmt: skip
    with tracked_run("segment-evaluate", params, tracking_uri=tracking_uri, enabled=track) as run:
        metrics = evaluate_segmentation(
            loaded, found.pairs, window_size=window_size, batch_size=batch_size, progress=progress, write_to=out,
            aux_rasters=aux_rasters, tta=tta,
        )  # fmt: skip
        run.log_metrics({k: metrics[k] for k in ("pixel_accuracy", "mean_iou", "mean_f1")})
        run.log_metrics({f"iou.{n}": m["iou"] for n, m in metrics["per_class"].items()})
    metrics["skipped"] = [*found.skipped, *metrics.get("skipped", [])]
    return metrics
