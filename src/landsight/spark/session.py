"""One SparkSession per process: master URL, ``--conf`` passthrough, the driver's interpreter.

Spark's own ``SparkSession.builder.getOrCreate`` already returns the active session; this module
adds the settings landsight needs (``spark.pyspark.python`` = ``sys.executable`` so executors run
the same environment, Arrow for ``mapInPandas``, few shuffle partitions) and refuses to silently
reuse a session started with a different master.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"

#: Settings applied unless the caller's ``conf`` sets them.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
    "spark.python.worker.reuse": "true",
}

_session: SparkSession | None = None
_session_master: str | None = None


def parse_conf(pairs: Iterable[str] | None) -> dict[str, str]:
    """Parse ``--conf KEY=VALUE`` strings into a dict.

    Args:
        pairs: Strings such as ``"spark.executor.memory=2g"``.

    Returns:
        ``{key: value}``; a later repeat of a key wins.

    Raises:
        LandsightValueError: A string has no ``=`` or an empty key.

    """
    conf: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LandsightValueError(f"--conf takes KEY=VALUE, got {pair!r} (e.g. spark.executor.memory=2g)")
        conf[key.strip()] = value
    return conf


def get_session(
    master: str = DEFAULT_MASTER, conf: Mapping[str, str] | None = None, *, app_name: str = "landsight"
) -> SparkSession:
    """Return this process's SparkSession, starting it on first use.

    Later calls with the same master reuse the session (starting one takes tens of seconds);
    their ``conf`` is applied where Spark allows it at runtime (SQL settings).

    Args:
        master: Spark master URL: ``local[*]``, ``local[2]``, ``spark://host:7077``, ``yarn``...
        conf: Extra Spark settings (``--conf`` passthrough), applied over :data:`DEFAULT_CONF`.
        app_name: Application name shown by the cluster manager.

    Returns:
        The active ``pyspark.sql.SparkSession``.

    Raises:
        LandsightValueError: A session with a different master is already running in this
            process (stop it first with :func:`stop_session`).

    """
    global _session, _session_master
    from pyspark.sql import SparkSession

    settings = {**DEFAULT_CONF, "spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable}
    settings.update(conf or {})
    active = SparkSession.getActiveSession()
    if _session is not None and active is _session:
        if master != _session_master:
            raise LandsightValueError(
                f"a Spark session with master {_session_master!r} is running in this process; "
                f"call landsight.spark.stop_session() before asking for master {master!r}"
            )
        for key, value in (conf or {}).items():
            if key.startswith("spark.sql."):
                _session.conf.set(key, value)
        return _session
    # pyspark's SparkContext takes the workers' interpreter from $PYSPARK_PYTHON (the conf
    # key alone only reaches spark-submit), so set both.
    os.environ["PYSPARK_PYTHON"] = settings["spark.pyspark.python"]
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    _session = builder.getOrCreate()
    _session.sparkContext.setLogLevel("ERROR")
    _session_master = master
    return _session


def stop_session() -> None:
    """Stop the session started by :func:`get_session` (no-op when none is running)."""
    global _session, _session_master
    if _session is not None:
        _session.stop()
    _session, _session_master = None, None


def default_parallelism(spark: SparkSession) -> int:
    """Return the cores Spark can run tasks on (``sc.defaultParallelism``, at least 1)."""
    return max(1, int(spark.sparkContext.defaultParallelism))
