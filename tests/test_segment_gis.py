"""Land-cover maps for GIS (issue 17): polygons, area statistics, tile layers; losses, TTA, NLCD input.

Real imagery: the georeferenced downsampled Chesapeake tile (EPSG:26917) and the Chesapeake
patches with their NLCD rasters in ../shared/data. Rasters made here are named synthetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from landsight.errors import LandsightValueError, OutputExistsError

TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_{}.tif"


@pytest.fixture(scope="module")
def tile(shared_data: Path) -> dict[str, Path]:
    paths = {k: shared_data / TILE.format(k) for k in ("naip-new", "lc", "nlcd")}
    if not all(p.is_file() for p in paths.values()):
        pytest.skip("the georeferenced Chesapeake tile is not in ../shared/data")
    return paths


def _pixel_bundle(folder: Path):  # noqa: ANN202
    """Untrained per-pixel bundle (1x1 convolution, synthetic): class k wins where band k is largest."""
    import torch

    from landsight.segment.model import SegmentationNet
    from landsight.segment.train import write_segmentation_bundle

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1) * 0.1 + torch.randn(4, 4, 1, 1) * 0.01)
    from landsight.segment.classmap import load_class_map

    meta = {
        "class_map": load_class_map("chesapeake").to_dict(),
        "bands": [1, 2, 3, 4],
        "chip_size": 64,
        "context": None,
        "band_stats": {"bands": [1, 2, 3, 4], "mean": [0.0] * 4, "std": [1.0] * 4, "pixels": 1},
    }
    return write_segmentation_bundle(folder, SegmentationNet(conv, [0.0] * 4, [1.0] * 4), meta)  # fmt: skip


def test_polygon_areas_per_class_match_raster_areas(tile: dict[str, Path]) -> None:
    """Both dissolves: polygon areas per class sum to the raster's class areas (within 0.5 %)."""
    from landsight.segment.vector import class_areas, polygonize_raster

    table = class_areas(tile["lc"])
    with rasterio.open(tile["lc"]) as src:
        pixel = abs(src.transform.a * src.transform.e)
        codes, counts = np.unique(src.read(1), return_counts=True)
    assert table["pixels"].sum() == 260 * 260 and set(table["code"]) == set(codes.tolist())
    np.testing.assert_allclose(table.set_index("code").loc[codes, "area_m2"], counts * pixel, rtol=1e-9)
    assert table["percent"].sum() == pytest.approx(100)
    assert table["area_ha"].tolist() == pytest.approx((table["area_m2"] / 1e4).tolist())
    expected = table.set_index("code")["area_m2"]
    for dissolve in ("class", "region"):
        layer = polygonize_raster(tile["lc"], dissolve=dissolve, window=100)  # window seams merged
        by_code = layer.groupby("code")["area_m2"].sum()
        np.testing.assert_allclose(by_code.loc[expected.index], expected, rtol=5e-3)
        np.testing.assert_allclose(layer.geometry.area, layer["area_m2"])  # metres: EPSG:26917
        if dissolve == "class":
            assert len(layer) == len(codes) and layer["code"].is_unique
        else:
            assert len(layer) > len(codes) and (layer.geometry.geom_type == "Polygon").all()
    # min_area drops small regions; simplify keeps classes and areas close
    kept = polygonize_raster(tile["lc"], dissolve="region", min_area=20 * pixel)
    assert (kept["area_m2"] >= 20 * pixel - 1e-6).all() and len(kept) < len(layer)
    simple = polygonize_raster(tile["lc"], simplify=30.0)
    assert simple.geometry.count_coordinates().sum() < polygonize_raster(tile["lc"]).geometry.count_coordinates().sum()
    with pytest.raises(LandsightValueError, match="dissolve"):
        polygonize_raster(tile["lc"], dissolve="pixel")


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet"])
def test_predict_writes_vector_and_stats_that_round_trip(tile: dict[str, Path], tmp_path: Path, suffix: str) -> None:
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    bundle = _pixel_bundle(tmp_path / "px.landsight")
    out, vec, stats = tmp_path / "lc.tif", tmp_path / f"lc{suffix}", tmp_path / "stats.csv"
    bundle.predict(tile["naip-new"], out, vector=vec, stats=stats, progress=False)
    layer = gpd.read_parquet(vec) if suffix == ".parquet" else gpd.read_file(vec)
    assert layer.crs.to_epsg() == 26917
    assert list(layer.columns) == ["code", "name", "colour", "area_m2", "area_ha", "geometry"]
    names = dict(zip(layer["code"], layer["name"], strict=True))
    assert set(names.items()) <= {(1, "water"), (2, "trees"), (3, "herbaceous"), (4, "barren_impervious")}
    assert dict(zip(layer["code"], layer["colour"], strict=True)).get(1, "#0070ff") == "#0070ff"
    table = pd.read_csv(stats)
    assert list(table.columns) == ["code", "name", "pixels", "area_m2", "area_ha", "percent"]
    with rasterio.open(out) as src:
        pixel = abs(src.transform.a * src.transform.e)
    assert table["area_m2"].sum() == pytest.approx(260 * 260 * pixel)
    areas = table.set_index("code")["area_m2"]
    np.testing.assert_allclose(layer.set_index("code")["area_m2"], areas.loc[layer["code"]], rtol=5e-3)
    if suffix == ".gpkg":
        info = pyogrio.read_info(vec)
        assert info["features"] == len(layer) and info["crs"] == "EPSG:26917"
        assert pyogrio.list_layers(vec)[0][0] == "landcover"
    with pytest.raises(OutputExistsError):  # nothing replaced without overwrite
        bundle.predict(tile["naip-new"], tmp_path / "other.tif", vector=vec, progress=False)
    assert not (tmp_path / "other.tif").exists()


def test_predict_stats_and_vector_are_gathered_while_writing(tile: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """--stats / --vector never reopen the written map, each output is checked once, and both equal a full read."""
    import collections

    import geopandas as gpd
    import pandas as pd

    import landsight.outputs
    from landsight.segment import vector as seg_vector

    bundle = _pixel_bundle(tmp_path / "px.landsight")
    out, vec, stats, probs = tmp_path / "lc.tif", tmp_path / "lc.gpkg", tmp_path / "areas.csv", tmp_path / "p.tif"
    opened: list[tuple[str, str]] = []
    real_open, real_check = rasterio.open, landsight.outputs.check_output
    checked: collections.Counter[str] = collections.Counter()

    def spy_open(path, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        opened.append((str(path), mode))
        return real_open(path, mode, *args, **kwargs)

    def spy_check(path, **kwargs):  # noqa: ANN001, ANN202
        checked[str(path)] += 1
        return real_check(path, **kwargs)

    def no_reread(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the finished map was read again")

    with monkeypatch.context() as m:
        m.setattr(rasterio, "open", spy_open)
        m.setattr(landsight.outputs, "check_output", spy_check)
        m.setattr(seg_vector, "class_areas", no_reread)
        m.setattr(seg_vector, "polygonize_raster", no_reread)
        # 128-pixel windows: the 260 x 260 tile is written (and polygonized) in several cores
        bundle.predict(tile["naip-new"], out, probabilities=probs, vector=vec, stats=stats, window_size=128,
                       dissolve="region", progress=False)  # fmt: skip
    assert {path for path, mode in opened if mode == "r"} == {str(tile["naip-new"])}  # only the input is read
    assert all(Path(path).name.startswith(".") for path, mode in opened if mode == "w")  # temporary names
    assert all(checked[str(p)] == 1 for p in (out, vec, stats, probs))
    # the statistics equal those of a full read of the written map, exactly
    table = pd.read_csv(stats, float_precision="round_trip")
    with rasterio.open(out) as src:
        codes, counts = np.unique(src.read(1), return_counts=True)
        pixel = abs(src.transform.a * src.transform.e)
    assert table.set_index("code").loc[codes, "pixels"].tolist() == counts.tolist() and table["pixels"].sum() == 260**2
    np.testing.assert_allclose(table.set_index("code").loc[codes, "area_m2"], counts * pixel, rtol=1e-12)
    pd.testing.assert_frame_equal(table, seg_vector.class_areas(out, bundle.class_map), check_exact=True)
    # the polygons equal those of the written map polygonized in other windows, coordinate for coordinate
    layer = gpd.read_file(vec)
    again = seg_vector.polygonize_raster(out, bundle.class_map, dissolve="region", window=100)
    assert len(layer) == len(again) and layer["code"].tolist() == again["code"].tolist()
    assert layer.geometry.geom_equals_exact(again.geometry, 0).all()
    np.testing.assert_array_equal(layer["area_m2"], again["area_m2"])
    # options that cannot work fail before anything is written
    with pytest.raises(LandsightValueError, match="dissolve"):
        bundle.predict(tile["naip-new"], tmp_path / "x.tif", vector=tmp_path / "x.gpkg", dissolve="pixel",
                       progress=False)  # fmt: skip
    assert not (tmp_path / "x.tif").exists() and not list(tmp_path.glob(".*x.tif"))


def test_polygons_do_not_depend_on_the_windows(tile: dict[str, Path]) -> None:
    """The real land-cover tile polygonized in one window or in 64 / 100-pixel windows: the same layer."""
    from landsight.segment.vector import polygonize_raster

    for kwargs in ({"dissolve": "class"}, {"dissolve": "region"}, {"simplify": 30.0}):
        whole = polygonize_raster(tile["lc"], window=2048, **kwargs)
        for window in (64, 100):
            cut = polygonize_raster(tile["lc"], window=window, **kwargs)
            assert len(cut) == len(whole) and cut["code"].tolist() == whole["code"].tolist()
            assert cut.geometry.geom_equals_exact(whole.geometry, 0).all(), (kwargs, window)
            np.testing.assert_array_equal(cut["area_m2"], whole["area_m2"])


def test_predict_geodesic_stats_equal_a_full_read(tile: dict[str, Path], tmp_path: Path) -> None:
    """Synthetic: the real NAIP tile re-gridded in EPSG:4326 with a nodata hole; areas per row, exact."""
    import geopandas as gpd
    import pandas as pd
    from rasterio.transform import from_origin

    from landsight.segment.vector import class_areas, polygonize_raster

    with rasterio.open(tile["naip-new"]) as src:
        data, profile = src.read(), src.profile
    data[:, 50:70, 10:90] = 0
    geo = tmp_path / "synthetic_wgs84_naip.tif"
    with rasterio.open(geo, "w", **{**profile, "crs": "EPSG:4326", "nodata": 0,
                                    "transform": from_origin(-77.5, 39.0, 0.0002, 0.00025)}) as dst:  # fmt: skip
        dst.write(data)
    bundle = _pixel_bundle(tmp_path / "px.landsight")
    out, stats, vec = tmp_path / "lc.tif", tmp_path / "areas.csv", tmp_path / "lc.parquet"
    bundle.predict(geo, out, stats=stats, vector=vec, window_size=96, progress=False)
    table = pd.read_csv(stats, float_precision="round_trip")
    assert table["pixels"].sum() == 260 * 260 - 20 * 80
    pd.testing.assert_frame_equal(table, class_areas(out, bundle.class_map), check_exact=True)
    layer, again = gpd.read_parquet(vec), polygonize_raster(out, bundle.class_map)
    assert layer.geometry.geom_equals_exact(again.geometry, 0).all()
    expected = table.set_index("code").loc[layer["code"], "area_m2"]
    # a polygon's geodesic area joins its vertices by geodesics, the raster's rows follow parallels:
    # the two differ by up to ~1e-5 relative on a class with long east-west edges at this latitude
    np.testing.assert_allclose(layer.set_index("code")["area_m2"], expected, rtol=5e-5)


def test_areas_geodesic_in_geographic_crs_and_nan_without_crs(tmp_path: Path) -> None:
    """Synthetic label rasters: 0.01 degree pixels at the equator, and one without a CRS."""
    from rasterio.transform import from_origin

    from landsight.segment.vector import class_areas, polygonize_raster

    codes = np.array([[1, 1], [2, 255]], dtype=np.uint8)
    geo = tmp_path / "synthetic_wgs84.tif"
    profile = {"driver": "GTiff", "height": 2, "width": 2, "count": 1, "dtype": "uint8", "nodata": 255}
    with rasterio.open(geo, "w", crs="EPSG:4326", transform=from_origin(10.0, 0.01, 0.01, 0.01), **profile) as dst:
        dst.write(codes, 1)
    table = class_areas(geo).set_index("code")
    # WGS84: 0.01 deg of longitude at the equator = 1113.2 m; of latitude = 1105.7 m
    assert table.loc[1, "area_m2"] == pytest.approx(2 * 1113.19 * 1105.75, rel=2e-3)
    assert table.loc[1, "percent"] == pytest.approx(200 / 3)
    layer = polygonize_raster(geo).set_index("code")
    assert layer.loc[1, "area_m2"] == pytest.approx(table.loc[1, "area_m2"], rel=1e-6)
    with pytest.raises(LandsightValueError, match="geographic"):
        polygonize_raster(geo, simplify=5.0)
    plain = tmp_path / "synthetic_plain.tif"
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(codes, 1)
    table = class_areas(plain)
    assert table["area_m2"].isna().all() and table["pixels"].tolist() == [2, 1]
    with pytest.raises(LandsightValueError, match="no CRS"):
        polygonize_raster(plain, min_area=10)


def test_classification_tile_grid_becomes_polygons(trained, tile: dict[str, Path], tmp_path: Path) -> None:  # noqa: ANN001
    """A 4 x 4 grid cut from the georeferenced NAIP tile -> 16 polygons with the tiles' bounds."""
    import geopandas as gpd
    from rasterio.windows import Window

    from landsight.classify.predict import predict

    grid = tmp_path / "grid"
    grid.mkdir()
    bounds = {}
    with rasterio.open(tile["naip-new"]) as src:
        for i in range(4):
            for j in range(4):
                win = Window(j * 65, i * 65, 65, 65)
                path = grid / f"tile_{i}_{j}.tif"
                profile = {"driver": "GTiff", "height": 65, "width": 65, "count": 3, "dtype": "uint8",
                           "crs": src.crs, "transform": src.window_transform(win)}  # fmt: skip
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(src.read([1, 2, 3], window=win))
                bounds[str(path)] = tuple(src.window_bounds(win))
    out = tmp_path / "preds.gpkg"
    table = predict(trained.bundle_path, grid, out=out, progress=False, track=False, num_workers=0)
    layer = gpd.read_file(out)
    assert len(layer) == 16 and layer.crs.to_epsg() == 26917
    assert set(table.columns) <= set(layer.columns)
    for path, geom in zip(layer["path"], layer.geometry, strict=True):
        np.testing.assert_allclose(geom.bounds, bounds[path], atol=1e-6)
    wgs = tmp_path / "preds.geoparquet"
    predict(trained.bundle_path, grid, out=wgs, progress=False, track=False, num_workers=0, to_crs="EPSG:4326")
    layer84 = gpd.read_parquet(wgs)
    assert layer84.crs.to_epsg() == 4326 and len(layer84) == 16
    assert -80 < layer84.total_bounds[0] < -77 and 38 < layer84.total_bounds[1] < 40  # West Virginia / Maryland
    with pytest.raises(OutputExistsError):
        predict(trained.bundle_path, grid, out=out, progress=False, track=False, num_workers=0)


def test_tile_polygons_reproject_mixed_crs_and_skip_plain_rows() -> None:
    import pandas as pd

    from landsight.vectors import tile_polygons

    table = pd.DataFrame({"path": ["a", "b", "c"], "minx": [500000.0, 10.0, np.nan], "miny": [4400000.0, 45.0, np.nan],
                          "maxx": [500100.0, 10.001, np.nan], "maxy": [4400100.0, 45.001, np.nan],
                          "crs": ["EPSG:26917", "EPSG:4326", ""]})  # fmt: skip
    layer = tile_polygons(table)
    assert layer["path"].tolist() == ["a", "b"] and layer.crs.to_epsg() == 26917
    assert layer.geometry.iloc[0].bounds == (500000.0, 4400000.0, 500100.0, 4400100.0)
    with pytest.raises(LandsightValueError, match="georeferenced"):
        tile_polygons(table.iloc[2:])


def test_class_weights_and_dihedral_tta(tmp_path: Path) -> None:
    from landsight.segment.predict import predict_tiles
    from landsight.segment.train import class_weights

    w = class_weights([900, 100, 0, 0])
    assert w[1] == pytest.approx(3 * w[0]) and (900 * w[0] + 100 * w[1]) / 1000 == pytest.approx(1)
    assert w[2] == w[3] == 10
    # a per-pixel network commutes with rotations / flips: TTA must map every view back exactly
    bundle = _pixel_bundle(tmp_path / "px.landsight")
    x = np.random.default_rng(0).integers(0, 255, (2, 4, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(predict_tiles(bundle, x, tta="d4"), predict_tiles(bundle, x), atol=1e-5)


def test_nlcd_aux_input_trains_predicts_and_is_required(shared_data: Path, tmp_path: Path) -> None:
    """Tiny run on the real patches with their NLCD one-hot encoded, weighted CE + Dice, early stopping."""
    from landsight import load_bundle
    from landsight.segment.train import train_segmentation

    root = shared_data / "chesapeake" / "train"
    if not (root / "nlcd").is_dir():
        pytest.skip("Chesapeake NLCD rasters not found")
    result = train_segmentation(
        str(root / "images/*.tif"), str(root / "labels/*_lc.tif"), out=tmp_path / "nlcd.landsight", epochs=2,
        chip_size=64, chips_per_epoch=8, val_chips=4, batch_size=4, progress=False, track=False,
        loss="weighted_ce+dice", early_stopping=1, aux_rasters="{dir}/../nlcd/{stem}_nlcd.tif",
    )  # fmt: skip
    bundle = load_bundle(result.bundle_path)
    assert bundle.aux is not None and {21, 41, 71}.issubset(bundle.aux.codes)
    assert bundle.in_channels == 4 + len(bundle.aux.codes)
    assert all("val_miou" in row for row in result.history)
    assert bundle.meta["training"]["loss"] == "weighted_ce+dice" and len(bundle.meta["training"]["class_weights"]) == 4
    image = root / "images" / "wv_1m_2014-m_3708020_sw_17_1-7.tif"
    out = bundle.predict(image, tmp_path / "lc.tif", tta="d4", progress=False)  # template from the bundle
    with rasterio.open(out) as dst:
        assert set(np.unique(dst.read(1))) <= {1, 2, 3, 4}
    with pytest.raises(Exception, match="does not exist"):
        bundle.predict(image, tmp_path / "lc2.tif", aux=tmp_path / "missing_nlcd.tif", progress=False)
    with pytest.raises(LandsightValueError, match="loss"):
        train_segmentation(str(root / "images/*.tif"), str(root / "labels/*_lc.tif"), out=tmp_path / "x", loss="focal")


def test_vector_cost_is_bounded_by_sieve_and_a_polygon_budget(tile: dict[str, Path], tmp_path: Path) -> None:
    """A noisy per-pixel map: the budget stops it in one line with nothing written; --sieve makes it cheap."""
    import geopandas as gpd

    from landsight.errors import ResourceLimitError

    bundle = _pixel_bundle(tmp_path / "px.landsight")
    plain = tmp_path / "plain.gpkg"
    bundle.predict(tile["naip-new"], tmp_path / "plain.tif", vector=plain, dissolve="region", progress=False)
    n_plain = len(gpd.read_file(plain))
    assert n_plain > 50  # the synthetic per-pixel head is noisy: many small regions
    out, vec = tmp_path / "lc.tif", tmp_path / "lc.gpkg"
    with pytest.raises(ResourceLimitError, match="--sieve PIXELS"):
        bundle.predict(tile["naip-new"], out, vector=vec, max_polygons=10, progress=False)
    assert not out.exists() and not vec.exists()  # group commit: nothing written
    bundle.predict(tile["naip-new"], out, vector=vec, dissolve="region", sieve=16, progress=False)
    sieved = gpd.read_file(vec)
    assert len(sieved) < n_plain
    with rasterio.open(out) as src:
        codes = src.read(1)
    from rasterio.features import shapes

    from landsight.segment.classmap import NODATA_CODE

    regions = list(shapes(codes, mask=codes != NODATA_CODE, connectivity=4))
    assert len(regions) == len(sieved)  # the map itself was sieved: its regions are the layer's
