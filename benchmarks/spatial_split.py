"""Random vs spatial hold-out on real georeferenced tiles: how optimistic is a random split?

The georeferenced NAIP tile ``chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif``
(260 x 260 px, ~24 x 29 m pixels, EPSG:26917, 4 bands; R, G, B read) is cut into ``--size`` px
tiles with ``landsight.data.tiling.cut_tiles``; each tile is labelled by the majority class of
the same window of ``..._lc.tif`` (Chesapeake codes, 4-6 lumped into "impervious_barren" as in
the land-cover tutorial; classes with fewer than ``--min-tiles`` tiles dropped). Then
``landsight.train`` (frozen ``tf_efficientnet_lite0`` features, logistic-regression head,
test_size 0.2) runs with ``split="random"`` and ``split="spatial"`` (default block size from
the extent) for several seeds; the table gives held-out accuracy, balanced accuracy and the
accuracy of always predicting the training split's majority class.

Run from the repository root: ``.venv/bin/python benchmarks/spatial_split.py [--size 10 --seeds 5]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA, machine, markdown_table

TILE = DATA / "chesapeake" / "tile_downsampled" / "m_3907833_nw_17_1"
NAMES = {1: "water", 2: "tree_canopy", 3: "low_vegetation", 4: "impervious_barren"}


def labelled_tiles(folder: Path, size: int, min_tiles: int) -> Path:
    """Cut the NAIP tile, label each tile by its majority land-cover class; return the map file."""
    import rasterio

    from landsight.data.tiling import cut_tiles

    tiles = cut_tiles(f"{TILE}_naip-new.tif", folder / "tiles", size=size)
    with rasterio.open(f"{TILE}_lc.tif") as src:
        codes = np.minimum(src.read(1), 4)
    rows = []
    for t in tiles:
        r, c = int(t.window.row_off), int(t.window.col_off)
        counts = np.bincount(codes[r : r + size, c : c + size].ravel(), minlength=5)
        counts[0] = 0  # no data never wins
        rows.append({"path": str(t.path), "label": NAMES[int(counts.argmax())]})
    table = pd.DataFrame(rows)
    keep = table["label"].map(table["label"].value_counts()) >= min_tiles
    table[keep].to_csv(folder / "tiles.csv", index=False)
    return folder / "tiles.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10, help="tile side, pixels")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--min-tiles", type=int, default=10)
    args = parser.parse_args()
    import landsight

    print(machine())
    with tempfile.TemporaryDirectory(prefix="landsight-spatial-") as tmp:
        csv = labelled_tiles(Path(tmp), args.size, args.min_tiles)
        counts = pd.read_csv(csv)["label"].value_counts()
        print(f"{counts.sum()} tiles of {args.size} px: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        rows, summary = [], {"random": [], "spatial": []}
        started = time.perf_counter()
        for seed in range(args.seeds):
            for split in ("random", "spatial"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = landsight.train(csv, out=Path(tmp) / f"{split}-{seed}.landsight", split=split,
                                             random_state=seed, progress=False, track=False)  # fmt: skip
                meta = json.loads((result.bundle_path / "bundle.json").read_text())["data"]["split"]
                m = result.metrics
                test = pd.read_csv(csv).set_index("path").loc[result.test_paths, "label"]
                labels = pd.read_csv(csv).set_index("path")["label"]
                train_majority = labels.drop(result.test_paths).value_counts().idxmax()
                baseline = float((test == train_majority).mean())
                summary[split].append((m["accuracy"], m["balanced_accuracy"], baseline))
                rows.append([seed, split, meta.get("block_size", ""), meta.get("n_groups", ""), result.n_test,
                             f"{m['accuracy']:.3f}", f"{m['balanced_accuracy']:.3f}", f"{baseline:.3f}",
                             len(m.get("warnings", []))])  # fmt: skip
        print(markdown_table(["seed", "split", "block m", "blocks", "n test", "accuracy", "balanced acc",
                              "majority baseline", "warnings"], rows))  # fmt: skip
        print()
        side = []
        for split, vals in summary.items():
            a = np.asarray(vals)
            side.append([split, f"{a[:, 0].mean():.3f} +- {a[:, 0].std():.3f}",
                         f"{a[:, 1].mean():.3f} +- {a[:, 1].std():.3f}", f"{a[:, 2].mean():.3f}"])  # fmt: skip
        print(markdown_table(["split", "accuracy (mean +- sd)", "balanced accuracy", "majority baseline"], side))
        print(f"\n{2 * args.seeds} trainings in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
