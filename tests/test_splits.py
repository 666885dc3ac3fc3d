"""Spatial and group splits on real georeferenced tiles cut from the NAIP tile in ../shared/data."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landsight.errors import LandsightValueError

TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1"
NAMES = {1: "water", 2: "trees", 3: "low_vegetation", 4: "impervious"}


@pytest.fixture(scope="module")
def naip_tiles(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20x20 px GeoTIFF tiles of the real NAIP tile, labelled by the majority land-cover class.

    Returns a map file ``tiles.csv`` with columns ``path,label,row`` (row of the tile grid).
    """
    import rasterio

    from landsight.data.tiling import cut_tiles

    root = tmp_path_factory.mktemp("naip_tiles")
    tiles = cut_tiles(shared_data / f"{TILE}_naip-new.tif", root / "tiles", size=20, prefix="tile")
    with rasterio.open(shared_data / f"{TILE}_lc.tif") as src:
        codes = src.read(1)
    rows = []
    for t in tiles:
        r, c = int(t.window.row_off), int(t.window.col_off)
        window = np.minimum(codes[r : r + 20, c : c + 20], 4)  # 4, 5, 6 lumped: barren and impervious
        rows.append({"path": f"tiles/{t.path.name}", "label": NAMES[int(np.bincount(window.ravel()).argmax())],
                     "row": f"row{t.row}"})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "tiles.csv", index=False)
    return root / "tiles.csv"


def _blocks(paths: list[str], size: float) -> list[tuple[int, int]]:
    import rasterio

    out = []
    for p in paths:
        with rasterio.open(p) as src:
            b = src.bounds
        out.append((math.floor((b.left + b.right) / 2 / size), math.floor((b.bottom + b.top) / 2 / size)))
    return out


def test_spatial_split_never_puts_a_block_on_both_sides(naip_tiles: Path) -> None:
    from landsight.data.catalog import build_catalog
    from landsight.data.splitting import split_catalog

    catalog = build_catalog(naip_tiles)
    assert len(catalog) == 169 and catalog["label"].nunique() >= 3
    for seed in (0, 1, 2):
        out = split_catalog(catalog, test_size=0.2, val_size=0.1, random_state=seed, split="spatial")
        info = out.attrs["split"]
        assert info["method"] == "spatial" and info["crs"] == ["EPSG:26917"]
        assert info["block_size"] == 2000.0 and info["n_groups"] >= 16  # from the extent: ~6 km square
        blocks = _blocks(list(out["path"]), info["block_size"])
        sides: dict[tuple[int, int], set[str]] = {}
        for block, side in zip(blocks, out["split"], strict=True):
            sides.setdefault(block, set()).add(side)
        assert all(len(s) == 1 for s in sides.values()), sides
        assert set(out["split"]) == {"train", "val", "test"}
        assert set(out.loc[out["split"] == "train", "label"]) == set(catalog["label"])
        assert 0.1 < info["fractions"]["test"] < 0.35


def test_explicit_block_size_and_errors(naip_tiles: Path, small_dataset: Path) -> None:
    from landsight.data.catalog import build_catalog
    from landsight.data.splitting import split_catalog

    catalog = build_catalog(naip_tiles)
    out = split_catalog(catalog, test_size=0.25, split="spatial", block_size=1500)
    assert out.attrs["split"]["block_size"] == 1500
    blocks = _blocks(list(out["path"]), 1500)
    assert not {b for b, s in zip(blocks, out["split"], strict=True) if s == "train"} & {
        b for b, s in zip(blocks, out["split"], strict=True) if s == "test"
    }
    with pytest.raises(LandsightValueError, match="georeferenced"):
        split_catalog(build_catalog(small_dataset), test_size=0.25, split="spatial")  # EuroSAT JPEGs: no CRS
    with pytest.raises(LandsightValueError, match="split must be one of"):
        split_catalog(catalog, split="blocks")
    with pytest.raises(LandsightValueError, match="block_size"):
        split_catalog(catalog, split="spatial", block_size=-5)
    with pytest.raises(LandsightValueError, match="needs group="):
        split_catalog(catalog, split="group")
    with pytest.raises(LandsightValueError, match="does not match path"):
        split_catalog(catalog, split="group", group="regex:scene_(\\d+)")


def test_group_split_keeps_groups_whole(naip_tiles: Path) -> None:
    from landsight.data.catalog import build_catalog
    from landsight.data.splitting import split_catalog

    catalog = build_catalog(naip_tiles)
    for group in ("regex:tile_(\\d+)_\\d+\\.tif", "row", "column:row"):
        out = split_catalog(catalog, test_size=0.2, split="group", group=group, map_file=naip_tiles)
        rows = out["path"].str.extract(r"tile_(\d+)_")[0]
        per_group = out.groupby(rows)["split"].nunique()
        assert (per_group == 1).all() and out.attrs["split"]["n_groups"] == 13
        assert set(out["split"]) == {"train", "test"}
    with pytest.raises(LandsightValueError, match="not a map file"):
        split_catalog(catalog, test_size=0.2, split="group", group="row")


def test_random_split_of_one_scene_warns(naip_tiles: Path, small_dataset: Path) -> None:
    from landsight.data.catalog import build_catalog
    from landsight.data.splitting import split_catalog

    with pytest.warns(UserWarning, match="1 scene"):
        out = split_catalog(build_catalog(naip_tiles), test_size=0.2)
    assert out.attrs["split"]["n_scenes"] == 1 and out.attrs["split"]["warnings"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # EuroSAT JPEGs: not georeferenced, nothing to warn about
        assert "warnings" not in split_catalog(build_catalog(small_dataset), test_size=0.25).attrs["split"]


def test_train_reports_the_split(naip_tiles: Path, tmp_path: Path) -> None:
    from landsight.classify.train import train

    result = train(naip_tiles, out=tmp_path / "spatial.landsight", split="spatial", progress=False, track=False)
    meta = json.loads((result.bundle_path / "bundle.json").read_text())
    assert meta["data"]["split"]["method"] == "spatial" and meta["data"]["split"]["block_size"] == 2000.0
    assert result.metrics["split"] == "spatial"
    with pytest.warns(UserWarning, match="random split of georeferenced tiles"):
        random = train(naip_tiles, out=tmp_path / "random.landsight", progress=False, track=False)
    saved = json.loads((random.bundle_path / "metrics.json").read_text())
    assert saved["split"] == "random" and "optimistic" in saved["warnings"][0]


def test_split_pairs_spatial_holds_out_whole_blocks(shared_data: Path, tmp_path: Path) -> None:
    from landsight.data.tiling import cut_tiles
    from landsight.segment.pairs import pair_rasters, split_pairs, split_pairs_info

    cut_tiles(shared_data / f"{TILE}_naip-new.tif", tmp_path / "img", size=64, prefix="tile")  # same names
    cut_tiles(shared_data / f"{TILE}_lc.tif", tmp_path / "lab", size=64, prefix="tile")
    found = pair_rasters(str(tmp_path / "img/*.tif"), str(tmp_path / "lab/*.tif"))
    assert len(found.pairs) == 16
    train, val, info = split_pairs_info(found.pairs, 0.25, 0, split="spatial", block_size=3000)
    assert info.method == "spatial" and val and train
    blocks = dict(zip([p.image for p in found.pairs], _blocks([p.image for p in found.pairs], 3000), strict=True))
    assert not {blocks[p.image] for p in train} & {blocks[p.image] for p in val}
    legacy = split_pairs(found.pairs, 0.25, 0)  # random: as before (whole rasters)
    assert len(legacy[1]) == 4 and not set(legacy[0]) & set(legacy[1])
