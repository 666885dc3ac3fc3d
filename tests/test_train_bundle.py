import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from landsight.bundle import load_bundle
from landsight.classify.train import FAST, train
from landsight.data.readers import read_image
from landsight.errors import BundleError, LandsightValueError

CLASSES = ("Forest", "River", "SeaLake")  # as in conftest.small_dataset


def test_bundle_holds_what_a_deployment_needs(trained) -> None:  # noqa: ANN001
    path = trained.bundle_path
    for name in (
        "bundle.json",
        "model.onnx",
        "metrics.json",
        "confusion_matrix.png",
        "confusion_matrix.json",
        "skipped.csv",
    ):
        assert (path / name).is_file(), name
    meta = json.loads((path / "bundle.json").read_text())
    assert meta["schema_version"] == 1 and meta["task"] == "classification"
    assert meta["classes"] == sorted(CLASSES)
    assert meta["backbone"]["name"] == "tf_efficientnet_lite0"
    assert meta["preprocessing"]["input_size"] == [224, 224]
    assert meta["head"]["kind"] == "logreg"
    assert len(meta["data"]["fingerprint"]) == 64
    assert {"torch", "onnxruntime", "scikit-learn"} <= set(meta["package_versions"])
    assert meta["data"]["n_train"] == 27 and meta["data"]["n_test"] == 9
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.joblib"))


def test_bundle_matches_in_memory_torch_and_sklearn(trained, small_dataset: Path) -> None:  # noqa: ANN001
    bundle = load_bundle(trained.bundle_path, device="cpu")
    paths = sorted(small_dataset.rglob("*.jpg"))[::4]
    images = np.stack([bundle.preprocessing.resize(read_image(p).array) for p in paths])
    from landsight.models.backbones import create_backbone

    module = create_backbone("tf_efficientnet_lite0", stages="auto").input_module()  # train's default stages
    with torch.no_grad():
        features = module(torch.from_numpy(images)).numpy()
    expected = trained.head.predict_proba(features)
    got = bundle.predict_proba(images)
    assert np.abs(got - expected).max() < 1e-4
    assert list(trained.head.classes_) == bundle.classes


def test_held_out_accuracy_is_well_above_chance(trained) -> None:  # noqa: ANN001
    # 27 training tiles of three visually distinct classes; chance is 33 %.
    assert trained.metrics["accuracy"] >= 0.77
    assert len(trained.test_paths) == 9


def test_forest_head_and_separate_test_folder(small_dataset: Path, tmp_path: Path) -> None:
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    for cls in CLASSES:
        files = sorted((small_dataset / cls).glob("*.jpg"))
        for f in files[:9]:
            (train_dir / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, train_dir / cls)
        for f in files[9:]:
            (test_dir / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, test_dir / cls)
    result = train(
        train_dir, test=test_dir, out=tmp_path / "f.landsight", head="forest", n_estimators=50, progress=False,
        tta="none",
    )  # fmt: skip
    assert result.n_train == 27 and result.n_test == 9
    meta = json.loads((result.bundle_path / "bundle.json").read_text())
    assert meta["head"]["kind"] == "forest"
    # With --test DIR every image of DATA already trained the head: nothing to refit.
    assert meta["data"]["refit"] is False and meta["data"]["n_fit"] == 27 and not result.refit
    assert result.split_head is result.head
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_unseen_test_label_fails_before_featurizing(small_dataset: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    test_dir = tmp_path / "test"
    for cls in ("Forest", "River", "Highway"):
        (test_dir / cls).mkdir(parents=True)
        src = small_dataset / ("Forest" if cls == "Highway" else cls)
        shutil.copy(next(src.glob("*.jpg")), test_dir / cls / "x.jpg")
    import landsight.classify.featurize

    monkeypatch.setattr(landsight.classify.featurize, "featurize", lambda *a, **k: pytest.fail("featurized"))
    with pytest.raises(LandsightValueError, match="Highway"):
        train(small_dataset, test=test_dir, out=tmp_path / "x.landsight", progress=False)


def test_a_class_whose_images_are_all_unreadable_is_a_clear_error(small_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(small_dataset / "Forest", root / "Forest")
    shutil.copytree(small_dataset / "River", root / "River")
    (root / "Broken").mkdir()
    for i in range(3):
        (root / "Broken" / f"b{i}.jpg").write_bytes(b"")
    with pytest.raises(LandsightValueError, match="Broken"):
        train(root, out=tmp_path / "x.landsight", test_size=0, progress=False, tta="none")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"head": "svm"}, "unknown head"), ({"C": -1}, "'C' parameter"), ({"test_size": 1.5}, "test_size")],
)
def test_bad_parameters_are_named(small_dataset: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(LandsightValueError, match=match):
        train(small_dataset, out=tmp_path / "x.landsight", progress=False, **kwargs)


def test_zipped_bundle_loads(trained, tmp_path: Path) -> None:  # noqa: ANN001
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in trained.bundle_path.iterdir():
            zf.write(f, f"small.landsight/{f.name}")
    assert load_bundle(archive).classes == sorted(CLASSES)


def test_bundle_errors(trained, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope.landsight")
    broken = tmp_path / "old.landsight"
    shutil.copytree(trained.bundle_path, broken)
    meta = json.loads((broken / "bundle.json").read_text())
    meta["schema_version"] = 99
    (broken / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(BundleError, match="lacks 'model.onnx'"):
        load_bundle(broken)


def test_rot4_features_make_the_bundle_rotation_invariant(small_dataset: Path, tmp_path: Path) -> None:
    result = train(small_dataset, out=tmp_path / "r.landsight", tta="rot4", test_size=0.25, progress=False)
    bundle = load_bundle(result.bundle_path)
    assert bundle.meta["backbone"]["tta"] == "rot4"
    image = bundle.preprocessing.resize(read_image(next((small_dataset / "River").glob("*.jpg"))).array)
    views = np.stack([np.rot90(image, k) for k in range(4)])
    proba = bundle.predict_proba(views)
    assert np.abs(proba - proba[0]).max() < 1e-4  # the same answer for every rotation
    plain = load_bundle(
        train(small_dataset, out=tmp_path / "p.landsight", test_size=0.25, progress=False, **FAST).bundle_path
    )
    assert np.abs(plain.predict_proba(views) - plain.predict_proba(views)[0]).max() > 1e-3


def test_cross_validated_C_is_recorded(small_dataset: Path, tmp_path: Path) -> None:
    result = train(small_dataset, out=tmp_path / "cv.landsight", C="auto", tta="none", test_size=0.25, progress=False)
    head = json.loads((result.bundle_path / "bundle.json").read_text())["head"]
    assert head["params"]["cross_validated_C"] is True
    assert any(head["params"]["C"] == pytest.approx(c) for c in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0))


def _rot4_features(images: np.ndarray) -> np.ndarray:
    import dataclasses

    from landsight.models.backbones import create_backbone

    bb = dataclasses.replace(create_backbone("tf_efficientnet_lite0", stages="auto"), tta="rot4")
    with torch.no_grad():
        return bb.input_module()(torch.from_numpy(images)).numpy()


def test_defaults_evaluate_on_the_split_then_ship_a_head_refit_on_every_image(
    small_dataset: Path, tmp_path: Path
) -> None:
    result = train(small_dataset, out=tmp_path / "d.landsight", test_size=0.25, progress=False, track=False)
    meta = json.loads((result.bundle_path / "bundle.json").read_text())
    # The measured recipe is the default: rotation-averaged features with three pooled mid-level
    # stages, cross-validated C, standardised.
    assert meta["backbone"]["tta"] == "rot4"
    assert meta["backbone"]["stages"] == ["blocks.3", "blocks.4", "blocks.5"]
    assert meta["backbone"]["num_features"] == 80 + 112 + 192 + 1280
    assert meta["head"]["params"]["cross_validated_C"] is True and meta["head"]["params"]["standardize"] is True
    # Figures from the split; the shipped head saw all 36 images.
    assert meta["data"]["n_train"] == 27 and meta["data"]["n_test"] == 9
    assert meta["data"]["refit"] is True and meta["data"]["n_fit"] == 36 and result.refit and result.n_fit == 36
    assert meta["metrics"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert json.loads((result.bundle_path / "metrics.json").read_text())["n"] == 9
    assert meta["head"]["evaluated"]["cross_validated_C"] is True  # the split head's own C is kept too
    assert result.split_head is not result.head
    bundle = load_bundle(result.bundle_path, device="cpu")
    images = np.stack([bundle.preprocessing.resize(read_image(p).array) for p in sorted(small_dataset.rglob("*.jpg"))])
    features = _rot4_features(images)
    shipped, split = result.head.predict_proba(features), result.split_head.predict_proba(features)
    assert np.abs(shipped - split).max() > 1e-3  # a different head ...
    assert np.abs(bundle.predict_proba(images) - shipped).max() < 1e-4  # ... and the bundle holds the refit one
    # The split head's figures are what metrics.json reports.
    test_images = np.stack([bundle.preprocessing.resize(read_image(p).array) for p in result.test_paths])
    labels = [Path(p).parent.name for p in result.test_paths]
    split_acc = np.mean(result.split_head.predict(_rot4_features(test_images)) == np.array(labels))
    assert result.metrics["accuracy"] == pytest.approx(split_acc)


def test_no_refit_ships_the_evaluated_head(small_dataset: Path, tmp_path: Path) -> None:
    result = train(small_dataset, out=tmp_path / "n.landsight", test_size=0.25, refit=False, progress=False,
                   track=False, **FAST)  # fmt: skip
    meta = json.loads((result.bundle_path / "bundle.json").read_text())
    assert meta["data"]["refit"] is False and meta["data"]["n_fit"] == 27 and "evaluated" not in meta["head"]
    assert result.head is result.split_head


def test_cross_validated_C_falls_back_to_1_for_a_class_too_small_to_fold(small_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(small_dataset / "Forest", root / "Forest")
    (root / "River").mkdir()
    shutil.copy(next((small_dataset / "River").glob("*.jpg")), root / "River" / "r.jpg")
    result = train(root, out=tmp_path / "s.landsight", test_size=0, progress=False, track=False, tta="none")
    params = json.loads((result.bundle_path / "bundle.json").read_text())["head"]["params"]
    assert params["cross_validated_C"] is False and params["C"] == 1.0


def test_cli_defaults_and_the_fast_preset(small_dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from landsight.cli import app

    runner = CliRunner()
    metas = {}
    for name, extra in (("default", []), ("fast", ["--fast"]), ("fast-no-refit", ["--fast", "--no-refit"])):
        out = tmp_path / f"{name}.landsight"
        args = ["train", str(small_dataset), "--out", str(out), "--test-size", "0.25", "--no-track", "-q", *extra]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        metas[name] = json.loads((out / "bundle.json").read_text())
    assert metas["default"]["backbone"]["tta"] == "rot4" and metas["default"]["head"]["params"]["cross_validated_C"]
    assert metas["fast"]["backbone"]["tta"] == "none"
    staged = ["blocks.3", "blocks.4", "blocks.5"]
    assert metas["fast"]["backbone"]["stages"] == metas["default"]["backbone"]["stages"] == staged
    assert metas["fast"]["head"]["params"] == {**metas["fast"]["head"]["params"], "C": 1.0, "cross_validated_C": False}
    assert metas["default"]["data"]["refit"] and metas["fast"]["data"]["refit"]
    assert not metas["fast-no-refit"]["data"]["refit"]
    # An explicit option wins over the preset.
    out = tmp_path / "mixed.landsight"
    r = runner.invoke(app, ["train", str(small_dataset), "--out", str(out), "--test-size", "0.25", "--no-track", "-q",
                            "--fast", "--C", "auto"])  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["backbone"]["tta"] == "none" and meta["head"]["params"]["cross_validated_C"] is True
    # --stages none: the final pooled features only, the graph and the head agree on 1280.
    out = tmp_path / "final-only.landsight"
    r = runner.invoke(app, ["train", str(small_dataset), "--out", str(out), "--test-size", "0.25", "--no-track", "-q",
                            "--fast", "--stages", "none"])  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["backbone"]["stages"] == [] and meta["backbone"]["num_features"] == 1280
    bundle = load_bundle(out, device="cpu")
    assert bundle.predict_proba(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 3)
    r = runner.invoke(app, ["train", str(small_dataset), "--out", str(tmp_path / "bad.landsight"), "--no-track", "-q",
                            "--fast", "--stages", "blocks.9"])  # fmt: skip
    assert r.exit_code != 0 and "blocks.9" in r.output + str(r.exception) and not (tmp_path / "bad.landsight").exists()


# -- --test must be held out ----------------------------------------------------------------------


def test_test_that_is_the_training_data_is_refused_in_one_line(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    import landsight.classify.featurize

    monkeypatch.setattr(landsight.classify.featurize, "featurize", lambda *a, **k: pytest.fail("featurized"))
    same = small_dataset / "Forest" / ".."  # another spelling of DATA
    with pytest.raises(LandsightValueError, match="--test is the same data as DATA") as info:
        train(small_dataset, test=same, out=tmp_path / "x.landsight", progress=False)
    assert "leave --test out to split DATA" in str(info.value)
    listed = tmp_path / "test.csv"  # a map file naming images of DATA only
    listed.write_text("path,label\n" + "".join(f"{small_dataset / c / f'{c}_1.jpg'},{c}\n" for c in CLASSES))
    with pytest.raises(LandsightValueError, match=r"every --test image is also in DATA \(3, e\.g\. "):
        train(small_dataset, test=listed, out=tmp_path / "x.landsight", progress=False)
    assert not (tmp_path / "x.landsight").exists()
    r = subprocess.run(
        [sys.executable, "-m", "landsight", "train", str(small_dataset), "--test", str(same),
         "--out", str(tmp_path / "y.landsight"), "--no-track", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "--test is the same data as DATA" in r.stderr
    assert not (tmp_path / "y.landsight").exists()


def test_test_images_shared_with_the_training_data_are_named(
    small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --test folder of 9 held-out images, a link to a training image and a copy of another."""
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    for cls in CLASSES:
        files = sorted((small_dataset / cls).glob("*.jpg"))
        (train_dir / cls).mkdir(parents=True)
        (test_dir / cls).mkdir(parents=True)
        for f in files[:9]:
            shutil.copy(f, train_dir / cls)
        for f in files[9:]:
            shutil.copy(f, test_dir / cls)
    (test_dir / "Forest" / "linked.jpg").symlink_to(train_dir / "Forest" / "Forest_1.jpg")  # the same file
    shutil.copy(train_dir / "River" / "River_2.jpg", test_dir / "River" / "copy.jpg")  # the same content
    result = train(train_dir, test=test_dir, out=tmp_path / "m.landsight", progress=False, **FAST)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert "1 of 11 --test images are also in DATA" in warnings[0] and "linked.jpg" in warnings[0]
    assert "1 of 10 --test images have the same content as images in DATA" in warnings[1]
    assert "copy.jpg" in warnings[1] and "River_2.jpg" in warnings[1] and "--dedup" in warnings[1]
    assert result.n_train == 27 and result.n_test == 10  # the link left the test set, the copy stayed
    assert not any(p.endswith("linked.jpg") for p in result.test_paths)
