"""A fine-tunable image classifier: pretrained backbone + a new final layer, at a retraining depth.

Retraining depth (the seeds' CNTK ``last_only`` / ``fully_connected`` / ``all``):

* ``last``: only the new final linear layer learns; the backbone is frozen.
* ``fc``: the fully connected block and the new final layer. Networks that have one keep its
  name: torchvision AlexNet's ``classifier`` (fc6, fc7). Networks without one (ResNet,
  EfficientNet, ConvNeXt, most timm models) train their **last stage and everything after it**
  (the head convolution and its norm) plus the final layer: timm's ``feature_info[-1]`` stage
  (``layer4`` of ResNet, ``blocks.6`` + ``conv_head`` + ``bn2`` of EfficientNet-Lite),
  torchvision ResNet's ``layer4``.
* ``all``: every layer; the backbone learns at ``lr * backbone_lr_mult`` (discriminative
  learning rates, Howard & Ruder, ULMFiT, ACL 2018), the final layer at ``lr``.

BatchNorm layers of frozen parts stay in eval mode, so their running statistics do not drift.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from landsight.errors import LandsightValueError
from landsight.models.backbones import Backbone

RETRAIN_DEPTHS = ("last", "fc", "all")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


def parse_lr_schedule(spec: str) -> list[float] | str:
    """Parse a learning-rate schedule.

    Args:
        spec: ``"constant"``, ``"cosine"``, ``"onecycle"``, or an explicit per-epoch list such as
            ``"0.2*10,0.1"`` (the seeds' ``[0.2]*10 + [0.1]``; ``v*n`` repeats ``v`` n times).
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


def fc_block_prefix(model: nn.Module) -> str:
    """Name of the module where the ``fc`` retraining depth starts (see the module docstring).

    Args:
        model: A timm or torchvision backbone.

    Returns:
        Parameter-name prefix; it and every parameter after it are trained at depth ``fc``.

    Raises:
        LandsightValueError: The architecture has neither a classifier block nor stages.
    """
    if isinstance(getattr(model, "classifier", None), nn.Sequential) and any(
        isinstance(m, nn.Linear) for m in model.classifier
    ):
        return "classifier"
    info = getattr(model, "feature_info", None)
    if info is not None:
        entry = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return str(entry["module"])
    if hasattr(model, "layer4"):
        return "layer4"
    raise LandsightValueError(
        f"cannot find the fully connected block or last stage of {type(model).__name__}; use retrain='last' or 'all'"
    )


class ImageClassifier(nn.Module):
    """Backbone + final linear layer, taking the resized uint8 image.

    Args:
        backbone: A :class:`landsight.models.backbones.Backbone`.
        num_classes: Output classes K.

    Input ``(N, H, W, C)`` uint8; output ``(N, K)`` logits.
    """

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.features = backbone.input_module()  # normalisation + network, pooled features
        self.fc = nn.Linear(backbone.num_features, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` uint8 -> ``(N, K)`` logits."""
        return self.fc(self.features(image))


class Probabilities(nn.Module):
    """Softmax over a classifier's logits: the graph exported into the bundle."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` uint8 -> ``(N, K)`` probabilities."""
        return torch.softmax(self.classifier(image), dim=1)


def trainable_parameters(classifier: ImageClassifier, retrain: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Freeze according to ``retrain``; return (backbone parameters that learn, final-layer parameters).

    Raises:
        LandsightValueError: Unknown ``retrain``.
    """
    if retrain not in RETRAIN_DEPTHS:
        raise LandsightValueError(f"retrain must be one of {list(RETRAIN_DEPTHS)}, got {retrain!r}")
    net = classifier.features.net
    names = [n for n, _ in net.named_parameters()]
    if retrain == "all":
        start = 0
    elif retrain == "fc":
        prefix = fc_block_prefix(net)
        start = next(i for i, n in enumerate(names) if re.match(rf"{re.escape(prefix)}(\.|$)", n))
    else:
        start = len(names)
    learn = []
    for i, (_, p) in enumerate(net.named_parameters()):
        p.requires_grad_(i >= start)
        if i >= start:
            learn.append(p)
    return learn, list(classifier.fc.parameters())


def freeze_batchnorm_of_frozen(module: nn.Module) -> None:
    """Put every BatchNorm whose parameters are all frozen into eval mode (call after ``.train()``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


class FinetuneModule(pl.LightningModule):
    """Lightning module for fine-tuning; logs per-epoch training / validation loss and error %.

    Args:
        model: The network; ``(N, ...)`` input -> ``(N, K)`` logits. For cached-feature ``last``
            training this is the final layer alone, taking ``(N, D)`` features.
        backbone_params: Backbone parameters that learn (empty for ``last``).
        head_params: Final-layer parameters.
        optimizer: ``"sgd"`` (momentum SGD with L2 weight decay, as the seeds) or ``"adamw"``.
        lr: Final-layer learning rate (the first value of an explicit schedule list).
        lr_schedule: ``"constant"``, ``"cosine"``, ``"onecycle"`` or a per-epoch list.
        backbone_lr_mult: Backbone learning rate = ``lr * backbone_lr_mult``.
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD) or decoupled weight decay (AdamW).
        epochs: Planned epochs (for cosine / one-cycle).
        steps_per_epoch: Optimiser steps per epoch (for one-cycle).
        augment: A callable applied to each training batch on the device, or ``None``.
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
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise LandsightValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.model = model
        self._backbone_params = list(backbone_params)
        self._head_params = list(head_params)
        self.optimizer_name, self.lr, self.lr_schedule = optimizer, lr, lr_schedule
        self.backbone_lr_mult, self.momentum, self.weight_decay = backbone_lr_mult, momentum, weight_decay
        self.epochs, self.steps_per_epoch = epochs, max(1, steps_per_epoch)
        self.augment = augment
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
        freeze_batchnorm_of_frozen(self.model)
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
