"""float32 vs int8 bundles (``landsight.quantize``): throughput and held-out accuracy side by side.

For EuroSAT RGB and UC Merced: train a float32 bundle (``landsight.train``, default backbone,
logreg, seeded stratified 80/20 split, ``refit=False`` so
that the shipped head has not seen the test split), quantize it (``quantize_bundle``: QDQ int8, per-channel
weights, 200 training images of calibration; the drop check off so that every figure is shown),
then

* accuracy over ``--seeds`` splits (seeds 0..): both graphs on the bundle's own test split
  (``QuantizeResult.fp32`` / ``.quantized``), with the head refit on the int8 features (the
  default) and with the float32 head kept (``refit_head=False``); mean ± standard error;
* throughput, images/s, best of ``--rounds`` paired rounds (fp32 then int8 back to back):
  ``graph`` = the bundle's ``OnnxModel`` on pre-decoded, resized uint8 batches of 32 (the fp32
  ceiling of featurize.py (a)); ``predict`` = ``Bundle.predict(paths)`` end to end (read, decode,
  resize, network, table); and the float32 backbone as exported before and after TensorFlow "same"
  padding was folded into its convolutions (``landsight.models.onnx_graph.EXPORT_REVISION`` 2).

Segmentation (``--segment``): a U-Net trained briefly on 6 Chesapeake NAIP patches, quantized with
200 windows of 256 x 256 from its training rasters, pixel accuracy / mean IoU on the 2 held-out
rasters and on all 8 patches (what int8 changes, on more pixels), and ``predict_proba`` throughput
on 4-band 256 x 256 tiles (Mpixel/s).

Run from the repository root: ``.venv/bin/python benchmarks/quantize.py [--n 1000] [--seeds 5] [--segment]``.
``benchmarks/featurize.py --int8`` and ``benchmarks/accuracy.py --int8`` print the same tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, machine, markdown_table, timed, wait_for_quiet

from landsight.classify.train import train
from landsight.data.catalog import build_catalog
from landsight.data.readers import read_image
from landsight.quantize import quantize_bundle


def _rate(fn: Any, n: int) -> tuple[float, float]:
    wait_for_quiet(5.0)
    with timed() as t:
        fn()
    return n / t.seconds, t.foreign


def paired(fp32: Any, int8: Any, n: int, rounds: int) -> dict[str, Any]:
    """Best rate of each over ``rounds`` back-to-back pairs, and the median paired ratio."""
    fp32(), int8()  # warm-up
    a, b, foreign = [], [], []
    for _ in range(rounds):
        ra, fa = _rate(fp32, n)
        rb, fb = _rate(int8, n)
        a.append(ra)
        b.append(rb)
        foreign += [fa, fb]
    return {"fp32": max(a), "int8": max(b), "ratio": float(np.median(np.array(b) / np.array(a))),
            "foreign": max(foreign)}  # fmt: skip


def accuracy_over_seeds(name: str, root: Path, work: Path, seeds: int) -> tuple[list[Any], Path, Path]:
    """fp32 vs int8 (refit head, and the float32 head kept) on the test split of ``seeds`` splits.

    Returns the accuracy table row and the seed-0 float32 and int8 bundles (for the timings).
    """
    fp32_acc, int8_acc, kept_acc, seconds = [], [], [], []
    for seed in range(seeds):
        fp32_path = work / f"{name}-{seed}.landsight"
        trained = train(
            root, out=fp32_path, test_size=0.2, refit=False, random_state=seed, progress=False, track=False
        )  # fmt: skip  (held-out test split)
        result = quantize_bundle(fp32_path, work / f"{name}-{seed}-int8.landsight", max_drop=None)
        kept = quantize_bundle(fp32_path, work / f"{name}-{seed}-int8-kept.landsight", max_drop=None,
                               refit_head=False)  # fmt: skip
        fp32_acc.append(result.fp32)
        int8_acc.append(result.quantized)
        kept_acc.append(kept.quantized)
        seconds.append(result.seconds)
        print(f"{name} seed {seed}: {trained.n_train} train / {trained.n_test} test; fp32 {result.fp32:.2f} %, "
              f"int8 {result.quantized:.2f} % (refit head, {result.seconds:.0f} s), int8 {kept.quantized:.2f} % "
              f"(float32 head kept)", flush=True)  # fmt: skip
    a, b, c = (np.array(x) for x in (fp32_acc, int8_acc, kept_acc))
    se = (lambda d: d.std(ddof=1) / np.sqrt(len(d))) if seeds > 1 else (lambda d: float("nan"))

    def pm(d: Any) -> str:
        return f"{d.mean():.2f} ± {se(d):.2f}"

    row = [name, f"{seeds} ({result.n_test} test images each)", pm(a), pm(b), f"{pm(a - b)} (max {(a - b).max():+.2f})",
           pm(c), f"{pm(a - c)} (max {(a - c).max():+.2f})", f"{np.mean(seconds):.0f}"]  # fmt: skip
    return row, work / f"{name}-0.landsight", work / f"{name}-0-int8.landsight"


def _backbone_graphs(bundle: Any, work: Path) -> tuple[Any, Any]:
    """The bundle's backbone as exported now, and as exported before padding was folded (dynamic "same" padding)."""
    import dataclasses
    from unittest import mock

    from landsight.models import onnx_graph
    from landsight.models.backbones import create_backbone
    from landsight.runtime import OnnxModel

    meta = bundle.meta["backbone"]
    staged = create_backbone(meta["name"], stages=tuple(meta.get("stages", ())))
    backbone = dataclasses.replace(staged, tta=meta.get("tta", "none"))
    now = onnx_graph.export_backbone(backbone, work / "backbone-now.onnx")
    with (
        mock.patch.object(onnx_graph, "static_same_padding", lambda module, _example: module),
        mock.patch.object(onnx_graph, "fold_pads_into_convs", lambda *_args: 0),
    ):
        before = onnx_graph.export_backbone(backbone, work / "backbone-before.onnx")
    return OnnxModel(before, device="cpu"), OnnxModel(now, device="cpu")


def throughput(name: str, root: Path, fp32_path: Path, int8_path: Path, n: int, rounds: int) -> list[list[str]]:
    """Paired fp32 / int8 throughput of one dataset's seed-0 bundles; returns table rows."""
    from landsight import load_bundle

    fp32, int8 = load_bundle(fp32_path, device="cpu"), load_bundle(int8_path, device="cpu")
    catalog = build_catalog(root)
    paths = catalog["path"].tolist()
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:n]]
    images = np.stack([fp32.preprocessing.resize(read_image(p).array) for p in paths])
    chunks = [images[i : i + 32] for i in range(0, len(images), 32)]

    def graph(b: Any) -> Any:
        return lambda: [b.predict_proba(c) for c in chunks]

    def predict(b: Any) -> Any:
        return lambda: b.predict(paths)

    g = paired(graph(fp32), graph(int8), len(paths), rounds)
    p = paired(predict(fp32), predict(int8), len(paths), rounds)
    before, now = _backbone_graphs(fp32, fp32_path.parent)
    d = paired(lambda: [before(c) for c in chunks], lambda: [now(c) for c in chunks], len(paths), rounds)
    return [
        [name, "fp32 backbone: dynamic padding (before) -> folded (now); columns: before, now, now / before",
         len(paths), f"{d['fp32']:.1f}", f"{d['int8']:.1f}", f"{d['ratio']:.2f}", f"{d['foreign']:.2f}"],
        [name, "graph, pre-decoded batches of 32", len(paths), f"{g['fp32']:.1f}", f"{g['int8']:.1f}",
         f"{g['ratio']:.2f}", f"{g['foreign']:.2f}"],
        [name, "Bundle.predict(paths), end to end", len(paths), f"{p['fp32']:.1f}", f"{p['int8']:.1f}",
         f"{p['ratio']:.2f}", f"{p['foreign']:.2f}"],
    ]  # fmt: skip


def segmentation(work: Path, rounds: int, epochs: int) -> list[list[str]]:
    """Train a small U-Net on Chesapeake, quantize, compare; returns table rows."""
    from landsight import load_bundle
    from landsight.segment.raster import open_raster, read_window
    from landsight.segment.train import train_segmentation

    ches = DATA / "chesapeake" / "train"
    out = work / "ches.landsight"
    train_segmentation(
        str(ches / "images/*.tif"), str(ches / "labels/*_lc.tif"), classes="chesapeake", out=out, bands=(1, 2, 3, 4),
        epochs=epochs, chip_size=128, chips_per_epoch=128, val_chips=16, batch_size=8, val_size=0.25,
        progress=False, track=False,
    )  # fmt: skip
    result = quantize_bundle(out, work / "ches-int8.landsight", max_drop=None)
    print(f"chesapeake: quantize {result.seconds:.0f} s; pixel accuracy fp32 {result.fp32:.2f} %, int8 "
          f"{result.quantized:.2f} % (drop {result.drop:+.2f}); {result.extra}", flush=True)  # fmt: skip
    every = quantize_bundle(
        out,
        work / "ches-int8-all.landsight",
        max_drop=None,
        test=str(ches / "images/*.tif"),
        test_labels=str(ches / "labels/*_lc.tif"),
    )  # fmt: skip  (what int8 changes)
    print(f"chesapeake, all 8 patches: fp32 {every.fp32:.2f} %, int8 {every.quantized:.2f} %", flush=True)
    fp32, int8 = load_bundle(out, device="cpu"), load_bundle(result.bundle_path, device="cpu")
    tiles = []
    for path in sorted(ches.glob("images/*.tif")):
        with open_raster(path) as src:
            tiles.append(read_window(src, 0, 0, 256, 256, bands=fp32.bands))
    batch = np.stack(tiles).astype(np.float32)
    batches = [batch[i : i + 4] for i in range(0, len(batch), 4)] * 2
    mpix = sum(len(b) for b in batches) * 256 * 256 / 1e6
    g = paired(lambda: [fp32.predict_proba(b) for b in batches], lambda: [int8.predict_proba(b) for b in batches],
               1, rounds)  # fmt: skip
    return [[
        "chesapeake (U-Net, lite0 encoder)", "predict_proba, 4-band 256 x 256 tiles, batches of 4", len(batches) * 4,
        f"{g['fp32'] * mpix:.2f} Mpx/s", f"{g['int8'] * mpix:.2f} Mpx/s", f"{g['ratio']:.2f}", f"{g['foreign']:.2f}",
        f"held-out 2: {result.fp32:.2f} / {result.quantized:.2f} (mIoU {result.extra['mean_iou_fp32']:.3f} / "
        f"{result.extra['mean_iou_quantized']:.3f}); all 8 (6 seen in training): {every.fp32:.2f} / "
        f"{every.quantized:.2f} (mIoU {every.extra['mean_iou_fp32']:.3f} / {every.extra['mean_iou_quantized']:.3f})",
        f"{result.drop:+.2f} (pixels={result.n_test:,}); {every.drop:+.2f} (pixels={every.n_test:,})",
    ]]  # fmt: skip


HEADERS = ["dataset", "path", "images", "fp32 /s", "int8 /s", "int8 / fp32", "other load"]
SEG_HEADERS = [*HEADERS, "pixel accuracy % fp32 / int8 (held-out rasters)", "drop, points"]
ACC_HEADERS = ["dataset", "splits (seeds)", "fp32 accuracy %", "int8, head refit on int8 features %",
               "drop, points", "int8, float32 head kept %", "drop, points", "quantize s"]  # fmt: skip


def report(datasets: list[str], n: int, rounds: int, segment: bool, epochs: int = 3, seeds: int = 5) -> str:
    """Run the comparisons and return the markdown tables."""
    rows: list[list[Any]] = []
    acc_rows: list[list[Any]] = []
    seg = ""
    with tempfile.TemporaryDirectory(prefix="landsight-bench-quantize-") as tmp:
        for name in datasets:
            row, fp32_path, int8_path = accuracy_over_seeds(name, DATA / name, Path(tmp), seeds)
            acc_rows.append(row)
            rows += throughput(name, DATA / name, fp32_path, int8_path, n, rounds)
        if segment:
            seg = "\n\n" + markdown_table(SEG_HEADERS, segmentation(Path(tmp), rounds, epochs))
    return markdown_table(ACC_HEADERS, acc_rows) + "\n\n" + markdown_table(HEADERS, rows) + seg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="images timed per dataset")
    parser.add_argument("--rounds", type=int, default=3, help="paired timed rounds")
    parser.add_argument("--datasets", nargs="*", default=["eurosat_rgb", "ucmerced"])
    parser.add_argument("--segment", action="store_true", help="also the Chesapeake U-Net")
    parser.add_argument("--epochs", type=int, default=3, help="U-Net training epochs")
    parser.add_argument("--seeds", type=int, default=5, help="train/test splits for the accuracy table")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    print(f"machine: {machine()}\n")
    start = time.perf_counter()
    print(report(args.datasets, args.n, args.rounds, args.segment, args.epochs, args.seeds))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
