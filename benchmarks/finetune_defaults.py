"""``landsight finetune`` with its defaults against ``landsight train`` with its defaults, same splits.

For each dataset and seed: ``finetune(data, random_state=seed)`` (defaults: ``retrain="fc"`` on
the cached frozen trunk with a random rotation per image and epoch, head initialised as the
logistic-regression probe on the rotation-averaged frozen features, BatchNorm statistics frozen,
SGD lr 0.001 (0.01 until 2026-12-03's fourth session), at most 15 epochs, early stopping after 3
epochs without a lower validation loss, best epoch by validation loss, rot4 graph; split test 0.2
/ val 0.1) and
``train(data, random_state=seed)`` (defaults: lite0, rot4, ``C="auto"``, refit). ``split_catalog``
draws the test rows first, so both hold out the same test images for a seed (the counts are
checked; the images were checked for EuroSAT seed 0 in the fine-tuning section of RESULTS.md); the
figures are the bundles' own held-out metrics (the frozen one from its split head, before the
refit). The fine-tune trains on 70 % of the images (10 % validate), the frozen head on 80 %.

Run from the repository root: ``.venv/bin/python benchmarks/finetune_defaults.py
[--datasets ucmerced] [--seeds 1] [--retrain all --optimizer adamw --lr 1e-3 --lr-schedule cosine
--epochs 10] [--head-init random --tta none] [--no-train]`` (the options override finetune's
defaults, to compare other recipes on the same splits; ``--no-train`` skips the frozen runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, fresh_cache, machine, markdown_table, timed
from defaults import dataset_folder

from landsight.classify.finetune import finetune
from landsight.classify.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", default="ucmerced")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--retrain", help="override finetune's default depth (last | fc | all)")
    parser.add_argument("--optimizer", help="override the default optimizer (sgd | adamw)")
    parser.add_argument("--lr", type=float, help="override the default learning rate")
    parser.add_argument("--lr-schedule", help="override the default schedule (constant | cosine | onecycle)")
    parser.add_argument("--epochs", type=int, help="override the default maximum epochs")
    parser.add_argument("--head-init", help="override the default head initialisation (probe | random)")
    parser.add_argument("--tta", help="override the default test-time views (rot4 | none)")
    parser.add_argument("--backbone-lr-mult", type=float, help="override the default backbone lr factor")
    parser.add_argument("--no-train", action="store_true",
                        help="skip the frozen `train` runs (their column is then empty): recipe searches")
    args = parser.parse_args()
    overrides = {k: v for k in ("retrain", "optimizer", "lr", "lr_schedule", "epochs", "head_init", "tta",
                                "backbone_lr_mult") if (v := getattr(args, k)) is not None}  # fmt: skip
    print(f"finetune options: {overrides or 'defaults'}")
    print(f"machine: {machine()}\n")
    rows = []
    start = time.perf_counter()
    for name in args.datasets.split(","):
        data = dataset_folder(args.data, name)
        acc: dict[str, list[float]] = {"train (defaults)": [], "finetune (defaults)": []}
        for seed in range(args.seeds):
            with fresh_cache(), tempfile.TemporaryDirectory(prefix="landsight-ft-") as tmp:
                with timed() as t_frozen:
                    frozen = (train(data, out=Path(tmp) / "f.landsight", random_state=seed, progress=False, track=False)
                              if not args.no_train else None)  # fmt: skip
                with timed() as t_tuned:
                    tuned = finetune(data, out=Path(tmp) / "t.landsight", random_state=seed, progress=False,
                                     track=False, **overrides)  # fmt: skip
            assert frozen is None or frozen.metrics["n"] == tuned.metrics["n"], "different test splits"
            acc["train (defaults)"].append(100 * frozen.metrics["accuracy"] if frozen else float("nan"))
            acc["finetune (defaults)"].append(100 * tuned.metrics["accuracy"])
            epochs = len(tuned.history)
            print(
                f"{name} seed {seed}: train {acc['train (defaults)'][-1]:.2f} ({t_frozen.seconds:.0f} s, load "
                f"{t_frozen.foreign:.2f}); finetune {acc['finetune (defaults)'][-1]:.2f} ({t_tuned.seconds:.0f} s, "
                f"{epochs} epochs, best {tuned.best_epoch + 1}, load {t_tuned.foreign:.2f}); test n = "
                f"{frozen.metrics['n'] if frozen else '-'} / {tuned.metrics['n']}",
                flush=True,
            )
            rows.append(
                [name, seed, f"{acc['train (defaults)'][-1]:.2f}", f"{t_frozen.seconds:.0f}",
                 f"{acc['finetune (defaults)'][-1]:.2f}", f"{t_tuned.seconds:.0f}",
                 f"{epochs} (best {tuned.best_epoch + 1})", f"{(t_frozen.foreign + t_tuned.foreign) / 2:.2f}"]
            )  # fmt: skip
        if args.seeds > 1:
            a, b = (np.array(v) for v in acc.values())
            print(f"{name}: finetune - train = {np.mean(b - a):+.2f} ± {np.std(b - a, ddof=1) / np.sqrt(len(a)):.2f}")
    headers = ["dataset", "seed", "train acc %", "train s", "finetune acc %", "finetune s", "epochs", "other load"]
    print("\n" + markdown_table(headers, rows))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
