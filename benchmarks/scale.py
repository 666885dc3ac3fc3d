"""Scoring at scale: the local engine vs Spark local[2] vs a loopback standalone cluster.

Every configuration predicts the same list file of ``--n`` image paths (the real EuroSAT and
UC Merced folders of ../shared/data repeated until there are ``--n``; 64x64 JPEGs and ~256x256
TIFFs) with the same bundle (``tf_efficientnet_lite0`` + logreg, trained on the package's sample)
into a fresh Parquet output, and reports images/s:

  local               ``landsight.classify.predict.predict`` (one process, all cores)
  spark local[2]      ``landsight.spark.predict`` on ``local[2]`` (driver + 2 task slots)
  standalone 1x1      master + 1 worker x 1 core on 127.0.0.1 (separate executor JVM)
  standalone 2x1      master + 2 workers x 1 core

Spark times are of the job (listing, partitioning, scoring on the executors, writing Parquet),
from a started session: the session start is reported apart. The first job of a session also
pays for starting its Python workers, their onnxruntime sessions and the JVM's JIT warm-up
("cold", as a user of one short command sees it); a second job in the same session over the same
images into another output is reported as "warm" (the steady state of a long job). The local
engine is run twice the same way.
``other load`` is the share of the machine's CPU that processes outside this benchmark's process
tree used during the run (the Spark JVMs and Python workers are in the tree, so they count as
ours); before each run the script waits up to ``--quiet-wait`` seconds for the machine to idle.

``--heads`` adds the accuracy of MLlib vs scikit-learn heads on all of ../shared/data/eurosat_rgb
(3000 images, 80/20 stratified split, seed 0; forest with ``--trees`` trees for both engines).

Run from the repository root: ``.venv/bin/python benchmarks/scale.py [--n 5000] [--heads]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import _NCPU, DATA, Timing, _busy_ticks, machine, markdown_table, wait_for_quiet

from landsight.data.listing import list_images

SEEDS_2017 = 11_760 / (7 * 60 + 50)  # 11,760 tiles in 7 min 50 s on 10 HDInsight nodes (MMLSpark)
CONFIGS = ("local", "spark-local2", "standalone-1x1", "standalone-2x1")
SPARK_CONF = {"spark.ui.enabled": "false", "spark.driver.memory": "1g", "spark.executor.memory": "1g"}


_HZ = os.sysconf("SC_CLK_TCK")


def _tree_ticks() -> int:
    """CPU ticks of this process and all its descendants (Spark JVMs, executors, Python workers)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = sum(int(fields[i]) for i in (11, 12, 13, 14))
    me, total = os.getpid(), 0
    for pid, t in ticks.items():
        p = pid
        while p > 1 and p != me:
            p = parents.get(p, 1)
        if p == me:
            total += t
    return total


@contextmanager
def timed_tree() -> Iterator[Timing]:
    """Like ``_common.timed``, but this process's whole tree counts as ours, not as other load."""
    timing = Timing()
    busy, own, start = _busy_ticks(), _tree_ticks(), time.perf_counter()
    try:
        yield timing
    finally:
        timing.seconds = time.perf_counter() - start
        other = (_busy_ticks() - busy) - (_tree_ticks() - own)
        timing.foreign = max(0.0, other / (timing.seconds * _NCPU * _HZ))


def make_list_file(folder: Path, n: int) -> Path:
    """Write a list file of ``n`` real image paths, cycling EuroSAT and UC Merced."""
    pool = list_images(DATA / "eurosat_rgb") + list_images(DATA / "ucmerced")
    listing = folder / f"images_{n}.txt"
    listing.write_text("\n".join(itertools.islice(itertools.cycle(pool), n)) + "\n")
    return listing


def make_bundle(folder: Path) -> Path:
    """Train the benchmark bundle on the package's EuroSAT sample (seconds)."""
    from landsight.classify.train import train
    from landsight.data.sample import eurosat_sample

    return train(eurosat_sample(), out=folder / "bench.landsight", progress=False, track=False).bundle_path


def run_local(bundle: Path, listing: Path, out: Path) -> tuple[float, ...]:
    """Time the local engine twice; returns (images, cold s, warm s, other load, nan)."""
    from landsight.classify.predict import predict

    seconds = []
    with timed_tree() as t:
        for rep in range(2):
            started = time.perf_counter()
            df = predict(bundle, listing, out=out.with_name(f"{rep}-{out.name}"), progress=False, track=False)
            seconds.append(time.perf_counter() - started)
    return len(df), seconds[0], seconds[1], t.foreign, float("nan")


def run_spark(bundle: Path, listing: Path, out: Path, master: str) -> tuple[float, ...]:
    """Start a session on ``master``, time two prediction jobs.

    Returns:
        (images, cold s, warm s, other load, session start s).
    """
    from landsight import spark as ls

    started = time.perf_counter()
    session = ls.get_session(master, SPARK_CONF)
    start_s = time.perf_counter() - started
    seconds = []
    try:
        with timed_tree() as t:
            for rep in range(2):
                job = time.perf_counter()
                res = ls.predict(bundle, listing, out=out.with_name(f"{rep}-{out.name}"), spark=session, track=False)
                seconds.append(time.perf_counter() - job)
    finally:
        ls.stop_session()
    return res.n_scored, seconds[0], seconds[1], t.foreign, start_s


def scale_table(n: int, configs: list[str], quiet_wait: float = 20.0) -> str:
    """Run the configurations and return the markdown table."""
    from landsight.spark.cluster import standalone_cluster

    rows = []
    local_rate: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory(prefix="landsight-scale-") as tmp:
        folder = Path(tmp)
        listing, bundle = make_list_file(folder, n), make_bundle(folder)
        runs: dict[str, Callable[[], tuple[float, ...]]] = {
            "local": lambda: run_local(bundle, listing, folder / "local.parquet"),
            "spark-local2": lambda: run_spark(bundle, listing, folder / "spark2.parquet", "local[2]"),
        }
        for workers in (1, 2):

            def cluster_run(workers: int = workers) -> tuple[float, ...]:
                with standalone_cluster(workers=workers, cores=1, memory="1g") as cluster:
                    return run_spark(bundle, listing, folder / f"sa{workers}.parquet", cluster.master_url)

            runs[f"standalone-{workers}x1"] = cluster_run
        for name in configs:
            wait_for_quiet(quiet_wait)
            images, cold_s, warm_s, foreign, start_s = runs[name]()
            cold, warm = images / cold_s, images / warm_s
            if name == "local":
                local_rate = (cold, warm)
            ratios = [f"{cold / local_rate[0]:.2f}", f"{warm / local_rate[1]:.2f}"] if local_rate else ["-", "-"]
            start = "-" if start_s != start_s else f"{start_s:.1f}"
            rows.append([name, int(images), f"{cold_s:.1f}", f"{cold:.1f}", ratios[0], f"{warm_s:.1f}", f"{warm:.1f}",
                         ratios[1], start, f"{foreign:.2f}"])  # fmt: skip
            print(f"{name}: {cold:.1f} images/s cold, {warm:.1f} warm", flush=True)
    rows.append(["seeds 2017: MMLSpark, 10 HDInsight nodes", 11_760, f"{7 * 60 + 50}", f"{SEEDS_2017:.1f}", "-", "-",
                 "-", "-", "-", "-"])  # fmt: skip
    headers = ["configuration", "images", "cold s", "cold images/s", "x local", "warm s", "warm images/s", "x local",
               "session start s", "other load"]  # fmt: skip
    return markdown_table(headers, rows)


def heads_table(trees: int) -> str:
    """Train logreg and forest heads with both engines on all of EuroSAT; markdown table of accuracy."""
    from landsight import spark as ls
    from landsight.classify.train import train

    rows = []
    data = DATA / "eurosat_rgb"
    with tempfile.TemporaryDirectory(prefix="landsight-heads-") as tmp:
        session = ls.get_session("local[2]", SPARK_CONF)
        try:
            for head in ("logreg", "forest"):
                kw = {"n_estimators": trees} if head == "forest" else {}
                started = time.perf_counter()
                local = train(data, out=Path(tmp) / f"l-{head}.landsight", head=head, progress=False, track=False, **kw)
                local_s = time.perf_counter() - started
                started = time.perf_counter()
                spark = ls.train(data, out=Path(tmp) / f"s-{head}.landsight", head=head, spark=session, track=False,
                                 **kw)  # fmt: skip
                spark_s = time.perf_counter() - started
                assert sorted(local.test_paths) == sorted(spark.test_paths)
                la, sa = local.metrics["accuracy"], spark.metrics["accuracy"]
                rows.append([head, local.n_train, local.n_test, f"{la:.4f}", f"{sa:.4f}", f"{100 * (sa - la):+.1f}",
                             f"{local_s:.0f}", f"{spark_s:.0f}"])  # fmt: skip
                print(rows[-1], flush=True)
        finally:
            ls.stop_session()
    headers = ["head", "train", "test", "scikit-learn acc.", "MLlib acc.", "points", "local s", "spark s"]
    return markdown_table(headers, rows)


def main() -> None:
    """Parse options, run, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="images per configuration (default 5000)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {CONFIGS}")
    parser.add_argument("--quiet-wait", type=float, default=20.0, help="seconds to wait for an idle machine")
    parser.add_argument("--heads", action="store_true", help="also compare MLlib and scikit-learn heads")
    parser.add_argument("--trees", type=int, default=100, help="forest trees for --heads (both engines)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {machine()}; n = {args.n}")
    print(scale_table(args.n, [c for c in args.configs.split(",") if c], args.quiet_wait))
    if args.heads:
        print()
        print(heads_table(args.trees))


if __name__ == "__main__":
    main()
