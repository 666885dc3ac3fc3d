"""Chip classification from a labelled scene: ``tile --labels`` + ``train --split spatial`` vs a segmentation model.

The georeferenced NAIP tile ``chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif`` (260 x
260 px, ~24 x 29 m, EPSG:26917) is cut into ``--size`` px tiles labelled by the majority class of
``..._lc.tif`` (``landsight.segment.scene_tiles.tile_scene``, class map ``chesapeake``: 4-6
lumped), CSV layout. ``landsight.train`` (frozen ``tf_efficientnet_lite0`` features,
logistic-regression head, ``tta="none"``, ``C=1.0``, ``refit=False`` so the bundle scored is the one
that never saw the held-out tiles) holds out whole spatial blocks
(``split="spatial"``, default block size, test share 0.2).

Compared on the same held-out tiles:

* the training tiles' majority class everywhere;
* the chip classifier;
* a small U-Net (``train_segmentation``: lite0 encoder, ``--epochs`` epochs of 64 px chips, all 4
  bands) trained on the whole scene with the label pixels of the held-out tiles set to 0 (ignored:
  its encoder still sees their imagery, never their labels), then ``predict`` on the scene; a
  tile's class is the majority of its predicted pixels.

Run from the repository root: ``.venv/bin/python benchmarks/chip_classification.py [--size 10 --epochs 6]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA, machine, markdown_table

TILE = DATA / "chesapeake" / "tile_downsampled" / "m_3907833_nw_17_1"


def _scores(truth: pd.Series, pred: pd.Series) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score

    return {"accuracy": float((truth == pred).mean()), "balanced_accuracy": float(balanced_accuracy_score(truth, pred))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10, help="tile side, pixels")
    parser.add_argument("--epochs", type=int, default=6, help="U-Net epochs")
    args = parser.parse_args()
    import rasterio

    import landsight
    from landsight import load_bundle
    from landsight.segment.classmap import load_class_map
    from landsight.segment.scene_tiles import tile_scene
    from landsight.segment.train import train_segmentation

    print(machine())
    rows = []
    with tempfile.TemporaryDirectory(prefix="landsight-chips-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        tiles = tile_scene(f"{TILE}_naip-new.tif", tmp / "tiles", size=args.size, labels=f"{TILE}_lc.tif", layout="csv")
        seconds_tile = time.perf_counter() - t0
        print(tiles.describe()[0].replace(str(tmp), "TMP"), f"({seconds_tile:.1f} s)")
        table = pd.read_csv(tiles.csv_path)
        table["abs"] = [str((tmp / "tiles" / p).resolve()) for p in table["path"]]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = landsight.train(tiles.csv_path, out=tmp / "chips.landsight", split="spatial", tta="none", C=1.0,
                                     refit=False, progress=False, track=False)  # fmt: skip
        seconds_train = time.perf_counter() - t0
        test_paths = {str(Path(p).resolve()) for p in result.test_paths}
        test = table[table["abs"].isin(test_paths)].set_index("abs")
        truth = test["label"]
        majority = table[~table["abs"].isin(test_paths)]["label"].value_counts().idxmax()
        rows.append({"method": "training majority class", **_scores(truth, pd.Series(majority, index=truth.index)),
                     "seconds": 0.0})  # fmt: skip
        preds = load_bundle(result.bundle_path).predict(list(truth.index))
        index = [str(Path(p).resolve()) for p in preds["path"]]
        chip = pd.Series(list(preds["predicted"]), index=index).reindex(truth.index)
        rows.append({"method": "chip classifier (train --split spatial)", **_scores(truth, chip),
                     "seconds": seconds_train})  # fmt: skip

        # the U-Net: labels of the held-out tiles masked to 0 (ignored), trained on the rest of the scene
        with rasterio.open(f"{TILE}_lc.tif") as src:
            lc, profile = src.read(1), src.profile
        by_path = {t.path.resolve(): t for t in tiles.tiles}
        for p in truth.index:
            w = by_path[Path(p)].window
            lc[int(w.row_off) : int(w.row_off + w.height), int(w.col_off) : int(w.col_off + w.width)] = 0
        with rasterio.open(tmp / "scene_lc.tif", "w", **profile) as dst:
            dst.write(lc, 1)
        (tmp / "scene.tif").symlink_to(f"{TILE}_naip-new.tif")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = train_segmentation(str(tmp / "scene.tif"), str(tmp / "scene_lc.tif"), out=tmp / "seg.landsight",
                                     epochs=args.epochs, chip_size=64, chips_per_epoch=64, val_chips=8, val_size=0.0,
                                     progress=False, track=False)  # fmt: skip
        seconds_seg = time.perf_counter() - t0
        load_bundle(seg.bundle_path).predict(f"{TILE}_naip-new.tif", tmp / "pred.tif")
        with rasterio.open(tmp / "pred.tif") as src:
            pred = src.read(1)
        names = {c.code: c.name for c in load_class_map("chesapeake").classes}
        seg_labels = {}
        for p in truth.index:
            w = by_path[Path(p)].window
            window = pred[int(w.row_off) : int(w.row_off + w.height), int(w.col_off) : int(w.col_off + w.width)]
            codes, counts = np.unique(window[window != 255], return_counts=True)
            seg_labels[p] = names.get(int(codes[counts.argmax()])) if len(codes) else None
        rows.append({"method": f"U-Net majority per tile ({args.epochs} epochs)",
                     **_scores(truth, pd.Series(seg_labels).reindex(truth.index)), "seconds": seconds_seg})  # fmt: skip
    print(f"{len(truth)} held-out tiles of {args.size} px ({truth.value_counts().to_dict()})")
    headers = ["method", "accuracy", "balanced_accuracy", "seconds"]
    print(markdown_table(headers, [[r["method"], f"{r['accuracy']:.3f}", f"{r['balanced_accuracy']:.3f}",
                                    f"{r['seconds']:.0f}"] for r in rows]))  # fmt: skip


if __name__ == "__main__":
    main()
