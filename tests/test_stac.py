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
    assert sorted(p.path.name for p in both)[:2] == ["tile_scene-0_0_0.tif", "tile_scene-0_0_1.tif"]
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
