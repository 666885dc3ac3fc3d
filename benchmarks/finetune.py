"""Fine-tuning benchmark: epoch speed per retraining depth, accuracy of a full fine-tune, DDP 2 vs 1.

Phases (``--phases``, default all three, in this order):

  speed     Seconds per epoch and training samples/s of ``landsight.classify.finetune.finetune`` on a
            subset of EuroSAT RGB (``--per-class`` images per class, random weights) for
            ``last`` on cached features, ``last`` with the frozen backbone in the loop
            (``cache_features=False, augment=False``), ``fc`` and ``all``, for each ``--backbones``.
            The one-time pre-pass before epoch 1 (featurization for cached ``last``, the image
            check for the others) is timed separately. Per-epoch figures are the mean of the
            epochs after the first (the first one also starts the DataLoader workers).
  ddp       ``retrain="fc"``, same subset, ``devices=2`` (ddp_spawn, gloo) against ``devices=1``.
  accuracy  ``retrain="all"`` on all of EuroSAT RGB with the offline ImageNet weights of
            ``tf_efficientnet_lite0`` (seeded 70/10/20 train/val/test split), against the
            frozen-features logistic-regression head of ``landsight.classify.train.train`` (seeded 80/20
            split; the same test images, checked), both bundles also re-scored with
            ``landsight.classify.evaluate.evaluate`` on a map file of the test images.

Before each timed run the script waits (polling every 15 s, at most 20 minutes) until no other
benchmark script (featurize / accuracy / serve) is running, and reports the 1-minute load average
at the start and end of the run plus the share of the machine's CPU other processes took
meanwhile ("foreign").

Run from the repository root: ``.venv/bin/python benchmarks/finetune.py [--phases speed ddp accuracy]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import mean
from typing import Any

from _common import DATA, machine, markdown_table, timed

import landsight.classify.featurize
import landsight.classify.finetune
import landsight.classify.finetune_data
from landsight.data.catalog import build_catalog
from landsight.data.splitting import split_catalog

OTHER_BENCHMARKS = "benchmarks/(featurize|accuracy|serve).py"

#: speed-phase modes: label -> finetune keyword arguments
MODES: dict[str, dict[str, Any]] = {
    "last (cached features)": {"retrain": "last", "cache_features": True},
    "last (backbone in loop)": {"retrain": "last", "cache_features": False, "augment": False},
    "fc": {"retrain": "fc"},
    "all": {"retrain": "all"},
}


def wait_for_other_benchmarks(max_wait: float = 1200.0, poll: float = 15.0) -> float:
    """Block until ``pgrep -f OTHER_BENCHMARKS`` finds nothing; return the seconds waited."""
    start = time.perf_counter()
    announced = False
    while True:
        found = subprocess.run(["pgrep", "-f", OTHER_BENCHMARKS], capture_output=True, text=True).stdout.split()
        others = [p for p in found if int(p) != os.getpid()]
        waited = time.perf_counter() - start
        if not others:
            if announced:
                print(f"  ... other benchmarks finished after {waited:.0f} s", flush=True)
            return waited
        if waited > max_wait:
            print(f"  !! other benchmarks still running after {waited:.0f} s (pids {others}); going on", flush=True)
            return waited
        if not announced:
            print(f"  ... waiting for other benchmarks (pids {others})", flush=True)
            announced = True
        time.sleep(poll)


def load1() -> float:
    return os.getloadavg()[0]


@contextmanager
def cache_env(folder: Path) -> Iterator[None]:
    old = os.environ.get("LANDSIGHT_CACHE_DIR")
    os.environ["LANDSIGHT_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LANDSIGHT_CACHE_DIR", None)
        else:
            os.environ["LANDSIGHT_CACHE_DIR"] = old


@contextmanager
def prepass_timer() -> Iterator[dict[str, float]]:
    """Time finetune's one-time pass over the images (featurize for cached 'last', else _scan)."""
    spent: dict[str, float] = {"seconds": 0.0}
    originals = landsight.classify.featurize.featurize, landsight.classify.finetune_data._scan

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_fn(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - t0

        return timed_fn

    landsight.classify.featurize.featurize = wrap(originals[0])  # finetune imports it at call time
    landsight.classify.finetune_data._scan = wrap(originals[1])
    try:
        yield spent
    finally:
        landsight.classify.featurize.featurize, landsight.classify.finetune_data._scan = originals


def write_map(rows: list[tuple[str, str]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def subset_map(per_class: int, folder: Path) -> Path:
    """Map file of the first ``per_class`` images (sorted by path) of each EuroSAT RGB class."""
    catalog = build_catalog(DATA / "eurosat_rgb")
    sub = catalog.groupby("label", sort=True).head(per_class)
    return write_map(list(zip(sub["path"], sub["label"], strict=True)), folder / f"eurosat_{per_class}pc.csv")


def run_finetune(data: Path, **kwargs: Any) -> dict[str, Any]:
    """One timed finetune run in a fresh cache and output folder."""
    waited = wait_for_other_benchmarks()
    load_start = load1()
    with tempfile.TemporaryDirectory(prefix="landsight-ft-") as tmp, cache_env(Path(tmp) / "cache"):
        with prepass_timer() as prepass, timed() as t:
            result = landsight.classify.finetune.finetune(
                data, out=Path(tmp) / "model.landsight", progress=False, track=False, **kwargs
            )
        hist = result.history
        later = hist[1:] or hist
        return {
            "waited": waited,
            "load_start": load_start,
            "load_end": load1(),
            "foreign": t.foreign,
            "wall": t.seconds,
            "prepass": prepass["seconds"],
            "epoch1_s": hist[0]["epoch_seconds"],
            "epoch_s": mean(r["epoch_seconds"] for r in later),
            "sps": mean(r["samples_per_second"] for r in later),
            "n_epochs": len(hist),
            "history": hist,
            "metrics": result.metrics,
            "best_epoch": result.best_epoch,
            "bundle": result.bundle_path,
        }


def speed_phase(args: argparse.Namespace, data: Path) -> dict[tuple[str, str], dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    rows = []
    for backbone in args.backbones:
        for mode, kw in MODES.items():
            print(f"speed: {backbone} / {mode}", flush=True)
            r = run_finetune(
                data, backbone=backbone, weights=None, epochs=args.epochs, batch_size=args.batch_size,
                val_size=args.val_size, test_size=0.0, num_workers=args.num_workers, **kw,
            )  # fmt: skip
            results[(backbone, mode)] = r
            rows.append(speed_row(backbone, mode, r))
            print(markdown_table(SPEED_HEADERS, rows[-1:]), flush=True)
    print("\n" + markdown_table(SPEED_HEADERS, rows))
    print()
    for backbone in args.backbones:
        cached, loop = results[(backbone, "last (cached features)")], results[(backbone, "last (backbone in loop)")]
        ratio = loop["epoch_s"] / cached["epoch_s"]
        n_amort = cached["n_epochs"]
        amort = (loop["prepass"] + n_amort * loop["epoch_s"]) / (cached["prepass"] + n_amort * cached["epoch_s"])
        verdict = "met" if ratio >= 20 else "NOT met"
        print(
            f"{backbone}: cached 'last' is {ratio:.0f}x faster per epoch than backbone-in-the-loop "
            f"(target >= 20x: {verdict}); over {n_amort} epochs including the one-time pass: {amort:.1f}x"
        )
    return results


SPEED_HEADERS = [
    "backbone", "retrain", "one-time pass s", "epoch 1 s", "s/epoch (epochs 2+)", "samples/s (epochs 2+)",
    "run wall s", "load avg start/end", "foreign CPU",
]  # fmt: skip


def speed_row(backbone: str, mode: str, r: dict[str, Any]) -> list[str]:
    return [
        backbone, mode, f"{r['prepass']:.1f}", f"{r['epoch1_s']:.2f}", f"{r['epoch_s']:.2f}", f"{r['sps']:.1f}",
        f"{r['wall']:.1f}", f"{r['load_start']:.2f} / {r['load_end']:.2f}", f"{r['foreign']:.0%}",
    ]  # fmt: skip


def ddp_phase(args: argparse.Namespace, data: Path) -> None:
    headers = ["devices", "s/epoch (epochs 2+)", "samples/s (epochs 2+)", "val error % (last epoch)",
               "epochs", "run wall s", "load avg start/end", "foreign CPU"]  # fmt: skip
    rows = []
    for devices in (1, 2):
        print(f"ddp: devices={devices}", flush=True)
        r = run_finetune(
            data, backbone="tf_efficientnet_lite0", weights=None, retrain="fc", epochs=args.epochs,
            batch_size=args.batch_size, val_size=args.val_size, test_size=0.0, num_workers=args.num_workers,
            devices=devices,
        )  # fmt: skip
        rows.append([
            devices, f"{r['epoch_s']:.2f}", f"{r['sps']:.1f}", f"{r['history'][-1].get('val_error', float('nan')):.1f}",
            r["n_epochs"], f"{r['wall']:.1f}", f"{r['load_start']:.2f} / {r['load_end']:.2f}", f"{r['foreign']:.0%}",
        ])  # fmt: skip
        print(markdown_table(headers, rows[-1:]), flush=True)
        print("  history:", [{k: round(v, 3) for k, v in h.items()} for h in r["history"]], flush=True)
    print("\n" + markdown_table(headers, rows))


def accuracy_phase(args: argparse.Namespace) -> None:
    from landsight.classify.evaluate import evaluate
    from landsight.classify.train import train

    data = DATA / "eurosat_rgb"
    catalog = build_catalog(data)
    ft_split = split_catalog(catalog, test_size=0.2, val_size=0.1, random_state=0)
    tr_split = split_catalog(catalog, test_size=0.2, random_state=0)
    ft_test = set(ft_split.loc[ft_split["split"] == "test", "path"])
    tr_test = set(tr_split.loc[tr_split["split"] == "test", "path"])
    print(f"test rows identical for finetune (test 0.2, val 0.1) and train (test 0.2): {ft_test == tr_test} "
          f"({len(ft_test)} vs {len(tr_test)} images, overlap {len(ft_test & tr_test)})", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="landsight-acc-") as keep:
        keep_dir = Path(keep)
        test_map = write_map(
            [(p, lbl) for p, lbl, s in ft_split[["path", "label", "split"]].itertuples(index=False) if s == "test"],
            keep_dir / "test.csv",
        )
        print(f"accuracy: finetune all, {args.full_epochs} epochs, {args.full_optimizer} lr {args.full_lr}", flush=True)
        waited = wait_for_other_benchmarks()
        load_start = load1()
        with cache_env(keep_dir / "cache-ft"), prepass_timer() as prepass, timed() as t:
            ft = landsight.classify.finetune.finetune(
                data, out=keep_dir / "ft.landsight", backbone="tf_efficientnet_lite0", weights="imagenet",
                retrain="all", epochs=args.full_epochs, batch_size=args.batch_size, optimizer=args.full_optimizer,
                lr=args.full_lr, lr_schedule=args.full_schedule, val_size=0.1, test_size=0.2, random_state=0,
                num_workers=args.num_workers, progress=False, track=False,
            )  # fmt: skip
        ft_load_end = load1()
        print("  history:", [{k: round(v, 3) for k, v in h.items()} for h in ft.history], flush=True)
        epochs_s = sum(h["epoch_seconds"] for h in ft.history)
        sps = mean(h["samples_per_second"] for h in ft.history)
        print(f"  finetune wall {t.seconds:.0f} s (image check {prepass['seconds']:.0f} s, epochs {epochs_s:.0f} s, "
              f"{sps:.1f} samples/s), waited {waited:.0f} s", flush=True)  # fmt: skip
        ft_eval = evaluate(ft.bundle_path, test_map, progress=False, track=False)
        rows.append([
            f"fine-tune `all`, {args.full_epochs} epochs ({args.full_optimizer}, lr {args.full_lr}, "
            f"{args.full_schedule}, backbone lr x0.1, augment on)",
            "2100 / 300 / 600", f"{ft.metrics['accuracy']:.2%}", f"{ft.metrics['balanced_accuracy']:.2%}",
            f"{ft_eval['accuracy']:.2%}", f"{t.seconds:.0f} (epochs {epochs_s:.0f})",
            f"{load_start:.2f} / {ft_load_end:.2f}", f"{t.foreign:.0%}",
        ])  # fmt: skip
        print("accuracy: train logreg (frozen features)", flush=True)
        wait_for_other_benchmarks()
        load_start = load1()
        with cache_env(keep_dir / "cache-lr"), timed() as t2:
            tr = train(data, out=keep_dir / "lr.landsight", test_size=0.2, random_state=0, head="logreg",
                       num_workers=args.num_workers, progress=False, track=False)  # fmt: skip
        lr_load_end = load1()
        same = set(tr.test_paths) == ft_test
        print(f"  train test_paths identical to finetune's test split: {same} ({len(tr.test_paths)} images)")
        lr_eval = evaluate(tr.bundle_path, test_map, progress=False, track=False)
        rows.append([
            "frozen features + logreg (`landsight train`, C=1)", f"{tr.n_train} / - / {tr.n_test}",
            f"{tr.metrics['accuracy']:.2%}", f"{tr.metrics['balanced_accuracy']:.2%}", f"{lr_eval['accuracy']:.2%}",
            f"{t2.seconds:.0f}", f"{load_start:.2f} / {lr_load_end:.2f}", f"{t2.foreign:.0%}",
        ])  # fmt: skip
    headers = ["model (tf_efficientnet_lite0, ImageNet)", "train / val / test images", "test accuracy",
               "balanced acc.", "evaluate() on test map", "wall s", "load avg start/end", "foreign CPU"]  # fmt: skip
    print("\n" + markdown_table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", nargs="+", default=["speed", "ddp", "accuracy"],
                        choices=["speed", "ddp", "accuracy"])  # fmt: skip
    parser.add_argument("--backbones", nargs="+", default=["tf_efficientnet_lite0", "resnet18"])
    parser.add_argument("--per-class", type=int, default=20, help="speed/ddp subset: images per class")
    parser.add_argument("--epochs", type=int, default=3, help="speed/ddp epochs (mean of epochs 2+ is reported)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-size", type=float, default=0.1, help="speed/ddp validation fraction (no test split)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--full-epochs", type=int, default=3, help="accuracy phase: fine-tuning epochs")
    parser.add_argument("--full-optimizer", default="adamw", choices=["sgd", "adamw"])
    parser.add_argument("--full-lr", type=float, default=1e-3, help="final-layer lr (backbone: x0.1)")
    parser.add_argument("--full-schedule", default="cosine")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="lightning")
    print(f"machine: {machine()}; torch threads: {__import__('torch').get_num_threads()}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="landsight-ftdata-") as tmp:
        subset = subset_map(args.per_class, Path(tmp)) if {"speed", "ddp"} & set(args.phases) else None
        if "speed" in args.phases:
            assert subset is not None
            speed_phase(args, subset)
        if "ddp" in args.phases:
            assert subset is not None
            ddp_phase(args, subset)
    if "accuracy" in args.phases:
        accuracy_phase(args)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
