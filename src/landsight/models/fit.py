"""Fit a landsight Lightning module: checkpoints every epoch, resume, DDP, per-epoch history.

The training machinery shared by fine-tuning (:mod:`landsight.classify.finetune`) and segmentation
(:mod:`landsight.segment.train`): Lightning's ``ModelCheckpoint`` keeps ``last.ckpt`` and the
epoch with the lowest ``val_error`` as ``best.ckpt`` in the checkpoint folder,
:class:`~landsight.models.fit.EpochHistory` appends ``history.jsonl``, ``resume=True``
continues from ``last.ckpt``, and ``devices * num_nodes > 1`` trains data-parallel (DDP:
``ddp_spawn`` on one machine, ``ddp`` when torchrun / SLURM started the processes; Lightning
gives each process its shard through a ``DistributedSampler``). Mixed precision on a GPU.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from landsight.errors import LandsightValueError

HISTORY_FILE = "history.jsonl"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")

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


BATCHNORM_MODES = ("train", "frozen")


def freeze_batchnorm_of_frozen(module: nn.Module, *, every: bool = False) -> None:
    """Put every BatchNorm whose parameters are all frozen (or, with ``every``, all) into eval mode.

    Call after ``.train()``.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if every or (params and not any(p.requires_grad for p in params)):
                m.eval()


class FinetuneModule(pl.LightningModule):
    """Lightning module for fine-tuning; logs per-epoch training / validation loss and error %.

    Args:
        model: The network; ``(N, ...)`` input -> ``(N, K)`` logits. For cached-feature ``last``
            training this is the final layer alone, taking ``(N, D)`` features.
        backbone_params: Backbone parameters that learn (empty for ``last``).
        head_params: Final-layer parameters.
        optimizer: ``"sgd"`` (momentum SGD with L2 weight decay) or ``"adamw"``.
        lr: Final-layer learning rate (the first value of an explicit schedule list).
        lr_schedule: ``"constant"``, ``"cosine"``, ``"onecycle"`` or a per-epoch list.
        backbone_lr_mult: Backbone learning rate = ``lr * backbone_lr_mult``.
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD) or decoupled weight decay (AdamW).
        epochs: Planned epochs (for cosine / one-cycle).
        steps_per_epoch: Optimiser steps per epoch (for one-cycle).
        augment: A callable applied to each training batch on the device, or ``None``.
        batchnorm: ``"train"``: BatchNorm layers that learn normalise with batch statistics and
            update their running statistics; ``"frozen"``: every BatchNorm keeps its running
            statistics (eval mode) while its scale and shift still learn, so the features a
            head was fitted on stay the features it is trained on (used with a probe-initialised
            head; as detectron2's ``FrozenBatchNorm2d`` for small batches).
    """

    def __init__(
        self,
        model: nn.Module,
        backbone_params: Sequence[nn.Parameter],
        head_params: Sequence[nn.Parameter],
        *,
        optimizer: str = "sgd",
        lr: float = 0.01,
        lr_schedule: list[float] | str = "constant",
        backbone_lr_mult: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        epochs: int = 10,
        steps_per_epoch: int = 1,
        augment: Any = None,
        batchnorm: str = "train",
    ) -> None:
        super().__init__()
        if batchnorm not in BATCHNORM_MODES:
            raise LandsightValueError(f"batchnorm must be one of {list(BATCHNORM_MODES)}, got {batchnorm!r}")
        if optimizer not in OPTIMIZERS:
            raise LandsightValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.model = model
        self._backbone_params = list(backbone_params)
        self._head_params = list(head_params)
        self.optimizer_name, self.lr, self.lr_schedule = optimizer, lr, lr_schedule
        self.backbone_lr_mult, self.momentum, self.weight_decay = backbone_lr_mult, momentum, weight_decay
        self.epochs, self.steps_per_epoch = epochs, max(1, steps_per_epoch)
        self.augment = augment
        self.batchnorm = batchnorm
        self.loss_fn = nn.CrossEntropyLoss()
        self._epoch_start = 0.0
        self._epoch_samples = 0
        self.epoch_lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped model."""
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        """Set train mode (frozen BatchNorm stays in eval) and start the epoch clock."""
        import time

        self.model.train()  # backbones arrive in eval mode; Lightning keeps per-module modes
        freeze_batchnorm_of_frozen(self.model, every=self.batchnorm == "frozen")
        self._epoch_start, self._epoch_samples = time.perf_counter(), 0
        self.epoch_lr = float(self.trainer.optimizers[0].param_groups[-1]["lr"])  # before the scheduler steps

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        if stage == "train" and self.augment is not None:
            x = self.augment(x)
        logits = self(x)
        loss = self.loss_fn(logits, y)
        error = (logits.argmax(1) != y).float().mean() * 100
        n = y.shape[0]
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}_error", error, on_step=False, on_epoch=True, sync_dist=True, batch_size=n, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Augment (if set), forward, log loss and error %."""
        self._epoch_samples += int(batch[1].shape[0]) * max(1, self.trainer.world_size)
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Forward held-out images, log loss and error %."""
        self._step(batch, "val")

    def epoch_throughput(self) -> tuple[float, float]:
        """Seconds since the current epoch started and training samples/s over all processes."""
        import time

        seconds = time.perf_counter() - self._epoch_start
        return seconds, self._epoch_samples / max(seconds, 1e-9)

    def configure_optimizers(self) -> Any:
        """Optimiser with head / backbone parameter groups and the chosen schedule."""
        lr0 = self.lr_schedule[0] if isinstance(self.lr_schedule, list) else self.lr
        groups = [{"params": self._head_params, "lr": lr0}]
        if self._backbone_params:
            groups.insert(0, {"params": self._backbone_params, "lr": lr0 * self.backbone_lr_mult})
        if self.optimizer_name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=lr0, momentum=self.momentum, weight_decay=self.weight_decay
            )
        else:
            opt = torch.optim.AdamW(groups, lr=lr0, weight_decay=self.weight_decay)
        schedule = self.lr_schedule
        if isinstance(schedule, list):
            values = schedule
            sched: Any = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: values[min(e, len(values) - 1)] / values[0])
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=[g["lr"] for g in groups],
                total_steps=self.epochs * self.steps_per_epoch,
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt


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
    check_bundle_out(out, overwrite=overwrite or resume)
    return ckpt_dir


def fit_module(
    module: Any,
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
) -> FitResult:
    """Train ``module`` with Lightning and load its best epoch's weights into ``module.model``.

    Args:
        module: A :class:`~landsight.models.fit.FinetuneModule` (or subclass) that logs
            ``val_error`` each epoch and holds the network as ``model``.
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

    Returns:
        A :class:`FitResult`.
    """
    from landsight.distributed import launched_externally

    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
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
