"""Bundles are validated on load, replaced whole, and never mixed with an older one (issue 15, cases 4, 5, 8, 9)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from landsight.bundle import load_bundle
from landsight.classify.train import train
from landsight.errors import BundleError, LandsightValueError, OutputExistsError


def _copy(bundle: Path, tmp_path: Path, name: str = "copy.landsight") -> Path:
    out = tmp_path / name
    shutil.copytree(bundle, out)
    return out


def _edit(bundle: Path, change) -> None:  # noqa: ANN001
    meta = json.loads((bundle / "bundle.json").read_text())
    meta = change(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "landsight", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("change", ["drop_class", "add_class"])
def test_class_list_is_checked_against_the_graph(trained, tmp_path: Path, small_dataset: Path, change: str) -> None:  # noqa: ANN001
    bundle = _copy(trained.bundle_path, tmp_path)

    def edit(meta: dict) -> dict:
        meta["classes"] = meta["classes"][:-1] if change == "drop_class" else [*meta["classes"], "Extra"]
        return meta

    _edit(bundle, edit)
    with pytest.raises(BundleError, match="classes but model.onnx outputs"):
        load_bundle(bundle)
    r = _cli("predict", str(bundle), str(small_dataset / "River"), "--out", str(tmp_path / "p.parquet"), "--no-track")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "model.onnx" in r.stderr
    assert not (tmp_path / "p.parquet").exists()
    from landsight.serve.app import create_app
    from landsight.serve.settings import ServeSettings

    app = create_app(bundle, ServeSettings(batching=False))
    from fastapi.testclient import TestClient

    with pytest.raises(BundleError), TestClient(app):
        pass  # the lifespan refuses to load the bundle: the server never answers with a wrong class


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: [m], "must hold a JSON object"),
        (lambda m: {k: v for k, v in m.items() if k != "classes"}, "missing or invalid entry"),
        (lambda m: {**m, "preprocessing": {**m["preprocessing"], "input_size": [256, 256]}}, "input height 256"),
        (lambda m: {**m, "task": "detection"}, "has task 'detection'"),
        (lambda m: {**m, "schema_version": 99}, "schema_version 99"),
    ],
)
def test_broken_bundle_json_gives_one_clear_line(
    trained, tmp_path: Path, small_dataset: Path, change, message: str  # noqa: ANN001
) -> None:
    bundle = _copy(trained.bundle_path, tmp_path)
    _edit(bundle, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    r = _cli("evaluate", str(bundle), str(small_dataset), "--out", str(tmp_path / "ev"), "--no-track")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_segmentation_bundle_given_to_classification_verbs(tmp_path: Path, small_dataset: Path) -> None:
    from test_segment import _synthetic_bundle  # the synthetic 1x1-convolution segmentation bundle

    seg = _synthetic_bundle(tmp_path / "seg.landsight")
    for args in (
        ["predict", str(seg.path), str(small_dataset / "River"), "--out", str(tmp_path / "p.parquet"), "--no-track"],
        ["evaluate", str(seg.path), str(small_dataset), "--no-track", "--out", str(tmp_path / "ev")],
        ["serve", str(seg.path), "--port", "0"],
    ):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "is a segmentation bundle; use landsight segment predict" in r.stderr and "Traceback" not in r.stderr
        assert "serving" not in r.stderr  # serve fails before announcing a URL


def test_training_into_an_existing_bundle_replaces_it_whole(trained, small_dataset: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from landsight.outputs import TMP_PREFIX, mark_folder

    out = _copy(trained.bundle_path, tmp_path, "model.landsight")
    (out / "weights.safetensors").write_bytes(b"stale file of an older fine-tuned bundle")
    (out / "segmentation_metrics.json").write_text("{}")
    mark_folder(out, "bundle")  # files landsight wrote into an older bundle: listed in its manifest
    before = (out / "bundle.json").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(small_dataset, out=out, test_size=0.25, progress=False, track=False)
    assert (out / "bundle.json").read_bytes() == before  # refused before any work: nothing touched
    (out / "my_notes.txt").write_text("a user's file dropped into the bundle")
    with pytest.raises(OutputExistsError, match="my_notes.txt"):  # not landsight's: never deleted
        train(small_dataset, out=out, test_size=0.25, progress=False, track=False, overwrite=True)
    (out / "my_notes.txt").unlink()
    train(small_dataset, out=out, test_size=0.25, progress=False, track=False, overwrite=True)
    assert not (out / "weights.safetensors").exists() and not (out / "segmentation_metrics.json").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in trained.bundle_path.iterdir())
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_a_folder_that_is_not_a_bundle_is_never_replaced(small_dataset: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my_project"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not a landsight bundle"):
            train(small_dataset, out=mine, progress=False, track=False, overwrite=overwrite)
    assert (mine / "notes.txt").read_text() == "precious"


def test_a_failed_training_leaves_the_old_bundle_as_it_was(trained, small_dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    out = _copy(trained.bundle_path, tmp_path, "model.landsight")
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    import landsight.classify.evaluate as evaluate_module

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(evaluate_module, "write_evaluation", boom)
    with pytest.raises(OSError, match="disk full"):
        train(small_dataset, out=out, test_size=0.25, progress=False, track=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert not list(tmp_path.glob(".*staging*"))


def test_finetune_never_deletes_checkpoints_unasked(small_dataset: Path, tmp_path: Path) -> None:
    from landsight.classify.finetune import finetune

    out = tmp_path / "ft.landsight"
    ckpt = Path(f"{out}.checkpoints")
    ckpt.mkdir()
    (ckpt / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    with pytest.raises(OutputExistsError, match="--resume .* --overwrite"):
        finetune(small_dataset, out=out, retrain="last", epochs=1, progress=False, track=False)
    assert (ckpt / "last.ckpt").read_bytes() == b"an earlier run's checkpoint"


def test_featurize_refuses_a_csv_name_for_parquet_bytes(small_dataset: Path, tmp_path: Path) -> None:
    r = _cli("featurize", str(small_dataset / "River"), "--out", str(tmp_path / "x.csv"), "-q")
    assert r.returncode == 2 and ".parquet" in r.stderr and not (tmp_path / "x.csv").exists()
    out = tmp_path / "f.parquet"
    out.write_bytes(b"mine")
    r = _cli("featurize", str(small_dataset / "River"), "--out", str(out), "-q")
    assert r.returncode == 2 and "--overwrite" in r.stderr and out.read_bytes() == b"mine"


def test_split_happens_after_dropping_unreadable_images(small_dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    river = sorted((data / "River").glob("*.jpg"))
    for f in river[:9]:  # 9 of 12 River tiles unreadable: 3 readable left
        f.write_bytes(b"")
    result = train(data, out=tmp_path / "m.landsight", test_size=0.25, progress=False, track=False)
    assert len(result.skipped) == 9
    assert result.metrics["per_class"]["River"]["support"] >= 1  # split among the readable ones
    assert result.metrics["classes_without_test_images"] == []


def test_a_class_without_test_images_is_named(small_dataset: Path, tmp_path: Path) -> None:
    from landsight.classify.evaluate import compute_metrics

    metrics = compute_metrics(["Forest", "Forest"], [[0.9, 0.1], [0.8, 0.2]], ["Forest", "River"])
    assert metrics["balanced_accuracy"] == 1.0 and metrics["classes_without_test_images"] == ["River"]
    with pytest.raises(LandsightValueError):
        compute_metrics(["Forest"], [[1.0]], ["Forest", "River"])


def _pre(**change: object):  # noqa: ANN202
    return lambda m: {**m, "preprocessing": {**m["preprocessing"], **change}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_pre(input_size=224), r"'preprocessing\.input_size' must be \[height, width\].*got 224"),
        (_pre(input_size=[224]), r"'preprocessing\.input_size'.*got \[224\]"),
        (_pre(input_size=[0, 224]), r"'preprocessing\.input_size'.*two positive integers"),
        (_pre(input_size=["224", "224"]), r"'preprocessing\.input_size'"),
        (_pre(input_size=[224.5, 224]), r"'preprocessing\.input_size'"),
        (_pre(mean=[0.5, 0.5]), r"'preprocessing\.mean' has 2 values but the model reads 3 bands"),
        (_pre(std=[0.2, 0.2, 0.2, 0.2]), r"'preprocessing\.std' has 4 values but the model reads 3 bands"),
        (_pre(bands=[1, 2]), r"'preprocessing\.mean' has 3 values but the model reads 2 bands"),
        (_pre(std=[0.2, 0.0, 0.2]), r"'preprocessing\.std' must be a list of positive numbers"),
        (_pre(mean="0.5"), r"'preprocessing\.mean' must be a list of numbers"),
        (_pre(interpolation="lanczos"), r"'preprocessing\.interpolation' must be one of"),
        (_pre(bands=[0, 1, 2]), r"'preprocessing\.bands' must be null"),
    ],
    ids=["size-int", "size-one", "size-zero", "size-str", "size-float", "mean-short", "std-long", "bands-vs-mean",
         "std-zero", "mean-str", "interp", "band-zero"],  # fmt: skip
)
def test_bad_preprocessing_entry_is_one_bundle_error_line(trained, tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    bundle = _copy(trained.bundle_path, tmp_path)
    assert (bundle / ".landsight-manifest.json").is_file()  # copytree keeps the manifest
    _edit(bundle, change)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(bundle)
    assert str(bundle / "bundle.json") in str(info.value) and "\n" not in str(info.value)


def test_bad_preprocessing_entry_on_the_cli(trained, tmp_path: Path, small_dataset: Path) -> None:  # noqa: ANN001
    bundle = _copy(trained.bundle_path, tmp_path)
    _edit(bundle, _pre(mean=[0.5, 0.5]))
    r = _cli("predict", str(bundle), str(small_dataset / "River"), "--out", str(tmp_path / "p.parquet"), "--no-track")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "preprocessing.mean" in r.stderr
    assert not (tmp_path / "p.parquet").exists()
