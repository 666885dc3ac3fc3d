"""Issue 15: never lose or mix up a user's data (predictions tables, segmentation outputs, damaged rasters, FIFOs).

Real imagery: the package's EuroSAT sample (``small_dataset`` / ``trained`` of conftest) and the
Chesapeake NAIP rasters of ../shared/data. A truncated raster is a real NAIP GeoTIFF cut to 60 %
of its bytes; the segmentation bundle used where accuracy does not matter is a synthetic fixed
1x1 convolution (named so below).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from landsight.classify.bundle import Bundle
from landsight.classify.predict import predict
from landsight.errors import ImageReadError, LandsightValueError, OutputExistsError
from landsight.predictions import read_metadata, read_table

CHES_TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_sha(bundle_path: Path) -> str:
    return _digest(Path(bundle_path) / "model.onnx")


@pytest.fixture()
def tiles(small_dataset: Path, tmp_path: Path) -> Path:
    """9 real EuroSAT tiles in one folder."""
    root = tmp_path / "tiles"
    root.mkdir()
    for i, f in enumerate(sorted(small_dataset.rglob("*.jpg"))[::4]):
        shutil.copy(f, root / f"tile_{i:02d}.jpg")
    return root


@pytest.fixture(scope="module")
def other_bundle(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second real bundle (2 of the 3 classes), so a different model and class list from ``trained``."""
    from landsight.classify.train import train

    data = tmp_path_factory.mktemp("two_classes")
    for cls in ("Forest", "River"):
        shutil.copytree(small_dataset / cls, data / cls)
    out = tmp_path_factory.mktemp("bundles_b") / "b.landsight"
    return train(data, out=out, test_size=0.25, progress=False, track=False).bundle_path


@pytest.fixture()
def count_scored(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths passed to ``Bundle.predict`` (what a run actually scores)."""
    seen: list[str] = []
    real = Bundle.predict

    def counting(self, paths, **kw):  # noqa: ANN001, ANN202
        seen.extend(paths)
        return real(self, paths, **kw)

    monkeypatch.setattr(Bundle, "predict", counting)
    return seen


# --- 1. honest resume of classify.predict --------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_resume_with_another_bundle_is_refused_and_overwrite_starts_afresh(
    trained: Any, other_bundle: Path, tiles: Path, tmp_path: Path, suffix: str, count_scored: list[str]
) -> None:
    out = tmp_path / f"p{suffix}"
    first = predict(trained.bundle_path, tiles, out=out, progress=False, track=False)
    assert set(first["predicted"]) <= {"Forest", "River", "SeaLake"} and (first["error"] == "").all()
    meta = read_metadata(out)
    assert meta["landsight.model_sha256"] == _model_sha(trained.bundle_path)
    assert meta["landsight.classes"] == '["Forest", "River", "SeaLake"]'
    before = _digest(out)
    count_scored.clear()
    with pytest.raises(OutputExistsError) as info:
        predict(other_bundle, tiles, out=out, progress=False, track=False)
    message = str(info.value)
    assert str(trained.bundle_path) in message and str(other_bundle) in message and "--overwrite" in message
    assert count_scored == [] and _digest(out) == before  # nothing scored, A's table untouched
    fresh = predict(other_bundle, tiles, out=out, progress=False, track=False, overwrite=True)
    assert len(count_scored) == 9 and len(fresh) == 9
    assert "prob_SeaLake" not in fresh.columns and set(fresh["predicted"]) <= {"Forest", "River"}
    back = read_table(out)
    assert "prob_SeaLake" not in back.columns and len(back) == 9
    assert read_metadata(out)["landsight.model_sha256"] == _model_sha(other_bundle)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_error_rows_are_retried_and_good_rows_kept_on_resume(
    trained: Any, tiles: Path, small_dataset: Path, tmp_path: Path, suffix: str, count_scored: list[str]
) -> None:
    late = tiles / "late.jpg"
    late.write_bytes(b"")  # zero-byte: still being copied
    out = tmp_path / f"p{suffix}"
    first = predict(trained.bundle_path, tiles, out=out, progress=False, track=False)
    assert first.set_index("path").loc[str(late), "error"] != "" and (first["error"] != "").sum() == 1
    shutil.copy(sorted(small_dataset.rglob("*.jpg"))[1], late)  # the real image arrives
    count_scored.clear()
    again = predict(trained.bundle_path, tiles, out=out, progress=False, track=False)
    assert count_scored == [str(late)]  # only the failed row is scored again; CSV good rows stay good
    assert len(again) == 10 and again["path"].is_unique and (again["error"] == "").all()
    back = read_table(out)
    assert (back["error"] == "").all() and len(back) == 10
    assert back.set_index("path").loc[str(late), "predicted"] in {"Forest", "River", "SeaLake"}


def test_a_users_own_csv_is_never_merged_into(trained: Any, tiles: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{p},Forest\n" for p in sorted(tiles.iterdir())))
    no_path = tmp_path / "notes.csv"
    no_path.write_text("name,comment\na,b\n")
    for users in (labels, no_path):
        before = _digest(users)
        with pytest.raises(OutputExistsError, match="not a landsight predictions table"):
            predict(trained.bundle_path, tiles, out=users, progress=False, track=False)
        assert _digest(users) == before
        assert not Path(f"{users}.parts").exists()
    # a Parquet file of someone else's is refused too
    theirs = tmp_path / "theirs.parquet"
    pd.DataFrame({"path": [str(p) for p in sorted(tiles.iterdir())], "score": 1.0}).to_parquet(theirs)
    with pytest.raises(OutputExistsError, match="not a landsight predictions table"):
        predict(trained.bundle_path, tiles, out=theirs, progress=False, track=False)
    replaced = predict(trained.bundle_path, tiles, out=labels, progress=False, track=False, overwrite=True)
    assert list(read_table(labels).columns) == list(replaced.columns) and len(read_table(labels)) == 9


def test_crashed_parts_carry_provenance(
    trained: Any, other_bundle: Path, tiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "p.parquet"
    parts = tmp_path / "p.parquet.parts"
    real, calls = Bundle.predict, []

    def crash_on_second_chunk(self, paths, **kw):  # noqa: ANN001, ANN202
        calls.append(len(paths))
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(self, paths, **kw)

    monkeypatch.setattr(Bundle, "predict", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        predict(trained.bundle_path, tiles, out=out, chunk_size=4, progress=False, track=False)
    monkeypatch.setattr(Bundle, "predict", real)
    assert not out.exists() and len(list(parts.glob("part-*"))) == 1
    saved = {p.name: _digest(p) for p in parts.iterdir()}
    with pytest.raises(OutputExistsError) as info:
        predict(other_bundle, tiles, out=out, progress=False, track=False)
    assert str(parts) in str(info.value) and str(other_bundle) in str(info.value)
    assert {p.name: _digest(p) for p in parts.iterdir()} == saved
    # parts without their record (not written by this version of landsight) are refused too
    (parts / "_landsight.json").rename(tmp_path / "record.json")
    with pytest.raises(OutputExistsError, match="not a landsight predictions table"):
        predict(trained.bundle_path, tiles, out=out, progress=False, track=False)
    (tmp_path / "record.json").rename(parts / "_landsight.json")
    done = predict(trained.bundle_path, tiles, out=out, progress=False, track=False)
    assert len(done) == 9 and done["path"].is_unique and not parts.exists()


def test_output_that_is_an_input_is_refused(trained: Any, tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    predict(trained.bundle_path, tiles, out=out, progress=False, track=False)
    (tiles / "link.jpg").symlink_to(out)  # a listed "image" that is the output itself
    before = _digest(out)
    for overwrite in (False, True):
        with pytest.raises(LandsightValueError, match="also an input"):
            predict(trained.bundle_path, tiles, out=out, progress=False, track=False, overwrite=overwrite)
    assert _digest(out) == before


# --- 2. segment predict: atomic outputs, never over the input --------------------------------------


@pytest.fixture(scope="module")
def ches(shared_data: Path) -> Path:
    root = shared_data / "chesapeake"
    if not (root / "train" / "images").is_dir():
        pytest.skip(f"Chesapeake data not found under {root}")
    return root


@pytest.fixture(scope="module")
def synthetic_bundle(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Synthetic (untrained) 4-band bundle: a fixed 1x1 convolution, class k where band k is largest."""
    import torch

    from landsight.segment.model import SegmentationNet
    from landsight.segment.train import write_segmentation_bundle

    conv = torch.nn.Conv2d(4, 4, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1) * 10)
    net = SegmentationNet(conv, [0.0] * 4, [1.0] * 4)
    class_map = {
        "name": "synthetic",
        "ignore": {"codes": [0]},
        "classes": [{"code": k + 1, "name": f"c{k + 1}", "colour": [40 * k, 100, 200]} for k in range(4)],
    }
    meta = {"class_map": class_map, "bands": [1, 2, 3, 4], "chip_size": 64, "context": None,
            "band_stats": {"bands": [1, 2, 3, 4], "mean": [0.0] * 4, "std": [1.0] * 4, "pixels": 1}}  # fmt: skip
    return write_segmentation_bundle(tmp_path_factory.mktemp("synth") / "synthetic.landsight", net, meta)


def _truncated_copy(src: Path, dst: Path, keep: float = 0.6) -> Path:
    """A copy of a real raster cut to ``keep`` of its bytes: header intact, data truncated."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def test_segment_predict_refuses_to_write_over_its_input(synthetic_bundle: Any, ches: Path, tmp_path: Path) -> None:
    from landsight.segment.predict import predict_raster

    scene = tmp_path / "scene.tif"
    shutil.copy(ches / CHES_TILE.split("/", 1)[1], scene)
    before = _digest(scene)
    for overwrite in (False, True):
        with pytest.raises(LandsightValueError, match="also an input"):
            predict_raster(synthetic_bundle, scene, scene, progress=False, overwrite=overwrite)
        with pytest.raises(LandsightValueError, match="also an input"):
            predict_raster(synthetic_bundle, scene, tmp_path / "map.tif", probabilities=scene, progress=False,
                           overwrite=overwrite)  # fmt: skip
    assert _digest(scene) == before and sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


@pytest.mark.parametrize("cog", [False, True])
def test_failed_segment_predict_leaves_existing_outputs_intact(
    synthetic_bundle: Any, ches: Path, tmp_path: Path, cog: bool
) -> None:
    import rasterio

    from landsight.segment.predict import predict_raster

    real = ches / CHES_TILE.split("/", 1)[1]
    out, probs = tmp_path / "map.tif", tmp_path / "probs.tif"
    predict_raster(synthetic_bundle, real, out, probabilities=probs, cog=cog, window_size=128, progress=False)
    saved = {p: _digest(p) for p in (out, probs)}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict_raster(synthetic_bundle, real, out, progress=False)
    # a truncated input fails mid-run: the existing maps stay byte-for-byte, no temporary file is left
    bad = _truncated_copy(real, tmp_path / "truncated.tif")
    with pytest.raises(ImageReadError, match="truncated or corrupt") as info:
        predict_raster(synthetic_bundle, bad, out, probabilities=probs, cog=cog, window_size=128, progress=False,
                       overwrite=True)  # fmt: skip
    assert "\n" not in str(info.value) and "truncated.tif" in str(info.value)
    # a raster with the wrong band count fails too
    three = tmp_path / "rgb.tif"
    with rasterio.open(real) as src:
        profile = src.profile | {"count": 3}
        data = src.read([1, 2, 3])
    with rasterio.open(three, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(LandsightValueError):
        predict_raster(synthetic_bundle, three, out, probabilities=probs, cog=cog, progress=False, overwrite=True)
    assert {p: _digest(p) for p in (out, probs)} == saved
    names = ["map.tif", "map.tif.aux.xml", "probs.tif", "rgb.tif", "truncated.tif"]  # the map's PAM sidecar too
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    # and with overwrite a successful run does replace them
    predict_raster(synthetic_bundle, real, out, window_size=96, progress=False, overwrite=True)
    with rasterio.open(out) as dst:
        assert dst.width == 260 and dst.count == 1


# --- 3. damaged rasters are skipped with their reason in train / evaluate ---------------------------


@pytest.fixture()
def ches_with_truncated(ches: Path, tmp_path: Path) -> Path:
    """4 real Chesapeake pairs, one image truncated to 60 % of its bytes (header intact)."""
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    images = sorted((ches / "train" / "images").glob("*.tif"))[:4]
    for img in images:
        shutil.copy(img, root / "images" / img.name)
        shutil.copy(ches / "train" / "labels" / f"{img.stem}_lc.tif", root / "labels" / f"{img.stem}_lc.tif")
    _truncated_copy(images[1], root / "images" / images[1].name)
    return root


def test_truncated_raster_is_skipped_when_pairing_and_evaluating(
    synthetic_bundle: Any, ches_with_truncated: Path
) -> None:
    from landsight.segment.evaluate import evaluate_rasters, evaluate_segmentation
    from landsight.segment.pairs import RasterPair, pair_rasters

    root = ches_with_truncated
    bad = str(sorted((root / "images").glob("*.tif"))[1])
    found = pair_rasters(str(root / "images/*.tif"), str(root / "labels/*_lc.tif"))
    assert len(found.pairs) == 3 and bad not in {p.image for p in found.pairs}
    assert [p for p, _ in found.skipped] == [bad] and "truncated or corrupt" in found.skipped[0][1]
    metrics = evaluate_rasters(synthetic_bundle.path, str(root / "images/*.tif"), str(root / "labels/*_lc.tif"),
                               window_size=128, progress=False, track=False)  # fmt: skip
    assert len(metrics["rasters"]) == 3 and metrics["n_pixels"] > 0
    assert [p for p, _ in metrics["skipped"]] == [bad]
    # pairs made without the data check (or damaged later) are skipped by the evaluation itself
    unchecked = pair_rasters(str(root / "images/*.tif"), str(root / "labels/*_lc.tif"), check_data=False)
    assert len(unchecked.pairs) == 4
    direct = evaluate_segmentation(synthetic_bundle, unchecked.pairs, window_size=128, progress=False)
    assert len(direct["rasters"]) == 3 and [p for p, _ in direct["skipped"]] == [bad]
    lone = evaluate_segmentation(synthetic_bundle, [RasterPair(bad, unchecked.pairs[1].label, 256, 256)],
                                 window_size=128, progress=False)  # fmt: skip
    assert lone["rasters"] == [] and lone["n_pixels"] == 0


def test_truncated_raster_is_skipped_in_training(ches_with_truncated: Path, tmp_path: Path) -> None:
    import json

    from landsight.segment.train import train_segmentation

    root = ches_with_truncated
    bad = str(sorted((root / "images").glob("*.tif"))[1])
    result = train_segmentation(
        str(root / "images/*.tif"), str(root / "labels/*_lc.tif"), classes="chesapeake", out=tmp_path / "lc.landsight",
        bands=(1, 2, 3, 4), epochs=1, chip_size=64, chips_per_epoch=4, val_chips=2, batch_size=2, val_size=0.34,
        progress=False, track=False,
    )  # fmt: skip
    assert [p for p, _ in result.skipped] == [bad]
    meta = json.loads((tmp_path / "lc.landsight" / "bundle.json").read_text())
    assert bad not in meta["data"]["train"] + meta["data"]["val"] and meta["data"]["n_skipped"] == 1


# --- 4. FIFOs and other non-regular files never block ------------------------------------------------


@pytest.fixture()
def unblock_after(request: pytest.FixtureRequest) -> Iterator[list[Path]]:
    """Fail instead of hanging: after 120 s, open the test's FIFOs for writing (the blocked reader gets EOF)."""
    fifos: list[Path] = []

    def release(signum, frame):  # noqa: ANN001, ANN202, ARG001
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        raise AssertionError("reading a FIFO blocked")

    previous = signal.signal(signal.SIGALRM, release)
    signal.alarm(120)
    yield fifos
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_fifo_named_like_an_image_gives_an_error_row(trained: Any, tiles: Path, unblock_after: list[Path]) -> None:
    from landsight.data.listing import NOT_REGULAR, list_images

    fifo = tiles / "x.jpg"
    os.mkfifo(fifo)
    unblock_after.append(fifo)
    listed = list_images(tiles)
    assert str(fifo) in listed
    assert str(fifo) in list_images(str(tiles / "*.jpg")) and list_images(fifo) == [str(fifo)]
    listing = tiles.parent / "list.txt"
    listing.write_text("tiles/x.jpg\ntiles/tile_00.jpg\n")
    assert list_images(listing) == [str(fifo), str(tiles / "tile_00.jpg")]
    df = predict(trained.bundle_path, tiles, progress=False, track=False)
    row = df.set_index("path").loc[str(fifo)]
    assert row["error"] == NOT_REGULAR and row["predicted"] == ""
    assert (df["error"] == "").sum() == 9
    # a FIFO where a list file or a catalog source is expected is refused before it is opened
    list_fifo = tiles.parent / "paths.txt"
    os.mkfifo(list_fifo)
    unblock_after.append(list_fifo)
    with pytest.raises(LandsightValueError, match="not a regular file"):
        list_images(list_fifo)


def test_fifo_in_a_class_folder_is_skipped_with_its_reason(small_dataset: Path, tmp_path: Path,
                                                           unblock_after: list[Path]) -> None:  # fmt: skip
    from landsight.data.catalog import build_catalog
    from landsight.data.listing import NOT_REGULAR
    from landsight.data.loader import load_one
    from landsight.data.preprocessing import Preprocessing
    from landsight.data.readers import read_image

    data = tmp_path / "classes"
    for cls in ("Forest", "River"):
        shutil.copytree(small_dataset / cls, data / cls)
    fifo = data / "River" / "River_99.jpg"
    os.mkfifo(fifo)
    unblock_after.append(fifo)
    catalog = build_catalog(data)
    assert str(fifo) in set(catalog["path"]) and len(catalog) == 25
    item = load_one(str(fifo), Preprocessing(input_size=(64, 64)))
    assert item.error == NOT_REGULAR and item.array is None
    good = load_one(str(data / "River" / "River_1.jpg"), Preprocessing(input_size=(64, 64)))
    assert good.error == "" and np.asarray(good.array).shape == (64, 64, 3)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(fifo)
    map_fifo = tmp_path / "map.csv"
    os.mkfifo(map_fifo)
    unblock_after.append(map_fifo)
    with pytest.raises(LandsightValueError, match="not a regular file"):
        build_catalog(map_fifo)


# --- 1b. the Spark engine's output folder records its bundle too -------------------------------------


@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java 17+ and `java` is not on PATH")
def test_spark_output_folder_carries_provenance(trained: Any, other_bundle: Path, tiles: Path, tmp_path: Path) -> None:
    import json

    from landsight import spark as ls
    from landsight.spark.session import get_session, stop_session

    images = sorted(str(p) for p in tiles.glob("*.jpg"))[:4]
    out = tmp_path / "preds.parquet"
    session = get_session("local[1]", {"spark.ui.enabled": "false", "spark.driver.memory": "1g"})
    try:
        first = ls.predict(trained.bundle_path, images, out=out, spark=session, track=False)
        assert first.n_scored == 4
        record = json.loads((out / "_landsight.json").read_text())
        assert record["landsight.model_sha256"] == _model_sha(trained.bundle_path)
        parts = {p: _digest(p) for p in out.glob("part-*")}
        with pytest.raises(OutputExistsError) as info:
            ls.predict(other_bundle, images, out=out, spark=session, track=False)
        assert str(trained.bundle_path) in str(info.value) and str(other_bundle) in str(info.value)
        assert {p: _digest(p) for p in out.glob("part-*")} == parts
        foreign = tmp_path / "foreign.parquet"
        foreign.mkdir()
        pd.DataFrame({"path": images, "x": 1.0}).to_parquet(foreign / "data.parquet")
        with pytest.raises(OutputExistsError, match="not a landsight predictions table"):
            ls.predict(trained.bundle_path, images, out=foreign, spark=session, track=False)
        again = ls.predict(other_bundle, images, out=out, spark=session, track=False, overwrite=True)
        assert (again.n_scored, again.n_images) == (4, 4)
        rows = pd.read_parquet(out)
        assert "prob_SeaLake" not in rows.columns and set(rows["predicted"]) <= {"Forest", "River"}
        assert json.loads((out / "_landsight.json").read_text())["landsight.model_sha256"] == _model_sha(other_bundle)
    finally:
        stop_session()
