"""Labelled tiles from a scene (``landsight tile --labels``): chip classification data for ``train``.

On the real downsampled NAIP tile m_3907833_nw (260 x 260 px, ~24 x 29 m, EPSG:26917) and its
Chesapeake land-cover raster (same grid; codes 0..6, 4-6 lumped by the ``chesapeake`` class map).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from landsight.errors import LandsightValueError, OutputExistsError

SCENE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"
LC = "chesapeake/tile_downsampled/m_3907833_nw_17_1_lc.tif"
STEM = "m_3907833_nw_17_1_naip-new"
LUMPED = {1: "water", 2: "trees", 3: "herbaceous", 4: "barren_impervious"}
#: trees against everything else: two classes of usable size for a tiny training run
TREES = {"name": "trees_or_not", "ignore": {"codes": [0]}, "classes": [
    {"code": 1, "name": "trees", "codes": [2]}, {"code": 2, "name": "open", "codes": [1, 3, 4, 5, 6]}]}  # fmt: skip


def _majority(codes: np.ndarray) -> str | None:
    counts = np.bincount(np.minimum(codes.ravel(), 4), minlength=5)
    counts[0] = 0
    return LUMPED[int(counts.argmax())] if counts.sum() else None


def _lc(shared_data: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(shared_data / LC) as src:
        return src.read(1)


def test_folders_layout_labels_every_tile_by_its_majority_class(shared_data: Path, tmp_path: Path) -> None:
    import rasterio

    from landsight.outputs import read_manifest
    from landsight.segment.scene_tiles import tile_scene

    out = tmp_path / "tiles"
    result = tile_scene(shared_data / SCENE, out, size=26, labels=shared_data / LC)
    assert len(result.tiles) == 100 and result.n_edge_dropped == 0 and result.n_unlabelled == 0
    assert sum(result.counts.values()) == 100 and result.counts["trees"] > 50
    assert read_manifest(out)["kind"] == "tiles"  # type: ignore[index]
    on_disk = {p.parent.name: 0 for p in out.glob("*/*.tif")}
    for p in out.glob("*/*.tif"):
        on_disk[p.parent.name] += 1
    assert on_disk == result.counts
    lc = _lc(shared_data)
    for t in result.tiles:
        assert t.path == out / t.label / f"{STEM}_{t.row}_{t.col}.tif" and t.path.is_file()  # type: ignore[operator]
        assert t.label == _majority(lc[t.row * 26 : (t.row + 1) * 26, t.col * 26 : (t.col + 1) * 26])
    with rasterio.open(shared_data / SCENE) as src, rasterio.open(result.tiles[-1].path) as tile:
        assert tile.crs == src.crs and (tile.width, tile.count) == (26, 4)
        np.testing.assert_array_equal(tile.read(), src.read(window=result.tiles[-1].window))


def test_csv_layout_trains_directly_with_a_spatial_split(shared_data: Path, tmp_path: Path) -> None:
    from landsight.classify.train import train
    from landsight.data.catalog import build_catalog
    from landsight.segment.scene_tiles import tile_scene

    result = tile_scene(shared_data / SCENE, tmp_path / "tiles", size=26, labels=shared_data / LC, classes=TREES,
                        layout="csv")  # fmt: skip
    assert result.csv_path == tmp_path / "tiles" / "labels.csv"
    rows = list(csv.DictReader(result.csv_path.open()))
    assert [r["path"] for r in rows][:2] == [f"{STEM}_0_0.tif", f"{STEM}_0_1.tif"]  # relative, flat
    assert {r["scene"] for r in rows} == {STEM} and {r["label"] for r in rows} == {"trees", "open"}
    assert len(build_catalog(result.csv_path)) == len(rows) == 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = train(result.csv_path, out=tmp_path / "m.landsight", tta="none", C=1.0, split="spatial",
                        progress=False, track=False, num_workers=0)  # fmt: skip
    assert trained.bundle_path.is_dir() and 0 < len(trained.test_paths) < 100


def test_min_fraction_leaves_out_mixed_tiles(shared_data: Path, tmp_path: Path) -> None:
    from landsight.segment.scene_tiles import parse_rule, tile_scene

    majority = tile_scene(shared_data / SCENE, tmp_path / "a", size=26, labels=shared_data / LC)
    strict = tile_scene(shared_data / SCENE, tmp_path / "b", size=26, labels=shared_data / LC, rule="min-fraction:0.8")
    assert 0 < len(strict.tiles) < len(majority.tiles) and strict.n_unlabelled == 100 - len(strict.tiles)
    assert all(t.fraction >= 0.8 for t in strict.tiles)
    assert not list((tmp_path / "b").glob("unlabelled/*"))
    by_name = {(t.row, t.col): t.label for t in majority.tiles}
    assert all(by_name[(t.row, t.col)] == t.label for t in strict.tiles)  # same class, only fewer tiles
    kept = tile_scene(shared_data / SCENE, tmp_path / "c", size=26, labels=shared_data / LC, rule="min-fraction:0.8",
                      keep_unlabelled=True)  # fmt: skip
    assert len(kept.tiles) == 100 and kept.counts["unlabelled"] == strict.n_unlabelled == kept.n_unlabelled
    assert len(list((tmp_path / "c" / "unlabelled").glob("*.tif"))) == strict.n_unlabelled
    for bad in ("min-fraction:0", "min-fraction:x", "median"):
        with pytest.raises(LandsightValueError, match="rule"):
            parse_rule(bad)


def test_two_prefixes_share_a_folder_and_group_by_scene(shared_data: Path, tmp_path: Path) -> None:
    from landsight.data.split_groups import read_groups
    from landsight.segment.scene_tiles import tile_scene

    scene = shared_data / SCENE
    both = tile_scene([scene, scene], tmp_path / "t", size=52, labels=shared_data / LC, prefix=["a", "b"],
                      layout="csv")  # fmt: skip
    names = [t.path.name for t in both.tiles]
    assert len(names) == len(set(names)) == 50 and {"a_0_0.tif", "b_4_4.tif"} <= set(names)
    groups = read_groups([str(t.path) for t in both.tiles], r"regex:([^/]+)_\d+_\d+\.tif$")
    assert set(groups) == {"a", "b"}
    with pytest.raises(LandsightValueError, match="collide"):
        tile_scene([scene, scene], tmp_path / "u", size=52, labels=shared_data / LC)  # same stem twice
    with pytest.raises(LandsightValueError, match="prefix"):
        tile_scene(scene, tmp_path / "u", size=52, prefix="../x")


def test_overwrite_with_another_size_leaves_no_old_tile(shared_data: Path, tmp_path: Path) -> None:
    from landsight.segment.scene_tiles import tile_scene

    out = tmp_path / "t"
    tile_scene(shared_data / SCENE, out, size=26, labels=shared_data / LC)
    with pytest.raises(OutputExistsError):
        tile_scene(shared_data / SCENE, out, size=52, labels=shared_data / LC)
    new = tile_scene(shared_data / SCENE, out, size=52, labels=shared_data / LC, overwrite=True)
    assert sorted(out.rglob("*.tif")) == sorted(t.path for t in new.tiles) and len(new.tiles) == 25


def test_edge_keep_pads_partial_tiles_with_nodata(shared_data: Path, tmp_path: Path) -> None:
    import rasterio

    from landsight.segment.scene_tiles import tile_scene

    dropped = tile_scene(shared_data / SCENE, tmp_path / "d", size=40, labels=shared_data / LC)
    assert len(dropped.tiles) + dropped.n_unlabelled == 36 and dropped.n_edge_dropped == 13
    kept = tile_scene(shared_data / SCENE, tmp_path / "k", size=40, labels=shared_data / LC, edge="keep",
                      keep_unlabelled=True)  # fmt: skip
    assert len(kept.tiles) == 49 and kept.n_edge_dropped == 0
    corner = next(t for t in kept.tiles if (t.row, t.col) == (6, 6))  # 20 x 20 px of scene, the rest padding
    assert corner.fraction <= 0.25
    with rasterio.open(corner.path) as tile:
        assert (tile.width, tile.height, tile.nodata) == (40, 40, 0)
        assert (tile.read()[:, 20:, :] == 0).all() and tile.read_masks(1)[30, 30] == 0


def test_a_label_raster_on_another_grid_is_warped_onto_the_scene(shared_data: Path, tmp_path: Path) -> None:
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from landsight.segment.scene_tiles import tile_scene

    with rasterio.open(shared_data / LC) as src:  # the land cover in lon/lat, on a finer grid
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height,
                                                               *src.bounds, resolution=0.0001)  # fmt: skip
        data = np.zeros((height, width), dtype=np.uint8)
        reproject(src.read(1), data, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs="EPSG:4326", resampling=Resampling.nearest)  # fmt: skip
        profile = src.profile | {"crs": "EPSG:4326", "transform": transform, "width": width, "height": height}
    with rasterio.open(tmp_path / "lc_4326.tif", "w", **profile) as dst:
        dst.write(data, 1)
    same = tile_scene(shared_data / SCENE, tmp_path / "a", size=26, labels=shared_data / LC)
    warped = tile_scene(shared_data / SCENE, tmp_path / "b", size=26, labels=tmp_path / "lc_4326.tif")
    labels = {(t.row, t.col): t.label for t in same.tiles}
    agree = np.mean([labels.get((t.row, t.col)) == t.label for t in warped.tiles])
    assert len(warped.tiles) >= 95 and agree >= 0.95


def test_polygon_labels_give_the_raster_labels(shared_data: Path, tmp_path: Path) -> None:
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    from landsight.segment.scene_tiles import tile_scene

    with rasterio.open(shared_data / LC) as src:  # the land cover as polygons named by class
        codes = np.minimum(src.read(1), 4)
        feats = [(shape(g), LUMPED[int(v)]) for g, v in shapes(codes, mask=codes > 0, transform=src.transform)]
        crs = src.crs
    frame = gpd.GeoDataFrame({"cover": [n for _, n in feats]}, geometry=[g for g, _ in feats], crs=crs)
    frame.to_file(tmp_path / "lc.gpkg", driver="GPKG")
    raster = tile_scene(shared_data / SCENE, tmp_path / "a", size=52, labels=shared_data / LC)
    polys = tile_scene(shared_data / SCENE, tmp_path / "b", size=52, labels=tmp_path / "lc.gpkg", label_field="cover")
    assert [(t.path.name, t.label) for t in polys.tiles] == [(t.path.name, t.label) for t in raster.tiles]
    with pytest.raises(LandsightValueError, match="label_field"):
        tile_scene(shared_data / SCENE, tmp_path / "c", size=52, labels=tmp_path / "lc.gpkg")


def test_cli_tile_with_labels(shared_data: Path, tmp_path: Path) -> None:
    from landsight.cli import app

    runner = CliRunner()
    out = tmp_path / "t"
    args = ["tile", str(shared_data / SCENE), "--size", "40", "--labels", str(shared_data / LC), "--out", str(out)]
    r = runner.invoke(app, [*args, "--rule", "min-fraction:0.8", "--prefix", "naip"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "13 unlabelled (min-fraction:0.8): 0 kept, 13 dropped; 13 partial edge tiles dropped" in said
    assert (out / "trees" / "naip_0_0.tif").is_file() and not (out / "unlabelled").exists()
    r = runner.invoke(app, [*args, "--layout", "csv", "--edge", "keep", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "49 tiles of 40 px" in r.output and not (out / "trees").exists()
    assert (out / "labels.csv").read_text().splitlines()[1].startswith(f"{STEM}_0_0.tif,trees,")
    r = runner.invoke(app, [*args, "--overwrite", "--rule", "mean"])
    assert isinstance(r.exception, LandsightValueError) and "rule" in str(r.exception)
