"""Prediction maps and change analysis from REAL predictions on real, georeferenced NAIP tiles.

The tiles are cut (3 x 3 windows) from ../shared/data/chesapeake/tile_downsampled (NAIP 2014,
4-band, EPSG:26917) and predicted with the session's small EuroSAT bundle; the reference label of
each tile is the majority Chesapeake land-cover code of the same window, named in the bundle's
vocabulary where one exists (water -> SeaLake, tree canopy -> Forest).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from landsight.errors import LandsightValueError

TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"
LC = "chesapeake/tile_downsampled/m_3907833_nw_17_1_lc.tif"
LC_NAMES = {1: "SeaLake", 2: "Forest", 3: "low vegetation", 4: "barren", 5: "impervious", 6: "road"}
N = 3  # 3 x 3 tiles


@pytest.fixture(scope="module")
def geo_tiles(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list]:
    """9 real GeoTIFF tiles with known bounds, their reference labels and bounds."""
    import rasterio

    from landsight.data.tiling import cut_tiles

    root = tmp_path_factory.mktemp("geo_tiles")
    reference, bounds = {}, []
    tiles = cut_tiles(shared_data / TILE, root, size=260 // N)  # the scene is 260 x 260 px
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(N) for c in range(N)]
    with rasterio.open(shared_data / TILE) as src, rasterio.open(shared_data / LC) as lc:
        for t in tiles:
            codes, counts = np.unique(lc.read(1, window=t.window), return_counts=True)
            reference[str(t.path)] = LC_NAMES[int(codes[counts.argmax()])]
            bounds.append((str(t.path), rasterio.windows.bounds(t.window, src.transform), src.crs))
    return root, reference, bounds


@pytest.fixture(scope="module")
def geo_preds(geo_tiles: tuple, trained, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """Real predictions of the 9 tiles by the session's bundle, as Parquet."""
    from landsight.classify.predict import predict

    out = tmp_path_factory.mktemp("geo_preds") / "preds.parquet"
    predict(trained.bundle_path, geo_tiles[0], out=out, progress=False, track=False, num_workers=1)
    return out


def test_predictions_carry_bounds_and_polygons_are_reprojected_to_wgs84(geo_tiles: tuple, geo_preds: Path) -> None:
    from rasterio.warp import transform_bounds

    from landsight.predictions import load_predictions
    from landsight.vectors import tile_polygons

    table = load_predictions(geo_preds)
    assert len(table) == N * N and (table["error"] == "").all() and (table["crs"] == "EPSG:26917").all()
    skipped: list[tuple[str, str]] = []
    tiles = tile_polygons(table, to_crs="EPSG:4326", skip_failed=True, skipped=skipped)
    assert skipped == [] and len(tiles) == N * N and tiles.crs.to_epsg() == 4326
    by_path = {p: np.asarray(g.exterior.coords) for p, g in zip(tiles["path"], tiles.geometry, strict=True)}
    for path, (left, bottom, right, top), crs in geo_tiles[2]:
        ring = by_path[path]
        assert ring.shape == (5, 2) and np.array_equal(ring[0], ring[-1])
        w, s, e, n = transform_bounds(crs, "EPSG:4326", left, bottom, right, top)
        assert ring[:, 0].min() == pytest.approx(w, abs=1e-9) and ring[:, 0].max() == pytest.approx(e, abs=1e-9)
        assert ring[:, 1].min() == pytest.approx(s, abs=1e-9) and ring[:, 1].max() == pytest.approx(n, abs=1e-9)
        assert -79.1 < w < e < -78.9 and 39.4 < s < n < 39.6  # West Virginia / Maryland border


def test_html_map_is_self_contained_and_renders_polygons_and_legend_in_chromium(
    geo_tiles: tuple, geo_preds: Path, tmp_path: Path, chromium
) -> None:  # noqa: ANN001
    from landsight.results.maps import prediction_map

    result = prediction_map(geo_preds, tmp_path / "map.html", reference=geo_tiles[1], progress=False)
    preds = pd.read_parquet(geo_preds)
    expected_disagree = sum(geo_tiles[1][p] != c for p, c in zip(preds["path"], preds["predicted"], strict=True))
    assert result.n_tiles == N * N and result.n_disagree == expected_disagree
    text = result.html.read_text()
    # offline: no script or stylesheet is fetched from a network, no jQuery / Bootstrap
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?(https?:)?//", text)
    assert "L.map(" in text and "bootstrap" not in text.lower()
    assert text.count("data:image/png;base64,") >= N * N  # a thumbnail per popup

    dom = chromium.dump_dom(result.html)
    polygons = re.findall(r"<path class=\"leaflet-interactive", dom)
    # predicted layer (9) + disagreement outlines; the reference layer starts hidden
    assert len(polygons) == N * N + expected_disagree
    legend = re.search(r"<div id=\"landsight-legend\".*?</div>\s*</div>", dom, re.S)
    assert legend is not None
    for cls in ("Forest", "River", "SeaLake"):
        assert cls in legend.group(0)
    assert "leaflet-control-layers" in dom and "disagrees with reference" in dom

    shot = chromium.screenshot(result.html, tmp_path / "map.png")
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 5_000


def test_static_png_map_has_a_panel_per_layer(geo_tiles: tuple, geo_preds: Path, tmp_path: Path) -> None:
    from PIL import Image

    from landsight.results.maps import prediction_map

    one = prediction_map(geo_preds, None, png=tmp_path / "one.png", progress=False).png
    two = prediction_map(geo_preds, None, png=tmp_path / "two.png", reference=geo_tiles[1], progress=False).png
    a, b = np.asarray(Image.open(one).convert("RGB")), np.asarray(Image.open(two).convert("RGB"))
    assert b.shape[1] > a.shape[1]  # the reference panel widens the figure
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 10  # not a blank image


def _before_table(geo_preds: Path, tmp_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """An older table of the same tiles: SYNTHETIC change on 2 tiles, other paths (another year)."""
    after = pd.read_parquet(geo_preds)
    before = after.copy()
    before["path"] = [str(tmp_path / "2010" / Path(p).name) for p in after["path"]]
    changed = list(after["path"].iloc[[0, 4]])
    for i in (0, 4):
        before.loc[i, "predicted"] = "River" if after.loc[i, "predicted"] != "River" else "SeaLake"
    return before, changed


def test_change_between_two_prediction_sets_counts_transitions(geo_preds: Path, tmp_path: Path) -> None:
    from landsight.results.change import compare_predictions, write_change

    before, changed = _before_table(geo_preds, tmp_path)
    result = compare_predictions(before, geo_preds)  # matched by bounds: the paths differ
    assert len(result.table) == N * N and result.n_unmatched == 0
    assert sorted(result.table.loc[result.table["changed"], "path"]) == sorted(changed)
    assert result.transitions["count"].sum() == 2
    after = pd.read_parquet(geo_preds).set_index("path")
    for row in result.table[result.table["changed"]].itertuples():
        assert row.after == after.loc[row.path, "predicted"] and row.before != row.after
    files = write_change(result, tmp_path / "change.csv")
    assert pd.read_csv(files["transitions"])["count"].sum() == 2
    with pytest.raises(LandsightValueError, match="no tile"):
        compare_predictions(before, geo_preds, on="path")


def test_change_layer_and_cli(geo_preds: Path, tmp_path: Path, chromium) -> None:  # noqa: ANN001
    from landsight.cli import app

    before, _ = _before_table(geo_preds, tmp_path)
    before.to_csv(tmp_path / "before.csv", index=False)
    out = CliRunner().invoke(
        app,
        ["map", str(geo_preds), "--out", str(tmp_path / "m.html"), "--png", str(tmp_path / "m.png"),
         "--compare", str(tmp_path / "before.csv"), "--change-out", str(tmp_path / "change.csv"), "--quiet"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "2 of 9 tiles changed class" in out.output
    assert (tmp_path / "m.png").stat().st_size > 5_000 and (tmp_path / "change_transitions.csv").is_file()
    dom = chromium.dump_dom(tmp_path / "m.html")
    assert len(re.findall(r"<path class=\"leaflet-interactive", dom)) == N * N + 2
    assert "changed since before" in dom


def test_rows_without_bounds_or_with_errors_are_skipped_and_listed(geo_preds: Path, tmp_path: Path) -> None:
    from landsight.results.maps import prediction_map

    table = pd.read_parquet(geo_preds)
    table.loc[0, ["predicted", "error"]] = ["", "cannot read image: truncated"]
    table.loc[1, ["minx", "crs"]] = [np.nan, ""]
    result = prediction_map(table, tmp_path / "m.html", thumbnails=False, progress=False)
    assert result.n_tiles == N * N - 2 and [r for _, r in result.skipped][0].startswith("prediction failed")
    flat = table.assign(crs="", minx=np.nan)
    with pytest.raises(LandsightValueError, match="no tile of the predictions can be drawn"):
        prediction_map(flat, tmp_path / "x.html", progress=False)
    with pytest.raises(LandsightValueError, match="lacks the column"):
        prediction_map(table.drop(columns=["predicted"]), tmp_path / "x.html", progress=False)


def test_optional_basemap_is_the_only_network_resource(geo_preds: Path, tmp_path: Path) -> None:
    from landsight.results.maps import prediction_map

    url = "https://tile.example.org/{z}/{x}/{y}.png"
    html = prediction_map(geo_preds, tmp_path / "b.html", basemap=url, attribution="Example", thumbnails=False,
                          progress=False).html.read_text()  # fmt: skip
    assert url in html and "L.tileLayer(" in html and "Example" in html
    plain = prediction_map(geo_preds, tmp_path / "p.html", thumbnails=False, progress=False).html.read_text()
    assert "L.tileLayer(" not in plain


def test_cli_tile_cuts_whole_georeferenced_tiles(shared_data: Path, tmp_path: Path) -> None:
    import rasterio

    from landsight.cli import app
    from landsight.data.tiling import cut_tiles

    out = CliRunner().invoke(app, ["tile", str(shared_data / TILE), "--out", str(tmp_path / "t"), "--size", "100"])
    assert out.exit_code == 0, out.output
    assert "4 tiles (2 x 2 of 100 px)" in out.output  # 260 px: the partial third row / column is left out
    with rasterio.open(shared_data / TILE) as src, rasterio.open(tmp_path / "t" / f"{Path(TILE).stem}_1_0.tif") as tile:
        assert tile.crs == src.crs and (tile.width, tile.height, tile.count) == (100, 100, 4)
        assert tile.transform == src.transform * rasterio.Affine.translation(0, 100)
        np.testing.assert_array_equal(tile.read(), src.read(window=rasterio.windows.Window(0, 100, 100, 100)))
    with pytest.raises(LandsightValueError, match="tile size"):
        cut_tiles(shared_data / TILE, tmp_path / "x", size=261)
