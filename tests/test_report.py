"""HTML run / bundle reports from real training, evaluation and fine-tuning on real EuroSAT tiles."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from landsight.errors import BundleError, LandsightValueError
from landsight.results.report import build_report, load_report_data

EXTERNAL = re.compile(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//")


def _images(html: str) -> list[str]:
    return re.findall(r"<img[^>]+src=\"(data:image/png;base64,[^\"]+)\"", html)


def test_bundle_report_is_self_contained_with_metrics_and_confusion_matrix(trained, tmp_path: Path) -> None:  # noqa: ANN001
    out = build_report(trained.bundle_path, tmp_path / "report.html")
    html = out.read_text()
    metrics = json.loads((trained.bundle_path / "metrics.json").read_text())
    assert not EXTERNAL.search(html)
    assert 'id="confusion-matrix"' in html and 'id="per-class-table"' in html and 'id="params-table"' in html
    for cls in ("Forest", "River", "SeaLake"):
        row = re.search(rf"<tr><td>{cls}</td>\s*<td class=\"num\">([0-9.]+)</td>", html)
        assert row is not None and float(row.group(1)) == pytest.approx(
            metrics["per_class"][cls]["precision"], abs=5e-4
        )
    assert f"{metrics['accuracy']:.2%}" in html
    assert "tf_efficientnet_lite0" in html
    assert "No per-epoch curves" in html  # a frozen-feature bundle has no epochs
    assert len(_images(html)) >= 2  # per-class bars + confusion matrix, embedded


@pytest.fixture(scope="module")
def eval_run(trained, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:  # noqa: ANN001
    """An MLflow evaluate run of the session bundle on 8 unseen real EuroSAT tiles per class."""
    from landsight.classify.evaluate import evaluate
    from landsight.results.runs import list_runs

    data = tmp_path_factory.mktemp("eval_data")
    for cls in ("Forest", "River", "SeaLake"):
        (data / cls).mkdir()
        for i in range(101, 109):
            shutil.copy(shared_data / "eurosat_rgb" / cls / f"{cls}_{i}.jpg", data / cls)
    metrics = evaluate(trained.bundle_path, data, out=tmp_path_factory.mktemp("evaluation"), progress=False)
    runs = list_runs()
    run_id = runs.loc[runs["command"] == "evaluate", "full_run_id"].iloc[0]
    return run_id, metrics


def test_run_report_shows_the_most_confidently_wrong_images(eval_run: tuple, tmp_path: Path) -> None:
    from landsight.cli import app

    run_id, metrics = eval_run
    wrong = metrics["most_confident_wrong"]
    assert wrong, "the small bundle should misclassify some of the 24 unseen tiles"
    out = CliRunner().invoke(app, ["report", run_id[:8], "--out", str(tmp_path / "r.html"), "--n-wrong", "4"])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "r.html").read_text()
    assert f"evaluate run {run_id[:8]}" in html and not EXTERNAL.search(html)
    figures = re.findall(r"<figure class=\"wrong-image\">(.*?)</figure>", html, re.S)
    assert len(figures) == min(4, len(wrong))
    for fig, w in zip(figures, wrong, strict=False):
        assert Path(w["path"]).name in fig and f"true: {w['true']}" in fig and f"predicted: {w['predicted']}" in fig
        assert "data:image/png;base64," in fig  # the thumbnail, embedded
    assert f"{metrics['accuracy']:.2%}" in html


def test_finetune_bundle_report_has_error_curves(small_dataset: Path, tmp_path: Path, chromium) -> None:  # noqa: ANN001
    from landsight.classify.finetune import finetune

    result = finetune(
        small_dataset, out=tmp_path / "ft.landsight", retrain="last", epochs=2, batch_size=8, num_workers=0,
        progress=False, track=False,
    )  # fmt: skip
    data = load_report_data(result.bundle_path)
    assert [row["epoch"] for row in data.history] == [0, 1] and data.params["best_epoch"] == str(result.best_epoch)
    out = build_report(result.bundle_path, tmp_path / "ft.html")
    html = out.read_text()
    assert 'id="curves-figure"' in html and "No per-epoch curves" not in html
    dom = chromium.dump_dom(out)
    assert 'id="curves-figure"' in dom and 'id="confusion-matrix"' in dom


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(LandsightValueError, match="neither an existing bundle path nor a run id"):
        load_report_data("0000ffff-no-such-run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="lacks"):
        load_report_data(tmp_path / "empty")
