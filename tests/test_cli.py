import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from landsight.cli import app, main

runner = CliRunner()


def test_train_evaluate_predict_from_the_command_line(small_dataset: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "cli.landsight"
    r = runner.invoke(
        app, ["train", str(small_dataset), "--out", str(bundle), "--head", "logreg", "--test-size", "0.25", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and (bundle / "model.onnx").is_file()
    r = runner.invoke(app, ["evaluate", str(bundle), str(small_dataset), "--out", str(tmp_path / "ev"), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 36
    preds = tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", str(bundle), str(small_dataset / "River" / "*.jpg"), "--out", str(preds), "-q"])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(preds)) == 12


def test_featurize_command(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    r = runner.invoke(app, ["featurize", str(small_dataset / "Forest"), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out)
    assert len(df) == 12 and len(df["features"].iloc[0]) == 1280
    # --stages auto: train's features (three pooled stages first, then the same final 1280)
    staged = tmp_path / "s.parquet"
    r = runner.invoke(app, ["featurize", str(small_dataset / "Forest"), "--out", str(staged), "--stages", "auto", "-q"])
    assert r.exit_code == 0, r.output
    both = df.merge(pd.read_parquet(staged), on="path", suffixes=("", "_staged"))
    assert len(both) == 12 and all(len(v) == 1664 for v in both["features_staged"])
    assert max(abs(a[384:] - b).max() for a, b in zip(both["features_staged"], both["features"], strict=True)) < 1e-4


def test_errors_are_one_line_and_exit_2(small_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    one_class = tmp_path / "one"
    (one_class / "Forest").mkdir(parents=True)
    for f in sorted((small_dataset / "Forest").glob("*.jpg"))[:3]:
        (one_class / "Forest" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(sys, "argv", ["landsight", "train", str(one_class), "--out", str(tmp_path / "x.landsight")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "at least two classes" in captured.err and "Traceback" not in captured.err + captured.out
    assert captured.out == ""  # errors go to stderr, never into results


def test_python_dash_m_and_light_import() -> None:
    r = subprocess.run([sys.executable, "-m", "landsight", "--help"], capture_output=True, text=True, check=True)
    for verb in ("train", "evaluate", "predict", "featurize", "demo"):
        assert verb in r.stdout
    heavy = "{'torch', 'sklearn', 'onnxruntime', 'timm', 'rasterio', 'pandas'}"
    code = f"import sys, landsight; print(sorted({heavy} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "-q"])
    assert r.exit_code == 0, r.output
    assert "accuracy on 100 held-out EuroSAT tiles" in r.output
    metrics = json.loads((tmp_path / "demo" / "eurosat.landsight" / "metrics.json").read_text())
    assert metrics["n"] == 100 and metrics["accuracy"] > 0.7  # 10 classes: chance is 10 %
    assert len(pd.read_parquet(tmp_path / "demo" / "predictions.parquet")) == 100
