"""Fit a landsight Lightning module: checkpoints every epoch, resume, DDP, per-epoch history.

The training machinery shared by fine-tuning (:mod:`landsight.classify.finetune`) and segmentation
(:mod:`landsight.segment.train`), for any :class:`~landsight.models.task.TaskModule`:
Lightning's ``ModelCheckpoint`` keeps ``last.ckpt`` and the epoch with the lowest ``val_error``
as ``best.ckpt`` in the checkpoint folder, :class:`~landsight.models.fit.EpochHistory` appends
``history.jsonl``, ``resume=True`` continues from ``last.ckpt``, and ``devices * num_nodes > 1``
trains data-parallel (DDP: ``ddp_spawn`` on one machine, ``ddp`` when torchrun / SLURM started
the processes; Lightning gives each process its shard through a ``DistributedSampler``). Mixed
precision on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from landsight.errors import LandsightValueError
from landsight.models.task import SCHEDULES, TaskModule

HISTORY_FILE = "history.jsonl"

_EXTRA_CALLBACKS: ContextVar[tuple[Any, ...]] = ContextVar("landsight_extra_callbacks", default=())


@contextmanager
def extra_callbacks(*callbacks: Any) -> Iterator[None]:
    """Add Lightning callbacks to every :func:`fit_module` call made inside the block.

    How :func:`landsight.classify.tune.tune` prunes fine-tuning trials (a callback that reports
    each epoch's validation error to Optuna) without a parameter on every training function.
    Single-process fits only: ``ddp_spawn`` would pickle the callbacks into new processes.

    Args:
        *callbacks: ``lightning.pytorch.Callback`` instances.
    """
    token = _EXTRA_CALLBACKS.set(_EXTRA_CALLBACKS.get() + callbacks)
    try:
        yield
    finally:
        _EXTRA_CALLBACKS.reset(token)


def parse_lr_schedule(spec: str) -> list[float] | str:
    """Parse a learning-rate schedule.

    Args:
        spec: ``"constant"``, ``"cosine"``, ``"onecycle"``, or an explicit per-epoch list such as
            ``"0.2*10,0.1"`` (``[0.2]*10 + [0.1]``; ``v*n`` repeats ``v`` n times).
            The last value holds for any later epoch.

    Returns:
        The schedule name, or the list of per-epoch learning rates.

    Raises:
        LandsightValueError: Neither a known name nor a valid list.
    """
    if spec in SCHEDULES:
        return spec
    values: list[float] = []
    try:
        for part in spec.split(","):
            value, _, repeat = part.strip().partition("*")
            values += [float(value)] * (int(repeat) if repeat else 1)
    except ValueError as exc:
        raise LandsightValueError(
            f"lr schedule must be one of {list(SCHEDULES)} or a list like '0.2*10,0.1', got {spec!r}"
        ) from exc
    if not values or any(v <= 0 for v in values):
        raise LandsightValueError(f"lr schedule values must be > 0, got {spec!r}")
    return values


class ReleaseProcessGroup(pl.Callback):
    """Destroy the ``torch.distributed`` process group when a DDP process has finished fitting.

    Lightning leaves the group to interpreter exit. There, gloo's threads can still be joinable
    when their destructors run, and a ``ddp_spawn`` worker then dies with "terminate called
    without an active exception" (SIGABRT) after training has finished: 2 of 6 two-process CPU
    runs on the 2-core test machine did. The hook runs after the strategy's teardown, when no
    collective is left (the spawn launcher hands its results back through a queue).
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Destroy the default process group if this process has one."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class EpochHistory(pl.Callback):
    """Append each epoch's metrics, duration (training + validation) and samples/s to a JSON-lines file.

    Written by global rank 0 only; samples/s counts the samples of all processes. Rows:
    ``epoch``, ``train_loss``, ``train_error``, ``val_loss``, ``val_error``, ``epoch_seconds``,
    ``samples_per_second``, ``lr`` (of the final layer, during that epoch).

    Args:
        path: The ``history.jsonl`` file (appended to, so a resumed run continues it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """On resume, drop rows of epochs the checkpoint does not hold (a kill between the row and the checkpoint)."""
        if not trainer.is_global_zero or not self.path.is_file():
            return
        kept = [row for row in read_history(self.path) if int(row["epoch"]) < int(trainer.current_epoch)]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(self.path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write one row for the epoch that just ended."""
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        seconds, rate = pl_module.epoch_throughput()
        row: dict[str, float] = {"epoch": int(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        row.update(epoch_seconds=seconds, samples_per_second=rate, lr=pl_module.epoch_lr)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def steps_per_epoch(n_samples: int, batch_size: int, world_size: int) -> int:
    """Optimiser steps per epoch for ``n_samples`` sharded over ``world_size`` processes."""
    return max(1, math.ceil(math.ceil(n_samples / max(1, world_size)) / batch_size))


@dataclass
class FitResult:
    """What :func:`fit_module` produced.

    Attributes:
        best_epoch: The epoch (0-based) with the lowest validation error; its weights are loaded
            into the module's ``model``.
        history: One dict per epoch, from ``history.jsonl`` (see :func:`read_history`).
        is_global_zero: False in the processes of rank > 0 under torchrun / SLURM, which must not
            write the bundle (rank 0 does).
    """

    best_epoch: int
    history: list[dict[str, float]]
    is_global_zero: bool = True


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Read a ``history.jsonl`` file; for an epoch written twice (resume), the last row wins.

    Args:
        path: The file; a missing file gives ``[]``.

    Returns:
        One dict per epoch, in epoch order (keys: see
        :class:`~landsight.models.fit.EpochHistory`).
    """
    rows: dict[int, dict[str, float]] = {}
    p = Path(path)
    if p.is_file():
        for line in p.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[int(row["epoch"])] = row
    return [rows[e] for e in sorted(rows)]


#: Names a run writes into its checkpoint folder (``OUT.checkpoints/``), as manifest patterns.
CHECKPOINT_FILES = ("*.ckpt", "*.ckpt.tmp", HISTORY_FILE, "lightning_logs/*", "*.json", "*.npy", "*.npz", "trunk/*")


#: The identity record of a run, in its checkpoint folder: what a ``--resume`` must match.
IDENTITY_FILE = "run.json"


def data_fingerprint(rows: Iterable[tuple[str, str]]) -> str:
    """A short digest of a training set: its (input path, label) rows, in any order.

    Args:
        rows: ``(image or raster path, label or label-raster path)`` of the training and
            validation inputs.

    Returns:
        16 hex digits of the SHA-256 of the sorted rows.
    """
    digest = hashlib.sha256()
    for path, label in sorted((str(p), str(y)) for p, y in rows):
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()[:16]


def check_resume(ckpt_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse, in one line, a ``--resume`` of a checkpoint that belongs to another run or is unreadable.

    Args:
        ckpt_dir: The checkpoint folder (``OUT.checkpoints/``).
        identity: What this run is: task, data fingerprint, classes, retraining depth,
            backbone, bands (JSON values).

    Raises:
        LandsightValueError: No identity record, a mismatch (naming what differs), or a
            ``last.ckpt`` that cannot be read as a checkpoint.
    """
    record = ckpt_dir / IDENTITY_FILE
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        raise LandsightValueError(
            f"--resume: {str(record)!r} is missing or unreadable, so the checkpoint cannot be matched to this run; "
            "pass --overwrite to start over"
        ) from None
    differ = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} then, {identity.get(k)!r} now" for k in differ[:3])
        raise LandsightValueError(
            f"--resume: the checkpoint in {str(ckpt_dir)!r} belongs to another run ({shown}); "
            "pass --overwrite to start over, or give the same data and options"
        )
    last = ckpt_dir / "last.ckpt"
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "state_dict" not in state:
            raise ValueError("no state_dict")
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the same message
        raise LandsightValueError(
            f"--resume: {str(last)!r} cannot be read as a checkpoint ({type(exc).__name__}); "
            "pass --overwrite to start over"
        ) from None


def check_run_outputs(out: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """Check, before training, the bundle folder and the checkpoint folder ``<out>.checkpoints/``.

    Args:
        out: The bundle folder the run will write.
        resume: The run continues from ``<out>.checkpoints/last.ckpt`` (and replaces ``out``).
        overwrite: The run starts over: an existing bundle and checkpoints are replaced.

    Returns:
        The checkpoint folder.

    Raises:
        LandsightValueError: ``resume`` without ``last.ckpt``.
        OutputExistsError: Checkpoints of an earlier run exist and neither ``resume`` nor
            ``overwrite`` is set; or ``out`` cannot be replaced (see
            :func:`landsight.bundle.check_bundle_out`).
    """
    from landsight.bundle import check_bundle_out
    from landsight.errors import OutputExistsError

    ckpt_dir = Path(f"{out}.checkpoints")
    if resume and not (ckpt_dir / "last.ckpt").is_file():
        raise LandsightValueError(f"resume=True but {str(ckpt_dir / 'last.ckpt')!r} does not exist; run without resume")
    if not resume and not overwrite and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise OutputExistsError(
            f"checkpoint folder {str(ckpt_dir)!r} holds an earlier run; pass --resume to continue it "
            "or --overwrite to delete it and start over"
        )
    if overwrite and not resume and ckpt_dir.exists():
        from landsight.outputs import owned_folder

        problem = owned_folder(ckpt_dir)
        if problem is not None:
            raise OutputExistsError(f"checkpoint folder {problem}; --overwrite replaces only what landsight made")
    check_bundle_out(out, overwrite=overwrite or resume)
    return ckpt_dir


def fit_module(
    module: TaskModule,
    train_loader: Any,
    val_loader: Any,
    *,
    ckpt_dir: Path,
    epochs: int,
    devices: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    resume: bool = False,
    progress: bool = True,
    early_stopping: int | None = None,
    gradient_clip: float | None = None,
    monitor: str = "val_error",
    mode: str = "min",
    identity: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``module`` with Lightning and load its best epoch's weights into ``module.model``.

    Args:
        module: A :class:`~landsight.models.task.TaskModule` subclass that logs ``monitor``
            each epoch and holds the network as ``model``.
        train_loader: ``torch.utils.data.DataLoader`` of training batches (shuffled).
        val_loader: ``DataLoader`` of validation batches.
        ckpt_dir: Checkpoint folder; emptied first unless ``resume`` (the caller has checked
            with :func:`check_run_outputs` that this was asked for).
        epochs: Epochs (>= 1).
        devices: Processes (CPU) or GPUs per node.
        num_nodes: Nodes.
        accelerator: ``"auto"``, ``"cpu"``, ``"gpu"`` or ``"cuda"``.
        resume: Continue from ``ckpt_dir/last.ckpt`` (the caller checks that it exists).
        progress: Lightning's progress bar.
        early_stopping: Stop after this many epochs without a better ``monitor``.
        gradient_clip: Clip gradients to this norm.
        monitor: Logged validation metric that picks the best epoch (and stops early), e.g.
            ``"val_miou"`` for segmentation.
        mode: ``"min"`` (an error) or ``"max"`` (an accuracy / IoU) for ``monitor``.
        identity: What this run is (:func:`check_resume`): written to ``OUT.checkpoints/run.json``
            by a fresh run, and checked by a resumed one before any training.

    Returns:
        A :class:`FitResult`.
    """
    from landsight.distributed import launched_externally
    from landsight.outputs import mark_folder, write_json

    if resume and identity is not None:
        check_resume(ckpt_dir, identity)
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if not resume and identity is not None:
        write_json(ckpt_dir / IDENTITY_FILE, identity)
    mark_folder(ckpt_dir, "checkpoints", patterns=CHECKPOINT_FILES)  # what Lightning writes later is ours too
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_last=True, save_top_k=1
    )
    callbacks: list[Any] = [checkpoint, EpochHistory(ckpt_dir / HISTORY_FILE), *_EXTRA_CALLBACKS.get()]
    if devices * num_nodes > 1:
        callbacks.append(ReleaseProcessGroup())
    if early_stopping:
        callbacks.append(pl.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=early_stopping))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    strategy: Any = "auto"
    if devices * num_nodes > 1:
        strategy = "ddp" if launched_externally() else "ddp_spawn"
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="gpu" if gpu else "cpu", devices=devices, num_nodes=num_nodes,
        strategy=strategy, precision="16-mixed" if gpu else "32-true", gradient_clip_val=gradient_clip,
        callbacks=callbacks, logger=False, enable_progress_bar=progress, enable_model_summary=False,
        default_root_dir=ckpt_dir, num_sanity_val_steps=0, deterministic=False,
    )  # fmt: skip
    trainer.fit(
        module,
        train_loader,
        val_loader,
        ckpt_path=str(ckpt_dir / "last.ckpt") if resume else None,
        weights_only=True,  # tensors and plain containers only: nothing in a checkpoint is unpickled as code
    )
    best_path = Path(checkpoint.best_model_path or ckpt_dir / "best.ckpt")
    state = torch.load(best_path, map_location="cpu", weights_only=True)
    # only the network: loss buffers (class weights) live beside it in the module's state
    module.model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()
                                  if k.startswith("model.")})  # fmt: skip
    return FitResult(
        best_epoch=int(state.get("epoch", 0)),
        history=read_history(ckpt_dir / HISTORY_FILE),
        is_global_zero=trainer.is_global_zero,
    )
