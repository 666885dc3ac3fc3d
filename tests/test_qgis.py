"""Ready for QGIS (issue 28, part 4): category names and RAT, layer styles, --pixel-size, STAC columns.

Real imagery: the georeferenced downsampled Chesapeake tile (EPSG:26917) in ../shared/data and
the package's EuroSAT sample; the class GeoTIFF is read the way QGIS reads it (GDAL's
``GetCategoryNames`` / ``GetDefaultRAT`` when the GDAL bindings are installed, else the PAM
sidecar GDAL merges with the GeoTIFF, checked against GDAL's schema, and ``gdalinfo -json`` when
GDAL's tools are on the PATH). Rasters and STAC items made here are named synthetic.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_segment_gis import _pixel_bundle  # the synthetic per-pixel bundle (seeded)

from landsight.errors import LandsightValueError

TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"
SLD = "{http://www.opengis.net/sld}"
SE = "{http://www.opengis.net/se}"
OGC = "{http://www.opengis.net/ogc}"


@pytest.fixture(scope="module")
def mapped(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``segment predict`` of the real NAIP tile with ``--vector`` and ``--stats``, run once."""
    naip = shared_data / TILE
    if not naip.is_file():
        pytest.skip("the georeferenced Chesapeake tile is not in ../shared/data")
    root = tmp_path_factory.mktemp("qgis")
    bundle = _pixel_bundle(root / "px.landsight")
    out, vec, stats = root / "lc.tif", root / "lc.gpkg", root / "stats.csv"
    bundle.predict(naip, out, vector=vec, stats=stats, progress=False)
    return {"bundle": bundle, "naip": naip, "root": root, "out": out, "vector": vec, "stats": stats,
            "classes": bundle.class_map.classes}  # fmt: skip


def _hex(rgb: tuple[int, ...] | list[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def test_class_geotiff_carries_category_names_and_attribute_table(mapped: dict) -> None:
    out, classes = mapped["out"], mapped["classes"]
    aux = out.with_name(out.name + ".aux.xml")
    assert aux.is_file()
    assert not list(mapped["root"].glob(".landsight-tmp*"))  # every temporary renamed into place
    expected_names = [""] * (max(c.code for c in classes) + 1)
    for c in classes:
        expected_names[c.code] = c.name
    rows = [(c.code, c.name, *c.colour[:3]) for c in classes]
    try:
        from osgeo import gdal  # type: ignore[import-not-found]
    except ImportError:
        gdal = None
    if gdal is not None:  # exactly what QGIS calls
        band = gdal.Open(str(out)).GetRasterBand(1)
        assert band.GetCategoryNames() == expected_names
        rat = band.GetDefaultRAT()
        assert [rat.GetNameOfCol(i) for i in range(rat.GetColumnCount())] == ["Value", "Class name", "R", "G", "B"]
        assert [(rat.GetValueAsInt(r, 0), rat.GetValueAsString(r, 1), *(rat.GetValueAsInt(r, k) for k in (2, 3, 4)))
                for r in range(rat.GetRowCount())] == rows  # fmt: skip
    # GDAL's PAM schema: PAMDataset / PAMRasterBand band=1 / CategoryNames + GDALRasterAttributeTable
    root = ET.parse(aux).getroot()
    assert root.tag == "PAMDataset"
    (band,) = root.findall("PAMRasterBand")
    assert band.get("band") == "1"
    assert [(e.text or "") for e in band.findall("CategoryNames/Category")] == expected_names
    rat = band.find("GDALRasterAttributeTable")
    assert rat is not None and rat.get("tableType") == "thematic"
    fields = [
        (f.get("index"), f.findtext("Name"), f.findtext("Type"), f.findtext("Usage")) for f in rat.findall("FieldDefn")
    ]
    # GFT_Integer 0 / GFT_String 2; GFU_MinMax 5, GFU_Name 2, GFU_Red / Green / Blue 6 / 7 / 8
    assert fields == [("0", "Value", "0", "5"), ("1", "Class name", "2", "2"), ("2", "R", "0", "6"),
                      ("3", "G", "0", "7"), ("4", "B", "0", "8")]  # fmt: skip
    found = [tuple(f.text for f in row.findall("F")) for row in rat.findall("Row")]
    assert found == [tuple(str(v) for v in r) for r in rows]
    assert [row.get("index") for row in rat.findall("Row")] == [str(i) for i in range(len(rows))]
    # the GeoTIFF itself keeps its colour table, nodata and classes tag
    with rasterio.open(out) as src:
        assert src.nodata == 255 and src.crs.to_epsg() == 26917
        cmap = src.colormap(1)
        assert all(tuple(cmap[c.code][:3]) == tuple(c.colour[:3]) for c in classes)
    if shutil.which("gdalinfo"):  # GDAL itself merges the sidecar with the GeoTIFF
        info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True,
                                         check=True, timeout=120).stdout)  # fmt: skip
        band_info = info["bands"][0]
        assert band_info["categories"] == expected_names
        rat_info = band_info.get("rat") or info["rat"]  # GDAL 3.6 lists band 1's RAT at the top
        assert [f["name"] for f in rat_info["fieldDefn"]] == ["Value", "Class name", "R", "G", "B"]
        assert [tuple(r["f"]) for r in rat_info["row"]] == rows


def _qml_categories(path: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """The class field and ``(value, label, #rrggbb)`` per category of a QGIS categorized style."""
    root = ET.parse(path).getroot()
    assert root.tag == "qgis"
    renderer = root.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "categorizedSymbol"
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    out = []
    for cat in renderer.findall("categories/category"):
        symbol = symbols[cat.get("symbol")]
        layer = symbol.find("layer")
        assert symbol.get("type") == "fill" and layer is not None and layer.get("class") == "SimpleFill"
        colour = {o.get("name"): o.get("value") for o in layer.findall("Option/Option")}["color"]
        assert {p.get("k"): p.get("v") for p in layer.findall("prop")}["color"] == colour  # QGIS < 3.26 too
        r, g, b, a = (int(v) for v in colour.split(","))
        assert a == 255 and cat.get("render") == "true"
        out.append((cat.get("value"), cat.get("label"), _hex((r, g, b))))
    return renderer.get("attr"), out


def _sld_rules(path: Path) -> list[tuple[str, str, str, str]]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SLD}StyledLayerDescriptor" and root.get("version") == "1.1.0"
    out = []
    for rule in root.iter(f"{SE}Rule"):
        equal = rule.find(f"{OGC}Filter/{OGC}PropertyIsEqualTo")
        fill = rule.find(f"{SE}PolygonSymbolizer/{SE}Fill/{SE}SvgParameter[@name='fill']")
        out.append((equal.findtext(f"{OGC}PropertyName"), equal.findtext(f"{OGC}Literal"), rule.findtext(f"{SE}Name"),
                    fill.text))  # fmt: skip
    return out


def test_vector_layer_gets_a_qml_and_sld_matching_the_class_map(mapped: dict) -> None:
    import geopandas as gpd

    classes = mapped["classes"]
    qml, sld = mapped["vector"].with_suffix(".qml"), mapped["vector"].with_suffix(".sld")
    field, categories = _qml_categories(qml)
    assert field == "code"
    assert categories == [(str(c.code), c.name, _hex(c.colour)) for c in classes]
    assert _sld_rules(sld) == [("code", str(c.code), c.name, _hex(c.colour)) for c in classes]
    layer = gpd.read_file(mapped["vector"])  # the field the style categorizes holds those values
    styled = {value: colour for value, _, colour in categories}
    assert all(styled[str(code)] == colour for code, colour in zip(layer["code"], layer["colour"], strict=True))


def test_polygons_of_an_existing_map_get_styles_too(mapped: dict) -> None:
    from landsight.segment.vector import write_raster_layers

    vec = mapped["root"] / "again.geojson"
    write_raster_layers(mapped["out"], vector=vec)
    field, categories = _qml_categories(vec.with_suffix(".qml"))
    present = {int(v) for v, _, _ in categories}
    assert field == "code" and present <= {c.code for c in mapped["classes"]} and present
    by_code = {c.code: (c.name, _hex(c.colour)) for c in mapped["classes"]}
    assert all(by_code[int(v)] == (label, colour) for v, label, colour in categories)


def test_classification_grid_layer_gets_a_style(trained, mapped: dict, tmp_path: Path) -> None:  # noqa: ANN001
    from rasterio.windows import Window

    from landsight.classify.predict import predict
    from landsight.predictions import probability_columns
    from landsight.results.map_colors import class_colors

    grid = tmp_path / "grid"
    grid.mkdir()
    with rasterio.open(mapped["naip"]) as src:
        for i in range(2):
            win = Window(i * 100, 0, 100, 100)
            profile = {"driver": "GTiff", "height": 100, "width": 100, "count": 3, "dtype": "uint8",
                       "crs": src.crs, "transform": src.window_transform(win)}  # fmt: skip
            with rasterio.open(grid / f"t{i}.tif", "w", **profile) as dst:
                dst.write(src.read([1, 2, 3], window=win))
    out = tmp_path / "grid.gpkg"
    table = predict(trained.bundle_path, grid, out=out, progress=False, track=False, num_workers=0)
    assert "stac_item" not in table.columns and "datetime" not in table.columns  # plain files: layout unchanged
    field, categories = _qml_categories(tmp_path / "grid.qml")
    classes = [c.removeprefix("prob_") for c in probability_columns(table)]  # the bundle's, in order
    colours = class_colors(classes)  # the colours of `landsight map`
    assert field == "predicted" and len(classes) == 3
    assert categories == [(c, c, colours[c]) for c in classes]
    assert [r[:3] for r in _sld_rules(tmp_path / "grid.sld")] == [("predicted", c, c) for c in classes]


def _crs_less_crop(naip: Path, path: Path) -> Path:
    """A synthetic 4-band raster without CRS or transform: a crop of the real NAIP tile."""
    with rasterio.open(naip) as src:
        data = src.read(window=rasterio.windows.Window(0, 0, 96, 80))
    profile = {"driver": "GTiff", "height": 80, "width": 96, "count": 4, "dtype": data.dtype.name}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the synthetic crop has no grid
def test_pixel_size_gives_areas_in_square_metres_without_a_crs(mapped: dict, tmp_path: Path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from landsight.cli.main import app

    plain = _crs_less_crop(mapped["naip"], tmp_path / "plain.tif")
    bundle = mapped["bundle"]
    bundle.predict(plain, tmp_path / "a.tif", stats=tmp_path / "a.csv", progress=False)
    blank = pd.read_csv(tmp_path / "a.csv")
    assert blank["area_m2"].isna().all() and blank["pixels"].sum() == 80 * 96  # no CRS, no size: no areas
    r = CliRunner().invoke(app, ["segment", "predict", str(bundle.path), str(plain), "--out", str(tmp_path / "b.tif"),
                                 "--stats", str(tmp_path / "b.csv"), "--pixel-size", "0.6", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "b.csv")
    np.testing.assert_allclose(table["area_m2"], table["pixels"] * 0.36)
    np.testing.assert_allclose(table["area_ha"], table["area_m2"] / 1e4)
    assert table["area_m2"].sum() == pytest.approx(80 * 96 * 0.36)
    assert table[["code", "pixels"]].equals(blank[["code", "pixels"]])
    import geopandas as gpd

    bundle.predict(plain, tmp_path / "v.tif", vector=tmp_path / "v.gpkg", pixel_size=0.6, progress=False)
    layer = gpd.read_file(tmp_path / "v.gpkg")  # the polygons' areas too, not blank
    assert layer["area_m2"].sum() == pytest.approx(80 * 96 * 0.36)
    with pytest.raises(LandsightValueError, match="without a CRS"):  # a georeferenced raster has its own size
        bundle.predict(mapped["naip"], tmp_path / "c.tif", stats=tmp_path / "c.csv", pixel_size=0.6, progress=False)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(LandsightValueError, match="pixel_size"):
            bundle.predict(plain, tmp_path / "d.tif", stats=tmp_path / "d.csv", pixel_size=bad, progress=False)
    assert not (tmp_path / "c.tif").exists() and not (tmp_path / "d.tif").exists()


def _stac_item(item_id: str, href: str, when: str | None) -> dict:
    """A synthetic STAC Item whose image asset is a real EuroSAT sample tile."""
    bbox = [-78.0, 39.0, -77.9, 39.1]
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
    times = {"datetime": when} if when else {"datetime": None, "start_datetime": "2019-01-01T00:00:00Z",
                                             "end_datetime": "2019-12-31T23:59:59Z"}  # fmt: skip
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "bbox": bbox,
        "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": times, "links": [],
        "assets": {"image": {"href": href, "type": "image/jpeg", "roles": ["data"]}},
    }  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predictions_of_stac_items_keep_item_id_and_datetime(trained, tmp_path: Path, suffix: str) -> None:  # noqa: ANN001
    from landsight.classify.predict import predict
    from landsight.data.sample import eurosat_sample
    from landsight.predictions import STAC_COLUMNS, load_predictions, prediction_columns, probability_columns

    sample = eurosat_sample()
    forest, river = sample / "Forest" / "Forest_1.jpg", sample / "River" / "River_1.jpg"
    items = {"type": "FeatureCollection", "features": [
        _stac_item("S2A_forest", str(forest), "2020-06-01T10:30:00Z"),
        _stac_item("S2B_river", str(river), None),  # a range: its start_datetime
    ]}  # fmt: skip
    source = tmp_path / "search.json"
    source.write_text(json.dumps(items))
    out = tmp_path / f"preds{suffix}"
    table = predict(trained.bundle_path, source, out=out, asset="image", progress=False, track=False, num_workers=0)
    classes = [c.removeprefix("prob_") for c in probability_columns(table)]
    assert list(table.columns) == prediction_columns(classes, stac=True)
    assert list(table.columns[-2:]) == list(STAC_COLUMNS)
    assert table["path"].tolist() == [str(forest), str(river)]
    assert table["stac_item"].tolist() == ["S2A_forest", "S2B_river"]
    assert table["datetime"].tolist() == ["2020-06-01T10:30:00Z", "2019-01-01T00:00:00Z"]
    assert (table["error"] == "").all()
    back = load_predictions(out)  # written with the table, read back as text
    assert back["stac_item"].tolist() == ["S2A_forest", "S2B_river"]
    assert back["datetime"].tolist() == ["2020-06-01T10:30:00Z", "2019-01-01T00:00:00Z"]
