"""The command line in scripts and pipes: full cells, machine formats, stdout/stderr split, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m landsight`` with stdout and stderr piped (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "landsight", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tracked(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One train run recorded in a fresh MLflow store; the bundle and the store's environment."""
    root = tmp_path_factory.mktemp("scripting")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}"}
    bundle = root / "piped.landsight"
    r = _cli("train", str(small_dataset), "--out", str(bundle), "--test-size", "0.25", "-q", env=env)
    assert r.returncode == 0, r.stderr
    return bundle, env


def test_runs_in_a_pipe_prints_whole_cells(tracked) -> None:  # noqa: ANN001
    _, env = tracked
    r = _cli("runs", env=env)
    assert r.returncode == 0, r.stderr
    assert "tf_efficientnet_lite0" in r.stdout and "logreg" in r.stdout  # no "tf_e…" / "logr…"
    assert "…" not in r.stdout


@pytest.mark.parametrize("fmt", ["json", "csv", "tsv"])
def test_runs_machine_formats_hold_every_parameter_and_metric(tracked, fmt: str) -> None:  # noqa: ANN001
    _, env = tracked
    r = _cli("runs", "--format", fmt, env=env)
    assert r.returncode == 0, r.stderr
    if fmt == "json":
        rows = json.loads(r.stdout)
    else:
        from io import StringIO

        rows = pd.read_csv(StringIO(r.stdout), sep="," if fmt == "csv" else "\t").to_dict("records")
    assert len(rows) == 1
    row = rows[0]
    assert row["backbone"] == "tf_efficientnet_lite0" and row["head"] == "logreg" and row["command"] == "train"
    assert 0 <= row["accuracy"] <= 1 and row["param.test_size"] in ("0.25", 0.25)
    assert "metric.n_train" in row


def test_runs_columns_pick_columns(tracked) -> None:  # noqa: ANN001
    _, env = tracked
    r = _cli("runs", "--format", "csv", "--columns", "run,backbone,accuracy", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "run,backbone,accuracy"
    bad = _cli("runs", "--columns", "nope", env=env)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluate_json_parses_and_progress_stays_on_stderr(tracked, small_dataset: Path, tmp_path: Path) -> None:  # noqa: ANN001
    bundle, env = tracked
    r = _cli("evaluate", str(bundle), str(small_dataset), "--out", str(tmp_path / "ev"), "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)  # stdout is the result only: no progress bar, no notes
    assert metrics["n"] == 36 and set(metrics["per_class"]) == {"Forest", "River", "SeaLake"}
    assert "metrics and confusion matrix" in r.stderr


def test_predict_partial_success_exits_3_and_names_the_skipped_image(
    tracked, small_dataset: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    bundle, env = tracked
    folder = tmp_path / "tiles"
    folder.mkdir()
    for f in sorted((small_dataset / "River").glob("*.jpg"))[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"")  # zero-byte file: skipped, not fatal
    r = _cli("predict", str(bundle), str(folder), "--out", str(tmp_path / "p.parquet"), "--format", "json",
             "--no-track", env=env)  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert sum(row["images"] for row in json.loads(r.stdout)) == 3
    assert "broken.jpg" in r.stderr
    good = _cli("predict", str(bundle), str(small_dataset / "River"), "--out", str(tmp_path / "q.csv"), "-q",
                "--no-track", env=env)  # fmt: skip
    assert good.returncode == 0, good.stderr


def test_user_error_exits_2_with_one_line(tmp_path: Path) -> None:
    r = _cli("predict", str(tmp_path / "missing.landsight"), str(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    usage = _cli("train", "--format", "yaml", str(tmp_path))
    assert usage.returncode == 2


def test_version_and_natural_boolean_flags() -> None:
    r = _cli("--version")
    assert r.returncode == 0
    from importlib.metadata import version

    assert r.stdout.splitlines()[0] == f"landsight {version('landsight')}"
    for name in ("torch", "onnxruntime", "timm", "pyspark", "rasterio"):
        assert any(line.startswith(f"{name} ") for line in r.stdout.splitlines()), name
    for verb, flag in (("train", "--track/--no-track"), ("train", "--cache/--no-cache"),
                       ("map", "--thumbnails/--no-thumbnails"), ("finetune", "--feature-cache/--no-feature-cache")):
        text = _cli(verb, "--help", env={"COLUMNS": "200"}).stdout
        assert flag.split("/")[0] in text and "--no-no-" not in text, (verb, flag)
    assert "--install-completion" in _cli("--help", env={"COLUMNS": "200"}).stdout


def _table_and_json(args: list[str], env: dict[str, str] | None = None, again: tuple[str, ...] = ("--overwrite",)
                    ) -> tuple[str, object]:  # fmt: skip
    """Run a verb twice with stdout piped: its default table, then ``--format json`` (parsed)."""
    table = _cli(*args, env=env)
    assert table.returncode == 0, table.stderr
    assert "…" not in table.stdout  # nothing cut in a pipe
    as_json = _cli(*args, "--format", "json", *again, env=env)
    assert as_json.returncode == 0, as_json.stderr
    return table.stdout, json.loads(as_json.stdout)


def test_demo_train_and_finetune_tables_in_a_pipe(small_dataset: Path, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    table, metrics = _table_and_json(["demo", "--out", str(tmp_path / "demo"), "-q"], env=env)
    for name in ("HerbaceousVegetation", "PermanentCrop", "AnnualCrop"):  # the longest EuroSAT names, whole
        assert name in table and name in metrics["per_class"]
    table, metrics = _table_and_json(["train", str(small_dataset), "--out", str(tmp_path / "t.landsight"),
                                      "--test-size", "0.25", "-q"], env=env)  # fmt: skip
    assert "SeaLake" in table and metrics["n"] == 9
    table, metrics = _table_and_json(["finetune", str(small_dataset), "--out", str(tmp_path / "f.landsight"),
                                      "--retrain", "last", "--epochs", "1", "--num-workers", "0", "-q"],
                                     env=env)  # fmt: skip
    assert "SeaLake" in table and set(metrics["per_class"]) == {"Forest", "River", "SeaLake"}


def test_dedup_map_and_segment_tables_in_a_pipe(trained, shared_data: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from landsight.data.tiling import cut_tiles

    folder = tmp_path / "a_rather_long_folder_name_to_check_that_nothing_is_cut" / "tiles"
    tiles = cut_tiles(shared_data / "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif", folder, size=65)
    (folder / "copy_of_tile.tif").write_bytes(tiles[0].path.read_bytes())
    table, groups = _table_and_json(["dedup", str(folder), "-q"])
    assert str(tiles[0].path) in table and str(folder / "copy_of_tile.tif") in table
    assert {g["path"] for g in groups} >= {str(tiles[0].path), str(folder / "copy_of_tile.tif")}
    (folder / "copy_of_tile.tif").unlink()  # same bounds as tile 0: the map would match it twice

    preds = tmp_path / "preds.parquet"
    r = _cli("predict", str(trained.bundle_path), str(folder), "--out", str(preds), "-q", "--no-track")
    assert r.returncode == 0, r.stderr
    table, transitions = _table_and_json(["map", str(preds), "--compare", str(preds), "--out", str(tmp_path / "m.html"),
                                          "--no-thumbnails", "-q"])  # fmt: skip
    assert "0 of 16 tiles changed class" in table and transitions == []

    from test_segment import _synthetic_bundle  # the synthetic 1x1-convolution segmentation bundle

    seg = _synthetic_bundle(tmp_path / "seg.landsight")
    ches = shared_data / "chesapeake/tile_downsampled"
    table, metrics = _table_and_json(["segment", "evaluate", str(seg.path), "--images", str(ches / "*_naip-new.tif"),
                                      "--labels", str(ches / "*_lc.tif"), "--out", str(tmp_path / "ev"), "-q",
                                      "--no-track"])  # fmt: skip
    assert "pixel accuracy" in table and set(metrics["per_class"]) == {"c1", "c2", "c3", "c4"}
