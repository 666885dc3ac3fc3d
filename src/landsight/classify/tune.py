"""Hyperparameter search with Optuna: frozen-feature heads in seconds, fine-tuning with pruning.

Frozen features (default): the catalog is split once (the same ``split`` / ``test_size`` /
``random_state`` as :func:`landsight.train`, so the test images never inform the search), every
image is featurized once per ``tta`` setting of the search space, with ``train``'s pooled stages
(the Parquet feature cache: a second search featurizes nothing), and each trial only fits a
scikit-learn head on cached features with k-fold cross-validation of the *training* split (folds
keep spatial blocks or groups whole when ``split`` is ``"spatial"`` / ``"group"``). Search space: head
(``logreg`` / ``forest``), ``C`` (log-uniform, logreg), ``n_estimators`` (log-uniform, forest),
``tta`` (``none`` / ``rot4``). The mean fold accuracy so far is reported after each fold, so the
``MedianPruner`` stops a poor trial after its first folds.

``finetune=True``: each trial is a :func:`landsight.finetune` run over ``lr`` (log-uniform),
``retrain`` (``last`` / ``fc`` / ``all``) and ``epochs``; the validation accuracy
(``1 - val_error``) of each epoch is reported to Optuna by a Lightning callback, and the
``MedianPruner`` stops a trial whose epoch falls below the median of earlier trials at that epoch.

Both use the TPE sampler (Bergstra et al., NeurIPS 2011; seeded by ``random_state``). Every
trial is an MLflow child run of the search's run (:mod:`landsight.tracking`); the best
parameters are then trained on the whole training split by :func:`landsight.train` /
:func:`landsight.finetune` into ``out`` (also a child run), and the study is written to
``<out>.tune.yaml``: the search space, every trial, the best parameters and the call that
reproduces the bundle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landsight.classify.tune_objectives import _finetune_objective, _frozen_context, _frozen_objective
from landsight.errors import LandsightValueError
from landsight.models.backbones import DEFAULT_BACKBONE, SUPPORTED_TTA
from landsight.models.heads import HEADS
from landsight.outputs import scratch_dir

__all__ = ["TuneResult", "tune", "tune_path"]

RETRAIN_CHOICES = ("last", "fc", "all")
HEAD_CHOICES = tuple(HEADS)
TTA_CHOICES = SUPPORTED_TTA


@dataclass
class TuneResult:
    """What :func:`tune` produced.

    Attributes:
        bundle_path: The bundle trained with the best parameters.
        tune_path: The study report ``<out>.tune.yaml``.
        best_params: The best trial's parameters (``head``, ``C``, ``tta``... or ``lr``,
            ``retrain``, ``epochs``).
        best_value: Its objective: mean cross-validated accuracy (frozen features, fraction) or
            best-epoch validation accuracy (fine-tuning, fraction).
        metrics: Held-out test metrics of the final bundle (empty without a test split).
        trials: One dict per trial: ``number``, ``state`` (``COMPLETE`` / ``PRUNED`` / ``FAIL``),
            ``value``, ``params``, ``intermediate`` (per fold or epoch), ``seconds``.
        study: The ``optuna.Study``.
        run_id: MLflow run id of the search ("" when tracking is off).
        search_seconds: Wall time of the trials (featurization included for frozen features).
    """

    bundle_path: Path
    tune_path: Path
    best_params: dict[str, Any]
    best_value: float
    metrics: dict[str, Any]
    trials: list[dict[str, Any]]
    study: Any = field(repr=False)
    run_id: str = ""
    search_seconds: float = 0.0


def tune_path(out: str | Path) -> Path:
    """The study report written beside a bundle: ``<out>.tune.yaml``."""
    return Path(f"{out}.tune.yaml")


def _check_range(name: str, value: Sequence[float], *, positive: bool = True) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise LandsightValueError(f"{name} must be a (low, high) pair, e.g. (1e-3, 100); got {value!r}") from exc
    if not (low <= high) or (positive and low <= 0):
        raise LandsightValueError(f"{name} must be (low, high) with 0 < low <= high; got {value!r}")
    return low, high


def _check_choices(name: str, value: Sequence[str], allowed: Sequence[str]) -> list[str]:
    chosen = [value] if isinstance(value, str) else list(value)
    bad = [v for v in chosen if v not in allowed]
    if not chosen or bad:
        raise LandsightValueError(f"{name} must be a non-empty subset of {list(allowed)}; got {value!r}")
    return list(dict.fromkeys(chosen))


def tune(
    data: str | Path,
    *,
    trials: int = 50,
    out: str | Path = "model.landsight",
    finetune: bool = False,
    test: str | Path | None = None,
    test_size: float = 0.2,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
    cv: int = 3,
    timeout: float | None = None,
    heads: Sequence[str] = HEAD_CHOICES,
    tta: Sequence[str] = TTA_CHOICES,
    C: Sequence[float] = (1e-3, 1e2),
    n_estimators: Sequence[int] = (20, 100),
    lr: Sequence[float] = (1e-4, 1e-1),
    retrain: Sequence[str] = RETRAIN_CHOICES,
    epochs: Sequence[int] = (2, 10),
    n_startup_trials: int = 5,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = "imagenet",
    bands: tuple[int, ...] | None = None,
    class_names: str | Path | None = None,
    fixed: Mapping[str, Any] | None = None,
    random_state: int = 0,
    batch_size: int = 32,
    num_workers: int = 2,
    device: str = "auto",
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
) -> TuneResult:
    """Search hyperparameters with Optuna, then train the best into a bundle.

    See the module docstring for the search spaces, the cross-validation and the pruning.

    Args:
        data: Labelled images (class folders, map file, zip; see
            :func:`landsight.data.catalog.build_catalog`).
        trials: Trials to run (>= 1).
        out: Bundle folder written with the best parameters; the study goes to
            ``<out>.tune.yaml``.
        finetune: Search fine-tuning (``lr``, ``retrain``, ``epochs``) instead of the
            frozen-feature head.
        test: Separate labelled test images (never seen by the search).
        test_size: Held-out test fraction of ``data`` when ``test`` is not given (never seen by
            the search; the final bundle is tested on it).
        split: ``"random"``, ``"spatial"`` or ``"group"`` (:mod:`landsight.data.splits`): for
            the test split, and for the cross-validation folds of the frozen-feature search.
        block_size: ``split="spatial"``: block side in CRS units.
        group: ``split="group"``: ``"regex:PATTERN"`` or a map-file column.
        cv: Cross-validation folds of the frozen-feature search (>= 2; fewer when the smallest
            class or the number of groups is smaller). 3 keeps a 50-trial EuroSAT search under
            a minute of CPU on 2 cores; 5 costs ~1.7x.
        timeout: Stop starting trials after this many seconds (``None`` = run ``trials``).
        heads: Head kinds searched (names in :data:`landsight.models.heads.HEADS`: ``"logreg"``,
            ``"forest"``); each searches its :attr:`~landsight.models.heads.HeadSpec.search`.
        tta: Test-time augmentation settings searched (``"none"``, ``"rot4"``); each is
            featurized once.
        C: ``(low, high)`` of the log-uniform logistic-regression ``C``.
        n_estimators: ``(low, high)`` of the log-uniform random-forest tree count.
        lr: ``(low, high)`` of the log-uniform fine-tuning learning rate.
        retrain: Retraining depths searched (``"last"``, ``"fc"``, ``"all"``).
        epochs: ``(low, high)`` epochs of a fine-tuning trial (integers).
        n_startup_trials: Random trials before TPE models the search space (pruning starts
            after the second trial).
        backbone: Backbone registry name.
        weights: ``"imagenet"``, a weights file, or ``None``.
        bands: 1-based bands to read (default RGB).
        class_names: Class-names file for CNTK-style map files.
        fixed: Further keyword arguments of :func:`landsight.train` / :func:`landsight.finetune`
            used by every trial and the final run (e.g. ``{"class_weight": "balanced"}`` or
            ``{"val_size": 0.2, "optimizer": "adamw"}``).
        random_state: Seed of the split, the folds, the sampler and the models.
        batch_size: Images per forward pass (featurizing) or per step (fine-tuning).
        num_workers: Decoding threads / DataLoader workers.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (frozen-feature featurization).
        progress: Progress bars and Optuna's per-trial log lines.
        tracking_uri: MLflow store (see :func:`landsight.tracking.resolve_tracking_uri`).
        track: Record the search, every trial (child runs) and the final training in MLflow.
        overwrite: Replace an existing ``out`` bundle and ``<out>.tune.yaml``.

    Returns:
        A :class:`TuneResult`.

    Raises:
        LandsightValueError: Bad parameters or data (checked before featurizing or training),
            or every trial failed or was pruned.
        OutputExistsError: ``out`` or ``<out>.tune.yaml`` exists and ``overwrite`` is False.
        WeightsUnavailableError: The backbone's weights cannot be had.

    Example:
        >>> result = tune("eurosat/", trials=50, out="eurosat.landsight")  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
        {'head': 'logreg', 'tta': 'rot4', 'C': 0.31}
    """
    import optuna

    from landsight.bundle import check_bundle_out
    from landsight.data.splits import check_split_args
    from landsight.outputs import check_output
    from landsight.tracking import tracked_run

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise LandsightValueError(f"trials must be an integer >= 1, e.g. 50; got {trials!r}")
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
        raise LandsightValueError(f"cv must be an integer >= 2 (cross-validation folds); got {cv!r}")
    if timeout is not None and not timeout > 0:
        raise LandsightValueError(f"timeout must be a positive number of seconds or None; got {timeout!r}")
    check_split_args(split, block_size, group)
    fixed = dict(fixed or {})
    reserved = {"data", "out", "test", "test_size", "split", "block_size", "group", "random_state", "overwrite",
                "track", "tracking_uri", "progress"}  # fmt: skip
    clash = sorted(reserved & set(fixed))
    if clash:
        raise LandsightValueError(f"fixed may not set {clash!r}: they are parameters of tune itself; pass them there")
    space: dict[str, Any]
    if finetune:
        space = {
            "lr": _check_range("lr", lr),
            "retrain": _check_choices("retrain", retrain, RETRAIN_CHOICES),
            "epochs": tuple(int(v) for v in _check_range("epochs", epochs)),
        }
        if space["epochs"][0] < 1:
            raise LandsightValueError(f"epochs must be (low, high) with 1 <= low <= high; got {epochs!r}")
        clash = sorted(set(space) & set(fixed))
    else:
        space = {"head": _check_choices("heads", heads, tuple(HEADS)), "tta": _check_choices("tta", tta, TTA_CHOICES)}
        bounds = {"C": C, "n_estimators": n_estimators}  # the search bounds tune takes as arguments
        for name in space["head"]:
            for param in HEADS[name].search:
                low, high = _check_range(param.name, bounds.get(param.name, param.default))
                space[param.name] = (int(low), int(high)) if param.integer else (low, high)
        clash = sorted(set(space) & set(fixed))
    if clash:
        raise LandsightValueError(f"fixed sets {clash!r}, which the search varies; drop them from fixed")
    check_bundle_out(out, overwrite=overwrite)
    report = check_output(tune_path(out), overwrite=overwrite, what="tune report")

    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=random_state, n_startup_trials=n_startup_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=min(2, n_startup_trials), n_warmup_steps=0)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner,
                                study_name=f"landsight-tune-{Path(out).name}")  # fmt: skip
    common = {"test": test, "test_size": test_size, "split": split, "block_size": block_size, "group": group,
              "random_state": random_state, "backbone": backbone, "weights": weights, "bands": bands,
              "class_names": class_names, "batch_size": batch_size, "num_workers": num_workers}  # fmt: skip
    params = {"data": str(data), "trials": trials, "finetune": finetune, "cv": None if finetune else cv,
              "timeout": timeout, "space": space, "fixed": fixed, "out": str(out), **common}  # fmt: skip
    started = time.perf_counter()
    with tracked_run("tune", params, tracking_uri=tracking_uri, enabled=track) as run:
        if finetune:
            context: dict[str, Any] = {}
            objective = _finetune_objective(data, space, common, fixed, tracking_uri=tracking_uri, track=track)
        else:
            context = _frozen_context(data, space, common, cv=cv, device=device, progress=progress)
            objective = _frozen_objective(context, space, fixed, random_state=random_state,
                                          tracking_uri=tracking_uri, track=track)  # fmt: skip
        with scratch_dir("tune") as scratch:
            context["scratch"] = Path(scratch)
            study.optimize(
                lambda t: objective(t, context), n_trials=trials, timeout=timeout, catch=(LandsightValueError,)
            )
        search_seconds = time.perf_counter() - started
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            reasons = [t.user_attrs.get("error", t.state.name) for t in study.trials][:3]
            raise LandsightValueError(
                f"no trial of {len(study.trials)} completed (first reasons: {reasons!r}); widen the search space, "
                "raise trials or n_startup_trials, or check the data"
            )
        best = study.best_trial
        final_kwargs = _final_kwargs(best.params, finetune)
        run.log_params({f"best.{k}": v for k, v in best.params.items()})
        run.log_metrics({"best_value": float(best.value), "n_trials": len(study.trials), "n_complete": len(complete),
                         "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
                         "search_seconds": search_seconds})  # fmt: skip
        if finetune:
            from landsight.classify.finetune import finetune as run_finetune

            final = run_finetune(data, out=out, **{**common, **fixed}, **final_kwargs, progress=progress,
                                 tracking_uri=tracking_uri, track=track, overwrite=overwrite)  # fmt: skip
        else:
            from landsight.classify.train import train as run_train

            final = run_train(data, out=out, **{**common, **fixed}, **final_kwargs, device=device, progress=progress,
                              tracking_uri=tracking_uri, track=track, overwrite=overwrite)  # fmt: skip
        rows = [_trial_row(t) for t in study.trials]
        doc = _study_report(study, rows, space=space, params=params, final_kwargs=final_kwargs, finetune=finetune,
                            common=common, fixed=fixed, context=context, run_id=run.run_id,
                            final_run_id=getattr(final, "run_id", ""), search_seconds=search_seconds,
                            metrics=final.metrics)  # fmt: skip
        _write_yaml(report, doc)
        run.log_artifact(report)
    return TuneResult(Path(final.bundle_path), report, dict(best.params), float(best.value), final.metrics, rows,
                      study, run.run_id, round(search_seconds, 2))  # fmt: skip


def _final_kwargs(best: Mapping[str, Any], finetune: bool) -> dict[str, Any]:
    """Keyword arguments of train / finetune for a trial's parameters."""
    if finetune:
        return {"lr": float(best["lr"]), "retrain": str(best["retrain"]), "epochs": int(best["epochs"])}
    out: dict[str, Any] = {"head": str(best["head"]), "tta": str(best["tta"])}
    for param in HEADS[out["head"]].search:
        out[param.name] = param.cast(best[param.name])
    return out


# -- report ------------------------------------------------------------------------------------


def _trial_row(trial: Any) -> dict[str, Any]:
    value = trial.value if trial.value is not None and math.isfinite(trial.value) else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": None if value is None else round(float(value), 6),
        "params": {k: (float(v) if isinstance(v, float) else v) for k, v in trial.params.items()},
        "intermediate": [round(float(v), 6) for v in trial.user_attrs.get("intermediate", [])],
        "seconds": trial.user_attrs.get("seconds"),
    }


def _study_report(
    study: Any,
    rows: list[dict[str, Any]],
    *,
    space: dict[str, Any],
    params: dict[str, Any],
    final_kwargs: dict[str, Any],
    finetune: bool,
    common: dict[str, Any],
    fixed: dict[str, Any],
    context: dict[str, Any],
    run_id: str,
    final_run_id: str,
    search_seconds: float,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    import optuna

    command = "finetune" if finetune else "train"
    call = {k: (str(v) if isinstance(v, Path) else v) for k, v in {**common, **fixed, **final_kwargs}.items()
            if v is not None}  # fmt: skip
    return {
        "landsight_tune": 1,
        "study": {
            "name": study.study_name,
            "direction": "maximize",
            "objective": "mean cross-validated accuracy of the training split (fraction)"
            if not finetune
            else "best-epoch validation accuracy, 1 - val_error (fraction)",
            "sampler": f"TPESampler(seed={params['random_state']})",
            "pruner": "MedianPruner",
            "cv_folds": None if finetune else len(context.get("folds", [])),
            "optuna": optuna.__version__,
            "search_space": {k: list(v) for k, v in space.items()},
            "n_trials": len(rows),
            "n_complete": sum(r["state"] == "COMPLETE" for r in rows),
            "n_pruned": sum(r["state"] == "PRUNED" for r in rows),
            "search_seconds": round(search_seconds, 2),
        },
        "data": {
            "source": params["data"],
            "split": context.get("split") or common["split"],
            "n_train": context.get("n_train"),
        },  # fmt: skip
        "best": {
            "number": study.best_trial.number,
            "value": round(float(study.best_value), 6),
            "params": dict(study.best_params),
        },  # fmt: skip
        "final": {
            "command": command,
            "call": {"data": params["data"], "out": params["out"], **call},
            "bundle": params["out"],
            "test_accuracy": metrics.get("accuracy"),
            "test_macro_f1": metrics.get("macro_f1"),
        },
        "mlflow": {"run_id": run_id or None, "final_run_id": final_run_id or None},
        "trials": rows,
    }


def _write_yaml(path: Path, doc: dict[str, Any]) -> None:
    import yaml

    from landsight.outputs import atomic_path

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(plain(doc), sort_keys=False, width=120))
