"""The "naive probe" a user writes by hand, and ``landsight train`` end to end, on the same splits.

Naive probe (what the issue's 20-line script does): the timm ``tf_efficientnet_lite0`` module with
its ImageNet weights (loaded offline as landsight does: ``create_backbone(...).model``, a timm
model whose classifier is reset, so its forward pass returns the global-pooled 1280 features),
timm's own preprocessing (``resolve_data_config`` + ``create_transform``: resize to 256 bicubic,
centre crop 224, ImageNet mean/std), PIL decoding, eager torch in batches of 32, then
``sklearn.linear_model.LogisticRegression`` with its defaults except ``max_iter=1000`` (the
default 100 iterations stop before convergence on these unscaled features and warn).

CLI rows: for each split, the training rows and the test rows are written as two map files and
``landsight.train(train_map, test=test_map, out=..., progress=False, track=False)`` runs with no
other option (the code path of ``landsight train TRAIN --test TEST``), or with the ``FAST``
preset (``--fast``). With ``test`` given nothing is refit, so the figure is that of the head
that would ship, on images it never saw. Accuracies come from ``TrainResult.metrics`` (the
bundle's own ``metrics.json``).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import markdown_table
from sklearn.metrics import accuracy_score

from landsight.data.splitting import split_catalog

BATCH = 32


def naive_features(paths: list[str]) -> tuple[np.ndarray, float]:
    """Features of the hand-written probe: timm preprocessing, eager torch. Returns ``(X, seconds)``."""
    import timm.data
    import torch
    from PIL import Image

    from landsight.models.backbones import create_backbone

    started = time.perf_counter()
    model = create_backbone("tf_efficientnet_lite0").model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), BATCH):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + BATCH]])
            out.append(model(batch).numpy())
    return np.concatenate(out), time.perf_counter() - started


def split_of(catalog: pd.DataFrame, seed: int) -> np.ndarray:
    """``"train"`` / ``"test"`` per row: the stratified 80/20 split ``landsight train`` makes."""
    return split_catalog(catalog, test_size=0.2, random_state=seed)["split"].to_numpy()


def cli_accuracy(catalog: pd.DataFrame, split: np.ndarray, folder: Path, **options: object) -> tuple[float, float]:
    """Run ``landsight.train`` on the split's map files; return ``(test accuracy %, seconds)``."""
    from landsight.classify.train import train

    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train", "test"):
        catalog.loc[split == part, ["path", "label"]].to_csv(folder / f"{part}.csv", index=False)
    started = time.perf_counter()
    result = train(folder / "train.csv", test=folder / "test.csv", out=folder / "m.landsight", progress=False,
                   track=False, overwrite=True, **options)  # type: ignore[arg-type]  # fmt: skip
    assert result.n_test == int((split == "test").sum()) and not result.refit
    return 100 * result.metrics["accuracy"], time.perf_counter() - started


def naive_vs_cli(catalogs: dict[str, pd.DataFrame], seeds: int) -> str:
    """Naive probe, ``landsight train --fast`` and ``landsight train`` (defaults) on ``seeds`` splits.

    Returns:
        A markdown table: accuracy mean ± s.e. over the splits, paired gain over the naive probe
        (mean ± s.e.), the accuracy ratio to it, and seconds.
    """
    from landsight.classify.train import FAST

    rows = []
    for name, catalog in catalogs.items():
        y = catalog["label"].to_numpy()
        X, feat_s = naive_features(catalog["path"].tolist())
        acc: dict[str, list[float]] = {
            "naive probe": [],
            "landsight train --fast": [],
            "landsight train (defaults)": [],
        }
        secs: dict[str, list[float]] = {k: [] for k in acc}
        with tempfile.TemporaryDirectory(prefix="landsight-naive-") as tmp:
            for seed in range(seeds):
                split = split_of(catalog, seed)
                train, test = split == "train", split == "test"
                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from sklearn.linear_model import LogisticRegression

                    probe = LogisticRegression(max_iter=1000).fit(X[train], y[train])
                acc["naive probe"].append(100 * accuracy_score(y[test], probe.predict(X[test])))
                secs["naive probe"].append(time.perf_counter() - started + (feat_s if seed == 0 else 0.0))
                for label, options in (("landsight train --fast", FAST), ("landsight train (defaults)", {})):
                    a, s = cli_accuracy(catalog, split, Path(tmp) / f"{label.split()[-1]}-{seed}", **options)
                    acc[label].append(a)
                    secs[label].append(s)
                print(f"  {name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in acc.items()), flush=True)
        base = np.array(acc["naive probe"])
        for label, values in acc.items():
            a = np.array(values)
            gain = a - base
            se = np.sqrt(seeds)
            rows.append(
                [
                    name, label, f"{a.mean():.2f} ± {a.std(ddof=1) / se:.2f}",
                    "(baseline)" if label == "naive probe" else f"{gain.mean():+.2f} ± {gain.std(ddof=1) / se:.2f}",
                    f"{a.mean() / base.mean():.3f}", f"{int((gain > 0).sum())}/{int((gain < 0).sum())}",
                    f"{secs[label][0]:.0f}", f"{np.mean(secs[label][1:]):.0f}" if seeds > 1 else "",
                ]
            )  # fmt: skip
    headers = [
        "dataset", "method", f"accuracy % (mean ± s.e., {seeds} splits)", "gain vs naive (paired, ± s.e.)",
        "ratio to naive", "splits better/worse", "s, first split (featurize + fit)", "s, later splits (cached)",
    ]  # fmt: skip
    return markdown_table(headers, rows)
