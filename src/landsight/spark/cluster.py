"""A throwaway Spark standalone cluster on loopback, from the pyspark install's own ``spark-class``.

For tests and benchmarks: a real master and real workers (separate JVMs, executors in their own
processes), no cluster manager to install. Not for production clusters.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from landsight.errors import LandsightError


class ClusterStartError(LandsightError, RuntimeError):
    """The loopback standalone cluster did not come up (no Java, a port taken, a crashed JVM)."""


@dataclass
class StandaloneCluster:
    """A running loopback cluster.

    Attributes:
        master_url: ``spark://127.0.0.1:PORT``, for ``--master``.
        ui_url: The master's web UI (its ``/json/`` lists the workers).
        workers: Number of workers.
        log_dir: Folder of the master's and workers' logs.

    """

    master_url: str
    ui_url: str
    workers: int
    log_dir: Path


def spark_home() -> Path:
    """Return the pyspark install folder (it holds ``bin/spark-class`` and the jars)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def standalone_cluster(
    workers: int = 1, cores: int = 1, memory: str = "1g", *, timeout: float = 90.0
) -> Iterator[StandaloneCluster]:
    """Start a standalone master and ``workers`` workers on 127.0.0.1; stop them on exit.

    Args:
        workers: Worker JVMs to start.
        cores: Cores each worker offers.
        memory: Memory each worker offers (Spark size string, e.g. ``"1g"``).
        timeout: Seconds to wait for every worker to register.

    Yields:
        The :class:`StandaloneCluster`.

    Raises:
        ClusterStartError: ``java`` is missing, or the workers did not register in time.

    """
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ClusterStartError("no java on PATH and no JAVA_HOME; Spark needs Java 17+")
    home = spark_home()
    spark_class = home / "bin" / "spark-class"
    log_dir = Path(tempfile.mkdtemp(prefix="landsight-spark-cluster-"))
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(log_dir)}
    port, ui_port = free_port(), free_port()
    master_url, ui_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, args: list[str]) -> None:
        log = (log_dir / f"{name}.log").open("wb")
        procs.append(subprocess.Popen([str(spark_class), *args], env=env, stdout=log, stderr=subprocess.STDOUT))

    try:
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                         "--webui-port", str(ui_port)])  # fmt: skip
        for i in range(workers):
            start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                                 "--memory", memory, "--webui-port", str(free_port()), master_url])  # fmt: skip
        _wait_for_workers(ui_url, workers, timeout, procs, log_dir)
        yield StandaloneCluster(master_url, ui_url, workers, log_dir)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_workers(
    ui_url: str, workers: int, timeout: float, procs: list[subprocess.Popen[bytes]], log_dir: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise ClusterStartError(f"a Spark JVM exited with code {dead[0].returncode}; see the logs in {log_dir}")
        try:
            with urllib.request.urlopen(f"{ui_url}/json/", timeout=2) as resp:  # noqa: S310 - loopback only
                state = json.load(resp)
            if int(state.get("aliveworkers", 0)) >= workers:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise ClusterStartError(f"{workers} Spark worker(s) did not register within {timeout:.0f} s; see {log_dir}")
