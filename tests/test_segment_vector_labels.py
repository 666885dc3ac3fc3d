"""Polygon (vector) labels for segmentation: ``VectorLabels``, pairing, training and evaluation.

Real imagery: the georeferenced Chesapeake tile in ../shared/data/chesapeake/tile_downsampled
(4-band NAIP and its land-cover raster, EPSG:26917). The polygon labels are made here by
polygonizing that real label raster (``rasterio.features.shapes``), written to a GeoPackage in
the image CRS (class names) and to GeoJSON in EPSG:4326 (label codes). The image quadrants are
the real tile's pixels cut into four georeferenced GeoTIFFs. Layers named synthetic (the overlap
squares, the layer without a CRS, the shifted layer) are made up for the error paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landsight.errors import LandsightValueError

TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"
LABEL = "chesapeake/tile_downsampled/m_3907833_nw_17_1_lc.tif"


@pytest.fixture(scope="module")
def tile(shared_data: Path) -> tuple[Path, Path]:
    image, label = shared_data / TILE, shared_data / LABEL
    if not image.is_file() or not label.is_file():
        pytest.skip(f"Chesapeake tile not found under {shared_data}")
    return image, label


def _polygonize(label: Path):  # noqa: ANN202
    """GeoDataFrame of the label raster's polygons (one per connected run of a code), in its CRS."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    with rasterio.open(label) as src:
        codes, transform, crs = src.read(1), src.transform, src.crs
    rows = [(shape(g), int(v)) for g, v in shapes(codes, transform=transform)]
    return gpd.GeoDataFrame({"code": [v for _, v in rows]}, geometry=[g for g, _ in rows], crs=crs)


@pytest.fixture(scope="module")
def polygons(tile: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real label raster polygonized: GeoPackage (image CRS, class names), GeoJSON (EPSG:4326, codes)."""
    from landsight.segment.classmap import load_class_map

    cmap = load_class_map("chesapeake")
    name = {c: k.name for k in cmap.classes for c in k.codes}
    frame = _polygonize(tile[1])
    folder = tmp_path_factory.mktemp("polygons")
    gpkg, geojson = folder / "lc.gpkg", folder / "lc_4326.geojson"
    frame.assign(cls=[name[c] for c in frame["code"]]).to_file(gpkg)
    frame.to_crs("EPSG:4326").to_file(geojson)
    return {"gpkg": gpkg, "geojson": geojson}


@pytest.fixture(scope="module")
def quadrants(tile: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real tile cut into four georeferenced 130x130 GeoTIFFs (its own pixels and window transforms)."""
    import rasterio
    from rasterio.windows import Window, transform

    folder = tmp_path_factory.mktemp("quadrants")
    with rasterio.open(tile[0]) as src:
        h, w = src.height // 2, src.width // 2
        for i, (r, c) in enumerate(((0, 0), (0, w), (h, 0), (h, w))):
            win = Window(c, r, w, h)
            profile = {**src.profile, "height": h, "width": w, "transform": transform(win, src.transform)}
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with rasterio.open(folder / f"q{i}.tif", "w", **profile) as dst:
                dst.write(src.read(window=win))
    return folder


def _codes() -> dict[str | int, int]:
    from landsight.segment.classmap import load_class_map
    from landsight.segment.pairs import vector_codes

    return vector_codes(load_class_map("chesapeake"))


@pytest.mark.parametrize("kind", ["gpkg", "geojson"])
def test_rasterize_window_matches_label_raster(tile, polygons, kind: str) -> None:
    """A window rasterized from the polygons (same CRS, or from EPSG:4326) equals the label raster's window."""
    import rasterio
    from rasterio.windows import Window, transform

    from landsight.data.vector_labels import VectorLabels
    from landsight.segment.classmap import load_class_map

    field = "cls" if kind == "gpkg" else "code"
    vector = VectorLabels.open(polygons[kind], field, codes=_codes())
    cmap = load_class_map("chesapeake")
    with rasterio.open(tile[1]) as src:
        for r, c in ((0, 0), (37, 101), (196, 196)):
            win = Window(c, r, 64, 64)
            ref = cmap.remap(src.read(1, window=win))
            got = cmap.remap(vector.rasterize((64, 64), transform(win, src.transform), src.crs, fill=0))
            covered = got != 255
            assert covered.mean() > 0.99
            np.testing.assert_array_equal(got[covered], ref[covered])
        # beyond the raster's edge no polygon covers: the fill (ignore) code
        win = Window(230, 230, 64, 64)
        out = vector.rasterize((64, 64), transform(win, src.transform), src.crs, fill=99)
        assert out.dtype == np.uint8 and (out[40:, 40:] == 99).all()


def test_sparse_polygons_leave_ignore(tile, polygons, tmp_path: Path) -> None:
    """Pixels outside every polygon are the ignore index when read through a pair's labels."""
    import geopandas as gpd

    from landsight.segment.classmap import IGNORE_INDEX, load_class_map
    from landsight.segment.pairs import open_labels, pair_rasters

    frame = gpd.read_file(polygons["gpkg"])
    some = frame[frame.geometry.area > frame.geometry.area.quantile(0.9)]
    path = tmp_path / "sparse.gpkg"
    some.to_file(path)
    cmap = load_class_map("chesapeake")
    found = pair_rasters(str(tile[0]), str(path), label_field="cls", class_map=cmap)
    (pair,) = found.pairs
    with open_labels(pair) as lab:
        y = lab.read(-10, -10, 280, 280, cmap)
    assert (y[:10] == IGNORE_INDEX).all() and (y[:, :10] == IGNORE_INDEX).all()
    assert 0 < (y != IGNORE_INDEX).mean() < 0.95


def test_overlap_later_feature_wins(tmp_path: Path) -> None:
    """Synthetic overlapping squares: the later feature in file order wins where they overlap."""
    import geopandas as gpd
    from rasterio.transform import from_origin
    from shapely.geometry import box

    from landsight.data.vector_labels import VectorLabels

    transform = from_origin(500000, 4000010, 1, 1)  # 10 x 10 px of 1 m
    a, b = box(500000, 4000000, 500006, 4000010), box(500004, 4000000, 500010, 4000010)
    for order, expected in (((a, b), (2, 3)), ((b, a), (3, 2))):
        codes = [2, 3] if order[0] is a else [3, 2]
        path = tmp_path / f"overlap_{expected[1]}.gpkg"
        gpd.GeoDataFrame({"c": codes}, geometry=list(order), crs="EPSG:26917").to_file(path)
        out = VectorLabels.open(path, "c", codes={2: 2, 3: 3}).rasterize((10, 10), transform, "EPSG:26917", fill=0)
        assert (out[:, :4] == 2).all() and (out[:, 6:] == 3).all()
        assert (out[:, 4:6] == expected[1]).all()  # the overlap: the last feature's class


def test_one_line_errors(tile, polygons, tmp_path: Path) -> None:
    """No CRS, unknown class values, a missing field, features outside every image: one line each."""
    import geopandas as gpd
    from shapely.affinity import translate

    from landsight.data.vector_labels import VectorLabels
    from landsight.segment.classmap import load_class_map
    from landsight.segment.pairs import pair_rasters

    frame = gpd.read_file(polygons["gpkg"])
    nocrs = tmp_path / "nocrs.shp"  # synthetic: the real polygons without their .prj
    frame.set_crs(None, allow_override=True).to_file(nocrs)
    with pytest.raises(LandsightValueError, match="has no CRS") as e:
        VectorLabels.open(nocrs, "cls", codes=_codes())
    assert "\n" not in str(e.value)

    odd = tmp_path / "odd.gpkg"  # synthetic class names
    names = ["lava", "trees", "moss", "ice", "fog", "sand", "mud"]
    frame.assign(cls=[names[i % 7] for i in range(len(frame))]).to_file(odd)
    with pytest.raises(LandsightValueError, match="unknown class values") as e:
        VectorLabels.open(odd, "cls", codes=_codes())
    msg = str(e.value)
    assert "\n" not in msg and "'lava'" in msg and "(and 1 more)" in msg and "water" in msg and "'trees'" not in msg

    with pytest.raises(LandsightValueError, match="no field 'klass'.*cls") as e:
        VectorLabels.open(polygons["gpkg"], "klass", codes=_codes())
    assert "\n" not in str(e.value)

    far = tmp_path / "far.gpkg"  # synthetic: the real polygons moved 100 km east
    frame.assign(geometry=frame.geometry.apply(lambda g: translate(g, 100_000))).to_file(far)
    with pytest.raises(LandsightValueError, match="outside every image") as e:
        pair_rasters(str(tile[0]), str(far), label_field="cls", class_map=load_class_map("chesapeake"))
    assert "\n" not in str(e.value)
    with pytest.raises(LandsightValueError, match="--label-field"):
        pair_rasters(str(tile[0]), str(polygons["gpkg"]))


def test_pairs_quadrants_and_features_outside(quadrants, polygons) -> None:
    """Every quadrant pairs with the layer; the 4326 layer's reprojection is cached per CRS."""
    from landsight.segment.classmap import load_class_map
    from landsight.segment.pairs import pair_rasters

    found = pair_rasters(str(quadrants / "*.tif"), str(polygons["geojson"]), label_field="code",
                         class_map=load_class_map("chesapeake"))  # fmt: skip
    assert len(found.pairs) == 4 and not found.skipped
    assert len({id(p.label) for p in found.pairs}) == 1
    assert len(found.pairs[0].label._cache) == 1


def test_train_and_evaluate_with_polygons(tile, quadrants, polygons, tmp_path: Path) -> None:
    """A tiny epoch on polygon labels trains; evaluating with polygons equals evaluating with the raster."""
    from landsight.segment.evaluate import evaluate_rasters
    from landsight.segment.train import train_segmentation

    result = train_segmentation(
        str(quadrants / "*.tif"), str(polygons["gpkg"]), label_field="cls", classes="chesapeake",
        out=tmp_path / "poly.landsight", bands=(1, 2, 3, 4), epochs=1, chip_size=64, chips_per_epoch=8,
        val_chips=4, batch_size=4, oversample=0.5, val_size=0.25, progress=False, track=False,
    )  # fmt: skip
    assert result.metrics["n_pixels"] > 0 and 0 <= result.metrics["pixel_accuracy"] <= 1
    assert result.metrics["rasters"][0]["label"] == str(polygons["gpkg"])
    poly = evaluate_rasters(result.bundle_path, str(tile[0]), str(polygons["geojson"]), label_field="code",
                            progress=False, track=False)  # fmt: skip
    raster = evaluate_rasters(result.bundle_path, str(tile[0]), str(tile[1]), progress=False, track=False)
    assert poly["n_pixels"] == raster["n_pixels"] > 0
    assert poly["confusion_matrix"] == raster["confusion_matrix"]
    import json

    from typer.testing import CliRunner

    from landsight.cli import app

    res = CliRunner().invoke(app, ["segment", "evaluate", str(result.bundle_path), "--images", str(tile[0]),
                                   "--labels", str(polygons["gpkg"]), "--label-field", "cls", "--out",
                                   str(tmp_path / "ev"), "--quiet", "--no-track"])  # fmt: skip
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "segmentation_metrics.json").read_text())
    assert metrics["confusion_matrix"] == raster["confusion_matrix"]
    bad = CliRunner().invoke(app, ["segment", "evaluate", str(result.bundle_path), "--images", str(tile[0]), "--labels",
                                   str(polygons["gpkg"]), "--label-field", "klass", "--no-track"])  # fmt: skip
    assert bad.exit_code != 0 and "no field 'klass'" in str(bad.exception)
