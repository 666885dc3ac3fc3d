"""Choosing the defaults of ``landsight train``: every backbone x TTA x head candidate, 5 splits.

For each dataset (EuroSAT RGB 3000 images, UC Merced 420, and the Dubai chips of
``_dubai.py`` as the set nobody tuned on) and each offline backbone (``tf_efficientnet_lite0/1/2``):

1. features of every image under the 4 rotations (0, 90, 180, 270 degrees): view 0 by the
   end-to-end ``featurize`` (fresh cache), the 3 others by rotating the decoded, resized images
   and running the same ``FeatureExtractor`` (for square inputs this equals the ``tta="rot4"``
   graph, which rotates the normalised tensor);
2. for 5 stratified 80/20 splits (``split_catalog(random_state=seed)``, seeds 0-4, the split
   ``landsight train`` makes), every head is fitted on the train rows and scored on the test rows:
   ``tta`` none (view 0) or rot4 (mean of the 4 views) x logreg ``C=1`` / ``C="auto"``, with
   standardisation; and ``C="auto"`` without standardisation for lite0 with rot4.

Figures: mean accuracy over the 5 splits ± its standard error (sd / sqrt(5)), the mean paired gain
over the old default (lite0, one view, C=1, standardised) on the same splits, featurization
seconds of the whole dataset (view 0 end to end; rot4 adds one decode and the 3 extra views) and
the mean fit seconds (``n_jobs=1`` and one BLAS thread, as ``landsight train`` fits).
``--single-view`` skips the rotations for the named dataset:backbone pairs (the RESULTS.md run
skipped them for EuroSAT with lite1 and lite2, to fit the time on a busy machine).

Run from the repository root: ``.venv/bin/python benchmarks/defaults.py`` (about 35 minutes on
2 quiet cores). ``--json PATH`` also writes every per-split accuracy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA, fresh_cache, machine, markdown_table, timed
from _dubai import dubai_chips
from sklearn.metrics import accuracy_score

from landsight.classify.featurize import FeatureExtractor, featurize
from landsight.data.catalog import build_catalog
from landsight.data.readers import read_image
from landsight.data.splitting import split_catalog
from landsight.models.backbones import OFFLINE_WEIGHTS, create_backbone
from landsight.models.heads import describe_head, fit_head, make_head

BATCH = 32
SEEDS = 5

#: Head candidates: name -> make_head keyword arguments.
HEADS: dict[str, dict[str, object]] = {
    "C=1": {"C": 1.0},
    "C=auto": {"C": "auto"},
    "C=auto, no standardisation": {"C": "auto", "standardize": False},
}

#: Heads tried with every backbone and TTA (the others with lite0 + rot4 only).
MAIN_HEADS = ("C=1", "C=auto")


@dataclass
class RotFeatures:
    """Features of every image under the 4 rotations and what computing them took.

    Attributes:
        X: ``(4, N, D)`` float32; ``X[0]`` from the end-to-end ``featurize``.
        featurize_s: Wall time of ``featurize`` (view 0).
        extra_s: Wall time of decoding again and running the 3 rotated views.
        foreign: Share of the CPU other processes took meanwhile (0 = quiet).
    """

    X: np.ndarray
    featurize_s: float
    extra_s: float
    foreign: float


def rotation_features(paths: list[str], backbone: str, rotations: bool = True) -> RotFeatures:
    """Featurize ``paths`` under the 4 rotations with one backbone (fresh cache; view 0 only without ``rotations``)."""
    extractor = FeatureExtractor(create_backbone(backbone))
    with fresh_cache(), timed() as t_base:
        base = featurize(paths, extractor=extractor, cache=True, progress=False)
    assert not base.failures, base.failures[:3]
    prep = extractor.backbone.preprocessing
    if not rotations:
        return RotFeatures(base.X[None], t_base.seconds, float("nan"), t_base.foreign)
    with timed() as t_extra:
        images = np.stack([prep.resize(read_image(p).array) for p in paths])
        views = [base.X]
        for k in (1, 2, 3):
            views.append(
                np.concatenate(
                    [extractor(np.rot90(images[i : i + BATCH], k, axes=(1, 2))) for i in range(0, len(images), BATCH)]
                )
            )
    assert np.abs(extractor(images[:BATCH]) - base.X[:BATCH]).max() < 1e-4, "decode differs from featurize"
    foreign = (t_base.foreign * t_base.seconds + t_extra.foreign * t_extra.seconds) / (t_base.seconds + t_extra.seconds)
    return RotFeatures(np.stack(views), t_base.seconds, t_extra.seconds, foreign)


def sweep(
    catalog: pd.DataFrame, name: str, backbones: list[str], seeds: int, single_view: frozenset[str] = frozenset()
) -> tuple[list[dict], list[str]]:
    """Score every candidate on ``seeds`` splits; return per-split records and progress lines."""
    y = catalog["label"].to_numpy()
    masks = []
    for seed in range(seeds):
        split = split_catalog(catalog, test_size=0.2, random_state=seed)["split"].to_numpy()
        masks.append((split == "train", split == "test"))
    records = []
    lines = []
    for backbone in backbones:
        feats = rotation_features(catalog["path"].tolist(), backbone, f"{name}:{backbone}" not in single_view)
        lines.append(
            f"{name} {backbone}: featurize {feats.featurize_s:.1f} s, +3 rotations {feats.extra_s:.1f} s "
            f"(other load {feats.foreign:.2f})"
        )
        print(lines[-1], flush=True)
        for tta, X in (("none", feats.X[0]), ("rot4", feats.X.mean(axis=0)))[: len(feats.X) // 4 + 1]:
            seconds = feats.featurize_s + (feats.extra_s if tta == "rot4" else 0.0)
            for head_name, kwargs in HEADS.items():
                if head_name not in MAIN_HEADS and (backbone, tta) != ("tf_efficientnet_lite0", "rot4"):
                    continue
                for seed, (train, test) in enumerate(masks):
                    head = make_head("logreg", random_state=seed, **kwargs)  # type: ignore[arg-type]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)
                        with timed() as t_fit:
                            fit_head(head, X[train], y[train])
                    records.append(
                        {
                            "dataset": name, "backbone": backbone, "tta": tta, "head": head_name, "seed": seed,
                            "accuracy": 100 * accuracy_score(y[test], head.predict(X[test])),
                            "C": describe_head(head)["params"]["C"], "featurize_s": seconds,
                            "fit_s": t_fit.seconds, "n_images": len(y), "foreign": feats.foreign,
                        }
                    )  # fmt: skip
                acc = [r["accuracy"] for r in records[-seeds:]]
                print(f"  {tta} {head_name}: {np.mean(acc):.2f}", flush=True)
    return records, lines


def summarise(records: list[dict]) -> list[list[str]]:
    """Rows of the candidates table: mean ± s.e., paired gain over the old default, seconds."""
    frame = pd.DataFrame(records)
    rows = []
    for dataset, part in frame.groupby("dataset", sort=False):
        base = part[(part["backbone"] == "tf_efficientnet_lite0") & (part["tta"] == "none") & (part["head"] == "C=1")]
        base_acc = base.set_index("seed")["accuracy"]
        for (backbone, tta, head), cand in part.groupby(["backbone", "tta", "head"], sort=False):
            acc = cand.set_index("seed")["accuracy"]
            gain = acc - base_acc.loc[acc.index]
            n = len(acc)
            seconds = cand["featurize_s"].iloc[0]
            rows.append(
                [
                    dataset, backbone.removeprefix("tf_efficientnet_"), tta, head,
                    f"{acc.mean():.2f} ± {acc.std(ddof=1) / np.sqrt(n):.2f}",
                    f"{gain.mean():+.2f} ± {gain.std(ddof=1) / np.sqrt(n):.2f}",
                    f"{seconds:.0f}", f"{cand['n_images'].iloc[0] / seconds:.1f}",
                    f"{cand['fit_s'].mean():.1f}",
                    "/".join(sorted({f"{c:g}" for c in cand["C"]}, key=float)),
                ]
            )  # fmt: skip
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding eurosat_rgb/, ucmerced/, dubai_aerial/")
    parser.add_argument("--datasets", default="eurosat_rgb,ucmerced,dubai_chips", help="comma-separated")
    parser.add_argument("--backbones", default=",".join(OFFLINE_WEIGHTS), help="comma-separated")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="80/20 splits (seeds 0..N-1)")
    parser.add_argument("--json", type=Path, default=None, help="also write every per-split record here")
    parser.add_argument(
        "--single-view",
        default="",
        help="comma-separated dataset:backbone pairs scored without rot4 (to save time), "
        "e.g. eurosat_rgb:tf_efficientnet_lite2",
    )
    return parser.parse_args()


def dataset_folder(data: Path, name: str) -> Path:
    """The class-folder tree of a dataset name (``dubai_chips`` is cut on first use)."""
    if name == "dubai_chips":
        return dubai_chips(data / "dubai_aerial", Path(tempfile.gettempdir()) / "landsight-dubai-chips")
    return data / name


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    print(f"machine: {machine()}\n")
    start = time.perf_counter()
    records: list[dict] = []
    for name in args.datasets.split(","):
        catalog = build_catalog(dataset_folder(args.data, name))
        single = frozenset(filter(None, args.single_view.split(",")))
        part, _ = sweep(catalog, name, args.backbones.split(","), args.seeds, single)
        records += part
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))
    headers = [
        "dataset", "backbone", "tta", "head", f"accuracy % (mean ± s.e., {args.seeds} splits)",
        "gain vs lite0/none/C=1", "featurize s", "images/s", "fit s", "chosen C",
    ]  # fmt: skip
    print("\n" + markdown_table(headers, summarise(records)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
