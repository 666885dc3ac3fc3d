"""A task-neutral Lightning module: optimiser, schedule, BatchNorm handling, per-stage logging.

:class:`TaskModule` holds what every landsight training task shares (in the manner of
torchgeo's ``BaseTask``): head / backbone parameter groups with discriminative learning rates,
SGD or AdamW, the learning-rate schedule, BatchNorm layers kept in eval mode where frozen, the
epoch clock behind ``history.jsonl``'s ``samples_per_second`` and the logging of each stage's
loss and metrics. A task subclasses it and implements :meth:`TaskModule.step`, which maps a
batch dict to a loss and metric values; ``training_step``, ``validation_step`` and ``test_step``
call it with ``"train"``, ``"val"`` and ``"test"`` and log ``{stage}_{name}`` for each value.

Batches are dicts of tensors with an ``"image"`` entry (the model input, first axis the batch)
and the task's targets: ``"label"`` ``(N,)`` int64 class indices for classification
(:class:`landsight.classify.module.ClassificationModule`), ``"mask"`` ``(N, H, W)`` int64 for
segmentation (:class:`landsight.segment.train.SegmentationModule`).

:func:`landsight.models.fit.fit_module` trains any such module.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from landsight.errors import LandsightValueError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
BATCHNORM_MODES = ("train", "frozen")
BATCH_SIZE_KEY = "batch_size"
"""Key of :meth:`TaskModule.step`'s result that weighs the batch in the epoch means (not logged)."""


def freeze_batchnorm_of_frozen(module: nn.Module, *, every: bool = False) -> None:
    """Put every BatchNorm whose parameters are all frozen (or, with ``every``, all) into eval mode.

    Call after ``.train()``.

    Args:
        module: The network whose BatchNorm layers are visited.
        every: Put every BatchNorm into eval mode, learning or not.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if every or (params and not any(p.requires_grad for p in params)):
                m.eval()


class TaskModule(pl.LightningModule, ABC):
    """Base Lightning module of a training task; subclasses implement :meth:`step`.

    Logs, per stage and epoch, every value :meth:`step` returns as ``{stage}_{name}`` (``loss``
    first, then the metrics in the order returned; metrics other than the loss on the progress
    bar), averaged over the epoch's batches weighted by their size and over all processes.

    Args:
        model: The network, held as ``self.model`` (its weights are the checkpoint's ``model.*``
            keys and what :func:`landsight.models.fit.fit_module` loads back).
        backbone_params: Backbone (encoder) parameters that learn (empty when frozen).
        head_params: Parameters of the final layer (or decoder and head).
        optimizer: ``"sgd"`` (momentum SGD with L2 weight decay) or ``"adamw"``.
        lr: Head learning rate (the first value of an explicit schedule list).
        lr_schedule: ``"constant"``, ``"cosine"``, ``"onecycle"`` or a per-epoch list
            (:func:`landsight.models.fit.parse_lr_schedule`).
        backbone_lr_mult: Backbone learning rate = ``lr * backbone_lr_mult``.
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD) or decoupled weight decay (AdamW).
        epochs: Planned epochs (for cosine / one-cycle).
        steps_per_epoch: Optimiser steps per epoch (for one-cycle).
        batchnorm: ``"train"``: BatchNorm layers that learn normalise with batch statistics and
            update their running statistics; ``"frozen"``: every BatchNorm keeps its running
            statistics (eval mode) while its scale and shift still learn, so the features a
            head was fitted on stay the features it is trained on (used with a probe-initialised
            head; as detectron2's ``FrozenBatchNorm2d`` for small batches).

    Raises:
        LandsightValueError: Unknown ``optimizer`` or ``batchnorm``.
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
        self.batchnorm = batchnorm
        self._epoch_start = 0.0
        self._epoch_samples = 0
        self.epoch_lr = lr

    # --- the task ---------------------------------------------------------------------------

    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """Loss and metrics of one batch; what a task implements.

        Args:
            batch: The collated batch: ``"image"`` (the model input, first axis N) and the
                task's targets (``"label"`` ``(N,)`` int64, ``"mask"`` ``(N, H, W)`` int64, ...),
                already on the module's device.
            stage: ``"train"``, ``"val"`` or ``"test"`` (training-only augmentation, per-stage
                metric state).

        Returns:
            ``"loss"``: scalar float tensor (back-propagated in training); further entries:
            scalar metric tensors logged as ``{stage}_{name}`` (e.g. ``"error"`` in %); and
            optionally :data:`BATCH_SIZE_KEY`: the batch's weight in the epoch means (an int
            or scalar tensor, e.g. the counted pixels; default :meth:`batch_size`), not logged.
        """

    def batch_size(self, batch: dict[str, torch.Tensor]) -> int:
        """Samples in a batch: the first axis of ``batch["image"]``."""
        return int(batch["image"].shape[0])

    # --- Lightning hooks --------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the wrapped model (logits)."""
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        """Set train mode (frozen BatchNorm stays in eval) and start the epoch clock."""
        self.model.train()  # backbones arrive in eval mode; Lightning keeps per-module modes
        freeze_batchnorm_of_frozen(self.model, every=self.batchnorm == "frozen")
        self._epoch_start, self._epoch_samples = time.perf_counter(), 0
        self.epoch_lr = float(self.trainer.optimizers[0].param_groups[-1]["lr"])  # before the scheduler steps

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Run :meth:`step` on a training batch, log its values, return the loss."""
        self._epoch_samples += self.batch_size(batch) * max(1, self.trainer.world_size)
        return self._log_stage(batch, self.step(batch, "train"), "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Run :meth:`step` on a validation batch and log its values."""
        self._log_stage(batch, self.step(batch, "val"), "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Run :meth:`step` on a test batch and log its values."""
        self._log_stage(batch, self.step(batch, "test"), "test")

    def _log_stage(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """Log ``{stage}_loss`` and each metric of ``out`` as epoch means; return the loss."""
        if "loss" not in out:
            raise LandsightValueError(f"{type(self).__name__}.step must return a 'loss', got {sorted(out)!r}")
        weight = out.get(BATCH_SIZE_KEY)
        n = self.batch_size(batch) if weight is None else int(weight)
        names = ["loss", *(k for k in out if k not in ("loss", BATCH_SIZE_KEY))]
        for name in names:
            self.log(f"{stage}_{name}", out[name], on_step=False, on_epoch=True, sync_dist=True, batch_size=n,
                     prog_bar=name != "loss")  # fmt: skip
        return out["loss"]

    def epoch_throughput(self) -> tuple[float, float]:
        """Seconds since the current epoch started and training samples/s over all processes."""
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
