"""Compare recorded runs: a table of the run history and error curves per run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from landsight.errors import LandsightValueError
from landsight.tracking import EXPERIMENT, resolve_tracking_uri

if TYPE_CHECKING:
    import pandas as pd

#: Columns of :func:`list_runs`: (column, MLflow field).
COLUMNS = (
    ("run", "run_id"),
    ("started", "start_time"),
    ("command", "tags.landsight.command"),
    ("status", "status"),
    ("backbone", "params.backbone"),
    ("depth", "params.retrain"),
    ("head", "params.head"),
    ("data", "params.data"),
    ("accuracy", "metrics.test_accuracy"),
    ("balanced_accuracy", "metrics.test_balanced_accuracy"),
    ("best_val_error", "metrics.best_val_error"),
    ("seconds", "metrics.duration_seconds"),
)


#: Columns :func:`list_runs` shows in a terminal table (``--format table``).
TABLE_COLUMNS = ("run", "started", "command", "backbone", "depth", "head", "accuracy", "best_val_error", "seconds")


def list_runs(
    *, tracking_uri: str | None = None, sort: str = "started", ascending: bool = False, details: bool = False
) -> pd.DataFrame:
    """Return the recorded runs as a table, one row per run.

    Args:
        tracking_uri: MLflow store (see :func:`landsight.tracking.resolve_tracking_uri`).
        sort: Column to sort by: one of :data:`COLUMNS`' names or any metric name.
        ascending: Sort order.
        details: Also every logged parameter as ``param.<name>`` (for ``--format json`` / csv).

    Returns:
        DataFrame with the :data:`COLUMNS` (missing values as NaN / empty), ``full_run_id``,
        every other logged metric as ``metric.<name>`` and, with ``details``, every parameter as
        ``param.<name>``.

    Raises:
        LandsightValueError: ``sort`` is not a column.
    """
    import mlflow
    import pandas as pd

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="pandas")
    if found.empty:
        return pd.DataFrame(columns=[c for c, _ in COLUMNS])
    table = pd.DataFrame({name: found[field] if field in found else None for name, field in COLUMNS})
    table["run"] = table["run"].str[:8]
    table["full_run_id"] = found["run_id"]
    for col in found.columns:
        if col.startswith("metrics.") and col not in dict(COLUMNS).values():
            table[col.replace("metrics.", "metric.")] = found[col]
        elif details and col.startswith("params."):
            table[col.replace("params.", "param.")] = found[col]
    table["started"] = table["started"].astype(str)
    key = sort if sort in table.columns else f"metric.{sort}"
    if key not in table.columns:
        raise LandsightValueError(f"cannot sort by {sort!r}; choose one of {list(table.columns)}")
    return table.sort_values(key, ascending=ascending, na_position="last").reset_index(drop=True)


def resolve_run_id(runs: pd.DataFrame, prefix: str) -> str:
    """The one full run id in ``runs["full_run_id"]`` that starts with ``prefix``.

    Raises:
        LandsightValueError: No run or more than one run matches.
    """
    matches = [r for r in runs["full_run_id"] if r.startswith(prefix)]
    if len(matches) != 1:
        raise LandsightValueError(
            f"run {prefix!r} matches {len(matches)} runs; give more characters of a run id from `landsight runs`"
        )
    return matches[0]


def plot_curves(
    run_ids: Sequence[str], out: str | Path, *, tracking_uri: str | None = None, overwrite: bool = False
) -> Path:
    """Plot training and validation error % per epoch for each run (matplotlib PNG).

    Args:
        run_ids: Run ids or unique prefixes (as printed by ``landsight runs``).
        out: PNG file to write.
        tracking_uri: MLflow store.
        overwrite: Replace an existing ``out``.

    Returns:
        The PNG path.

    Raises:
        LandsightValueError: A run id is unknown or ambiguous, or a run has no per-epoch curves.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from landsight.outputs import atomic_path, check_output

    out = check_output(out, overwrite=overwrite, what="plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    runs = list_runs(tracking_uri=uri)
    fig, ax = plt.subplots(figsize=(8, 5))
    for prefix in run_ids:
        run_id = resolve_run_id(runs, prefix)
        row = runs[runs["full_run_id"] == run_id].iloc[0]
        label = f"{run_id[:8]} {row['backbone'] or ''} {row['depth'] or ''}".strip()
        curves = {k: client.get_metric_history(run_id, k) for k in ("train_error", "val_error")}
        if not curves["val_error"]:
            raise LandsightValueError(f"run {run_id[:8]!r} has no per-epoch curves (only finetune runs have them)")
        for key, style in (("train_error", "--"), ("val_error", "-")):
            points = sorted((m.step, m.value) for m in curves[key])
            line = ax.plot(
                [p[0] + 1 for p in points], [p[1] for p in points], style, marker="o", label=f"{label} {key}"
            )
            if key == "train_error":
                color = line[0].get_color()
            else:
                line[0].set_color(color)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title("training (dashed) and validation (solid) error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out
