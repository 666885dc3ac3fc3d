"""One self-contained HTML report per run or bundle.

The report shows the parameters, the headline metrics, per-class precision / recall / F1, the
confusion matrix, the training and validation error curves per epoch (fine-tuning runs) and the
most confidently wrong test images as thumbnails with their true and predicted class. Figures are
matplotlib PNGs and thumbnails small PNGs, both embedded as base64 ``data:`` URIs, so the single
HTML file can be mailed or archived and opens offline.

Nothing is recomputed: the numbers come from what training / evaluation stored
(:func:`landsight.classify.evaluate.compute_metrics` output in ``metrics.json``, the per-epoch history in
``bundle.json`` or the MLflow run's metric history).

Example:
    >>> from landsight.results.report import build_report
    >>> build_report("eurosat.landsight", "report.html")  # doctest: +SKIP
    >>> build_report("1a2b3c4d", "report.html")  # an MLflow run id (prefix)  # doctest: +SKIP

"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landsight.errors import LandsightValueError
from landsight.outputs import scratch_dir
from landsight.predictions import HEADLINE_METRICS

__all__ = ["ReportData", "build_report", "load_report_data", "render_report"]

#: Per-epoch metrics drawn as curves, when recorded (finetune logs these).
CURVE_METRICS = ("train_error", "val_error", "train_loss", "val_loss")


@dataclass
class ReportData:
    """Everything a report shows, gathered from a bundle or an MLflow run.

    Attributes:
        title: Report heading.
        source: The bundle path or run id.
        kind: ``"bundle"`` or ``"run"``.
        params: Parameters (name -> value, as text).
        summary: Headline numbers (name -> float).
        metrics: Full :func:`landsight.classify.evaluate.compute_metrics` dict, or empty when none was
            stored (e.g. a predict run).
        history: One dict per epoch (``epoch`` and any of :data:`CURVE_METRICS`).

    """

    title: str
    source: str
    kind: str
    params: dict[str, str] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        out[prefix] = f"{len(value)} entries"
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)


def _bundle_data(path: Path) -> ReportData:
    from landsight.bundle import load_bundle

    bundle = load_bundle(path)
    meta = bundle.meta
    params: dict[str, str] = {}
    _flatten("", {k: meta.get(k) for k in ("backbone", "head", "preprocessing", "data") if k in meta}, params)
    params["classes"] = ", ".join(bundle.classes)
    training = meta.get("training") or {}
    if "seconds" in training or "training_seconds" in meta:
        params["training_seconds"] = str(training.get("seconds", meta.get("training_seconds")))
    if "best_epoch" in training:
        params["best_epoch"] = str(training["best_epoch"])
    metrics_file = bundle.path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    summary = {k: float(v) for k, v in (meta.get("metrics") or {}).items() if isinstance(v, int | float)}
    return ReportData(
        title=f"bundle {bundle.path.name}",
        source=str(bundle.path),
        kind="bundle",
        params=params,
        summary=summary,
        metrics=metrics,
        history=list(training.get("history") or []),
    )


def _run_data(run_id: str, tracking_uri: str | None) -> ReportData:
    import mlflow
    from mlflow.tracking import MlflowClient

    from landsight.results.runs import list_runs, resolve_run_id
    from landsight.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    full_id = resolve_run_id(list_runs(tracking_uri=uri), run_id)
    run = client.get_run(full_id)
    command = run.data.tags.get("landsight.command", "run")
    history_by_epoch: dict[int, dict[str, float]] = {}
    for key in CURVE_METRICS:
        for m in client.get_metric_history(full_id, key):
            history_by_epoch.setdefault(int(m.step), {"epoch": int(m.step)})[key] = float(m.value)
    metrics: dict[str, Any] = {}
    quiet = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no tqdm bar per downloaded file
    try:
        with scratch_dir("report") as tmp:
            for artifact in ("bundle/metrics.json", "evaluation/metrics.json"):
                try:
                    local = mlflow.artifacts.download_artifacts(
                        run_id=full_id, artifact_path=artifact, dst_path=tmp, tracking_uri=uri
                    )
                except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
                    continue
                metrics = json.loads(Path(local).read_text())
                break
    finally:
        if quiet is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = quiet
    summary = {k: float(v) for k, v in run.data.metrics.items() if k not in CURVE_METRICS}
    return ReportData(
        title=f"{command} run {full_id[:8]}",
        source=full_id,
        kind="run",
        params={k: str(v) for k, v in sorted(run.data.params.items())},
        summary=dict(sorted(summary.items())),
        metrics=metrics,
        history=[history_by_epoch[e] for e in sorted(history_by_epoch)],
    )


def load_report_data(source: str | Path, *, tracking_uri: str | None = None) -> ReportData:
    """Gather the report's content from a bundle (folder or zip) or an MLflow run id.

    Args:
        source: A ``*.landsight`` bundle folder / zip, or a run id or unique prefix of one (as
            printed by ``landsight runs``).
        tracking_uri: MLflow store for run ids (see :func:`landsight.tracking.resolve_tracking_uri`).

    Returns:
        A :class:`ReportData`.

    Raises:
        BundleError: ``source`` is a folder / zip but not a valid bundle.
        LandsightValueError: ``source`` is neither a path nor a known run id.

    """
    path = Path(source)
    if path.exists():
        return _bundle_data(path)
    try:
        return _run_data(str(source), tracking_uri)
    except LandsightValueError as exc:
        raise LandsightValueError(
            f"{str(source)!r} is neither an existing bundle path nor a run id of the MLflow store: {exc}"
        ) from exc


def _png_uri(fig: Any) -> str:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figures(data: ReportData) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from landsight.classify.evaluate import write_evaluation

    figs: dict[str, str] = {}
    if data.metrics.get("confusion_matrix"):
        with scratch_dir("report") as tmp:
            files = write_evaluation(data.metrics, tmp)  # the same figure `evaluate` writes
            figs["confusion"] = _file_uri(files["confusion_png"])
    if data.metrics.get("per_class"):
        names = list(data.metrics["per_class"])
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(names) + 2), 3.6))
        for k, key in enumerate(("precision", "recall", "f1")):
            ax.bar(x + (k - 1) * 0.27, [data.metrics["per_class"][n][key] for n in names], 0.27, label=key)
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title("per-class precision, recall and F1")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        figs["per_class"] = _png_uri(fig)
    curves = [k for k in CURVE_METRICS if any(k in row for row in data.history)]
    if curves:
        errors = [k for k in curves if k.endswith("error")]
        losses = [k for k in curves if k.endswith("loss")]
        panels = [p for p in (errors, losses) if p]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
        for ax, keys in zip(axes[0], panels, strict=True):
            for key in keys:
                pts = [(row["epoch"] + 1, row[key]) for row in data.history if key in row]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "--" if key.startswith("train") else "-",
                        marker="o", label=key)  # fmt: skip
            ax.set_xlabel("epoch")
            ax.set_ylabel("error (%)" if keys[0].endswith("error") else "loss")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("training (dashed) and validation (solid) per epoch")
        fig.tight_layout()
        figs["curves"] = _png_uri(fig)
    return figs


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>landsight report: {{ d.title }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:2px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
img{max-width:100%} td.num{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777}
.row{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{background:#f4f6f8;border-radius:6px;padding:8px 14px}
.card b{display:block;font-size:20px} .wrong{display:flex;flex-wrap:wrap;gap:10px}
.wrong figure{margin:0;width:130px;font-size:12px} .wrong img{width:128px;height:128px;object-fit:cover;
image-rendering:pixelated;border:1px solid #ccc} .miss{width:128px;height:128px;background:#eee;display:flex;
align-items:center;justify-content:center;color:#999}
</style></head><body>
<h1>landsight report: {{ d.title }}</h1>
<div class="muted">{{ d.kind }} <code>{{ d.source }}</code> · landsight {{ version }}</div>
{% if headline %}<h2 id="metrics">Metrics</h2><div class="cards">
{% for k, v in headline %}<div class="card"><span class="muted">{{ k }}</span><b>{{ v }}</b></div>{% endfor %}
</div>{% endif %}
<div class="row">{% if d.metrics.per_class %}<div><h2 id="per-class">Per class</h2>
<table id="per-class-table"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for name, m in d.metrics.per_class.items() %}<tr><td>{{ name }}</td>
<td class="num">{{ "%.3f"|format(m.precision) }}</td><td class="num">{{ "%.3f"|format(m.recall) }}</td>
<td class="num">{{ "%.3f"|format(m.f1) }}</td>
<td class="num">{{ m.support }}</td></tr>{% endfor %}</table>
{% if figs.per_class %}<img alt="per-class precision, recall and F1" src="{{ figs.per_class }}" style="max-width:480px">
{% endif %}</div>{% endif %}
{% if figs.confusion %}<div><h2 id="confusion">Confusion matrix</h2>
<p class="muted">rows: true class, columns: predicted class</p>
<img id="confusion-matrix" alt="confusion matrix" src="{{ figs.confusion }}" style="max-width:520px"></div>{% endif %}
</div>
<h2 id="curves">Training and validation error</h2>
{% if figs.curves %}<img id="curves-figure" alt="error curves" src="{{ figs.curves }}">
{% else %}<p class="muted">No per-epoch curves were recorded (only fine-tuning records them).</p>{% endif %}
{% if d.metrics %}<h2 id="wrong">Most confidently wrong test images</h2>
{% if wrong %}<div class="wrong">{% for w in wrong %}<figure class="wrong-image">
{% if w.uri %}<img src="{{ w.uri }}" alt="{{ w.name }}">{% else %}<div class="miss">not found</div>{% endif %}
<figcaption><b>{{ w.name }}</b><br>true: {{ w.true }}<br>predicted: {{ w.predicted }}
({{ "%.0f"|format(100 * w.confidence) }} %)</figcaption></figure>{% endfor %}</div>
{% else %}<p class="muted">No test image was misclassified.</p>{% endif %}{% endif %}
{% if d.summary %}<h2 id="all-metrics">All recorded metrics</h2>
<p class="muted">per-epoch metrics show their last value</p><table id="summary">{% for k, v in d.summary.items() %}
<tr><td>{{ k }}</td><td class="num">{{ "%.4g"|format(v) }}</td></tr>{% endfor %}</table>{% endif %}
{% if d.params %}<h2 id="params">Parameters</h2><table id="params-table">{% for k, v in d.params.items() %}
<tr><td>{{ k }}</td><td><code>{{ v }}</code></td></tr>{% endfor %}</table>{% endif %}
</body></html>
"""


def render_report(data: ReportData, out: str | Path, *, n_wrong: int = 12, thumbnail_size: int = 128) -> Path:
    """Write the HTML report of ``data`` (figures and thumbnails embedded).

    Args:
        data: From :func:`load_report_data`.
        out: HTML file to write.
        n_wrong: How many of the most confidently wrong images to show (as stored, most
            confident first).
        thumbnail_size: Longest side of each thumbnail, pixels.

    Returns:
        The HTML path.

    """
    import jinja2

    from landsight import __version__
    from landsight.results.maps import thumbnail_data_uri

    m = data.metrics
    headline = [
        (k.replace("_", " "), f"{m[k]:.2%}" if k != "n" else str(m[k]))
        for k in HEADLINE_METRICS
        if k in m
    ]
    wrong = []
    for w in (m.get("most_confident_wrong") or [])[:n_wrong]:
        path = Path(w["path"])
        uri = thumbnail_data_uri(path, size=thumbnail_size) if path.is_file() else None
        wrong.append({**w, "name": path.name, "uri": uri})
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    text = env.from_string(_TEMPLATE).render(
        d=data, figs=_figures(data), headline=headline, wrong=wrong, version=__version__
    )
    from landsight.outputs import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)


def build_report(
    source: str | Path,
    out: str | Path,
    *,
    tracking_uri: str | None = None,
    n_wrong: int = 12,
    thumbnail_size: int = 128,
    overwrite: bool = False,
) -> Path:
    """Write one self-contained HTML report for a bundle or an MLflow run.

    Args:
        source: A bundle folder / zip, or an MLflow run id (or unique prefix).
        out: HTML file to write.
        tracking_uri: MLflow store for run ids.
        n_wrong: Most confidently wrong images shown.
        thumbnail_size: Thumbnail side, pixels.
        overwrite: Replace an existing ``out``.

    Returns:
        The HTML path.

    Raises:
        BundleError: ``source`` is a path but not a bundle.
        LandsightValueError: ``source`` is neither a path nor a known run id.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.

    """
    from landsight.outputs import check_output

    check_output(out, overwrite=overwrite, what="report")
    data = load_report_data(source, tracking_uri=tracking_uri)
    return render_report(data, out, n_wrong=n_wrong, thumbnail_size=thumbnail_size)
