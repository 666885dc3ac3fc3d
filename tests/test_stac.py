"""STAC inputs: a static catalog written with pystac, pointing at the real georeferenced NAIP tile."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from landsight.errors import LandsightValueError

NAIP = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"


@pytest.fixture
def naip(shared_data: Path, tmp_path: Path) -> Path:
    """A copy of the real NAIP tile (260x260, 4 bands, EPSG:26917) inside tmp_path/data."""
    path = tmp_path / "data" / "naip.tif"
    path.parent.mkdir()
    shutil.copyfile(shared_data / NAIP, path)
    return path


def _item(naip: Path, item_id: str = "m_3907833_nw_17_1", *, thumbnail_first: bool = True):  # noqa: ANN202
    import pystac
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(naip) as src:
        bbox = list(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    geometry = {"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                                                    [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]}  # fmt: skip
    item = pystac.Item(item_id, geometry, bbox, datetime(2014, 6, 1, tzinfo=UTC), properties={})
    if thumbnail_first:  # a non-raster asset first: the default must skip it
        item.add_asset("thumbnail", pystac.Asset(str(naip.with_suffix(".png")), media_type=pystac.MediaType.PNG,
                                                 roles=["thumbnail"]))  # fmt: skip
    item.add_asset("image", pystac.Asset(str(naip), media_type=pystac.MediaType.COG, roles=["data"]))
    return item


def _catalog(naip: Path, root: Path, n_items: int = 1) -> Path:
    """A self-contained static catalog (relative hrefs) under ``root``; returns catalog.json."""
    import pystac

    catalog = pystac.Catalog("naip", "NAIP test catalog")
    for i in range(n_items):
        catalog.add_item(_item(naip, f"scene-{i}"))
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def test_static_catalog_resolves_to_absolute_asset_hrefs(naip: Path, tmp_path: Path) -> None:
    from landsight.data.stac import stac_assets, stac_items

    catalog = _catalog(naip, tmp_path / "stac", n_items=2)
    item_json = json.loads(next((tmp_path / "stac").glob("scene-0/*.json")).read_text())
    assert not Path(item_json["assets"]["image"]["href"]).is_absolute()  # written relative
    hrefs = stac_assets(catalog, asset="image")
    assert hrefs == [str(naip.resolve())] * 2
    assert stac_assets(catalog) == hrefs  # default: the raster asset with role "data", not the thumbnail
    items = stac_items(catalog)
    assert [a.item_id for a in items] == ["scene-0", "scene-1"] and items[0].key == "image"
    assert items[0].bbox is not None and -80 < items[0].bbox[0] < -77  # West Virginia, WGS84


def test_item_and_item_collection_and_missing_asset(naip: Path, tmp_path: Path) -> None:
    import pystac

    from landsight.data.stac import stac_assets

    item = _item(naip)
    item_path = tmp_path / "item.json"
    item.save_object(dest_href=str(item_path), include_self_link=False)
    assert stac_assets(item_path) == [str(naip)]
    collection = pystac.ItemCollection([_item(naip, "a"), _item(naip, "b")])
    collection.save_object(str(tmp_path / "items.json"))
    assert stac_assets(tmp_path / "items.json", asset="image") == [str(naip)] * 2
    with pytest.raises(LandsightValueError, match=r"no asset 'visual'.*\['image', 'thumbnail'\]"):
        stac_assets(item_path, asset="visual")


def test_list_images_and_cut_tiles_read_a_stac_item(naip: Path, tmp_path: Path) -> None:
    import rasterio

    from landsight.data.listing import list_images
    from landsight.data.tiling import cut_tiles

    catalog = _catalog(naip, tmp_path / "stac")
    assert list_images(catalog, asset="image") == [str(naip.resolve())]
    with pytest.raises(LandsightValueError, match="asset="):
        list_images(naip, asset="image")  # asset= only means something for STAC
    item_json = next((tmp_path / "stac").glob("scene-0/*.json"))
    tiles = cut_tiles(item_json, tmp_path / "tiles", size=130, asset="image")
    assert len(tiles) == 4
    with rasterio.open(naip) as src, rasterio.open(tiles[3].path) as tile:
        assert tile.crs == src.crs and tile.count == 4
        assert tile.bounds.right == pytest.approx(src.bounds.right)
        assert (tile.read() == src.read(window=tiles[3].window)).all()
    two = _catalog(naip, tmp_path / "stac2", n_items=2)
    both = cut_tiles(two, tmp_path / "tiles2", size=130)
    assert sorted(p.path.name for p in both)[:2] == ["scene-0_0_0.tif", "scene-0_0_1.tif"]  # Item ids
    assert len(both) == 8


def test_predict_raster_reads_a_stac_item(naip: Path, tmp_path: Path) -> None:
    import numpy as np
    import rasterio
    import torch

    from landsight.segment.model import SegmentationNet
    from landsight.segment.predict import predict_raster
    from landsight.segment.train import write_segmentation_bundle

    conv = torch.nn.Conv2d(4, 4, 1, bias=False)  # class k wins where band k is the largest
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1) * 10)
    class_map = {
        "name": "synthetic",
        "ignore": {"codes": [0]},
        "classes": [{"code": k + 1, "name": f"c{k + 1}", "colour": [40 * k, 100, 200]} for k in range(4)],
    }
    meta = {"class_map": class_map, "bands": [1, 2, 3, 4], "chip_size": 64, "context": None,
            "band_stats": {"bands": [1, 2, 3, 4], "mean": [0.0] * 4, "std": [1.0] * 4, "pixels": 1}}  # fmt: skip
    bundle = write_segmentation_bundle(tmp_path / "b.landsight", SegmentationNet(conv, [0.0] * 4, [1.0] * 4), meta)
    item = _item(naip)
    item.save_object(dest_href=str(tmp_path / "item.json"), include_self_link=False)
    direct = predict_raster(bundle, naip, tmp_path / "direct.tif", progress=False)
    via_stac = predict_raster(bundle, tmp_path / "item.json", tmp_path / "stac.tif", progress=False, asset="image")
    with rasterio.open(direct) as a, rasterio.open(via_stac) as b:
        assert a.crs == b.crs and a.transform == b.transform
        assert np.array_equal(a.read(), b.read())
    two = _catalog(naip, tmp_path / "stac", n_items=2)
    with pytest.raises(LandsightValueError, match="holds 2 items"):
        predict_raster(bundle, two, tmp_path / "x.tif", progress=False)


# -- safety: one line for every broken catalog, and --no-remote ---------------------------------
# Synthetic catalogs, written as plain JSON in tmp_path, whose Items point at real EuroSAT tiles
# from the package's bundled sample.


def _sample_tile(name: str = "Forest_1.jpg") -> Path:
    from landsight.data.sample import eurosat_sample

    return eurosat_sample() / name.split("_", 1)[0] / name


def _write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _synthetic_item(item_id: str, href: str) -> dict:
    bbox = [-78.0, 39.0, -77.9, 39.1]
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "bbox": bbox,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"datetime": "2020-06-01T00:00:00Z"}, "links": [],
        "assets": {"image": {"href": href, "type": "image/jpeg", "roles": ["data"]}},
    }  # fmt: skip


def _synthetic_catalog(cat_id: str, links: list[tuple[str, str]]) -> dict:
    return {
        "type": "Catalog", "stac_version": "1.0.0", "id": cat_id, "description": "synthetic test catalog",
        "links": [{"rel": rel, "href": href, "type": "application/json"} for rel, href in links],
    }  # fmt: skip


def _free_local_url(path: str) -> str:
    """An http URL on a closed localhost port: reading it fails at once, no outside network used."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def test_synthetic_catalog_of_sample_tiles_resolves_relative_hrefs(tmp_path: Path) -> None:
    from landsight.data.stac import stac_assets

    forest, river = _sample_tile("Forest_1.jpg"), _sample_tile("River_1.jpg")
    shutil.copyfile(river, tmp_path / "river.jpg")
    _write(tmp_path / "items" / "forest.json", _synthetic_item("forest", str(forest)))
    _write(tmp_path / "items" / "river.json", _synthetic_item("river", "../river.jpg"))  # relative to the item
    sub = _write(tmp_path / "sub" / "catalog.json", _synthetic_catalog("sub", [("item", "../items/river.json")]))
    links = [("child", "sub/catalog.json"), ("item", "items/forest.json"), ("parent", "catalog.json"),
             ("root", "./catalog.json")]  # fmt: skip
    root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", links))
    assert stac_assets(root, asset="image") == [str(forest), str(tmp_path / "river.jpg")]  # items, then children
    assert stac_assets(root, "image", allow_remote=False) == stac_assets(root, "image")  # all local: allowed
    # an Item reached through two catalogs (not a cycle) is listed once
    _write(sub, _synthetic_catalog("sub", [("item", "../items/river.json"), ("item", "../items/forest.json")]))
    assert len(stac_assets(root, "image")) == 2
    # an ItemCollection's relative hrefs resolve against the collection file
    features = _write(tmp_path / "items.json", {"type": "FeatureCollection",
                                                "features": [_synthetic_item("r", "river.jpg")]})  # fmt: skip
    assert stac_assets(features, "image") == [str(tmp_path / "river.jpg")]


def test_missing_item_is_one_line_naming_the_link(tmp_path: Path) -> None:
    from landsight.data.stac import stac_assets
    from landsight.errors import DataNotFoundError

    root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", [("item", "items/gone.json")]))
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        stac_assets(root)
    message = str(info.value)
    assert str(root) in message and str(tmp_path / "items" / "gone.json") in message and "\n" not in message
    _write(tmp_path / "items" / "gone.json", {"not": "stac"})  # present but not an Item
    with pytest.raises(LandsightValueError, match="not a STAC Item, Catalog or Collection"):
        stac_assets(root)
    (tmp_path / "items" / "gone.json").write_text("{ truncated")
    with pytest.raises(LandsightValueError, match=r"cannot read STAC JSON .*gone\.json"):
        stac_assets(root)


def test_failing_url_is_one_line(tmp_path: Path) -> None:
    from landsight.data.stac import stac_assets

    url = _free_local_url("items/forest.json")
    root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", [("item", url)]))
    with pytest.raises(LandsightValueError, match="cannot read STAC JSON") as info:
        stac_assets(root)
    assert url in str(info.value) and str(root) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("shape", ["self", "loop"])
def test_catalog_cycle_is_refused(tmp_path: Path, shape: str) -> None:
    from landsight.data.stac import stac_assets

    _write(tmp_path / "items" / "forest.json", _synthetic_item("forest", str(_sample_tile())))
    if shape == "self":  # a catalog listing itself as its child
        links = [("item", "items/forest.json"), ("child", "./catalog.json")]
        root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", links))
    else:  # root -> a -> b -> a
        root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", [("child", "a/catalog.json")]))
        _write(tmp_path / "a" / "catalog.json", _synthetic_catalog("a", [("child", "../b/catalog.json")]))
        _write(tmp_path / "b" / "catalog.json", _synthetic_catalog("b", [("child", "../a/catalog.json")]))
    with pytest.raises(LandsightValueError, match="a cycle") as info:
        stac_assets(root, "image")
    assert "\n" not in str(info.value)
    assert str(root if shape == "self" else tmp_path / "a" / "catalog.json") in str(info.value)


def test_unknown_asset_names_the_item_file(tmp_path: Path) -> None:
    from landsight.data.stac import stac_assets

    item = _write(tmp_path / "items" / "forest.json", _synthetic_item("forest", str(_sample_tile())))
    root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", [("item", "items/forest.json")]))
    with pytest.raises(LandsightValueError, match=r"no asset 'B04'.*\['image'\].*--asset") as info:
        stac_assets(root, asset="B04")
    assert str(item) in str(info.value)


def test_remote_links_refused_when_remote_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pystac

    from landsight.data.listing import list_images
    from landsight.data.stac import stac_assets

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a remote href was read")

    monkeypatch.setattr(pystac.StacIO, "default", no_network)
    root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", [("item", "https://example.com/item.json")]))
    with pytest.raises(LandsightValueError, match="remote reads are off") as info:
        stac_assets(root, allow_remote=False)
    assert "https://example.com/item.json" in str(info.value) and str(root) in str(info.value)
    with pytest.raises(LandsightValueError, match="only the hosts"):
        list_images(root, allow_remote={"stac.example.org"})
    with pytest.raises(LandsightValueError, match="remote reads are off"):
        stac_assets("https://example.com/catalog.json", allow_remote=False)
    # a local Item whose asset is remote: refused too, unless its host is allowed
    item = _write(tmp_path / "item.json", _synthetic_item("remote", "https://example.com/tile.tif"))
    with pytest.raises(LandsightValueError, match=r"asset 'image' \('https://example.com/tile.tif'\)"):
        list_images(item, allow_remote=False)
    assert stac_assets(item, allow_remote={"example.com"}) == ["https://example.com/tile.tif"]
    assert stac_assets(item) == ["https://example.com/tile.tif"]


@pytest.mark.parametrize("verb", ["predict", "tile"])
def test_cli_no_remote_is_one_line(tmp_path: Path, verb: str) -> None:
    import subprocess
    import sys

    root = _write(tmp_path / "catalog.json", _synthetic_catalog("root", [("item", "https://example.com/item.json")]))
    args = ["predict", str(tmp_path / "none.landsight"), str(root), "--out", str(tmp_path / "p.parquet"), "--no-track"]
    if verb == "tile":
        args = ["tile", str(root), "--out", str(tmp_path / "tiles")]
    r = subprocess.run([sys.executable, "-m", "landsight", *args, "--no-remote"], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "https://example.com/item.json" in r.stderr and "--no-remote" in r.stderr
    assert not (tmp_path / "p.parquet").exists() and not (tmp_path / "tiles").exists()
