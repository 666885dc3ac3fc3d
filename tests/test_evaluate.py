import json
from pathlib import Path

import numpy as np
import pytest

from landsight.classify.evaluate import compute_metrics, evaluate, write_evaluation
from landsight.errors import LandsightValueError


def test_recall_is_tp_over_tp_plus_fn() -> None:
    # 3 true "a": 2 predicted a, 1 predicted b; 1 true "b" predicted a.
    y_true = ["a", "a", "a", "b"]
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    m = compute_metrics(y_true, proba, ["a", "b"], paths=["p0", "p1", "p2", "p3"])
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == 0.0
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["confusion_matrix"]["matrix"] == [[2, 1], [1, 0]]
    assert [w["path"] for w in m["most_confident_wrong"]] == ["p2", "p3"]  # 0.7 before 0.6


def test_label_outside_classes_is_an_error() -> None:
    with pytest.raises(LandsightValueError, match="'c'"):
        compute_metrics(["c"], np.array([[1.0, 0.0]]), ["a", "b"])


def test_evaluate_folder_writes_metrics_and_plot(trained, small_dataset: Path, tmp_path: Path) -> None:  # noqa: ANN001
    metrics = evaluate(trained.bundle_path, small_dataset, out=tmp_path / "ev", progress=False)
    assert metrics["n"] == 36 and metrics["skipped"] == []
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] >= 0.8
    png = (tmp_path / "ev" / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_evaluation_files(tmp_path: Path) -> None:
    m = compute_metrics(["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    files = write_evaluation(m, tmp_path)
    assert json.loads(files["confusion_json"].read_text())["matrix"] == [[1, 0], [0, 1]]


def test_evaluate_on_a_single_class_folder(trained, small_dataset: Path, tmp_path: Path) -> None:  # noqa: ANN001
    one = tmp_path / "more" / "River"
    one.mkdir(parents=True)
    for f in sorted((small_dataset / "River").glob("*.jpg"))[:4]:
        (one / f.name).write_bytes(f.read_bytes())
    metrics = evaluate(trained.bundle_path, tmp_path / "more", progress=False)
    assert metrics["n"] == 4 and metrics["per_class"]["River"]["support"] == 4
