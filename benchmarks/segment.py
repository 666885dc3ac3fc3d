"""Land-cover segmentation benchmark: U-Net vs classical baselines on held-out rasters; prediction speed.

Phases (``--phases``, default all, in this order):

  chesapeake  Cross-validation by raster over the 8 real Chesapeake NAIP patches (4 bands,
              256 x 256 at 1 m, all from NAIP tile m_3708020_sw: the data has no second 1 m
              tile): 4 folds, each holding out 2 whole patches (sorted by name: 0-1, 2-3, 4-5,
              6-7) and training on the other 6 (one of which is the per-epoch validation
              raster). Every method sees the same folds; the confusion matrices of the 8 held-out
              patches are summed (pooled metrics), and the standard error of the pixel accuracy
              is over the 4 folds. Methods: (a) the training folds' majority class everywhere;
              (b) a per-pixel random forest (scikit-learn, 100 trees, min 5 samples per leaf) on
              the bands, NDVI and the 5 x 5 mean and standard deviation of every band, fitted on
              20,000 random labelled pixels per training raster; (c) the U-Net at
              ``train_segmentation``'s defaults; (d) the other configurations in ``--configs``
              (losses, NLCD as an auxiliary input, TTA), each a ``key=value`` list. The config key
              ``polygons=true`` trains from polygon labels instead (the "polygons" config): the
              training label rasters are polygonized (``rasterio.features.shapes``) into one
              GeoPackage, and the training images copied with a made-up georeference (the patches
              have no CRS; each is placed on its own 256 m square of EPSG:26917), so the run
              differs from "defaults" only in reading its labels through
              ``--labels polygons.gpkg --label-field code``; it is scored on the same held-out
              label rasters. ``--folds`` limits the folds (a quick run).
  dubai       The same methods on the Dubai aerial set (RGB JPEG + colour masks): train on tiles
              1-4, score the 18 images of tiles 5-6 whole (one split: two other districts).
  predict     Prediction throughput (km^2 per minute at 1 m / pixel) and peak RSS of
              ``landsight segment predict`` with the first Chesapeake bundle, over synthetic 4-band
              rasters of ``--sizes`` pixels a side, each in a fresh subprocess (``VmHWM``).

Timings come with the share of the machine's CPU other processes took meanwhile ("foreign"):
this host is shared, so compare rows measured at low foreign share only. Rows are also appended
as JSON lines to ``--log`` as they finish.

Run from the repository root:
``.venv/bin/python benchmarks/segment.py --phases chesapeake dubai``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, machine, markdown_table, timed

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

NLCD = "{dir}/../nlcd/{stem}_nlcd.tif"
Pair = tuple[Path, Path]


def _csv_pairs(path: Path, pairs: list[Pair]) -> Path:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows([(str(a), str(b)) for a, b in pairs])
    return path


def chesapeake_folds() -> list[tuple[list[Pair], list[Pair]]]:
    """4 folds: each holds out 2 consecutive patches (by name) and trains on the other 6."""
    root = DATA / "chesapeake" / "train"
    pairs = [(p, root / "labels" / f"{p.stem}_lc.tif") for p in sorted((root / "images").glob("*.tif"))]
    return [([p for j, p in enumerate(pairs) if j // 2 != f], pairs[2 * f : 2 * f + 2]) for f in range(4)]


def dubai_folds() -> list[tuple[list[Pair], list[Pair]]]:
    """Tiles 1-4 for training, tiles 5-6 held out (colour masks as labels)."""
    root = DATA / "dubai_aerial"

    def tiles(ids: range) -> list[Pair]:
        return [(p, p.parent.parent / "masks_rgb" / f"{p.stem}.png")
                for t in ids for p in sorted((root / f"tile_{t}" / "images").glob("*.jpg"))]  # fmt: skip

    return [(tiles(range(1, 5)), tiles(range(5, 7)))]


# --- classical baselines -------------------------------------------------------------------------


def _read(pair: Pair, class_map: Any, bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    from landsight.segment.raster import open_raster, read_labels

    with open_raster(pair[0]) as src:
        x = src.read(list(bands)).astype(np.float32)
    with open_raster(pair[1]) as lab:
        y = read_labels(lab, 0, 0, lab.height, lab.width, class_map)
    return x, y


def pixel_features(x: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` bands -> ``(H * W, F)``: bands, NDVI (4 bands: R, G, B, NIR), 5 x 5 mean and std."""
    from scipy.ndimage import uniform_filter

    feats = [b for b in x]
    if x.shape[0] >= 4:
        feats.append((x[3] - x[0]) / np.maximum(x[3] + x[0], 1.0))
    for b in x:
        m = uniform_filter(b, 5, mode="reflect")
        feats += [m, np.sqrt(np.maximum(uniform_filter(b * b, 5, mode="reflect") - m * m, 0))]
    return np.stack(feats, axis=-1).reshape(-1, len(feats))


def baseline_confusions(train: list[Pair], test: list[Pair], class_map: Any, bands: tuple[int, ...], seed: int = 0,
                        ) -> tuple[np.ndarray, np.ndarray, float, float]:  # fmt: skip
    """Confusions of (majority, random forest) on ``test`` and their wall times (s)."""
    from sklearn.ensemble import RandomForestClassifier

    from landsight.segment.classmap import IGNORE_INDEX
    from landsight.segment.evaluate import confusion

    k = class_map.num_classes
    rng = np.random.default_rng(seed)
    with timed() as tm:
        counts = np.zeros(k, dtype=np.int64)
        xs, ys = [], []
        for pair in train:
            x, y = _read(pair, class_map, bands)
            counts += np.bincount(y[y != IGNORE_INDEX].ravel(), minlength=k)[:k]
            f, yy = pixel_features(x), y.ravel()
            idx = np.flatnonzero(yy != IGNORE_INDEX)
            idx = rng.choice(idx, min(len(idx), 20_000), replace=False)
            xs.append(f[idx])
            ys.append(yy[idx])
        majority = int(counts.argmax())
    with timed() as tr:
        rf = RandomForestClassifier(n_estimators=100, min_samples_leaf=5, n_jobs=2, random_state=seed)
        rf.fit(np.concatenate(xs), np.concatenate(ys))
    cm_major, cm_rf = np.zeros((k, k), dtype=np.int64), np.zeros((k, k), dtype=np.int64)
    with timed() as te:
        for pair in test:
            x, y = _read(pair, class_map, bands)
            cm_major += confusion(y, np.full_like(y, majority), k)
            f = pixel_features(x)
            pred = np.concatenate([rf.predict(f[i : i + 500_000]) for i in range(0, len(f), 500_000)])
            cm_rf += confusion(y, rf.classes_[np.searchsorted(rf.classes_, pred)].reshape(y.shape).astype(np.uint8), k)
    return cm_major, cm_rf, tm.seconds, tr.seconds + te.seconds


# --- U-Net ----------------------------------------------------------------------------------------


def polygon_training_set(train: list[Pair], work: Path, tag: str) -> tuple[str, Path]:
    """Georeferenced copies of the training images and their label rasters polygonized into one GeoPackage.

    Returns:
        ``(image glob, GeoPackage path)`` for ``train_segmentation(images, labels, label_field="code")``.
    """
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from rasterio.transform import from_origin
    from shapely.geometry import shape

    folder = work / f"{tag}_polygons"
    folder.mkdir(parents=True, exist_ok=True)
    codes, geoms = [], []
    for j, (image, label) in enumerate(train):
        transform = from_origin(500_000 + 300 * j, 4_200_000, 1.0, 1.0)  # made up: one square per patch
        with rasterio.open(image) as src:
            profile = {**src.profile, "crs": "EPSG:26917", "transform": transform}
            with rasterio.open(folder / f"{Path(image).stem}.tif", "w", **profile) as dst:
                dst.write(src.read())
        with rasterio.open(label) as lab:
            for g, v in shapes(lab.read(1), transform=transform):
                codes.append(int(v))
                geoms.append(shape(g))
    gpkg = folder / "labels.gpkg"
    gpd.GeoDataFrame({"code": codes}, geometry=geoms, crs="EPSG:26917").to_file(gpkg)
    return str(folder / "*.tif"), gpkg


def unet_confusions(
    train: list[Pair],
    test: list[Pair],
    classes: str,
    bands: tuple[int, ...],
    work: Path,
    config: dict[str, Any],
    tag: str,
) -> tuple[np.ndarray, np.ndarray | None, float, dict[str, Any]]:
    """Train with ``config`` (train_segmentation keywords, plus ``tta``), score ``test``.

    Returns:
        ``(confusion without TTA, confusion with TTA or None, train + eval seconds, info)``.
    """
    from landsight import load_bundle
    from landsight.segment.evaluate import evaluate_segmentation
    from landsight.segment.pairs import pair_rasters

    kwargs = {k: v for k, v in config.items() if k not in ("tta", "polygons")}
    out = work / f"{tag}.landsight"
    with timed() as t:
        if config.get("polygons"):
            images, gpkg = polygon_training_set(train, work, tag)
            result = train_segmentation_quiet(images, classes, out, bands, {**kwargs, "labels": str(gpkg),
                                                                            "label_field": "code"})  # fmt: skip
        else:
            result = train_segmentation_quiet(_csv_pairs(work / f"{tag}_train.csv", train), classes, out, bands,
                                              kwargs)  # fmt: skip
        bundle = load_bundle(out)
        pairs = pair_rasters(_csv_pairs(work / f"{tag}_test.csv", test)).pairs
        plain = evaluate_segmentation(bundle, pairs, progress=False)
    with timed() as tt:
        tta = evaluate_segmentation(bundle, pairs, progress=False, tta="d4") if config.get("tta") else None
    info = {"train_s": t.seconds, "tta_s": tt.seconds, "foreign": t.foreign, "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "bundle": str(out)}  # fmt: skip
    return (np.array(plain["confusion_matrix"]), None if tta is None else np.array(tta["confusion_matrix"]),
            t.seconds, info)  # fmt: skip


def train_segmentation_quiet(pairs_csv: Path | str, classes: str, out: Path, bands: tuple[int, ...],
                             kwargs: dict[str, Any]) -> Any:  # fmt: skip
    from landsight.segment.train import train_segmentation

    return train_segmentation(pairs_csv, classes=classes, out=out, bands=bands, progress=False, track=False,
                              overwrite=True, **kwargs)  # fmt: skip


def parse_config(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> (name, keywords); values parsed as JSON when they parse."""
    name, _, body = spec.partition(":")
    config: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return name, config


def run_dataset(name: str, folds: list[tuple[list[Pair], list[Pair]]], classes: str, bands: tuple[int, ...],
                configs: list[tuple[str, dict[str, Any]]], work: Path, log: Path) -> list[dict[str, Any]]:  # fmt: skip
    from landsight.segment.classmap import load_class_map
    from landsight.segment.evaluate import segmentation_metrics

    cm = load_class_map(classes)
    k = cm.num_classes
    rows: dict[str, dict[str, Any]] = {}

    def add(method: str, f: int, matrix: np.ndarray, seconds: float, extra: dict[str, Any] | None = None) -> None:
        row = rows.setdefault(method, {"data": name, "method": method, "confusion": np.zeros((k, k), np.int64),
                                       "fold_accuracy": [], "seconds": 0.0})  # fmt: skip
        row["confusion"] += matrix
        row["fold_accuracy"].append(float(np.trace(matrix) / max(matrix.sum(), 1)))
        row["seconds"] += seconds
        with open(log, "a") as fh:
            fh.write(json.dumps({"data": name, "method": method, "fold": f, "seconds": seconds,
                                 "confusion": matrix.tolist(), **(extra or {})}) + "\n")  # fmt: skip

    for f, (train, test) in enumerate(folds):
        major, rf, s_major, s_rf = baseline_confusions(train, test, cm, bands)
        add("(a) majority class", f, major, s_major)
        add("(b) random forest", f, rf, s_rf)
        for label, config in configs:
            plain, tta, seconds, info = unet_confusions(
                train, test, classes, bands, work, config, f"{name}_{label}_{f}"
            )
            add(f"U-Net {label}", f, plain, seconds, info)
            if tta is not None:
                add(f"U-Net {label} + TTA", f, tta, seconds + info["tta_s"], info)
            print(f"{name} fold {f} {label}: {info}", flush=True)
    out = []
    for row in rows.values():
        m = segmentation_metrics(row["confusion"], cm.names)
        acc = np.array(row["fold_accuracy"])
        se = float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else float("nan")
        out.append({**row, "pixel_accuracy": m["pixel_accuracy"], "mean_iou": m["mean_iou"], "accuracy_se": se,
                    "per_class": ", ".join(f"{n} {v['iou']:.2f}" for n, v in m["per_class"].items()
                                           if v["support"] or v["precision"] == v["precision"]),
                    "n_pixels": m["n_pixels"]})  # fmt: skip
    return out


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
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["defaults:tta=true", "ce:loss=ce,tta=true", f"nlcd:aux_rasters={NLCD},tta=true",
                 "polygons:polygons=true"],
        help="U-Net runs, 'label:key=value,...' (train_segmentation keywords, tta=true also scores with TTA)",
    )
    parser.add_argument("--dubai-configs", nargs="+", default=["defaults:tta=true", "ce:loss=ce,tta=true"])
    parser.add_argument("--folds", type=int, default=None, help="Chesapeake: run only the first N folds.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--log", type=Path, default=Path("segment_bench.jsonl"))
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    with tempfile.TemporaryDirectory(prefix="landsight-segment-bench-") as folder:
        work = Path(folder)
        results: list[dict[str, Any]] = []
        if "chesapeake" in args.phases:
            results += run_dataset("chesapeake", chesapeake_folds()[: args.folds], "chesapeake", (1, 2, 3, 4),
                                   [parse_config(c) for c in args.configs], work, args.log)  # fmt: skip
        if "dubai" in args.phases:
            results += run_dataset("dubai", dubai_folds(), "dubai", (1, 2, 3),
                                   [parse_config(c) for c in args.dubai_configs], work, args.log)  # fmt: skip
        if results:
            base = {r["data"]: r["pixel_accuracy"] for r in results if r["method"].startswith("(a)")}
            print(markdown_table(
                ["data", "method", "pixel accuracy (SE over folds)", "vs majority", "mean IoU", "IoU per class",
                 "wall s (all folds)"],
                [[r["data"], r["method"], f"{r['pixel_accuracy']:.1%} ({r['accuracy_se']:.1%})",
                  f"{(r['pixel_accuracy'] - base[r['data']]) * 100:+.1f} pts", f"{r['mean_iou']:.3f}", r["per_class"],
                  f"{r['seconds']:.0f}"] for r in results],
            ))  # fmt: skip
            print()
        if "predict" in args.phases:
            bundles = sorted(work.glob("chesapeake_defaults_0.landsight")) or sorted(work.glob("*.landsight"))
            print(markdown_table(
                ["raster", "km^2 at 1 m", "seconds", "km^2/min", "Mpx/s", "peak RSS MB", "raster in memory MB",
                 "foreign CPU"],
                predict_rows(bundles[0], args.sizes, work),
            ))  # fmt: skip


if __name__ == "__main__":
    main()
