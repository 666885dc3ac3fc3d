"""Which backbone stages to pool into the features of ``landsight train``: every candidate, 5 splits.

One pass per dataset: the ``tf_efficientnet_lite0`` graph (``--backbone`` for lite1 / lite2) with
``stages=blocks.1..blocks.5`` (``landsight.models.backbones.with_stages``; ONNX, onnxruntime, as
``featurize`` runs it) over every image under the 4 rotations (the decoded, resized image turned
by ``np.rot90``, which for square inputs is what the ``tta="rot4"`` graph computes). Every
candidate is a choice of column blocks of these features: ``final`` = the usual pooled features
(the previous default), ``b3`` = ``blocks.3`` average-pooled, and so on. Each candidate is fitted
as ``landsight train`` fits (standardised logistic regression, ``C="auto"``, one BLAS thread) on
the 5 stratified 80/20 splits ``train`` makes (``split_catalog(random_state=seed)``, seeds 0-4)
and scored on the held-out rows; gains are paired against ``final`` on the same splits (rot4, or
one view for the one-view rows). Datasets: EuroSAT RGB (3000 images) and UC Merced (420), the
two tuned on, and the Dubai chips of ``_dubai.py`` as the set nobody tuned on.

Run from the repository root: ``.venv/bin/python benchmarks/stages.py`` (about 6 minutes on 2
quiet cores with lite0). ``--json PATH`` also writes every per-split accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _common import DATA, machine, markdown_table, timed, wait_for_quiet
from defaults import dataset_folder
from sklearn.metrics import accuracy_score

from landsight.classify.featurize import FeatureExtractor
from landsight.data.catalog import build_catalog
from landsight.data.readers import read_image
from landsight.data.splitting import split_catalog
from landsight.models.backbones import create_backbone, with_stages
from landsight.models.heads import describe_head, fit_head, make_head

BATCH = 32
ALL_STAGES = ("blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5")
#: Candidates: name -> (column blocks, views, make_head keyword arguments).
CANDIDATES: dict[str, tuple[tuple[str, ...], str, dict[str, object]]] = {
    "final (previous default)": (("final",), "rot4", {"C": "auto"}),
    "final + b5": (("b5", "final"), "rot4", {"C": "auto"}),
    "final + b4-5": (("b4", "b5", "final"), "rot4", {"C": "auto"}),
    "final + b3-5 (default)": (("b3", "b4", "b5", "final"), "rot4", {"C": "auto"}),
    "final + b2-5": (("b2", "b3", "b4", "b5", "final"), "rot4", {"C": "auto"}),
    "final + b1-5": (("b1", "b2", "b3", "b4", "b5", "final"), "rot4", {"C": "auto"}),
    "b3-5 only": (("b3", "b4", "b5"), "rot4", {"C": "auto"}),
    "final + b3-5, C=1": (("b3", "b4", "b5", "final"), "rot4", {"C": 1.0}),
    "final + b3-5, no standardisation": (("b3", "b4", "b5", "final"), "rot4", {"C": "auto", "standardize": False}),
    "final, one view, C=1 (previous --fast)": (("final",), "none", {"C": 1.0}),
    "final + b3-5, one view, C=1 (--fast)": (("b3", "b4", "b5", "final"), "none", {"C": 1.0}),
}


def stage_features(paths: list[str], backbone: str) -> tuple[dict[str, np.ndarray], float]:
    """Per-view features of every column block: name -> ``(4, N, C)`` float32; and the seconds taken."""
    plain = create_backbone(backbone)
    bb = with_stages(plain, ALL_STAGES)
    widths = {f"b{s[-1]}": with_stages(plain, (s,)).num_features - plain.num_features for s in ALL_STAGES}
    widths["final"] = plain.num_features
    extractor = FeatureExtractor(bb, device="cpu")
    with timed() as t:
        images = np.stack([bb.preprocessing.resize(read_image(p).array) for p in paths])
        views = np.stack([
            np.concatenate([extractor(np.rot90(images[i : i + BATCH], k, axes=(1, 2)))
                            for i in range(0, len(images), BATCH)])
            for k in range(4)
        ])  # fmt: skip
    assert sum(widths.values()) == bb.num_features == views.shape[-1]
    blocks, start = {}, 0
    for name, width in widths.items():
        blocks[name] = views[..., start : start + width]
        start += width
    return blocks, t.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", default="eurosat_rgb,ucmerced,dubai_chips")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="an EfficientNet-Lite (blocks.1-5 exist)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"machine: {machine()}\n")
    started = time.perf_counter()
    records: list[dict[str, object]] = []
    rows = []
    for name in args.datasets.split(","):
        catalog = build_catalog(dataset_folder(args.data, name))
        y = catalog["label"].to_numpy()
        other = wait_for_quiet(300)
        blocks, seconds = stage_features(catalog["path"].tolist(), args.backbone)
        print(f"{name} ({args.backbone}): {len(y)} images x 4 rotations in {seconds:.0f} s "
              f"(other load before: {other:.2f})", flush=True)  # fmt: skip
        masks = []
        for seed in range(args.seeds):
            split = split_catalog(catalog, test_size=0.2, random_state=seed)["split"].to_numpy()
            masks.append((split == "train", split == "test"))
        scores: dict[str, list[float]] = {}
        for cand, (cols, views, kwargs) in CANDIDATES.items():
            X = np.concatenate([blocks[c][0] if views == "none" else blocks[c].mean(axis=0) for c in cols], axis=1)
            accs, Cs = [], []
            with timed() as t:
                for seed, (train, test) in enumerate(masks):
                    head = make_head("logreg", random_state=seed, **kwargs)  # type: ignore[arg-type]
                    fit_head(head, X[train], y[train])
                    accs.append(100 * accuracy_score(y[test], head.predict(X[test])))
                    Cs.append(describe_head(head)["params"]["C"])
            scores[cand] = accs
            base = scores["final, one view, C=1 (previous --fast)" if views == "none" else "final (previous default)"] \
                if not cand.startswith("final, one view") else accs  # fmt: skip
            gain = np.array(accs) - np.array(base)
            records += [{"dataset": name, "candidate": cand, "seed": s, "accuracy": a} for s, a in enumerate(accs)]
            rows.append([
                name, cand, X.shape[1], f"{np.mean(accs):.2f} ± {np.std(accs, ddof=1) / np.sqrt(len(accs)):.2f}",
                f"{gain.mean():+.2f} ± {gain.std(ddof=1) / np.sqrt(len(gain)):.2f}",
                f"{int((gain > 0).sum())}/{int((gain < 0).sum())}", " ".join(f"{a:.2f}" for a in accs),
                "/".join(sorted({f"{c:g}" for c in Cs})), f"{t.seconds / len(masks):.1f}",
            ])  # fmt: skip
            print(f"  {cand}: {np.mean(accs):.2f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))
    headers = ["dataset", "features", "D", f"accuracy % (mean ± s.e., {args.seeds} splits)",
               "gain vs final (paired)", "splits better/worse", "per split", "chosen C", "fit s"]  # fmt: skip
    print("\n" + markdown_table(headers, rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
