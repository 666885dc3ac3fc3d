"""Accuracy of frozen-feature heads on EuroSAT RGB and UC Merced, with dihedral feature averaging.

For each dataset: a seeded, stratified 80/20 split (``split_catalog(random_state=0)``), features
from ``featurize`` (default backbone, ImageNet weights, feature cache on), then heads fitted on
the train split and scored on the test split. Feature variants:

  none        one view (``landsight train --fast``; the default averages 4 rotations)
  d8 test     head trained on one view; test features averaged over the 8 dihedral views
  rot4 avg    train and test features averaged over the 4 rotations (0, 90, 180, 270 degrees)
  rot4 train  train features averaged over the 4 rotations; test features from one view
  d8 avg      train and test features averaged over the 8 dihedral views (rotations x flip)
  d8 stacked  the 8 train views as 8 training samples each; test features averaged over 8 views

Extra views are made by rotating/flipping the decoded, resized uint8 images and running the
FeatureExtractor on them. ``featurize s`` is the featurization wall time a variant needs: the
end-to-end ``featurize`` run, plus (for extra views) one decode of every image and the network
time of each extra view.

First, in every run, the naive probe (timm features + scikit-learn ``LogisticRegression``
defaults, written out in ``_naive.py``) against ``landsight train`` end to end with its defaults
and with ``--fast``, on the same 5 splits of EuroSAT, UC Merced and the Dubai chips
(``_dubai.py``): the ratio to the naive approach. ``--naive-only`` stops after that table.

Run from the repository root: ``.venv/bin/python benchmarks/accuracy.py [--n-eurosat 3000]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import DATA, fresh_cache, machine, markdown_table, timed
from _naive import naive_vs_cli
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from landsight.classify.featurize import FeatureExtractor, featurize
from landsight.data.catalog import build_catalog
from landsight.data.readers import read_image
from landsight.data.splitting import split_catalog
from landsight.models.backbones import create_backbone
from landsight.models.heads import describe_head, make_head

BATCH = 32

View = Callable[[np.ndarray], np.ndarray]


def _rotation(k: int, flip: bool) -> View:
    def view(images: np.ndarray) -> np.ndarray:
        out = np.flip(images, axis=2) if flip else images
        return np.rot90(out, k, axes=(1, 2))

    return view


#: The 8 symmetries of the square, on ``(N, H, W, C)`` batches; the first 4 are the rotations.
DIHEDRAL: list[View] = [_rotation(k, flip) for flip in (False, True) for k in range(4)]

HEADS: dict[str, dict[str, Any]] = {
    "logreg C=1": {"kind": "logreg", "C": 1.0},
    "logreg C=auto": {"kind": "logreg", "C": "auto"},
    "logreg C=1, no standardisation": {"kind": "logreg", "C": 1.0, "standardize": False},
    "forest 300": {"kind": "forest", "n_estimators": 300},
}

#: Variants compared over several splits (logreg C=1).
ROBUSTNESS_VARIANTS = ("none", "d8 test", "rot4 avg", "rot4 train", "d8 avg")

#: (features variant, heads) rows of the table, in order.
PLAN: list[tuple[str, list[str]]] = [
    ("none", ["logreg C=1", "logreg C=auto", "forest 300", "logreg C=1, no standardisation"]),
    ("d8 test", ["logreg C=1", "logreg C=auto"]),
    ("rot4 avg", ["logreg C=1", "logreg C=auto"]),
    ("rot4 train", ["logreg C=1"]),
    ("d8 avg", ["logreg C=1", "logreg C=auto", "forest 300"]),
    ("d8 stacked", ["logreg C=1"]),
]


@dataclass
class ViewFeatures:
    """Features of every image under each dihedral view, and what each took to compute.

    Attributes:
        X: ``(8, N, D)`` float32; ``X[0]`` is the untransformed image (from ``featurize``).
        featurize_s: Wall time of the end-to-end ``featurize`` run (view 0).
        decode_s: Wall time of decoding and resizing every image once more for the extra views.
        view_s: Network wall time of each extra view (7 values).

    """

    X: np.ndarray
    featurize_s: float
    decode_s: float
    view_s: list[float]

    def cost(self, n_views: int) -> float:
        """Featurization seconds for ``n_views`` views (1 = plain ``featurize``)."""
        if n_views == 1:
            return self.featurize_s
        return self.featurize_s + self.decode_s + sum(self.view_s[: n_views - 1])


def subsample(catalog: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """Keep ``n`` rows of a catalog, the same number per class (all rows when ``n`` is None)."""
    if n is None or n >= len(catalog):
        return catalog
    per_class = max(2, n // catalog["label"].nunique())
    return catalog.groupby("label", sort=True).head(per_class).reset_index(drop=True)


def featurize_views(paths: list[str], extractor: FeatureExtractor) -> ViewFeatures:
    """Featurize every image under the 8 dihedral views (view 0 through ``featurize``)."""
    with timed() as t_base:
        base = featurize(paths, extractor=extractor, cache=True, progress=False)
    assert not base.failures, base.failures[:3]
    prep = extractor.backbone.preprocessing
    with timed() as t_decode:
        images = np.stack([prep.resize(read_image(p).array) for p in paths])
    assert np.abs(extractor(images[:BATCH]) - base.X[:BATCH]).max() < 1e-4, "decode differs from featurize"
    feats = [base.X]
    view_s = []
    for view in DIHEDRAL[1:]:
        with timed() as t_view:
            feats.append(np.concatenate([extractor(view(images[i : i + BATCH])) for i in range(0, len(images), BATCH)]))
        view_s.append(t_view.seconds)
    return ViewFeatures(np.stack(feats), t_base.seconds, t_decode.seconds, view_s)


def variant_features(
    name: str, views: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Return ``(X_train, y_train, X_test, n_views)`` of a features variant."""
    if name == "none":
        return views[0][train], y[train], views[0][test], 1
    if name == "d8 test":
        return views[0][train], y[train], views.mean(axis=0)[test], 8
    if name == "rot4 avg":
        mean = views[:4].mean(axis=0)
        return mean[train], y[train], mean[test], 4
    if name == "rot4 train":
        return views[:4].mean(axis=0)[train], y[train], views[0][test], 4
    if name == "d8 avg":
        mean = views.mean(axis=0)
        return mean[train], y[train], mean[test], 8
    if name == "d8 stacked":
        stacked = views[:, train].reshape(-1, views.shape[2])
        return stacked, np.tile(y[train], len(views)), views.mean(axis=0)[test], 8
    raise ValueError(f"unknown features variant {name!r}")


@dataclass
class Score:
    """Test-split scores of one fitted head."""

    accuracy: float
    balanced: float
    n_test: int
    fit_s: float
    C: str

    @property
    def stderr(self) -> float:
        """Binomial standard error of the accuracy, in percent points."""
        return 100 * float(np.sqrt(self.accuracy * (1 - self.accuracy) / self.n_test))


def fit_score(
    head_name: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray
) -> Score:
    """Fit one head of :data:`HEADS` and score it on the test features."""
    head = make_head(**HEADS[head_name], n_jobs=-1)
    with timed() as t_fit:
        head.fit(X_train, y_train)
    pred = head.predict(X_test)
    C = describe_head(head)["params"].get("C")
    return Score(
        accuracy=accuracy_score(y_test, pred),
        balanced=balanced_accuracy_score(y_test, pred),
        n_test=len(y_test),
        fit_s=t_fit.seconds,
        C="" if C is None else f"{C:g}",
    )


def split_masks(catalog: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train and test masks of a stratified 80/20 ``split_catalog`` split."""
    split = split_catalog(catalog, test_size=0.2, random_state=seed)["split"].to_numpy()
    return split == "train", split == "test"


def evaluate_dataset(catalog: pd.DataFrame, name: str, views: ViewFeatures) -> list[list[str]]:
    """Fit every planned head on the seed-0 split; return the table rows."""
    y = catalog["label"].to_numpy()
    train, test = split_masks(catalog, seed=0)
    rows = []
    for variant, heads in PLAN:
        X_train, y_train, X_test, n_views = variant_features(variant, views.X, y, train, test)
        for head_name in heads:
            score = fit_score(head_name, X_train, y_train, X_test, y[test])
            rows.append(
                [
                    name,
                    variant,
                    head_name,
                    score.C,
                    f"{100 * score.accuracy:.2f} ± {score.stderr:.1f}",
                    f"{100 * score.balanced:.2f}",
                    f"{views.cost(n_views):.0f}",
                    f"{score.fit_s:.1f}",
                ]
            )
            print("  " + " | ".join(rows[-1][1:]), flush=True)
    return rows


def split_robustness(catalog: pd.DataFrame, name: str, views: ViewFeatures, seeds: int) -> list[list[str]]:
    """Accuracy of logreg C=1 per features variant over ``seeds`` different 80/20 splits.

    Returns rows with the mean and standard deviation over the splits, and the mean paired gain
    over the single-view features (same split, same head).
    """
    y = catalog["label"].to_numpy()
    accuracy: dict[str, list[float]] = {v: [] for v in ROBUSTNESS_VARIANTS}
    for seed in range(seeds):
        train, test = split_masks(catalog, seed)
        for variant in ROBUSTNESS_VARIANTS:
            X_train, y_train, X_test, _ = variant_features(variant, views.X, y, train, test)
            accuracy[variant].append(100 * fit_score("logreg C=1", X_train, y_train, X_test, y[test]).accuracy)
    base = np.array(accuracy["none"])
    rows = []
    for variant, values in accuracy.items():
        acc = np.array(values)
        gain = acc - base
        is_base = variant == "none"
        rows.append(
            [
                name,
                variant,
                f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}",
                "(baseline)" if is_base else f"{gain.mean():+.2f} ± {gain.std(ddof=1):.2f}",
                "" if is_base else f"{int((gain > 0).sum())}/{int((gain < 0).sum())}",
            ]
        )
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding eurosat_rgb/ and ucmerced/")
    parser.add_argument("--n-eurosat", type=int, default=None, help="EuroSAT images (default: all 3000)")
    parser.add_argument("--n-ucmerced", type=int, default=None, help="UC Merced images (default: all 420)")
    parser.add_argument("--seeds", type=int, default=5, help="80/20 splits for the robustness table (0 = skip it)")
    parser.add_argument("--naive-only", action="store_true", help="only the naive-probe vs landsight train table")
    parser.add_argument(
        "--int8", action="store_true", help="also fp32 vs int8 bundle accuracy (benchmarks/quantize.py)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # landsight silences this warning with warnings.catch_warnings(), which is not thread-safe,
    # so its threaded decoder lets one through now and then.
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    # LogisticRegressionCV (make_head(C="auto")) warns about its defaults changing in sklearn 1.10+.
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    print(f"machine: {machine()}\n")
    start = time.perf_counter()
    rows: list[list[str]] = []
    robustness: list[list[str]] = []
    from defaults import dataset_folder

    with fresh_cache():  # its own cache, so the featurize timings below start cold
        sizes = (("eurosat_rgb", args.n_eurosat), ("ucmerced", args.n_ucmerced), ("dubai_chips", None))
        catalogs = {name: subsample(build_catalog(dataset_folder(args.data, name)), n) for name, n in sizes}
        naive = naive_vs_cli(catalogs, max(args.seeds, 2))
    print(f"\n### Naive probe vs landsight train, {max(args.seeds, 2)} splits\n\n{naive}\n", flush=True)
    if args.naive_only:
        print(f"total {time.perf_counter() - start:.0f} s")
        return
    with fresh_cache():
        extractor = FeatureExtractor(create_backbone())
        for name, n in (("eurosat_rgb", args.n_eurosat), ("ucmerced", args.n_ucmerced)):
            catalog = subsample(build_catalog(args.data / name), n)
            views = featurize_views(catalog["path"].tolist(), extractor)
            print(
                f"{name}: {len(catalog)} images; featurize {views.featurize_s:.1f} s, decode again "
                f"{views.decode_s:.1f} s, extra views {np.mean(views.view_s):.1f} s each",
                flush=True,
            )
            rows += evaluate_dataset(catalog, name, views)
            if args.seeds > 1:
                robustness += split_robustness(catalog, name, views, args.seeds)
    headers = ["dataset", "features", "head", "C", "accuracy % ± s.e.", "balanced acc. %", "featurize s", "fit s"]
    print("\n### Seed-0 split\n\n" + markdown_table(headers, rows))
    if robustness:
        print(f"\n### logreg C=1 over {args.seeds} splits (seeds 0..{args.seeds - 1})\n")
        headers = ["dataset", "features", "accuracy % (mean ± sd)", "gain vs none (mean ± sd)", "splits better/worse"]
        print(markdown_table(headers, robustness))
    if args.int8:
        from quantize import report

        print("\n### fp32 vs int8 bundles (benchmarks/quantize.py)\n")
        print(report(["eurosat_rgb", "ucmerced"], 1000, 3, segment=True))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
