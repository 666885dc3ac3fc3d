"""Fit a landsight Lightning module: checkpoints every epoch, resume, DDP, per-epoch history.

The training machinery shared by fine-tuning (:mod:`landsight.finetune`) and segmentation
(:mod:`landsight.segment.train`): Lightning's ``ModelCheckpoint`` keeps ``last.ckpt`` and the
epoch with the lowest ``val_error`` as ``best.ckpt`` in the checkpoint folder,
:class:`~landsight.models.classifier.EpochHistory` appends ``history.jsonl``, ``resume=True``
continues from ``last.ckpt``, and ``devices * num_nodes > 1`` trains data-parallel (DDP:
``ddp_spawn`` on one machine, ``ddp`` when torchrun / SLURM started the processes; Lightning
gives each process its shard through a ``DistributedSampler``). Mixed precision on a GPU.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"


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
        :class:`~landsight.models.classifier.EpochHistory`).
    """
    rows: dict[int, dict[str, float]] = {}
    p = Path(path)
    if p.is_file():
        for line in p.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[int(row["epoch"])] = row
    return [rows[e] for e in sorted(rows)]


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
) -> FitResult:
    """Train ``module`` with Lightning and load its best epoch's weights into ``module.model``.

    Args:
        module: A :class:`~landsight.models.classifier.FinetuneModule` (or subclass) that logs
            ``val_error`` each epoch and holds the network as ``model``.
        train_loader: ``torch.utils.data.DataLoader`` of training batches (shuffled).
        val_loader: ``DataLoader`` of validation batches.
        ckpt_dir: Checkpoint folder; emptied first unless ``resume``.
        epochs: Epochs (>= 1).
        devices: Processes (CPU) or GPUs per node.
        num_nodes: Nodes.
        accelerator: ``"auto"``, ``"cpu"``, ``"gpu"`` or ``"cuda"``.
        resume: Continue from ``ckpt_dir/last.ckpt`` (the caller checks that it exists).
        progress: Lightning's progress bar.
        early_stopping: Stop after this many epochs without a lower ``val_error``.
        gradient_clip: Clip gradients to this norm.

    Returns:
        A :class:`FitResult`.
    """
    import lightning.pytorch as pl
    import torch

    from landsight.distributed import launched_externally
    from landsight.models.classifier import EpochHistory

    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val_error", mode="min", save_last=True, save_top_k=1
    )
    callbacks: list[Any] = [checkpoint, EpochHistory(ckpt_dir / HISTORY_FILE)]
    if early_stopping:
        callbacks.append(pl.callbacks.EarlyStopping(monitor="val_error", mode="min", patience=early_stopping))
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
        weights_only=False,  # landsight's own checkpoint from this run's folder, never a user's file
    )
    best_path = Path(checkpoint.best_model_path or ckpt_dir / "best.ckpt")
    state = torch.load(best_path, map_location="cpu", weights_only=True)
    module.model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    return FitResult(
        best_epoch=int(state.get("epoch", 0)),
        history=read_history(ckpt_dir / HISTORY_FILE),
        is_global_zero=trainer.is_global_zero,
    )
