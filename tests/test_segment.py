"""Pixel-level land cover (issue 6): class maps, pairing, chips, training, windowed prediction, evaluation.

Real imagery: ../shared/data/chesapeake (4-band NAIP + Chesapeake land cover) and
../shared/data/dubai_aerial (RGB + colour masks). Rasters made here are named synthetic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from landsight.errors import DataNotFoundError, LandsightValueError
from landsight.segment.classmap import IGNORE_INDEX, NODATA_CODE, load_class_map
from landsight.segment.pairs import pair_rasters
from landsight.segment.raster import open_raster, read_labels

CHES_TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"


@pytest.fixture(scope="module")
def ches(shared_data: Path) -> Path:
    root = shared_data / "chesapeake"
    if not (root / "train" / "images").is_dir():
        pytest.skip(f"Chesapeake data not found under {root}")
    return root


@pytest.fixture(scope="module")
def dubai(shared_data: Path) -> Path:
    root = shared_data / "dubai_aerial"
    if not root.is_dir():
        pytest.skip(f"Dubai data not found under {root}")
    return root


@pytest.fixture(scope="module")
def trained(ches: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A U-Net bundle trained for one tiny epoch on 6 real Chesapeake pairs (2 held out)."""
    from landsight.segment.train import train_segmentation

    out = tmp_path_factory.mktemp("seg") / "lc.landsight"
    return train_segmentation(
        str(ches / "train/images/*.tif"), str(ches / "train/labels/*_lc.tif"), classes="chesapeake", out=out,
        bands=(1, 2, 3, 4), epochs=1, chip_size=64, chips_per_epoch=8, val_chips=4, batch_size=4, context=32,
        oversample=0.5, val_size=0.25, progress=False, track=False,
    )  # fmt: skip


def _synthetic_bundle(folder: Path, bands: int = 4, nodata_aware: bool = True):  # noqa: ANN202
    """A bundle whose network is a fixed 1x1 convolution: class k wins where band k is the largest.

    Untrained on purpose (synthetic): used where the arithmetic, not accuracy, is under test.
    """
    import torch

    from landsight.segment.model import SegmentationNet
    from landsight.segment.train import write_segmentation_bundle

    conv = torch.nn.Conv2d(bands, bands, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(bands).view(bands, bands, 1, 1) * 10)
    net = SegmentationNet(conv, [0.0] * bands, [1.0] * bands)
    class_map = {"name": "synthetic", "ignore": {"codes": [0]},
                 "classes": [{"code": k + 1, "name": f"c{k + 1}", "colour": [40 * k, 100, 200]} for k in range(bands)]}
    meta = {"class_map": class_map, "bands": list(range(1, bands + 1)), "chip_size": 64, "context": None,
            "band_stats": {"bands": list(range(1, bands + 1)), "mean": [0.0] * bands, "std": [1.0] * bands,
                           "pixels": 1}}  # fmt: skip
    return write_segmentation_bundle(folder, net, meta)


# --- class maps, colour masks, pairing ---------------------------------------------------------


def test_chesapeake_class_map_lumps_4_to_6_and_ignores_unknown() -> None:
    cm = load_class_map("chesapeake")
    assert cm.names == ["water", "trees", "herbaceous", "barren_impervious"]
    codes = np.array([[0, 1, 2, 3, 4, 5, 6, 7]], dtype=np.uint8)
    assert cm.remap(codes).tolist() == [[IGNORE_INDEX, 0, 1, 2, 3, 3, 3, IGNORE_INDEX]]
    assert cm.remap(codes.astype(np.uint16)).tolist() == cm.remap(codes).tolist()
    assert cm.remap(np.array([[-1, 2, 70000]])).tolist() == [[IGNORE_INDEX, 1, IGNORE_INDEX]]
    assert cm.colormap()[NODATA_CODE] == (0, 0, 0, 0)


def test_class_map_file_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "classes.yaml"
    good.write_text("name: two\nclasses:\n  - {code: 1, name: a, colour: [1, 2, 3]}\n  - {code: 7, name: b}\n")
    cm = load_class_map(good)
    assert cm.codes == [1, 7] and cm.classes[1].codes == (7,)
    assert load_class_map(cm.to_dict()) == cm
    dup = tmp_path / "dup.yaml"
    dup.write_text("classes:\n  - {code: 1, name: a}\n  - {code: 2, name: b, codes: [1]}\n")
    with pytest.raises(LandsightValueError, match="unique"):
        load_class_map(dup)
    with pytest.raises(DataNotFoundError, match="missing.yaml"):
        load_class_map(tmp_path / "missing.yaml")


def test_dubai_colour_masks_convert_to_the_provided_codes(dubai: Path) -> None:
    """Every real Dubai mask (RGB and palette PNGs) maps to exactly its labels/*.png codes."""
    cm = load_class_map("dubai")
    to_code = cm.index_to_code()
    to_code[IGNORE_INDEX] = 0  # labels/*.png write unlabeled as 0
    masks = sorted(dubai.glob("tile_*/masks_rgb/*.png"))
    assert len(masks) == 54
    for mask in masks[::5] + [dubai / "tile_2/masks_rgb/image_part_001.png"]:  # tile 2 holds palette PNGs
        with open_raster(mask) as src:
            idx = read_labels(src, 0, 0, src.height, src.width, cm)
        with open_raster(mask.parent.parent / "labels" / mask.name) as src:
            codes = src.read(1)
        np.testing.assert_array_equal(to_code[idx], codes, err_msg=str(mask))
    # the colours of the dataset's classes.json are the wrong ones: they match no mask pixel
    wrong = json.loads((dubai / "classes.json").read_text())
    assert wrong  # present, and documented as wrong in the data README


def test_pairing_by_glob_and_csv(ches: Path, dubai: Path, tmp_path: Path) -> None:
    found = pair_rasters(str(ches / "train/images/*.tif"), str(ches / "train/labels/*_lc.tif"))
    assert len(found.pairs) == 8 and not found.skipped
    for p in found.pairs:
        assert Path(p.label).name == Path(p.image).stem + "_lc.tif" and (p.height, p.width) == (256, 256)
    both = pair_rasters(str(dubai / "tile_*/images/*.jpg"), str(dubai / "tile_*/labels/*.png"))
    assert len(both.pairs) == 54
    assert all(Path(p.image).parts[-3] == Path(p.label).parts[-3] for p in both.pairs)  # same tile
    csv = tmp_path / "pairs.csv"
    img, lab = found.pairs[0].image, found.pairs[0].label
    csv.write_text(f"image,label\n{img},{lab}\n{img},{ches / 'train/labels' / 'nope_lc.tif'}\n")
    from_csv = pair_rasters(csv)
    assert [p.image for p in from_csv.pairs] == [img]
    assert len(from_csv.skipped) == 1 and "does not exist" in from_csv.skipped[0][1]
    # a label of the wrong size is reported and skipped, never fatal
    csv.write_text(f"image,label\n{img},{lab}\n{ches / CHES_TILE.split('/', 1)[1]},{lab}\n")
    mixed = pair_rasters(csv)
    assert len(mixed.pairs) == 1 and "differs" in mixed.skipped[0][1]


# --- statistics and chips ---------------------------------------------------------------------


def _synthetic_uint16(path: Path, label_path: Path, size: int = 96) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (3, size, size), dtype=np.uint16)
    labels = np.zeros((size, size), dtype=np.uint16)
    labels[:, : size // 2] = 1
    labels[:, size // 2 :] = 1000  # uint16 codes
    labels[:8, :8] = 3  # a rare class
    profile = {"driver": "GTiff", "height": size, "width": size, "transform": from_origin(0, size, 1, 1),
               "crs": "EPSG:32617"}  # fmt: skip
    with rasterio.open(path, "w", count=3, dtype="uint16", **profile) as dst:
        dst.write(data)
    with rasterio.open(label_path, "w", count=1, dtype="uint16", **profile) as dst:
        dst.write(labels, 1)


def test_band_stats_windowed_equal_whole_raster(ches: Path) -> None:
    from landsight.segment.stats import band_stats

    paths = sorted((ches / "train/images").glob("*.tif"))[:2]
    stats = band_stats(paths, (1, 4), window=100)  # 100 px windows: several per raster, ragged edges
    whole = np.concatenate([rasterio.open(p).read([1, 4]).reshape(2, -1) for p in paths], axis=1).astype(float)
    np.testing.assert_allclose(stats.mean, whole.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, whole.std(axis=1), rtol=1e-9)
    assert stats.pixels == whole.shape[1] and stats.bands == (1, 4)


def test_band_stats_subsample_covers_rows_and_columns(tmp_path: Path) -> None:
    from landsight.segment.stats import band_stats

    data = np.zeros((1, 400, 400), dtype=np.uint8)
    data[0, :, 200:] = 100  # synthetic: left half 0, right half 100
    with rasterio.open(tmp_path / "synthetic_halves.tif", "w", driver="GTiff", height=400, width=400, count=1,
                       dtype="uint8") as dst:  # fmt: skip
        dst.write(data)
    stats = band_stats([tmp_path / "synthetic_halves.tif"], window=100, max_pixels=40_000)  # every 2nd block row/col
    assert stats.pixels == 4 * 100 * 100 and stats.mean == pytest.approx((50.0,))


def test_chips_context_oversampling_and_uint16(tmp_path: Path) -> None:
    from landsight.segment.chips import ChipDataset
    from landsight.segment.pairs import RasterPair
    from landsight.segment.stats import band_stats

    img, lab = tmp_path / "synthetic_u16.tif", tmp_path / "synthetic_u16_lc.tif"
    _synthetic_uint16(img, lab)
    cm = load_class_map({"classes": [{"code": 1, "name": "a"}, {"code": 2, "name": "b", "codes": [1000]},
                                     {"code": 3, "name": "rare"}]})  # fmt: skip
    pair = RasterPair(str(img), str(lab), 96, 96)
    assert band_stats([img]).mean[0] > 255  # uint16 values are not squeezed into uint8
    data = ChipDataset([pair], cm, chip_size=64, length=4, context=32, random_state=1)
    chip = data[0]
    x, y = chip["image"], chip["mask"]
    assert x.shape == (3, 64, 64) and x.dtype.is_floating_point and float(x.max()) > 255
    assert y.shape == (64, 64)
    assert (y[:16] == IGNORE_INDEX).all() and (y[:, 48:] == IGNORE_INDEX).all()  # outside the 32 px centre
    assert (y[16:48, 16:48] != IGNORE_INDEX).any()
    again = data[0]  # fixed random_state: the same chip again
    x2, y2 = again["image"], again["mask"]
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(y.numpy(), y2.numpy())
    # chips bigger than the raster are padded with the ignore index
    big = ChipDataset([pair], cm, chip_size=128, length=1, random_state=0)
    assert (big[0]["mask"][96:] == IGNORE_INDEX).all()
    # oversampling finds the 8x8 rare-class corner far more often than uniform sampling would
    rare = ChipDataset([pair], cm, chip_size=32, length=40, oversample=1.0, random_state=3)
    hits = sum(int((rare[i]["mask"] == 2).any()) for i in range(40))
    plain = ChipDataset([pair], cm, chip_size=32, length=40, random_state=3)
    assert hits > sum(int((plain[i]["mask"] == 2).any()) for i in range(40)) and hits >= 10
    with pytest.raises(LandsightValueError, match="context"):
        ChipDataset([pair], cm, chip_size=64, context=100)


# --- model ------------------------------------------------------------------------------------


def test_encoder_gets_imagenet_weights_adapted_to_four_bands() -> None:
    import torch

    from landsight.models.backbones import create_backbone
    from landsight.segment.model import build_model

    net, source = build_model(num_classes=3, in_chans=4, mean=[0.0] * 4, std=[1.0] * 4)
    assert source.startswith("imagenet:")
    reference = create_backbone("tf_efficientnet_lite0", in_chans=4).model
    torch.testing.assert_close(net.net.encoder.model.conv_stem.weight, reference.conv_stem.weight)
    last = net.net.encoder.model.blocks[6][0].conv_pwl.weight
    torch.testing.assert_close(last, reference.blocks[6][0].conv_pwl.weight)
    deeplab, _ = build_model(num_classes=3, in_chans=4, mean=[0.0] * 4, std=[1.0] * 4, arch="deeplabv3plus",
                             weights=None)  # fmt: skip
    with torch.no_grad():
        assert deeplab.eval()(torch.zeros(1, 4, 64, 96)).shape == (1, 3, 64, 96)  # raw logits, full size
    with pytest.raises(LandsightValueError, match="arch"):
        build_model(num_classes=3, in_chans=4, mean=[0.0] * 4, std=[1.0] * 4, arch="fcn")


# --- training and the bundle ------------------------------------------------------------------


def test_training_writes_a_segmentation_bundle(trained) -> None:  # noqa: ANN001
    from landsight import load_bundle
    from landsight.segment.bundle import SegmentationBundle

    meta = json.loads((trained.bundle_path / "bundle.json").read_text())
    assert meta["task"] == "segmentation" and meta["bands"] == [1, 2, 3, 4]
    assert meta["chip_size"] == 64 and meta["context"] == 32
    assert len(meta["band_stats"]["mean"]) == 4 and meta["band_stats"]["pixels"] == 6 * 256 * 256
    assert len(meta["data"]["train"]) == 6 and len(meta["data"]["val"]) == 2
    assert meta["class_map"]["classes"][3]["codes"] == [4, 5, 6]
    assert len(trained.history) == 1 and np.isfinite(trained.history[0]["train_loss"])
    assert trained.history[0]["samples_per_second"] > 0
    from safetensors.torch import load_file

    from landsight.segment.model import build_model

    net, _ = build_model(num_classes=4, in_chans=4, mean=[0.0] * 4, std=[1.0] * 4, weights=None)
    net.load_state_dict(load_file(str(trained.bundle_path / "weights.safetensors")), strict=True)
    np.testing.assert_allclose(net.mean.numpy().ravel(), meta["band_stats"]["mean"], rtol=1e-6)
    bundle = load_bundle(trained.bundle_path)
    assert isinstance(bundle, SegmentationBundle) and bundle.classes == load_class_map("chesapeake").names
    for h, w in ((64, 64), (96, 160)):  # dynamic height and width
        p = bundle.predict_proba(np.zeros((2, 4, h, w), dtype=np.uint8))
        assert p.shape == (2, 4, h, w)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-4)
    m = trained.metrics
    assert 0 <= m["pixel_accuracy"] <= 1 and m["n_pixels"] == 2 * 256 * 256
    assert (trained.bundle_path / "segmentation_metrics.json").is_file()


def test_resume_continues_from_the_checkpoint(ches: Path, trained) -> None:  # noqa: ANN001
    from landsight.segment.train import train_segmentation

    ckpt = Path(f"{trained.bundle_path}.checkpoints")
    assert (ckpt / "last.ckpt").is_file()
    again = train_segmentation(
        str(ches / "train/images/*.tif"), str(ches / "train/labels/*_lc.tif"), out=trained.bundle_path,
        bands=(1, 2, 3, 4), epochs=2, chip_size=64, chips_per_epoch=4, val_chips=4, batch_size=4, context=32,
        val_size=0.25, resume=True, progress=False, track=False,
    )  # fmt: skip
    assert [int(r["epoch"]) for r in again.history] == [0, 1]  # epoch 0 from the first run, 1 new


def test_ddp_two_processes_train_on_their_own_chips(ches: Path, tmp_path: Path) -> None:
    import torch

    from landsight.segment.chips import ChipDataset
    from landsight.segment.train import train_segmentation

    pairs = pair_rasters(str(ches / "train/images/*.tif"), str(ches / "train/labels/*_lc.tif")).pairs
    data = ChipDataset(pairs, load_class_map("chesapeake"), chip_size=64, length=8)
    torch.manual_seed(0)
    a = data[0]["image"]
    torch.manual_seed(0)  # DDP ranks share the seed; their sampler indices differ, and so do their chips
    assert not torch.equal(a, data[1]["image"])
    result = train_segmentation(
        str(ches / "train/images/*.tif"), str(ches / "train/labels/*_lc.tif"), out=tmp_path / "ddp.landsight",
        epochs=1, chip_size=64, chips_per_epoch=8, val_chips=4, batch_size=2, devices=2, progress=False, track=False,
    )  # fmt: skip
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    assert json.loads((result.bundle_path / "bundle.json").read_text())["training"]["devices"] == 2


def test_deeplabv3plus_trains_exports_and_maps_a_real_tile(ches: Path, tmp_path: Path) -> None:
    from landsight import load_bundle
    from landsight.segment.train import train_segmentation

    result = train_segmentation(
        str(ches / "train/images/*.tif"), str(ches / "train/labels/*_lc.tif"), out=tmp_path / "dl.landsight",
        arch="deeplabv3plus", epochs=1, chip_size=64, chips_per_epoch=8, val_chips=4, batch_size=4, progress=False,
        track=False,
    )  # fmt: skip
    assert json.loads((result.bundle_path / "bundle.json").read_text())["network"]["arch"] == "deeplabv3plus"
    src_path = ches / CHES_TILE.split("/", 1)[1]  # 260 x 260: not a multiple of the ONNX graph's stride
    out = load_bundle(result.bundle_path).predict(src_path, tmp_path / "lc.tif", window_size=128, progress=False)
    with rasterio.open(src_path) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert set(np.unique(dst.read(1))) <= {1, 2, 3, 4}


# --- prediction -------------------------------------------------------------------------------


@pytest.mark.parametrize("cog", [False, True])
def test_predict_keeps_crs_transform_and_writes_colour_table(trained, ches: Path, tmp_path: Path, cog: bool) -> None:  # noqa: ANN001
    from landsight import load_bundle

    src_path = ches / CHES_TILE.split("/", 1)[1]
    out, probs = tmp_path / "landcover.tif", tmp_path / "probs.tif"
    load_bundle(trained.bundle_path).predict(src_path, out, probabilities=probs, cog=cog, window_size=128,
                                             progress=False)  # fmt: skip
    with rasterio.open(src_path) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 26917
        assert dst.transform == src.transform  # exactly
        assert (dst.width, dst.height, dst.count, dst.dtypes[0]) == (260, 260, 1, "uint8")
        assert dst.nodata == NODATA_CODE
        cmap = dst.colormap(1)
        assert cmap[1] == (0, 112, 255, 255) and cmap[4] == (156, 156, 156, 255)
        codes = dst.read(1)
        assert set(np.unique(codes)) <= {1, 2, 3, 4}  # no nodata in this tile, Chesapeake output codes
        if cog:
            assert dst.driver == "GTiff" and dst.profile.get("tiled") and "LAYOUT" in dst.tags(ns="IMAGE_STRUCTURE")
    with rasterio.open(probs) as p:
        assert p.count == 4 and p.descriptions == tuple(load_class_map("chesapeake").names)
        assert p.crs == src.crs and p.transform == src.transform
        # the class written is the most probable one
        stack = p.read()
        np.testing.assert_array_equal(np.array([1, 2, 3, 4])[stack.argmax(0)][stack.max(0) > 127],
                                      codes[stack.max(0) > 127])  # fmt: skip


def test_tiles_stitch_seamlessly_and_nodata_is_kept(tmp_path: Path) -> None:
    """A synthetic raster: tiling must not change a per-pixel model's map, and nodata stays nodata."""
    bundle = _synthetic_bundle(tmp_path / "synthetic.landsight")
    rng = np.random.default_rng(0)
    data = rng.integers(1, 250, (4, 300, 250), dtype=np.uint8)
    data[:, 100:140, 60:90] = 0  # nodata hole
    path = tmp_path / "synthetic.tif"
    with rasterio.open(path, "w", driver="GTiff", height=300, width=250, count=4, dtype="uint8", nodata=0,
                       crs="EPSG:32617", transform=from_origin(500000, 4000000, 0.6, 0.6)) as dst:  # fmt: skip
        dst.write(data)
    out = bundle.predict(path, tmp_path / "synthetic_map.tif", window_size=96, progress=False)
    with rasterio.open(out) as dst:
        codes = dst.read(1)
        assert dst.transform == from_origin(500000, 4000000, 0.6, 0.6)
    expected = data.argmax(axis=0) + 1
    hole = np.zeros_like(codes, dtype=bool)
    hole[100:140, 60:90] = True
    assert (codes[hole] == NODATA_CODE).all()
    np.testing.assert_array_equal(codes[~hole], expected[~hole])


def test_evaluation_metrics_by_hand(tmp_path: Path) -> None:
    from landsight.segment.evaluate import confusion, evaluate_segmentation, segmentation_metrics
    from landsight.segment.pairs import RasterPair

    y_true = np.array([0, 0, 1, 1, IGNORE_INDEX], dtype=np.uint8)
    y_pred = np.array([0, 1, 1, 1, 0])
    cm = confusion(y_true, y_pred, 2)
    assert cm.tolist() == [[1, 1], [0, 2]]
    m = segmentation_metrics(cm, ["a", "b"])
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)
    assert m["per_class"]["a"]["iou"] == pytest.approx(1 / 2) and m["per_class"]["b"]["iou"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["f1"] == pytest.approx(2 / 3) and m["per_class"]["b"]["f1"] == pytest.approx(4 / 5)
    assert m["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)

    # whole-raster evaluation through the windowed predictor, on a synthetic raster with known errors
    bundle = _synthetic_bundle(tmp_path / "synthetic.landsight", bands=2)
    image = np.zeros((2, 64, 64), dtype=np.uint8)
    image[0, :, :32], image[1, :, 32:] = 200, 200  # model: left half class 1, right half class 2
    labels = np.ones((64, 64), dtype=np.uint8)
    labels[:, 32:] = 2
    labels[:16, 32:] = 1  # 512 pixels labelled 1 but predicted 2
    labels[60:, :] = 0  # 256 pixels unknown: ignored
    for name, arr, count in (("synthetic_img.tif", image, 2), ("synthetic_lab.tif", labels[None], 1)):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", height=64, width=64, count=count,
                           dtype="uint8") as dst:  # fmt: skip
            dst.write(arr)
    pair = RasterPair(str(tmp_path / "synthetic_img.tif"), str(tmp_path / "synthetic_lab.tif"), 64, 64)
    got = evaluate_segmentation(bundle, [pair], window_size=96, progress=False)
    # counted: 64*60 = 3840; class 1 true: 60*32 + 16*32 = 2432 (1920 right), class 2 true: 44*32 = 1408
    assert got["n_pixels"] == 3840
    assert got["confusion_matrix"] == [[1920, 512], [0, 1408]]
    assert got["pixel_accuracy"] == pytest.approx(3328 / 3840)
    assert got["per_class"]["c2"]["iou"] == pytest.approx(1408 / (1408 + 512))


def test_label_nodata_is_ignored_and_metrics_json_is_strict(tmp_path: Path) -> None:
    from landsight.segment.evaluate import evaluate_segmentation
    from landsight.segment.pairs import RasterPair

    bundle = _synthetic_bundle(tmp_path / "synthetic.landsight", bands=2)
    image = np.zeros((2, 64, 64), dtype=np.uint8)
    image[0, :, :32], image[1, :, 32:] = 200, 200  # model: left half class 1, right half class 2
    labels = np.ones((1, 64, 64), dtype=np.uint8)
    labels[0, :, 32:] = 2  # code 2 is a class, but this label raster declares 2 as its nodata
    for name, arr, nodata in (("synthetic_img.tif", image, None), ("synthetic_lab.tif", labels, 2)):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", height=64, width=64, count=len(arr),
                           dtype="uint8", nodata=nodata) as dst:  # fmt: skip
            dst.write(arr)
    pair = RasterPair(str(tmp_path / "synthetic_img.tif"), str(tmp_path / "synthetic_lab.tif"), 64, 64)
    got = evaluate_segmentation(bundle, [pair], window_size=96, progress=False, write_to=tmp_path / "ev")
    assert got["n_pixels"] == 64 * 32 and got["confusion_matrix"] == [[2048, 0], [0, 0]]
    text = (tmp_path / "ev" / "segmentation_metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["per_class"]["c2"]["iou"] is None  # no c2 pixels: undefined
    with pytest.raises(LandsightValueError, match="no mask_colours"):
        load_class_map({"name": "coded", "classes": [{"code": 1, "name": "a"}]}).colours_to_index(
            np.zeros((4, 4, 3), np.uint8)
        )


def test_cli_train_predict_and_evaluate(trained, ches: Path, dubai: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from landsight.cli import app

    runner = CliRunner()
    # train from RGB colour masks (Dubai, 3 images of tile 1; one held out for validation)
    out_bundle = tmp_path / "dubai.landsight"
    res = runner.invoke(app, ["segment", "train", "--images", str(dubai / "tile_1/images/image_part_00[123].jpg"),
                              "--labels", str(dubai / "tile_1/masks_rgb/image_part_00[123].png"), "--classes", "dubai",
                              "--epochs", "1", "--chip-size", "64", "--chips-per-epoch", "4", "--val-chips", "2",
                              "--batch-size", "2", "--out", str(out_bundle), "--quiet", "--no-track"])  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = json.loads((out_bundle / "bundle.json").read_text())
    assert meta["bands"] == [1, 2, 3] and meta["class_map"]["name"] == "dubai"
    assert len(meta["data"]["train"]) == 2 and len(meta["data"]["val"]) == 1
    out = tmp_path / "cli_map.tif"
    res = runner.invoke(app, ["segment", "predict", str(trained.bundle_path), str(ches / CHES_TILE.split("/", 1)[1]),
                              "--out", str(out), "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 26917
    res = runner.invoke(app, ["segment", "evaluate", str(trained.bundle_path), "--images",
                              str(ches / "tile_downsampled/*_naip-new.tif"), "--labels",
                              str(ches / "tile_downsampled/*_lc.tif"), "--out", str(tmp_path / "ev"), "--quiet",
                              "--no-track"])  # fmt: skip
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "segmentation_metrics.json").read_text())
    assert metrics["n_pixels"] > 60000 and "mean_iou" in metrics and len(metrics["confusion_matrix"]) == 4
    bad = runner.invoke(app, ["segment", "evaluate", str(trained.bundle_path), "--images", str(tmp_path / "no*.tif"),
                              "--labels", str(tmp_path / "no*_lc.tif"), "--no-track", "--quiet"])  # fmt: skip
    assert bad.exit_code != 0


# --- memory on a synthetic raster too big to hold ----------------------------------------------

# Peak RSS from VmHWM, which starts afresh at exec (ru_maxrss would carry over the forking
# pytest process's own peak).
_MEASURE = textwrap.dedent(
    """
    import re, sys
    from landsight import load_bundle
    load_bundle(sys.argv[1]).predict(sys.argv[2], sys.argv[3], window_size=576, batch_size=2, progress=False)
    print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    """
)


@pytest.mark.slow
def test_synthetic_20000_raster_predicts_with_bounded_memory(tmp_path: Path) -> None:
    """20,000 x 20,000 x 4 uint8 (1.6 GB in memory) predicts in a few hundred MB of peak RSS."""
    from rasterio.windows import Window

    size = 20_000
    path = tmp_path / "synthetic_20000.tif"
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 4, "dtype": "uint8", "nodata": 0,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES",
               "crs": "EPSG:26917", "transform": from_origin(600000, 4400000, 1.0, 1.0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, 2048):  # a cheap pattern: one band dominates per stripe, a nodata stripe
            h = min(2048, size - r)
            stripe = np.full((4, h, size), 10, dtype=np.uint8)
            stripe[(r // 2048) % 4] = 200
            if r == 4096:
                stripe[:] = 0
            dst.write(stripe, window=Window(0, r, size, h))
    bundle = _synthetic_bundle(tmp_path / "synthetic.landsight")
    out = tmp_path / "synthetic_20000_map.tif"
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(bundle.path), str(path), str(out)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
    in_memory_mb = size * size * 4 / 2**20
    assert peak_mb < in_memory_mb / 3, f"peak RSS {peak_mb:.0f} MB for a {in_memory_mb:.0f} MB raster"
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (size, size) and dst.crs.to_epsg() == 26917
        assert dst.read(1, window=Window(0, 0, 512, 512)).max() == 1
        assert (dst.read(1, window=Window(7000, 4096, 256, 256)) == NODATA_CODE).all()
        assert (dst.read(1, window=Window(19_000, 2048 * 3, 256, 256)) == 4).all()
