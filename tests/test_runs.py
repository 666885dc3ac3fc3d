from pathlib import Path

import pytest
from typer.testing import CliRunner

from landsight.classify.finetune import finetune
from landsight.classify.train import train
from landsight.cli import app
from landsight.errors import LandsightValueError
from landsight.results.runs import list_runs, plot_curves


@pytest.fixture()
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def test_every_command_is_a_run_and_runs_compare(small_dataset: Path, tmp_path: Path, store: str) -> None:
    frozen = train(small_dataset, out=tmp_path / "a.landsight", test_size=0.25, progress=False, tracking_uri=store)
    tuned = [
        finetune(
            small_dataset, out=tmp_path / f"{name}.landsight", retrain="last", epochs=3, lr=lr, batch_size=8,
            num_workers=0, progress=False, tracking_uri=store,
        )  # fmt: skip
        for name, lr in (("b", 0.05), ("c", 0.005))
    ]
    runs = list_runs(tracking_uri=store, sort="accuracy")
    assert set(runs["command"]) == {"train", "finetune"} and len(runs) == 3
    row = runs[runs["full_run_id"] == frozen.run_id].iloc[0]
    assert row["backbone"] == "tf_efficientnet_lite0" and row["head"] == "logreg"
    assert row["accuracy"] == pytest.approx(frozen.metrics["accuracy"])
    assert runs["accuracy"].is_monotonic_decreasing
    png = plot_curves([r.run_id[:8] for r in tuned], tmp_path / "curves.png", tracking_uri=store)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LandsightValueError, match="no per-epoch curves"):
        plot_curves([frozen.run_id], tmp_path / "x.png", tracking_uri=store)

    result = CliRunner().invoke(app, ["runs", "--tracking-uri", store, "--sort", "accuracy"])
    assert result.exit_code == 0, result.output
    assert all(r.run_id[:8] in result.output for r in (frozen, *tuned))
    result = CliRunner().invoke(
        app, ["runs", "--tracking-uri", store, "--compare", tuned[0].run_id[:8], "--plot", str(tmp_path / "c.png")]
    )
    assert result.exit_code == 0 and (tmp_path / "c.png").is_file()


def test_per_epoch_metrics_use_the_epoch_as_step(small_dataset: Path, tmp_path: Path, store: str) -> None:
    from mlflow.tracking import MlflowClient

    result = finetune(
        small_dataset, out=tmp_path / "m.landsight", retrain="last", epochs=3, batch_size=8, num_workers=0,
        progress=False, tracking_uri=store,
    )  # fmt: skip
    client = MlflowClient(tracking_uri=store)
    steps = sorted(m.step for m in client.get_metric_history(result.run_id, "val_error"))
    assert steps == [0, 1, 2]
    run = client.get_run(result.run_id)
    assert run.data.params["retrain"] == "last" and run.data.tags["landsight.command"] == "finetune"
    assert "version.torch" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "bundle")}
    assert "bundle/model.onnx" in artifacts and "bundle/bundle.json" in artifacts
