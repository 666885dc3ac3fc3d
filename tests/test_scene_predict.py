"""Whole-scene classification (``predict --tile-size``) on the real downsampled NAIP scene.

The session's ``trained`` bundle is an EuroSAT RGB bundle: its ``preprocessing.bands`` is null, so
the 4-band NAIP scene is read as bands 1, 2, 3 (R, G, B), as a tile of it is.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from landsight.classify.bundle import Bundle
from landsight.classify.scene import predict_scene
from landsight.classify.scene_grid import NODATA_CLASS, parse_window_id, window_id
from landsight.errors import LandsightValueError, OutputExistsError


@pytest.fixture(scope="module")
def scene(shared_data: Path) -> Path:
    return shared_data / "chesapeake" / "tile_downsampled" / "m_3907833_nw_17_1_naip-new.tif"


def test_windows_score_as_the_same_tiles_cut_and_predicted(trained, scene: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from landsight.classify.predict import predict
    from landsight.data.tiling import cut_tiles

    tiles = cut_tiles(scene, tmp_path / "tiles", size=64)
    by_tile = predict(trained.bundle_path, tmp_path / "tiles", progress=False, track=False).set_index("path")
    windows = predict_scene(trained.bundle_path, scene, tile_size=64, batch_size=5, progress=False, track=False)
    assert len(windows) == len(tiles) == 16 and (windows["error"] == "").all()
    windows = windows.set_index("path")
    probs = [c for c in windows.columns if c.startswith("prob_")]
    for tile in tiles:
        w, t = windows.loc[window_id(str(scene), tile.row, tile.col)], by_tile.loc[str(tile.path)]
        assert w["predicted"] == t["predicted"] and w["crs"] == t["crs"] == "EPSG:26917"
        np.testing.assert_allclose(w[probs].to_numpy(float), t[probs].to_numpy(float), atol=1e-5)
        np.testing.assert_allclose(w[["minx", "miny", "maxx", "maxy"]].to_numpy(float),
                                   t[["minx", "miny", "maxx", "maxy"]].to_numpy(float))  # fmt: skip
    assert parse_window_id(window_id(str(scene), 3, 1)) == (str(scene), 3, 1)


def test_gis_layer_has_one_polygon_per_window_in_the_scene_crs(trained, scene: Path, tmp_path: Path) -> None:  # noqa: ANN001
    import geopandas as gpd
    import rasterio

    out = tmp_path / "grid.gpkg"
    df = predict_scene(trained.bundle_path, scene, tile_size=64, stride=32, out=out, progress=False, track=False)
    rows = (260 - 64) // 32 + 1
    layer = gpd.read_file(out)
    assert len(df) == len(layer) == rows * rows and layer["path"].is_unique
    with rasterio.open(scene) as src:
        assert layer.crs == src.crs
        left, _, _, top = src.bounds
        xres, yres = src.res
    first = layer.set_index("path").loc[window_id(str(scene), 1, 2)].geometry.bounds
    assert first == pytest.approx((left + 64 * xres, top - (32 + 64) * yres, left + (64 + 64) * xres, top - 32 * yres))
    import xml.etree.ElementTree as ET

    categories = ET.parse(out.with_suffix(".qml")).getroot().findall(".//categories/category")  # QGIS's style
    from landsight.bundle import load_bundle

    assert sorted(c.get("value") for c in categories) == sorted(load_bundle(trained.bundle_path).classes)


@pytest.mark.parametrize("stride", [64, 32])
def test_class_raster_is_one_pixel_per_window(trained, scene: Path, tmp_path: Path, stride: int) -> None:  # noqa: ANN001
    import rasterio
    from rasterio.transform import Affine

    grid = tmp_path / "grid.tif"
    df = predict_scene(trained.bundle_path, scene, tile_size=64, stride=stride, raster=grid, progress=False,
                       track=False)  # fmt: skip
    n = (260 - 64) // stride + 1
    with rasterio.open(scene) as src, rasterio.open(grid) as g:
        assert (g.height, g.width, g.count, g.dtypes[0]) == (n, n, 1, "uint8") and g.crs == src.crs
        half = (64 - stride) / 2
        assert g.transform.almost_equals(src.transform @ Affine.translation(half, half) @ Affine.scale(stride))
        codes = g.read(1)
        assert g.nodata == NODATA_CLASS and len(g.colormap(1)) >= 1
        names = json.loads(g.tags()["classes"])
    for path, predicted in zip(df["path"], df["predicted"], strict=True):
        _, r, c = parse_window_id(path)
        assert names[codes[r, c]] == predicted
    import xml.etree.ElementTree as ET

    pam = ET.parse(grid.with_name(grid.name + ".aux.xml")).getroot()  # GDAL's PAM: the names QGIS shows
    assert [c.text or "" for c in pam.findall(".//CategoryNames/Category")][: len(names)] == names


def test_resume_scores_only_the_missing_windows(trained, scene: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    out = tmp_path / "preds.parquet"
    calls: list[int] = []
    real = Bundle.predict_proba

    def crash_on_third_batch(self, images):  # noqa: ANN001, ANN202
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(self, images)

    monkeypatch.setattr(Bundle, "predict_proba", crash_on_third_batch)
    kw = {"tile_size": 64, "out": out, "batch_size": 4, "chunk_size": 4, "progress": False, "track": False}
    with pytest.raises(KeyboardInterrupt):
        predict_scene(trained.bundle_path, scene, **kw)
    assert not out.exists() and len(list((tmp_path / "preds.parquet.parts").glob("part-*"))) == 2
    calls.clear()
    monkeypatch.setattr(Bundle, "predict_proba", lambda self, x: (calls.append(len(x)), real(self, x))[1])
    df = predict_scene(trained.bundle_path, scene, **kw)
    assert sum(calls) == 16 - 8 and len(df) == 16 and df["path"].is_unique
    assert not (tmp_path / "preds.parquet.parts").exists()
    calls.clear()
    assert len(predict_scene(trained.bundle_path, scene, **kw)) == 16 and calls == []  # nothing left to score
    with pytest.raises(OutputExistsError, match="grid"):
        predict_scene(trained.bundle_path, scene, **(kw | {"tile_size": 32}))


def test_bad_sizes_and_outputs_are_refused(trained, scene: Path, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(LandsightValueError, match="tile size"):
        predict_scene(trained.bundle_path, scene, tile_size=261, progress=False, track=False)
    with pytest.raises(LandsightValueError, match="stride"):
        predict_scene(trained.bundle_path, scene, tile_size=64, stride=0, progress=False, track=False)
    with pytest.raises(LandsightValueError, match="raster"):
        predict_scene(trained.bundle_path, scene, tile_size=64, raster=tmp_path / "g.png", track=False)
    with pytest.raises(LandsightValueError, match="one scene"):
        predict_scene(trained.bundle_path, [scene, scene], tile_size=64, raster=tmp_path / "g.tif", track=False)


def test_cli_predict_tile_size(trained, scene: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from landsight.cli import app
    from landsight.predictions import read_table

    out, grid = tmp_path / "p.parquet", tmp_path / "g.tif"
    args = ["predict", str(trained.bundle_path), str(scene), "--tile-size", "128", "--out", str(out),
            "--raster", str(grid), "--no-track", "-q"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(read_table(out)) == 4 and grid.is_file()
    r = CliRunner().invoke(app, ["predict", str(trained.bundle_path), str(scene), "--raster", str(tmp_path / "h.tif")])
    assert r.exit_code != 0 and "--tile-size" in r.output
