"""Land-cover segmentation benchmark: training speed, held-out accuracy, windowed prediction.

Phases (``--phases``, default all, in this order):

  chesapeake  Train a U-Net (``tf_efficientnet_lite0`` encoder, offline ImageNet weights) on 6 of
              the 8 real Chesapeake NAIP patches (4 bands, 256 x 256 at 1 m; one of the 6 is the
              per-epoch validation raster), then score the 2 held-out patches whole with
              ``landsight.segment.evaluate``: pixel accuracy and mean IoU (classes water, trees,
              herbaceous, barren/impervious; code 0 ignored), next to the seed's 76.1 % (one 256 m
              patch, no held-out protocol).
  dubai       The same on the Dubai aerial set (RGB JPEG + colour masks through the corrected
              colour table): train on tiles 1-4, test on tiles 5-6 (whole images).
  predict     Prediction throughput (km^2 per minute at 1 m / pixel) and peak RSS of
              ``landsight segment predict`` with the Chesapeake bundle, over synthetic 4-band
              rasters of ``--sizes`` pixels a side (random noise tiles, named synthetic), each in a
              fresh subprocess (``VmHWM``: peak resident memory since exec).

Training samples/s is the mean chips/s of the epochs after the first, from the bundle history.
Timings come with the share of the machine's CPU other processes took meanwhile ("foreign"):
this host is shared, so compare rows measured at low foreign share only.

Run from the repository root:
``.venv/bin/python benchmarks/segment.py [--epochs 6 --chips 192 --chip-size 128 --sizes 2000 10000]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
from _common import DATA, machine, markdown_table, timed

SEED_ACCURACY = "76.1 % (seed: one 256 m patch)"

_MEASURE = textwrap.dedent(
    """
    import json, re, sys, time
    from landsight import load_bundle
    bundle = load_bundle(sys.argv[1])
    t = time.perf_counter()
    bundle.predict(sys.argv[2], sys.argv[3], progress=False)
    hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": int(hwm) / 1024}))
    """
)


def _csv_pairs(path: Path, pairs: list[tuple[Path, Path]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows([(str(a), str(b)) for a, b in pairs])
    return path


def train_and_test(
    name: str, train: list[tuple[Path, Path]], test: list[tuple[Path, Path]], classes: str, bands: tuple[int, ...],
    work: Path, args: argparse.Namespace,
) -> dict[str, Any]:
    """Train on ``train`` pairs, evaluate on ``test`` pairs; return one results row."""
    from landsight.segment.evaluate import evaluate_rasters
    from landsight.segment.train import train_segmentation

    out = work / f"{name}.landsight"
    with timed() as t:
        result = train_segmentation(
            _csv_pairs(work / f"{name}_train.csv", train), classes=classes, out=out, bands=bands, epochs=args.epochs,
            chip_size=args.chip_size, chips_per_epoch=args.chips, val_chips=max(8, args.chips // 8),
            batch_size=args.batch_size, oversample=args.oversample, progress=False, track=False,
        )  # fmt: skip
    rates = [row["samples_per_second"] for row in result.history]
    rate = mean(rates[1:]) if len(rates) > 1 else rates[0]
    with timed() as te:
        metrics = evaluate_rasters(out, _csv_pairs(work / f"{name}_test.csv", test), progress=False, track=False)
    per_class = ", ".join(f"{n} {m['iou']:.2f}" for n, m in metrics["per_class"].items() if m["support"])
    return {
        "name": name, "bundle": out, "train_pairs": len(train), "test_pairs": len(test),
        "pixel_accuracy": metrics["pixel_accuracy"], "mean_iou": metrics["mean_iou"], "per_class": per_class,
        "test_pixels": metrics["n_pixels"], "chips_per_s": rate, "px_per_s": rate * args.chip_size**2,
        "train_s": t.seconds, "train_foreign": t.foreign, "eval_s": te.seconds,
        "val_error": [round(r.get("val_error", float("nan")), 1) for r in result.history],
    }  # fmt: skip


def chesapeake_pairs() -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Six training and two held-out real Chesapeake patches (the last two by name)."""
    root = DATA / "chesapeake" / "train"
    pairs = [(p, root / "labels" / f"{p.stem}_lc.tif") for p in sorted((root / "images").glob("*.tif"))]
    return pairs[:6], pairs[6:]


def dubai_pairs() -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Tiles 1-4 for training, tiles 5-6 held out (colour masks as labels)."""
    root = DATA / "dubai_aerial"

    def tiles(ids: range) -> list[tuple[Path, Path]]:
        return [(p, p.parent.parent / "masks_rgb" / f"{p.stem}.png")
                for t in ids for p in sorted((root / f"tile_{t}" / "images").glob("*.jpg"))]  # fmt: skip

    return tiles(range(1, 5)), tiles(range(5, 7))


def synthetic_raster(path: Path, size: int) -> Path:
    """A synthetic 4-band uint8 GeoTIFF (1 m pixels, EPSG:26917) of noise tiles, written by window."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    block = np.random.default_rng(0).integers(0, 255, (4, 1024, 1024), dtype=np.uint8)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 4, "dtype": "uint8", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER", "crs": "EPSG:26917",
               "transform": from_origin(600000, 4400000, 1.0, 1.0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, 1024):
            for c in range(0, size, 1024):
                h, w = min(1024, size - r), min(1024, size - c)
                dst.write(block[:, :h, :w], window=Window(c, r, w, h))
    return path


def predict_rows(bundle: Path, sizes: list[int], work: Path) -> list[list[object]]:
    rows: list[list[object]] = []
    for size in sizes:
        raster = synthetic_raster(work / f"synthetic_{size}.tif", size)
        with timed() as t:
            done = subprocess.run([sys.executable, "-c", _MEASURE, str(bundle), str(raster), str(work / "map.tif")],
                                  capture_output=True, text=True, check=True)  # fmt: skip
        m = json.loads(done.stdout.strip().splitlines()[-1])
        km2 = size * size / 1e6
        rows.append([f"{size:,} x {size:,} (synthetic)", f"{km2:g}", f"{m['seconds']:.1f}",
                     f"{km2 / m['seconds'] * 60:.2f}", f"{size * size / m['seconds'] / 1e6:.2f}",
                     f"{m['peak_mb']:.0f}", f"{size * size * 4 / 2**20:.0f}", f"{t.foreign:.0%}"])  # fmt: skip
        raster.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", nargs="+", default=["chesapeake", "dubai", "predict"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--chips", type=int, default=192, help="training chips per epoch")
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--oversample", type=float, default=0.25)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"settings: epochs {args.epochs}, {args.chips} chips/epoch of {args.chip_size} px, batch {args.batch_size}, "
          f"oversample {args.oversample}, U-Net + tf_efficientnet_lite0 (ImageNet, offline)\n")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="landsight-segment-bench-") as folder:
        work = Path(folder)
        results = []
        if "chesapeake" in args.phases or "predict" in args.phases:
            results.append(train_and_test("chesapeake", *chesapeake_pairs(), "chesapeake", (1, 2, 3, 4), work, args))
        if "dubai" in args.phases:
            results.append(train_and_test("dubai", *dubai_pairs(), "dubai", (1, 2, 3), work, args))
        if results:
            print(markdown_table(
                ["data", "train / test rasters", "pixel accuracy", "mean IoU", "IoU per class (test)", "seed",
                 "train chips/s", "train Mpx/s", "train s (foreign CPU)", "val error % per epoch"],
                [[r["name"], f"{r['train_pairs']} / {r['test_pairs']} ({r['test_pixels']:,} px)",
                  f"{r['pixel_accuracy']:.1%}", f"{r['mean_iou']:.3f}", r["per_class"],
                  SEED_ACCURACY if r["name"] == "chesapeake" else "-", f"{r['chips_per_s']:.2f}",
                  f"{r['px_per_s'] / 1e6:.3f}", f"{r['train_s']:.0f} ({r['train_foreign']:.0%})",
                  " ".join(str(v) for v in r["val_error"])] for r in results],
            ))  # fmt: skip
            print()
        if "predict" in args.phases:
            print(markdown_table(
                ["raster", "km^2 at 1 m", "seconds", "km^2/min", "Mpx/s", "peak RSS MB", "raster in memory MB",
                 "foreign CPU"],
                predict_rows(results[0]["bundle"], args.sizes, work),
            ))  # fmt: skip


if __name__ == "__main__":
    main()
