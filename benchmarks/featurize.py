"""Featurization throughput: landsight vs the backbone's own ceiling vs plain torch loops.

Methods, all timed in one process on the same images (images/s of the best of several
interleaved rounds, each method warmed up first):

  (a) ceiling     FeatureExtractor (onnxruntime) on pre-decoded, pre-resized uint8 batches of 32
  (b) landsight   featurize(paths, cache=False, progress=False, extractor=<built once>)
  (c) seed loop   PIL open + torchvision transforms + torch forward, one image at a time
  (d) torch batch ImageFolder + DataLoader(batch_size=32, num_workers=2) + torch forward
  (e) torch eager channels_last + inference_mode on pre-decoded, pre-normalised batches of 32

(c)-(e) run the same timm network with the same ImageNet weights (``create_backbone().model``)
under ``torch.no_grad`` / ``inference_mode`` with torch's default threads; their transform is
Resize(224 x 224, bicubic) + ToTensor + Normalize(0.5, 0.5), i.e. landsight's preprocessing.
(c) and (e) time a spread subset (``--subset``) of the images. ``--sweep`` adds featurize over
batch_size x num_workers x FeatureExtractor threads.

Before each timed run the script waits (``--quiet-wait``) for other processes to go idle;
``other load`` is the share of the machine's CPU they still used during the run (0.50 = another
process kept one of two cores busy): rows with a high share are slowed by contention.

Run from the repository root: ``.venv/bin/python benchmarks/featurize.py [--n 640] [--sweep]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import timm
import torch
from _common import DATA, Timing, fresh_cache, machine, markdown_table, timed, wait_for_quiet
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from landsight.classify.featurize import FeatureExtractor, featurize
from landsight.data.catalog import build_catalog
from landsight.data.loader import load_one
from landsight.data.readers import read_image
from landsight.models.backbones import Backbone, create_backbone

BACKBONE = "tf_efficientnet_lite0"
BATCH = 32
CORES = len(os.sched_getaffinity(0))
WARMUP_IMAGES = 32


@dataclass(frozen=True)
class Plan:
    """How long to measure.

    Attributes:
        pairs: Timed rounds of the ceiling (a) and landsight (b), run back to back in each
            round so that their ratio is paired.
        repeats: Timed rounds of the slower torch methods (c), (d), (e).
        quiet_wait: Seconds to wait at most, before each timed run, for other processes to idle.
        subset: Images for the slow per-image methods (c) and (e), spread over the sample.

    """

    pairs: int = 4
    repeats: int = 2
    quiet_wait: float = 10.0
    subset: int = 160


@dataclass
class Method:
    """One way of featurizing the benchmark images; ``run`` returns the number of images done."""

    label: str
    run: Callable[[], int]
    warmup: Callable[[], object]
    rounds: int
    timings: list[Timing] = field(default_factory=list)
    images: int = 0

    def best(self) -> Timing:
        """The fastest of the timed rounds."""
        return min(self.timings, key=lambda t: t.seconds)

    def rate(self) -> float:
        """Images per second of the fastest round."""
        return self.images / self.best().seconds


def spread_sample(folder: Path, n: int | None) -> list[str]:
    """Up to ``n`` image paths of a class-folder dataset, the same number from every class."""
    catalog = build_catalog(folder)
    if n is None or n >= len(catalog):
        return catalog["path"].tolist()
    per_class = max(1, n // catalog["label"].nunique())
    return catalog.groupby("label", sort=True).head(per_class)["path"].tolist()


def decode_resized(paths: list[str], backbone: Backbone) -> np.ndarray:
    """Decode and resize every image as landsight does: ``(N, H, W, 3)`` uint8."""
    return np.stack([backbone.preprocessing.resize(read_image(p).array) for p in paths])


def seed_transform(backbone: Backbone) -> transforms.Compose:
    """The torchvision transform a user writes for this backbone (whole tile, no crop)."""
    prep = backbone.preprocessing
    interpolation = transforms.InterpolationMode(prep.interpolation)
    return transforms.Compose(
        [
            transforms.Resize(prep.input_size, interpolation=interpolation),
            transforms.ToTensor(),
            transforms.Normalize(prep.mean, prep.std),
        ]
    )


def batches(array: np.ndarray | torch.Tensor, size: int) -> list[Any]:
    """Split along the first axis into chunks of ``size``."""
    return [array[i : i + size] for i in range(0, len(array), size)]


def onnx_ceiling(extractor: FeatureExtractor, images: np.ndarray, batch_size: int = BATCH) -> Callable[[], int]:
    """(a): the exported backbone alone, on pre-decoded uint8 batches."""
    chunks = batches(images, batch_size)

    def run() -> int:
        for chunk in chunks:
            extractor(chunk)
        return len(images)

    return run


def landsight_featurize(
    paths: list[str], extractor: FeatureExtractor, *, batch_size: int = BATCH, num_workers: int = 2
) -> Callable[[], int]:
    """(b): landsight end to end (read, hash, decode, resize, network), feature cache off."""

    def run() -> int:
        feats = featurize(
            paths,
            extractor=extractor,
            batch_size=batch_size,
            num_workers=num_workers,
            cache=False,
            progress=False,
        )
        assert not feats.failures, feats.failures[:3]
        return len(feats.X)

    return run


def seed_loop(paths: list[str], model: torch.nn.Module, transform: transforms.Compose) -> Callable[[], int]:
    """(c): one image at a time, as the seed notebooks scored images."""

    def run() -> int:
        with torch.no_grad():
            for path in paths:
                with Image.open(path) as img:
                    x = transform(img.convert("RGB")).unsqueeze(0)
                model(x)
        return len(paths)

    return run


def image_folder(root: Path, paths: list[str], transform: transforms.Compose) -> datasets.ImageFolder:
    """An ImageFolder over ``root`` restricted to ``paths``."""
    wanted = {str(Path(p).resolve()) for p in paths}
    return datasets.ImageFolder(
        str(root),
        transform=transform,
        is_valid_file=lambda p: str(Path(p).resolve()) in wanted,
        allow_empty=True,
    )


def torch_dataloader(dataset: datasets.ImageFolder, model: torch.nn.Module) -> Callable[[], int]:
    """(d): the batched DataLoader loop a timm + torch user writes."""

    def run() -> int:
        loader = DataLoader(dataset, batch_size=BATCH, num_workers=2)
        n = 0
        with torch.no_grad():
            for x, _ in loader:
                model(x)
                n += len(x)
        return n

    return run


def torch_channels_last(backbone: Backbone, images: np.ndarray) -> Callable[[], int]:
    """(e): eager torch at its best on CPU, pre-decoded and pre-normalised input."""
    model = copy.deepcopy(backbone.model).to(memory_format=torch.channels_last).eval()
    mean = torch.tensor(backbone.preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(backbone.preprocessing.std).view(1, -1, 1, 1)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
    chunks = batches(x.contiguous(memory_format=torch.channels_last), BATCH)

    def run() -> int:
        with torch.inference_mode():
            for chunk in chunks:
                model(chunk)
        return len(images)

    return run


def measure(methods: list[Method], quiet_wait: float) -> None:
    """Warm every method up, then time them in interleaved rounds (``Method.rounds`` each).

    Before each timed run, wait up to ``quiet_wait`` seconds for other processes to go idle.
    """
    for m in methods:
        m.warmup()
    for r in range(max(m.rounds for m in methods)):
        for m in methods:
            if r < m.rounds:
                wait_for_quiet(quiet_wait)
                with timed() as t:
                    m.images = m.run()
                m.timings.append(t)


def paired_ratio(numerator: Method, denominator: Method) -> float:
    """Median over rounds of the per-round throughput ratio (both methods timed back to back)."""
    ratios = [
        (numerator.images / n.seconds) / (denominator.images / d.seconds)
        for n, d in zip(numerator.timings, denominator.timings, strict=True)
    ]
    return float(np.median(ratios))


def decode_ms(paths: list[str], backbone: Backbone) -> float:
    """Milliseconds of one core to read, hash, decode and resize an image, as featurize does."""
    for path in paths[:8]:
        load_one(path, backbone.preprocessing)
    with timed() as t:
        for path in paths:
            load_one(path, backbone.preprocessing)
    return 1000 * t.seconds / len(paths)


def feature_agreement(
    paths: list[str], extractor: FeatureExtractor, root: Path, model: torch.nn.Module, transform: transforms.Compose
) -> tuple[float, float]:
    """Max abs difference between landsight's (b) and the torch loop's (d) features, and the scale."""
    dataset = image_folder(root, paths, transform)
    ordered = [p for p, _ in dataset.samples]
    with torch.no_grad():
        reference = torch.cat([model(x) for x, _ in DataLoader(dataset, batch_size=BATCH)]).numpy()
    ours = featurize(ordered, extractor=extractor, cache=False, progress=False).X
    return float(np.abs(ours - reference).max()), float(np.abs(reference).max())


def benchmark_dataset(root: Path, n: int | None, backbone: Backbone, extractor: FeatureExtractor, plan: Plan) -> str:
    """Time (a)-(e) on one dataset and return the markdown report.

    The per-image methods (c) and (e) run on ``plan.subset`` of the images, spread over the
    classes: they are slow and their per-image rate does not depend on how many images they see.
    """
    paths = spread_sample(root, n)
    subset = list(range(0, len(paths), max(1, len(paths) // plan.subset)))[: plan.subset]
    images = decode_resized(paths, backbone)
    transform = seed_transform(backbone)
    model = backbone.model
    few = paths[:WARMUP_IMAGES]
    a, b, c, d, e = methods = [
        Method(
            "(a) ceiling: onnxruntime on pre-decoded batches of 32",
            onnx_ceiling(extractor, images),
            onnx_ceiling(extractor, images[:WARMUP_IMAGES]),
            plan.pairs,
        ),
        Method(
            "(b) landsight featurize, cache off",
            landsight_featurize(paths, extractor),
            landsight_featurize(few, extractor),
            plan.pairs,
        ),
        Method(
            "(c) seed-style loop: PIL + transforms + torch, batch 1",
            seed_loop([paths[i] for i in subset], model, transform),
            seed_loop(few[:8], model, transform),
            plan.repeats,
        ),
        Method(
            "(d) torch ImageFolder + DataLoader(32, 2 workers)",
            torch_dataloader(image_folder(root, paths, transform), model),
            torch_dataloader(image_folder(root, few, transform), model),
            plan.repeats,
        ),
        Method(
            "(e) torch eager channels_last, pre-decoded batches of 32",
            torch_channels_last(backbone, images[subset]),
            torch_channels_last(backbone, images[:WARMUP_IMAGES]),
            plan.repeats,
        ),
    ]
    measure(methods, plan.quiet_wait)
    rows = [
        [
            m.label,
            m.images,
            f"{m.rate():.1f}",
            f"{m.rate() / a.rate():.2f}",
            f"{b.rate() / m.rate():.2f}",
            f"{m.best().foreign:.2f}",
        ]
        for m in methods
    ]
    table = markdown_table(["method", "images", "images/s", "/ (a)", "(b) speed-up", "other load"], rows)
    cost = decode_ms(paths, backbone)
    bound = 1 / (1 + cost / 1000 * a.rate() / CORES)
    diff, scale = feature_agreement(paths[:8], extractor, root, model, transform)
    summary = (
        f"- (b)/(a) = {paired_ratio(b, a):.2f} (median of {plan.pairs} back-to-back pairs; target >= 0.9)\n"
        f"- (b)/(d) = {b.rate() / d.rate():.2f} (target >= 1.5); (b)/(c) = {b.rate() / c.rate():.2f}\n"
        f"- read + hash + decode + resize: {cost:.2f} ms per image on one core; with the network on "
        f"all {CORES} cores, that caps (b)/(a) at {bound:.2f}\n"
        f"- (b) vs (d) features, 8 images: max |diff| = {diff:.1e} (max |feature| = {scale:.1f})"
    )
    header = (
        f"### {root.name}: {len(paths)} images; best of {plan.pairs} rounds for (a), (b) and of "
        f"{plan.repeats} for (c)-(e)\n\n"
    )
    return header + table + "\n\n" + summary


def sweep(root: Path, n: int | None, backbone: Backbone, plan: Plan) -> str:
    """Time featurize and its ceiling over batch size, decode threads and onnxruntime threads."""
    paths = spread_sample(root, n)
    images = decode_resized(paths, backbone)
    extractors = {threads: FeatureExtractor(backbone, threads=threads) for threads in (2, 1)}
    ceilings = {
        (bs, th): Method(
            f"ceiling batch {bs}, {th} threads",
            onnx_ceiling(extractors[th], images, bs),
            onnx_ceiling(extractors[th], images[:WARMUP_IMAGES], bs),
            plan.pairs,
        )
        for th in extractors
        for bs in (8, BATCH)
    }
    runs = {
        (bs, nw, th): Method(
            f"featurize batch {bs}, {nw} workers, {th} threads",
            landsight_featurize(paths, extractors[th], batch_size=bs, num_workers=nw),
            landsight_featurize(paths[:WARMUP_IMAGES], extractors[th], batch_size=bs, num_workers=nw),
            plan.pairs,
        )
        for bs, th in ceilings
        for nw in (0, 1, 2)
    }
    measure([*ceilings.values(), *runs.values()], plan.quiet_wait)
    reference = ceilings[(BATCH, CORES)]
    rows = [
        [
            bs,
            nw,
            th,
            f"{m.rate():.1f}",
            f"{ceilings[(bs, th)].rate():.1f}",
            f"{m.rate() / ceilings[(bs, th)].rate():.2f}",
            f"{m.rate() / reference.rate():.2f}",
            f"{m.best().foreign:.2f}",
        ]
        for (bs, nw, th), m in runs.items()
    ]
    headers = [
        "batch_size",
        "num_workers",
        "FeatureExtractor threads",
        "featurize images/s",
        "ceiling images/s (same batch, threads)",
        "/ own ceiling",
        f"/ default ceiling (batch {BATCH}, {CORES} threads)",
        "other load",
    ]
    return f"### sweep on {root.name}: {len(paths)} images, best of {plan.pairs} rounds\n\n" + markdown_table(
        headers, rows
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding eurosat_rgb/ and ucmerced/")
    parser.add_argument("--n", type=int, default=640, help="EuroSAT images (spread over the classes)")
    parser.add_argument("--n-ucmerced", type=int, default=None, help="UC Merced images (default: all 420)")
    parser.add_argument("--pairs", type=int, default=4, help="timed rounds of (a) and (b)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds of (c), (d), (e)")
    parser.add_argument("--subset", type=int, default=160, help="images for the per-image methods (c), (e)")
    parser.add_argument(
        "--quiet-wait", type=float, default=10.0, help="max seconds to wait for other processes to idle"
    )
    parser.add_argument("--sweep", action="store_true", help="also sweep batch_size/num_workers/threads")
    parser.add_argument(
        "--int8", action="store_true", help="also fp32 vs int8 bundles side by side (benchmarks/quantize.py)"
    )
    parser.add_argument("--only-sweep", action="store_true", help="run the sweep only")
    parser.add_argument(
        "--sweep-data", choices=["eurosat_rgb", "ucmerced"], default="ucmerced", help="dataset of the sweep"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # landsight silences this warning with warnings.catch_warnings(), which is not thread-safe,
    # so its threaded decoder lets one through now and then.
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    plan = Plan(pairs=args.pairs, repeats=args.repeats, quiet_wait=args.quiet_wait, subset=args.subset)
    print(
        f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {onnxruntime.__version__}, timm {timm.__version__}\n"
    )
    start = time.perf_counter()
    with fresh_cache():
        backbone = create_backbone(BACKBONE)
        created = time.perf_counter()
        extractor = FeatureExtractor(backbone)
        ready = time.perf_counter()
        print(
            f"one-time set-up (excluded from the rates): create_backbone {created - start:.1f} s, "
            f"FeatureExtractor (ONNX export + onnxruntime session) {ready - created:.1f} s\n"
        )
        if not args.only_sweep:
            for name, n in (("eurosat_rgb", args.n), ("ucmerced", args.n_ucmerced)):
                print(benchmark_dataset(args.data / name, n, backbone, extractor, plan) + "\n", flush=True)
        if args.int8:
            from quantize import report

            print("### fp32 vs int8 bundles (benchmarks/quantize.py)\n")
            print(report(["eurosat_rgb", "ucmerced"], args.n or 1000, args.pairs, segment=False) + "\n", flush=True)
        if args.sweep or args.only_sweep:
            n = args.n if args.sweep_data == "eurosat_rgb" else args.n_ucmerced
            print(sweep(args.data / args.sweep_data, n, backbone, plan) + "\n")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
