"""Writing a fine-tuned model bundle (:mod:`landsight.classify.finetune`).

This module owns the last step of a fine-tune: the best epoch's weights exported to the bundle's
ONNX graph (with the chosen test-time augmentation) and ``weights.safetensors``, the held-out test
images scored through that exported graph (exactly as ``predict`` and ``evaluate`` will run it), and
the evaluation report, ``bundle.json`` and ``skipped.csv`` written next to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landsight.predictions import PROBABILITY_PREFIX


def _write_finetuned_bundle(
    out: Path,
    *,
    classifier: Any,
    backbone: Any,
    classes: list[str],
    test: Any,
    skipped: list[tuple[str, str]],
    history: list[dict[str, float]],
    best_epoch: int,
    retrain: str,
    data: str | Path,
    head_params: dict[str, Any],
    seconds: float,
    split_info: dict[str, Any] | None = None,
    tta: str = "none",
) -> dict[str, Any]:
    """Export the best weights to ONNX + safetensors in ``out``, test them through the bundle, write reports."""
    import dataclasses

    from safetensors.torch import save_file

    from landsight.bundle import MODEL_FILE, WEIGHTS_FILE, write_bundle, write_skipped
    from landsight.classify.bundle import Bundle, classifier_meta
    from landsight.classify.evaluate import compute_metrics, write_evaluation
    from landsight.models.classifier import Probabilities, with_tta
    from landsight.models.onnx_graph import PROBABILITIES_OUTPUT, export_image_model

    classifier = classifier.eval().cpu()
    backbone = dataclasses.replace(backbone, tta=tta)  # recorded in bundle.json
    graph = Probabilities(with_tta(classifier, tta))
    export_image_model(graph, backbone.preprocessing, out / MODEL_FILE, PROBABILITIES_OUTPUT)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(out / WEIGHTS_FILE))
    metrics: dict[str, Any] = {}
    data_meta: dict[str, Any] = {"source": str(data), "n_skipped": len(skipped), "split": split_info or {}}
    if len(test):  # test through the exported graph, exactly as predict and evaluate will run it
        untested = classifier_meta(classes=classes, backbone=backbone, head={}, metrics={}, data={})
        preds = Bundle(out, untested).predict(list(test["path"]))
        proba = preds[[f"{PROBABILITY_PREFIX}{c}" for c in classes]].to_numpy(dtype=np.float32)
        metrics = compute_metrics(list(test["label"]), proba, classes, paths=list(test["path"]))
        split_info = split_info or {}
        metrics.update(split=split_info.get("method", "random"), warnings=list(split_info.get("warnings", [])))
        write_evaluation(metrics, out)
        data_meta["n_test"] = int(len(test))
    meta = classifier_meta(
        classes=classes, backbone=backbone, head={"kind": "finetune", "retrain": retrain, "params": head_params},
        metrics=metrics, data=data_meta,
        training={"best_epoch": best_epoch, "history": history, "seconds": round(seconds, 2)},
    )  # fmt: skip
    write_bundle(out, model=None, meta=meta)
    write_skipped(out, skipped)
    return metrics
