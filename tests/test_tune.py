"""Hyperparameter search on the shipped EuroSAT sample, with a small trial budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from landsight.errors import LandsightValueError, OutputExistsError


def _runs(uri: str) -> list:  # noqa: ANN001
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("landsight")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_frozen_feature_search_writes_best_bundle_and_study(small_dataset: Path, tmp_path: Path) -> None:
    import landsight

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    out = tmp_path / "best.landsight"
    result = landsight.tune(small_dataset, trials=6, out=out, cv=3, tta=("none",), test_size=0.25, progress=False,
                            tracking_uri=uri)  # fmt: skip
    assert result.bundle_path == out and (out / "model.onnx").is_file()
    assert 0.5 < result.best_value <= 1.0 and len(result.trials) == 6
    assert {t["state"] for t in result.trials} <= {"COMPLETE", "PRUNED"}
    assert result.best_params["head"] in ("logreg", "forest") and result.best_params["tta"] == "none"
    doc = yaml.safe_load(result.tune_path.read_text())
    assert result.tune_path == Path(f"{out}.tune.yaml")
    assert doc["study"]["sampler"] == "TPESampler(seed=0)" and doc["study"]["pruner"] == "MedianPruner"
    assert doc["study"]["cv_folds"] == 3 and doc["data"]["n_train"] == 27
    assert doc["best"]["params"] == result.best_params and doc["final"]["command"] == "train"
    assert doc["final"]["call"]["head"] == result.best_params["head"]
    assert all(len(t["intermediate"]) >= 1 for t in doc["trials"])  # fold scores reported to the pruner
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["head"]["kind"] == result.best_params["head"] and meta["data"]["n_test"] == 9
    # MLflow: one search run, one child per trial, the final training nested too.
    runs = _runs(uri)
    parent = [r for r in runs if r.data.tags["landsight.command"] == "tune"]
    assert len(parent) == 1 and parent[0].info.run_id == result.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert sorted(r.data.tags["landsight.command"] for r in children) == ["train"] + ["tune-trial"] * 6
    assert "cv_accuracy" in children[-1].data.metrics or "cv_accuracy" in children[0].data.metrics
    with pytest.raises(OutputExistsError):
        landsight.tune(small_dataset, trials=1, out=out, progress=False, track=False)


def test_search_checks_arguments_before_work(small_dataset: Path, tmp_path: Path) -> None:
    from landsight.classify.tune import tune

    out = tmp_path / "x.landsight"
    with pytest.raises(LandsightValueError, match="trials"):
        tune(small_dataset, trials=0, out=out, track=False)
    with pytest.raises(LandsightValueError, match="heads"):
        tune(small_dataset, heads=("svm",), out=out, track=False)
    with pytest.raises(LandsightValueError, match="C must be"):
        tune(small_dataset, C=(0, 1), out=out, track=False)
    with pytest.raises(LandsightValueError, match="fixed sets"):
        tune(small_dataset, fixed={"C": 1.0}, out=out, track=False)
    with pytest.raises(LandsightValueError, match="parameters of tune itself"):
        tune(small_dataset, fixed={"test_size": 0.5}, out=out, track=False)
    assert not out.exists() and not Path(f"{out}.tune.yaml").exists()


def test_finetune_search_prunes_by_epoch_and_bundles_the_best(small_dataset: Path, tmp_path: Path) -> None:
    from landsight.classify.tune import tune

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    out = tmp_path / "ft.landsight"
    result = tune(small_dataset, finetune=True, trials=4, out=out, retrain=("last",), epochs=(2, 3), lr=(1e-3, 0.3),
                  n_startup_trials=2, test_size=0.25, fixed={"val_size": 0.25, "batch_size": 8}, progress=False,
                  tracking_uri=uri)  # fmt: skip
    assert set(result.best_params) == {"lr", "retrain", "epochs"}
    doc = yaml.safe_load(result.tune_path.read_text())
    assert doc["final"]["command"] == "finetune" and doc["final"]["call"]["val_size"] == 0.25
    for row in doc["trials"]:  # per-epoch validation accuracy was reported to the pruner
        assert row["state"] == "PRUNED" or len(row["intermediate"]) == row["params"]["epochs"]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["head"]["kind"] == "finetune"
    assert meta["head"]["params"]["lr"] == pytest.approx(result.best_params["lr"])
    children = [r for r in _runs(uri) if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert sum(r.data.tags["landsight.command"] == "finetune" for r in children) == 5  # 4 trials + the final
    assert not any(p.name.startswith("trial-") for p in tmp_path.iterdir())  # trial bundles were scratch
    assert os.path.isfile(f"{out}.tune.yaml")


def test_pruning_callback_stops_finetune_after_the_first_epoch(small_dataset: Path, tmp_path: Path) -> None:
    import optuna

    from landsight.classify.finetune import finetune
    from landsight.classify.tune_objectives import _pruning_callback
    from landsight.models.fit import extra_callbacks

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    trial = study.ask()  # every accuracy is below 1.1: pruned at the first report
    callback = _pruning_callback(trial)
    with pytest.raises(optuna.TrialPruned), extra_callbacks(callback):
        finetune(small_dataset, out=tmp_path / "p.landsight", retrain="last", epochs=5, test_size=0.25,
                 val_size=0.25, progress=False, tracking_uri=uri)  # fmt: skip
    assert len(callback.values) == 1 and not (tmp_path / "p.landsight").exists()
    (run,) = _runs(uri)
    assert run.info.status == "KILLED" and run.data.tags["landsight.pruned"] == "true"


def test_tune_command_prints_the_trials_and_bundles_the_best(small_dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from landsight.cli import app

    out = tmp_path / "cli.landsight"
    r = CliRunner().invoke(app, ["tune", str(small_dataset), "--trials", "3", "--tta", "none", "--heads", "logreg",
                                 "--out", str(out), "--no-track", "-q", "--format", "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert len(report["trials"]) == 3 and report["best_params"]["head"] == "logreg"
    assert (out / "model.onnx").is_file() and (out / "config.yaml").is_file()
