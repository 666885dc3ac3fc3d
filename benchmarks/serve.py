"""Load test of `landsight serve` on loopback: throughput and latency vs the in-process ceiling.

Trains a bundle on the package's EuroSAT sample (tf_efficientnet_lite0 + logreg, ~15 s), measures
the in-process ceiling (decode + resize + ``Bundle.predict_proba`` in batches of 32, the same JPEGs),
then starts ``landsight serve`` as separate processes with 1 and 2 uvicorn workers, with and
without micro-batching, and drives each with 1, 8 and 32 concurrent clients (an asyncio httpx
client, one raw ``POST /predict`` of a 64 x 64 JPEG per request) for ``--duration`` seconds.

The load generator runs on the same machine and competes with the server for the CPU cores.

    .venv/bin/python benchmarks/serve.py                 # ~4-5 minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --duration 5 --concurrency 1 32 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ceiling(bundle_path: Path, datas: list[bytes], seconds: float) -> float:
    """In-process images/s: decode + resize + predict_proba in batches of 32."""
    from landsight.bundle import load_bundle
    from landsight.data.readers import decode_image

    bundle = load_bundle(bundle_path)
    resize = bundle.preprocessing.resize
    bundle.predict_proba(np.stack([resize(decode_image(d, "x").array) for d in datas[:32]]))  # warm-up
    n, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = [datas[(i + k) % len(datas)] for k in range(32)]
        i += 32
        bundle.predict_proba(np.stack([resize(decode_image(d, "x").array) for d in batch]))
        n += 32
    return n / (time.perf_counter() - start)


def start_server(
    bundle_path: Path, port: int, workers: int, batching: bool, extra: list[str]
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "landsight", "serve", str(bundle_path), "--port", str(port), *extra]
    cmd += ["--workers", str(workers), "--batching" if batching else "--no-batching", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("server did not become ready in 90 s")


async def load(url: str, datas: list[bytes], clients: int, duration: float, warmup: float) -> dict[str, float]:
    """Drive ``clients`` concurrent request loops; latencies of requests started after ``warmup``."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    errors = 0
    t0 = time.perf_counter()
    t_measure, t_end = t0 + warmup, t0 + warmup + duration
    done_in_window = 0

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker(k: int) -> None:
            nonlocal errors, done_in_window
            i = k
            while (now := time.perf_counter()) < t_end:
                data = datas[i % len(datas)]
                i += clients
                try:
                    r = await client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
                    ok = r.status_code == 200
                    kind = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok = False
                    kind = type(exc).__name__
                end = time.perf_counter()
                if now >= t_measure:
                    if not ok:
                        errors += 1
                        print(f"  error: {kind}", file=sys.stderr, flush=True)
                    elif end <= t_end:
                        latencies.append(end - now)
                        done_in_window += 1

        await asyncio.gather(*(worker(k) for k in range(clients)))
    lat = np.array(latencies) * 1000
    return {
        "rps": done_in_window / duration,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "n": len(lat),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=256, help="distinct sample JPEGs sent")
    parser.add_argument("--batching", choices=["both", "on", "off"], default="both")
    parser.add_argument("--serve-args", default="", help="extra `landsight serve` options, e.g. '--max-batch-size 8'")
    args = parser.parse_args()

    from landsight.classify.train import train
    from landsight.data.sample import eurosat_sample

    started = time.perf_counter()
    files = sorted(eurosat_sample().rglob("*.jpg"))
    datas = [f.read_bytes() for f in files[:: max(1, len(files) // args.images)]][: args.images]
    with tempfile.TemporaryDirectory(prefix="landsight-serve-bench-") as tmp:
        os.environ.setdefault("LANDSIGHT_CACHE_DIR", str(Path(tmp) / "cache"))
        bundle_path = train(eurosat_sample(), out=Path(tmp) / "eurosat.landsight", progress=False).bundle_path
        top = ceiling(bundle_path, datas, seconds=max(5.0, args.duration))
        print(f"in-process ceiling (decode + resize + predict_proba, batch 32): {top:.1f} images/s", flush=True)

        rows = []
        for workers in args.workers:
            for batching in {"both": (True, False), "on": (True,), "off": (False,)}[args.batching]:
                port = free_port()
                proc = start_server(bundle_path, port, workers, batching, args.serve_args.split())
                try:
                    for clients in args.concurrency:
                        res = asyncio.run(load(f"http://127.0.0.1:{port}", datas, clients, args.duration, args.warmup))
                        row = {"workers": workers, "batching": batching, "clients": clients, **res}
                        row["load"] = os.getloadavg()[0]
                        rows.append(row)
                        print(
                            f"workers={workers} batching={'on ' if batching else 'off'} clients={clients:>2}: "
                            f"{res['rps']:6.1f} req/s ({res['rps'] / top:4.0%} of ceiling)  "
                            f"p50 {res['p50']:7.1f} ms  p99 {res['p99']:7.1f} ms  errors {res['errors']}  "
                            f"load avg {row['load']:.1f}",
                            flush=True,
                        )
                finally:
                    proc.terminate()
                    proc.wait(30)
        top_after = ceiling(bundle_path, datas, seconds=max(5.0, args.duration))

    cpu = f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    drift = f"; measured again after the load runs: {top_after:.1f} images/s"
    print()
    print(f"Ceiling (in process, decode + resize + predict_proba batch 32): **{top:.1f} images/s** ({cpu}{drift})")
    print()
    print("| workers | micro-batching | clients | requests/s | x ceiling | p50 ms | p99 ms | errors | load avg |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']} | {'on' if r['batching'] else 'off'} | {r['clients']} | {r['rps']:.1f} | "
            f"{r['rps'] / top:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['errors']} | {r['load']:.1f} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
