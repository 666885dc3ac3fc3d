"""Shared helpers of the benchmark scripts: fresh cache, CPU-contention meter, markdown tables."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_HZ = os.sysconf("SC_CLK_TCK")
_NCPU = len(os.sched_getaffinity(0))


@contextmanager
def fresh_cache() -> Iterator[Path]:
    """Point ``LANDSIGHT_CACHE_DIR`` at a new empty folder for the duration of the block."""
    old = os.environ.get("LANDSIGHT_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="landsight-bench-") as folder:
        os.environ["LANDSIGHT_CACHE_DIR"] = folder
        try:
            yield Path(folder)
        finally:
            if old is None:
                os.environ.pop("LANDSIGHT_CACHE_DIR", None)
            else:
                os.environ["LANDSIGHT_CACHE_DIR"] = old


def _busy_ticks() -> int:
    """CPU ticks spent busy by the whole machine (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]


def _own_ticks() -> int:
    """CPU ticks of this process, its threads and its reaped children (DataLoader workers)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


@dataclass
class Timing:
    """Wall time of one timed block and the share of the machine's CPU used by other processes.

    ``foreign`` is 0 on an idle machine and 0.5 when another process keeps one of two cores
    busy the whole time: timings with a high share are slowed by contention, not by landsight.
    """

    seconds: float = 0.0
    foreign: float = 0.0


@contextmanager
def timed() -> Iterator[Timing]:
    """Time a block, and measure how much CPU other processes took meanwhile."""
    timing = Timing()
    busy, own, start = _busy_ticks(), _own_ticks(), time.perf_counter()
    try:
        yield timing
    finally:
        timing.seconds = time.perf_counter() - start
        other = (_busy_ticks() - busy) - (_own_ticks() - own)
        timing.foreign = max(0.0, other / (timing.seconds * _NCPU * _HZ))


def wait_for_quiet(max_wait: float, threshold: float = 0.1, window: float = 0.5) -> float:
    """Wait (at most ``max_wait`` seconds) until other processes use < ``threshold`` of the CPU.

    Returns:
        The other processes' CPU share in the last ``window`` seconds waited (0 if no wait).

    """
    deadline = time.perf_counter() + max_wait
    share = 0.0
    while time.perf_counter() < deadline:
        with timed() as t:
            time.sleep(window)
        share = t.foreign
        if share < threshold:
            break
    return share


def machine() -> str:
    """One line naming the CPU model and core count."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line)
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {_NCPU} cores usable, no GPU used"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a GitHub markdown table (floats as given; format them before)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
