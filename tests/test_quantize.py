"""Quantized bundles (issue 19): int8 / fp16 copies scored by every path, and the accuracy-drop refusal.

Real imagery: the session ``trained`` bundle (36 EuroSAT tiles of the package sample) and, when
../shared/data is present, EuroSAT JPEGs and a tiny U-Net on real Chesapeake NAIP patches.
Images made here are named synthetic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landsight import load_bundle
from landsight.bundle import BUNDLE_FILE
from landsight.errors import LandsightValueError
from landsight.predictions import probability_columns
from landsight.quantize import QuantizationDropError, QuantizeResult, quantize_bundle


@pytest.fixture(scope="module")
def int8(trained, tmp_path_factory: pytest.TempPathFactory) -> QuantizeResult:  # noqa: ANN001
    """The session bundle quantized to int8, calibrated on its 27 training images.

    The drop check is off here: 9 test images make one flipped image an 11-point drop; the
    refusal has its own test and the accuracy on real test splits is in benchmarks/RESULTS.md.
    """
    out = tmp_path_factory.mktemp("quantized") / "small-int8.landsight"
    return quantize_bundle(trained.bundle_path, out, max_drop=None)


def _paths(small_dataset: Path) -> list[str]:
    return sorted(str(p) for p in small_dataset.glob("*/*.jpg"))


def test_int8_bundle_records_precision_calibration_and_drop(int8: QuantizeResult, trained) -> None:  # noqa: ANN001
    meta = json.loads((int8.bundle_path / BUNDLE_FILE).read_text())
    source = json.loads((trained.bundle_path / BUNDLE_FILE).read_text())
    assert meta["precision"] == "int8" and "precision" not in source
    assert meta["calibration"]["n"] == trained.n_train == 27
    assert len(meta["calibration"]["fingerprint"]) == 16 and "train split" in meta["calibration"]["source"]
    q = meta["quantization"]
    assert q["metric"] == "accuracy" and q["n_test"] == trained.n_test == 9
    scored = load_bundle(trained.bundle_path).predict(trained.test_paths)
    truth = [Path(p).parent.name for p in trained.test_paths]
    assert q["fp32"] == pytest.approx(100 * float(np.mean(scored["predicted"] == truth)))  # the same test split
    assert q["drop"] == pytest.approx(q["fp32"] - q["quantized"]) and q["fast_on"] == "cpu"
    assert q["test_seen_by_head"] == bool(source["data"].get("refit"))  # a refit head saw the test split
    for key in ("task", "model", "classes", "preprocessing", "backbone", "metrics", "data"):
        assert meta[key] == source[key], key
    # The head was refit on the int8 backbone's features of the images the shipped head saw, same C.
    assert meta["head"]["fitted_on"] == "int8 features" and meta["head"]["float32_head"] == source["head"]
    assert meta["head"]["params"]["C"] == pytest.approx(source["head"]["params"]["C"])
    assert q["head_refit"]["n_images"] == trained.n_fit
    assert (int8.bundle_path / "metrics.json").is_file() and (int8.bundle_path / "skipped.csv").is_file()
    import onnx

    graph = onnx.load(str(int8.bundle_path / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8  # input unchanged
    assert graph.output[0].name == "probabilities"


def test_int8_bundle_predicts_with_the_same_columns(int8: QuantizeResult, trained, small_dataset: Path) -> None:  # noqa: ANN001
    paths = _paths(small_dataset)
    fp32 = load_bundle(trained.bundle_path).predict(paths)
    quantized = load_bundle(int8.bundle_path).predict(paths)
    assert list(quantized.columns) == list(fp32.columns) and list(quantized["path"]) == paths
    assert (quantized["predicted"] == fp32["predicted"]).mean() >= 0.9
    np.testing.assert_allclose(quantized[probability_columns(quantized)].sum(axis=1), 1, atol=1e-4)


def test_int8_bundle_serves(int8: QuantizeResult, small_dataset: Path) -> None:
    from fastapi.testclient import TestClient

    from landsight.serve.app import create_app

    bundle = load_bundle(int8.bundle_path)
    path = Path(_paths(small_dataset)[0])
    with TestClient(create_app(int8.bundle_path)) as client:
        r = client.post("/predict", content=path.read_bytes(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        body = r.json()
    want = bundle.predict([str(path)]).iloc[0]
    assert body["label"] == want["predicted"]
    assert body["probabilities"][want["predicted"]] == pytest.approx(want["confidence"], abs=1e-4)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from landsight.spark.session import get_session, stop_session

    session = get_session(
        "local[2]", {"spark.ui.enabled": "false", "spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "4"}
    )
    yield session
    stop_session()


def test_int8_bundle_scores_on_spark_like_locally(spark, int8: QuantizeResult, small_dataset: Path, tmp_path) -> None:  # noqa: ANN001
    from landsight import spark as ls

    paths = _paths(small_dataset)[::3]
    ls.predict(int8.bundle_path, paths, out=tmp_path / "spark.parquet", spark=spark, track=False)
    rows = pd.read_parquet(tmp_path / "spark.parquet").sort_values("path").reset_index(drop=True)
    local = load_bundle(int8.bundle_path).predict(paths).sort_values("path").reset_index(drop=True)
    assert list(rows.columns) == list(local.columns)
    assert list(rows["predicted"]) == list(local["predicted"])
    np.testing.assert_allclose(rows["confidence"], local["confidence"], atol=1e-4)


def test_head_refit_fits_the_int8_features(int8: QuantizeResult, trained, tmp_path: Path) -> None:  # noqa: ANN001
    """The shipped head is the one a scikit-learn fit on the int8 backbone's features gives; opt-out keeps it."""
    import onnx
    import onnx.utils
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from landsight.classify.quantize import ClassificationQuantizeData
    from landsight.runtime import OnnxModel

    bundle = load_bundle(int8.bundle_path)
    data = ClassificationQuantizeData(load_bundle(trained.bundle_path), None, 10, None, 0, False)
    paths, labels = data._head_images()  # type: ignore[misc]
    backbone = tmp_path / "backbone.onnx"
    onnx.utils.extract_model(str(int8.bundle_path / "model.onnx"), str(backbone), ["image"], ["features"])
    from landsight.data.readers import read_image

    images = np.stack([bundle.preprocessing.resize(read_image(p).array) for p in paths])
    X = np.asarray(OnnxModel(backbone, device="cpu")(images))
    C = bundle.meta["head"]["params"]["C"]
    by_hand = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(X, labels)
    np.testing.assert_allclose(bundle.predict_proba(images), by_hand.predict_proba(X), atol=2e-3)

    kept = quantize_bundle(trained.bundle_path, tmp_path / "kept.landsight", max_drop=None, refit_head=False)
    meta = json.loads((kept.bundle_path / BUNDLE_FILE).read_text())
    assert meta["head"] == load_bundle(trained.bundle_path).meta["head"]
    assert meta["quantization"]["head_refit"] == "not asked"


def _sample_images(trained, small_dataset: Path) -> np.ndarray:  # noqa: ANN001
    """The 36 real EuroSAT tiles, resized as the bundle scores them: uint8 (36, 224, 224, 3)."""
    from landsight.data.readers import read_image

    bundle = load_bundle(trained.bundle_path)
    return np.stack([bundle.preprocessing.resize(read_image(p).array) for p in _paths(small_dataset)])


def test_int8_graph_takes_the_image_bytes_directly(int8: QuantizeResult, trained, small_dataset: Path,
                                                   tmp_path: Path) -> None:  # noqa: ANN001  # fmt: skip
    """lite0's normalisation (x / 127.5 - 1) is a uint8 quantization: the bytes feed the first QLinearConv.

    Checked against the graph the quantizer made before the rewrite (same calibration): the first
    convolution is closer to float32 (the bytes are its exact input, less a constant offset the
    bias absorbs; the quantizer rounds the normalised image to its calibrated step), and the two
    graphs' probabilities agree.
    """
    from unittest import mock

    import onnx

    from landsight.models import onnx_graph
    from landsight.models.quantize import prepared_float_model, quantize_int8
    from landsight.runtime import OnnxModel

    meta = json.loads((int8.bundle_path / BUNDLE_FILE).read_text())
    assert meta["quantization"]["input"] == {"image_bytes_direct": True, "scale": round(1 / 127.5, 8),
                                             "zero_point": 128, "offset": round(0.5 / 127.5, 8),
                                             "bias_corrected": 1}  # fmt: skip
    ops = [n.op_type for n in onnx.load(str(int8.bundle_path / "model.onnx")).graph.node]
    assert "Cast" not in ops and "Div" not in ops and "Sub" not in ops

    images = _sample_images(trained, small_dataset)
    float_model = prepared_float_model(trained.bundle_path / "model.onnx", tmp_path)
    before = tmp_path / "before.onnx"
    with mock.patch.object(onnx_graph, "bytes_into_first_qconv", return_value=None):
        assert "float normalisation" in quantize_int8(float_model, before, images[:16], method="minmax", keep_float=())
    after = tmp_path / "after.onnx"
    after.write_bytes(before.read_bytes())
    record = onnx_graph.bytes_into_first_qconv(after)
    assert record is not None and record["zero_point"] == 128

    def first_conv(path: Path) -> np.ndarray:
        """The first convolution's float output (exposing it stops the int8 fusion there, not the arithmetic)."""
        import onnxruntime as ort

        model = onnx.load(str(path))
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        model.graph.output.append(onnx.helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run([conv.output[0]], {"image": images[:8]})[0][..., 1:-1, 1:-1]  # interior: no padding

    exact = first_conv(float_model)
    error_before = np.abs(first_conv(before) - exact).max()
    error_after = np.abs(first_conv(after) - exact).max()
    assert error_after < error_before  # the bytes are the exact input; the quantizer's rounding of it is not

    p_before = np.asarray(OnnxModel(before, device="cpu")(images))
    p_after = np.asarray(OnnxModel(after, device="cpu")(images))
    assert (p_before.argmax(1) == p_after.argmax(1)).mean() >= 0.9
    assert np.abs(p_before - p_after).mean() < 0.02


def test_bytes_rewrite_leaves_per_band_normalisation_alone(tmp_path: Path) -> None:
    """ImageNet's per-band mean / std is no single uint8 scale: the graph is left as quantized (synthetic net)."""
    import torch

    from landsight.models.modules import ImageInput
    from landsight.models.onnx_graph import bytes_into_first_qconv
    from landsight.models.quantize import quantize_int8

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)  # synthetic
    for mean, std, rewritten in (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False), ((0.5,) * 3, (0.5,) * 3, True)):
        torch.manual_seed(0)
        net = ImageInput(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                             torch.nn.Conv2d(8, 4, 3)), mean, std).eval()  # fmt: skip
        float_model = tmp_path / f"float-{rewritten}.onnx"
        torch.onnx.export(net, (torch.from_numpy(samples[:1]),), str(float_model), input_names=["image"],
                          output_names=["out"], dynamic_axes={"image": {0: "n"}}, dynamo=False)  # fmt: skip
        out = tmp_path / f"int8-{rewritten}.onnx"
        with mock_rewrite_off():
            quantize_int8(float_model, out, samples, method="minmax", keep_float=())
        before = out.read_bytes()
        record = bytes_into_first_qconv(out)
        assert (record is not None) == rewritten
        if not rewritten:
            assert out.read_bytes() == before
        else:
            from landsight.runtime import OnnxModel

            expected = net(torch.from_numpy(samples)).detach().numpy()
            got = np.asarray(OnnxModel(out, device="cpu")(samples))
            assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def mock_rewrite_off():  # noqa: ANN201
    """Quantize without the bytes rewrite (to apply it by hand after)."""
    from unittest import mock

    from landsight.models import onnx_graph

    return mock.patch.object(onnx_graph, "bytes_into_first_qconv", return_value=None)


def test_constant_calibration_image_is_refused_and_nothing_written(trained, tmp_path: Path) -> None:  # noqa: ANN001
    calib = tmp_path / "calibration"
    calib.mkdir()
    # Mid-grey is the normalisation's zero: every activation the calibration sees is bias alone, so the
    # calibrated ranges clip real images. (The head refit is off: fitted on the clipped features, it
    # recovers much of the loss, which is not what this test is about.)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(calib / "synthetic_constant.png")
    out = tmp_path / "bad-int8.landsight"
    with pytest.raises(QuantizationDropError, match="max_drop=1") as info:
        quantize_bundle(trained.bundle_path, out, calibration=calib, refit_head=False)
    assert info.value.drop > 1 and isinstance(info.value, LandsightValueError)
    assert not out.exists()


def test_bad_arguments_and_quantizing_twice_are_refused(trained, int8: QuantizeResult, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(LandsightValueError, match="precision"):
        quantize_bundle(trained.bundle_path, tmp_path / "x.landsight", precision="int4")
    with pytest.raises(LandsightValueError, match="method"):
        quantize_bundle(trained.bundle_path, tmp_path / "x.landsight", method="mse")
    with pytest.raises(LandsightValueError, match="already int8"):
        quantize_bundle(int8.bundle_path, tmp_path / "x.landsight")


def test_fp16_bundle_keeps_its_io_and_is_flagged_gpu_only(trained, small_dataset: Path, tmp_path: Path) -> None:  # noqa: ANN001
    result = quantize_bundle(trained.bundle_path, tmp_path / "fp16.landsight", precision="fp16", max_drop=None)
    meta = json.loads((result.bundle_path / BUNDLE_FILE).read_text())
    assert meta["precision"] == "fp16" and meta["quantization"]["fast_on"] == "cuda" and meta["calibration"] == {}
    paths = _paths(small_dataset)[:6]
    fp32 = load_bundle(trained.bundle_path).predict(paths)
    half = load_bundle(result.bundle_path).predict(paths)
    assert list(half["predicted"]) == list(fp32["predicted"])
    np.testing.assert_allclose(half["confidence"], fp32["confidence"], atol=2e-2)


# --- segmentation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_bundle(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A U-Net trained for one tiny epoch on 6 real Chesapeake pairs (2 held out), as in test_segment.py."""
    from landsight.segment.train import train_segmentation

    ches = shared_data / "chesapeake"
    if not (ches / "train" / "images").is_dir():
        pytest.skip(f"Chesapeake data not found under {ches}")
    out = tmp_path_factory.mktemp("segq") / "lc.landsight"
    train_segmentation(
        str(ches / "train/images/*.tif"), str(ches / "train/labels/*_lc.tif"), classes="chesapeake", out=out,
        bands=(1, 2, 3, 4), epochs=1, chip_size=64, chips_per_epoch=8, val_chips=4, batch_size=4, context=32,
        oversample=0.5, val_size=0.25, progress=False, track=False,
    )  # fmt: skip
    return out


def test_segmentation_bundle_quantizes_and_predicts(seg_bundle: Path, shared_data: Path, tmp_path: Path) -> None:
    import rasterio

    result = quantize_bundle(seg_bundle, tmp_path / "lc-int8.landsight", n_calibration=8, max_drop=None)
    meta = json.loads((result.bundle_path / BUNDLE_FILE).read_text())
    assert meta["task"] == "segmentation" and meta["precision"] == "int8"
    assert meta["calibration"]["n"] == 6 and "train rasters" in meta["calibration"]["source"]  # one window per patch
    q = meta["quantization"]
    assert q["metric"] == "pixel_accuracy" and q["n_test"] > 100_000 and "mean_iou_drop" in q
    assert not (result.bundle_path / "weights.safetensors").exists()  # float weights do not match the graph
    bundle = load_bundle(result.bundle_path)
    raster = sorted((shared_data / "chesapeake/train/images").glob("*.tif"))[0]
    out = bundle.predict(raster, tmp_path / "map.tif", progress=False)
    with rasterio.open(out) as src, rasterio.open(raster) as ref:
        assert (src.height, src.width) == (ref.height, ref.width)


def test_quantize_command_refuses_a_bad_drop_with_one_line(trained, small_dataset: Path, tmp_path: Path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    const = tmp_path / "constant"
    const.mkdir()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(const / "grey.png")
    out = tmp_path / "bad-int8.landsight"
    r = subprocess.run([sys.executable, "-m", "landsight", "quantize", str(trained.bundle_path), "--out", str(out),
                        "--calibration", str(const), "--no-refit-head", "--max-drop", "0", "--test", str(small_dataset),
                        "-q"],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists(), r.stderr


def test_train_and_finetune_precision_int8_write_a_checked_sibling(small_dataset: Path, tmp_path: Path) -> None:
    """``--precision int8`` keeps the float32 bundle at --out and writes OUT-int8.landsight, drop checked."""
    from typer.testing import CliRunner

    from landsight.cli import app

    runner = CliRunner()
    out = tmp_path / "m.landsight"
    bad = runner.invoke(app, ["train", str(small_dataset), "--out", str(out), "--precision", "int4", "-q"])
    assert bad.exit_code == 2 and "--precision" in bad.output and not out.exists()  # refused before training
    common = ["--precision", "int8", "--max-drop", "100", "--no-track", "-q"]
    r = runner.invoke(app, ["train", str(small_dataset), "--out", str(out), "--fast", *common])
    assert r.exit_code == 0, r.output
    sibling = tmp_path / "m-int8.landsight"
    assert load_bundle(out).meta.get("precision", "fp32") == "fp32"
    q = load_bundle(sibling).meta
    assert q["precision"] == "int8" and q["quantization"]["n_test"] == load_bundle(out).meta["metrics"]["n"]
    assert "int8 bundle" in r.output
    # finetune: the bundle records no reproducible split, so its own test images are handed over
    tuned = tmp_path / "t.landsight"
    r = runner.invoke(app, ["finetune", str(small_dataset), "--out", str(tuned), "--retrain", "last", "--epochs", "1",
                            "--num-workers", "0", *common])  # fmt: skip
    assert r.exit_code == 0, r.output
    tq = load_bundle(tmp_path / "t-int8.landsight").meta
    assert tq["precision"] == "int8" and tq["quantization"]["n_test"] == load_bundle(tuned).meta["metrics"]["n"]
    assert tq["quantization"]["head_refit"].startswith("not refit")  # the fine-tuned head is part of the network
    again = runner.invoke(app, ["train", str(small_dataset), "--out", str(out), "--overwrite", "--fast", *common[:2]])
    assert again.exit_code == 0, again.output  # --overwrite replaces both
    before = (sibling / BUNDLE_FILE).read_bytes()
    refused = runner.invoke(app, ["train", str(small_dataset), "--out", str(out), "--overwrite", "--fast", "-q",
                                  "--no-track", "--precision", "int8", "--max-drop", "-100"])  # fmt: skip
    assert isinstance(refused.exception, QuantizationDropError)  # exit code 2 in the shell (test above)
    assert "float32 bundle" in str(refused.exception) and "copy was refused" in str(refused.exception)
    assert (sibling / BUNDLE_FILE).read_bytes() == before and load_bundle(out).meta["task"] == "classification"
