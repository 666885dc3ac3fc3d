"""Run history: every train / finetune / evaluate / predict call is an MLflow run.

The default store is embedded: a SQLite file ``mlruns.db`` in the working folder (no server).
``tracking_uri=`` / ``--tracking-uri`` or ``$MLFLOW_TRACKING_URI`` point elsewhere (a tracking
server, another file). ``mlflow ui --backend-store-uri sqlite:///mlruns.db`` shows the same runs.
Each run records parameters, metrics (per-epoch curves with ``step = epoch``), artifacts (the
bundle, the confusion matrix), the git revision of the working folder and package versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

EXPERIMENT = "landsight"
DEFAULT_DB = "mlruns.db"

_PARENT: ContextVar[tuple[str, str] | None] = ContextVar("landsight_parent_run", default=None)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Return ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlruns.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def git_revision(folder: str | Path = ".") -> str | None:
    """Commit hash of the git work tree holding ``folder`` (``None`` outside one)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _client(uri: str) -> Any:
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


class Run:
    """An open MLflow run; methods write through ``MlflowClient`` (no global state).

    Attributes:
        run_id: MLflow run id.
        tracking_uri: Store the run lives in.
    """

    def __init__(self, client: Any, run_id: str, tracking_uri: str) -> None:
        self._client, self.run_id, self.tracking_uri = client, run_id, tracking_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values stringified, ``None`` skipped)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics; non-finite or non-numeric values are skipped."""
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        if items:
            self._client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or a whole folder into the run's artifacts."""
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path or path.name)
        elif path.is_file():
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        for k, v in tags.items():
            if v is not None:
                self._client.set_tag(self.run_id, k, str(v))


class _NoRun(Run):
    """Tracking switched off: every call does nothing."""

    def __init__(self) -> None:
        self.run_id, self.tracking_uri = "", ""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass


@contextmanager
def tracked_run(
    command: str,
    params: Mapping[str, Any],
    *,
    tracking_uri: str | None = None,
    enabled: bool = True,
    experiment: str = EXPERIMENT,
) -> Iterator[Run]:
    """Open an MLflow run for one landsight command; mark it FAILED if the block raises.

    Runs opened inside the block of another run of the same store are its children (tag
    ``mlflow.parentRunId``, as ``mlflow.start_run(nested=True)`` sets it): the trials and the
    final training of :func:`landsight.classify.tune.tune` nest under the search's run. A block
    ended by Optuna's ``TrialPruned`` is marked KILLED (tag ``landsight.pruned``), not FAILED.

    Args:
        command: ``"train"``, ``"finetune"``, ``"evaluate"`` or ``"predict"`` (tag
            ``landsight.command`` and the run name prefix).
        params: Parameters of the call.
        tracking_uri: See :func:`resolve_tracking_uri`.
        enabled: False yields a run object that records nothing (so do processes of global
            rank > 0 under torchrun / SLURM: one run per job, recorded by rank 0).
        experiment: MLflow experiment name.

    Yields:
        A :class:`Run`.
    """
    from landsight.distributed import global_rank

    if not enabled or global_rank() != 0:
        yield _NoRun()
        return
    from landsight.bundle import package_versions

    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    tags = {
        "landsight.command": command,
        "mlflow.source.git.commit": git_revision(),
        "mlflow.source.name": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)),
        **{f"version.{k}": v for k, v in package_versions().items()},
    }
    parent = _PARENT.get()
    if parent is not None and parent[1] == uri:
        tags["mlflow.parentRunId"] = parent[0]
    created = client.create_run(experiment_id, tags={k: str(v) for k, v in tags.items() if v is not None})
    created_id = created.info.run_id
    client.set_tag(created_id, "mlflow.runName", f"{command}-{created_id[:8]}")
    run = Run(client, created_id, uri)
    run.log_params(params)
    token = _PARENT.set((created_id, uri))
    try:
        yield run
    except BaseException as exc:
        if type(exc).__name__ == "TrialPruned":
            client.set_tag(run.run_id, "landsight.pruned", "true")
            client.set_terminated(run.run_id, "KILLED")
        else:
            client.set_terminated(run.run_id, "FAILED")
        raise
    finally:
        _PARENT.reset(token)
    client.set_terminated(run.run_id, "FINISHED")


def log_evaluation(run: Run, metrics: Mapping[str, Any], *, prefix: str = "test_") -> None:
    """Log the headline numbers of :func:`landsight.classify.evaluate.compute_metrics` output.

    Args:
        run: The open run.
        metrics: Metrics dict (``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``per_class``).
        prefix: Metric-name prefix (``test_accuracy``, ...).
    """
    values = {f"{prefix}{k}": metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in metrics}
    for name, m in metrics.get("per_class", {}).items():
        values[f"{prefix}f1.{name}"] = m["f1"]
    run.log_metrics(values)
