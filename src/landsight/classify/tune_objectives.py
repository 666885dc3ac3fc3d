"""The objectives of :func:`landsight.classify.tune.tune`: what one Optuna trial runs and scores.

This module owns the two searches' trials. Frozen features: the context built once per search
(the catalog split once, the training images featurized once per ``tta`` setting, the
cross-validation folds of the training split, keeping spatial blocks or groups whole) and the
objective that fits a scikit-learn head on each fold and reports the running mean accuracy for
pruning. Fine-tuning: the objective that runs :func:`landsight.finetune` with a Lightning callback
reporting each epoch's validation accuracy to Optuna, which prunes a poor trial.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.models.heads import HEADS

# -- frozen features ---------------------------------------------------------------------------


def _frozen_context(
    data: str | Path, space: dict[str, Any], common: dict[str, Any], *, cv: int, device: str, progress: bool
) -> dict[str, Any]:
    """Split once, featurize once per tta setting, build the cross-validation folds of the training split."""
    from landsight.classify.featurize import featurize
    from landsight.classify.train import DEFAULT_STAGES
    from landsight.data.splitting import training_catalog

    split_args = {k: common[k] for k in ("test", "test_size", "random_state", "class_names", "split", "block_size",
                                         "group")}  # fmt: skip
    catalog = training_catalog(data, **split_args)
    paths = list(catalog["path"])
    features: dict[str, Any] = {}
    failed: set[str] = set()
    for mode in space["tta"]:
        feats = featurize(paths, common["backbone"], weights=common["weights"], bands=common["bands"], tta=mode,
                          stages=DEFAULT_STAGES, batch_size=common["batch_size"], num_workers=common["num_workers"],
                          device=device, progress=progress)  # fmt: skip
        features[mode] = feats
        failed |= {p for p, _ in feats.failures}
    if failed:
        catalog = training_catalog(data, **split_args, exclude=sorted(failed))
    train_rows = catalog[catalog["split"] == "train"].reset_index(drop=True)
    train_paths = list(train_rows["path"])
    y = train_rows["label"].astype(str).to_numpy()
    X = {}
    for mode, feats in features.items():
        row_of = {p: i for i, p in enumerate(feats.paths)}
        X[mode] = feats.X[[row_of[p] for p in train_paths]]
    folds = _cv_folds(train_paths, y, common, cv=cv, data=data)
    return {"X": X, "y": y, "folds": folds, "n_train": len(y), "split": dict(catalog.attrs.get("split", {})),
            "n_failed": len(failed)}  # fmt: skip


def _cv_folds(
    paths: list[str], y: np.ndarray, common: dict[str, Any], *, cv: int, data: str | Path
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds of the training split; spatial blocks / groups stay whole when the split asks for it."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(np.unique(y, return_counts=True)[1].min())
    groups = None
    if common["split"] == "spatial":
        from landsight.data.spatial_blocks import spatial_blocks

        groups = spatial_blocks(paths, common["block_size"])[0]
    elif common["split"] == "group":
        from landsight.data.catalog import MAP_EXTENSIONS
        from landsight.data.split_groups import read_groups

        data_map = data if Path(data).suffix.lower() in MAP_EXTENSIONS else None  # group columns live there
        groups = read_groups(paths, common["group"], map_file=data_map)
    if groups is not None:
        k = min(cv, len(set(groups.tolist())))
        if k < 2:
            raise LandsightValueError(
                f"the training split holds {k} block/group: too few for cross-validation; use a smaller block_size "
                "or finer groups"
            )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=common["random_state"])
            return list(splitter.split(np.zeros(len(y)), y, groups))
    k = min(cv, smallest)
    if k < 2:
        raise LandsightValueError(
            f"a class has {smallest} training image(s): cross-validation needs at least 2 per class; add images"
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=common["random_state"])
    return list(splitter.split(np.zeros(len(y)), y))


def _frozen_objective(
    context: dict[str, Any],
    space: dict[str, Any],
    fixed: dict[str, Any],
    *,
    random_state: int,
    tracking_uri: str | None,
    track: bool,
) -> Any:
    import optuna
    from threadpoolctl import threadpool_limits

    from landsight.models.heads import fit_head, make_head
    from landsight.tracking import tracked_run

    def objective(trial: optuna.Trial, ctx: dict[str, Any]) -> float:
        head = trial.suggest_categorical("head", space["head"])
        mode = trial.suggest_categorical("tta", space["tta"])
        spec = HEADS[head]
        # the head's own settings among train's fixed keywords (random_state is tune's own)
        kwargs: dict[str, Any] = {k: v for k, v in fixed.items() if k in spec.options and k != "random_state"}
        for param in spec.search:
            kwargs[param.name] = param.suggest(trial, space[param.name])
        X, y = ctx["X"][mode], ctx["y"]
        started = time.perf_counter()
        scores: list[float] = []
        with tracked_run("tune-trial", {"trial": trial.number, **trial.params}, tracking_uri=tracking_uri,
                         enabled=track) as run:  # fmt: skip
            pruned = False
            for step, (fit_idx, val_idx) in enumerate(ctx["folds"]):
                estimator = make_head(head, random_state=random_state, **kwargs)
                # One BLAS thread: lbfgs on (n, 1280) features is ~50x faster than with OpenBLAS's
                # threads, which spin against each other on a small or shared CPU (measured 0.16 s
                # vs 8.7 s CPU per fit on EuroSAT, 2 cores).
                with _quiet_convergence(), threadpool_limits(1):
                    fit_head(estimator, X[fit_idx], y[fit_idx])
                    scores.append(float(np.mean(estimator.predict(X[val_idx]) == y[val_idx])))
                run.log_metrics({"cv_fold_accuracy": scores[-1], "cv_mean_so_far": float(np.mean(scores))}, step=step)
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    pruned = True
                    break
            trial.set_user_attr("intermediate", scores)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            run.log_metrics({"cv_accuracy": float(np.mean(scores)), "seconds": time.perf_counter() - started})
            run.set_tags({"optuna.trial": trial.number, "optuna.state": "PRUNED" if pruned else "COMPLETE"})
        if pruned:
            raise optuna.TrialPruned()
        return float(np.mean(scores))

    return objective


class _quiet_convergence:  # noqa: N801 - used like contextlib.suppress
    """Silence scikit-learn ConvergenceWarning (a trial at an extreme C; the score says enough)."""

    def __enter__(self) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


# -- fine-tuning -------------------------------------------------------------------------------


def _pruning_callback(trial: Any) -> Any:
    """Lightning callback: report ``1 - val_error / 100`` each epoch; raise ``TrialPruned`` when told."""
    import lightning.pytorch as pl
    import optuna

    class OptunaPruning(pl.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.sanity_checking or "val_error" not in trainer.callback_metrics:
                return
            value = 1.0 - float(trainer.callback_metrics["val_error"]) / 100.0
            epoch = int(trainer.current_epoch)
            self.values.append(value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned at epoch {epoch} (val accuracy {value:.4f})")

    return OptunaPruning()


def _finetune_objective(
    data: str | Path,
    space: dict[str, Any],
    common: dict[str, Any],
    fixed: dict[str, Any],
    *,
    tracking_uri: str | None,
    track: bool,
) -> Any:
    import optuna

    from landsight.classify.finetune import finetune as run_finetune
    from landsight.models.fit import extra_callbacks

    base = {**common, **fixed}  # fixed overrides batch_size / num_workers

    def objective(trial: optuna.Trial, ctx: dict[str, Any]) -> float:
        kwargs = {
            "lr": trial.suggest_float("lr", *space["lr"], log=True),
            "retrain": trial.suggest_categorical("retrain", space["retrain"]),
            "epochs": trial.suggest_int("epochs", *space["epochs"]),
        }
        callback = _pruning_callback(trial)
        started = time.perf_counter()
        try:
            with extra_callbacks(callback):
                result = run_finetune(data, out=ctx["scratch"] / f"trial-{trial.number}.landsight", **base,
                                      **kwargs, progress=False, tracking_uri=tracking_uri, track=track,
                                      overwrite=True)  # fmt: skip
        finally:
            trial.set_user_attr("intermediate", list(callback.values))
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
        errors = [row["val_error"] for row in result.history if "val_error" in row]
        if not errors:
            raise LandsightValueError("fine-tuning trial logged no validation error")
        return 1.0 - min(errors) / 100.0

    return objective
