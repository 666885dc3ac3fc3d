"""What the default fine-tune's weights are worth, read several ways, against ``train``'s default.

For each dataset and seed the script runs ``train`` and ``finetune`` with their defaults (as
``finetune_defaults.py``: the same test images for a seed) and keeps, from inside the
fine-tune, the network at the start of training (pretrained last stage + the probe head fitted
on the 70 % training split, the LP-FT start) and at the best epoch. It then scores on the test
images, through the cached trunk (four rotations averaged, as the bundle's ``rot4`` graph):

- ``start``: the LP-FT start, i.e. no fine-tuning (the frozen probe on 70 % of the images);
- ``wise 0.5`` and ``wise val``: WiSE-FT weight interpolation of start and best epoch (Wortsman
  et al., "Robust fine-tuning of zero-shot models", CVPR 2022), at alpha 0.5 and at the alpha of
  {0, 0.25, 0.5, 0.75, 1} with the lowest validation loss;
- ``ensemble``: the mean of the start's and the fine-tune's probabilities (output space);
- ``refit``: the final layer refit as a logistic regression (``C`` cross-validated, as ``train``)
  on the fine-tuned features of the training + validation images, 80 % as ``train``'s split head
  (last-layer retraining, Kirichenko et al., "Last Layer Re-Training is Sufficient for Robustness
  to Spurious Correlations", ICLR 2023);
- ``probe refit``: the same refit on the pretrained features (control: no fine-tuning, 80 %).

The ``finetune`` column is the bundle's own test accuracy (through the exported graph). An
experiment on the recipe, reading ``landsight.classify.finetune`` internals by wrapping
``fit_module`` and ``cache_trunk``; not an API.

Run from the repository root: ``.venv/bin/python benchmarks/finetune_variants.py
[--datasets ucmerced,eurosat_rgb] [--seeds 5]``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import DATA, fresh_cache, machine, markdown_table
from defaults import dataset_folder

import landsight.models.fit as fit_mod
import landsight.models.trunk as trunk_mod
from landsight.classify.finetune import finetune
from landsight.classify.train import train
from landsight.models.classifier import probe_init

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
seen: dict[str, Any] = {}
_fit_module, _cache_trunk = fit_mod.fit_module, trunk_mod.cache_trunk


def _spy_fit_module(module: Any, train_loader: Any, val_loader: Any, **kwargs: Any) -> Any:
    seen.update(start=copy.deepcopy(module.model.state_dict()), model=module.model, train=train_loader,
                val=val_loader)  # fmt: skip
    result = _fit_module(module, train_loader, val_loader, **kwargs)
    seen["best"] = copy.deepcopy(module.model.state_dict())
    return result


def _spy_cache_trunk(trunk: Any, paths: Any, preprocessing: Any, work: Path, **kwargs: Any) -> Any:
    seen.update(trunk=trunk, preprocessing=preprocessing)
    return _cache_trunk(trunk, paths, preprocessing, work, **kwargs)


def _features(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.features(x[i : i + 64]) for i in range(0, len(x), 64)])


def _accuracy(logits: torch.Tensor, y: np.ndarray) -> float:
    return 100 * float((logits.argmax(1).numpy() == y).mean())


def variants(test_paths: list[str], test_labels: list[str], seed: int, work: Path) -> dict[str, float]:
    """Test accuracy (%) of each reading of the fine-tune captured in ``seen``."""
    cached, _ = _cache_trunk(seen["trunk"], test_paths, seen["preprocessing"], work)
    classes = sorted(set(test_labels))
    x_test = torch.from_numpy(np.stack([cached[p] for p in test_paths]))
    y_test = np.array([classes.index(c) for c in test_labels])
    x_val, y_val = (torch.cat([batch[key] for batch in seen["val"]]) for key in ("image", "label"))
    x_train, y_train = (torch.cat([batch[key] for batch in seen["train"]]) for key in ("image", "label"))
    model = seen["model"].eval()
    start, best = seen["start"], seen["best"]

    def mix(alpha: float) -> None:
        model.load_state_dict({k: (1 - alpha) * start[k] + alpha * v if v.is_floating_point() else v
                               for k, v in best.items()})  # fmt: skip

    row: dict[str, float] = {}
    probs, val_loss = {}, {}
    for alpha in ALPHAS:
        mix(alpha)
        with torch.no_grad():
            logits = model.fc(_features(model, x_test))
            val_loss[alpha] = float(torch.nn.functional.cross_entropy(model.fc(_features(model, x_val)), y_val))
        probs[alpha], row[f"wise {alpha}"] = logits.softmax(1), _accuracy(logits, y_test)
    row["start"], row["wise val"] = row["wise 0.0"], row[f"wise {min(val_loss, key=val_loss.get)}"]
    row["ensemble"] = _accuracy((probs[0.0] + probs[1.0]) / 2, y_test)
    fc = copy.deepcopy(model.fc)
    y_fit = torch.cat([y_train, y_val]).numpy()
    for name, alpha in (("refit", 1.0), ("probe refit", 0.0)):
        mix(alpha)
        probe_init(fc, torch.cat([_features(model, x_train), _features(model, x_val)]).numpy(), y_fit,
                   random_state=seed)  # fmt: skip
        with torch.no_grad():
            row[name] = _accuracy(fc(_features(model, x_test)), y_test)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", default="ucmerced,eurosat_rgb")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    fit_mod.fit_module, trunk_mod.cache_trunk = _spy_fit_module, _spy_cache_trunk
    columns = ["train", "finetune", "start", "wise 0.5", "wise val", "ensemble", "refit", "probe refit"]
    print(f"machine: {machine()}\n")
    started, rows, summary = time.perf_counter(), [], []
    for name in args.datasets.split(","):
        data = dataset_folder(args.data, name)
        acc: dict[str, list[float]] = {c: [] for c in columns}
        for seed in range(args.seeds):
            with fresh_cache(), tempfile.TemporaryDirectory(prefix="landsight-ftv-") as tmp:
                frozen = train(data, out=Path(tmp) / "f.landsight", random_state=seed, progress=False, track=False)
                tuned = finetune(data, out=Path(tmp) / "t.landsight", random_state=seed, progress=False, track=False)
                assert frozen.metrics["n"] == tuned.metrics["n"], "different test splits"
                row = variants(tuned.test_paths, tuned.test_labels, seed, Path(tmp))
            row.update(train=100 * frozen.metrics["accuracy"], finetune=100 * tuned.metrics["accuracy"])
            for c in columns:
                acc[c].append(row[c])
            rows.append([name, seed, *(f"{row[c]:.2f}" for c in columns)])
            print(" ".join([name, str(seed), *(f"{c}={row[c]:.2f}" for c in columns)]), flush=True)
        base = np.array(acc["train"])
        for c in columns[1:]:
            d = np.array(acc[c]) - base
            se = np.std(d, ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            summary.append([name, c, f"{np.mean(acc[c]):.2f}", f"{np.mean(d):+.2f} ± {se:.2f}",
                            f"{(d > 0).sum()} / {(d < 0).sum()} / {(d == 0).sum()}"])  # fmt: skip
    print("\n" + markdown_table(["dataset", "seed", *columns], rows))
    print("\n" + markdown_table(["dataset", "reading", "accuracy %", "- train (points)", "better / worse / tied"],
                                summary))  # fmt: skip
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
