"""Train a segmentation network on raster pairs and write a segmentation bundle.

The training loop is the fine-tuning machinery (:func:`landsight.models.fit.fit_module`, shared
with :mod:`landsight.classify.finetune`): :class:`~landsight.models.fit.FinetuneModule`
(optimisers, schedules, discriminative learning rates: encoder at ``lr * backbone_lr_mult``),
:class:`~landsight.models.fit.EpochHistory` (per-epoch ``history.jsonl``), Lightning
checkpoints every epoch in ``<out>.checkpoints/`` (``resume=True`` continues), DDP over
``devices`` processes (``ddp_spawn`` on one machine, ``ddp`` under torchrun / SLURM; Lightning's
``DistributedSampler`` gives each process its own shard of the chips) and an MLflow run with
per-epoch metrics (:mod:`landsight.tracking`). Only the loss differs: cross-entropy on raw logits
with the ignore index (unknown / nodata / outside the ``context`` centre never count), and error
% over the counted pixels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landsight.bundle import BUNDLE_FILE
from landsight.errors import LandsightValueError
from landsight.models.fit import FinetuneModule
from landsight.outputs import write_json
from landsight.segment.classmap import IGNORE_INDEX


class SegmentationModule(FinetuneModule):
    """:class:`~landsight.models.fit.FinetuneModule` with a per-pixel loss.

    Batches are ``(x, y)``: float32 ``(N, C, H, W)`` raw band values and int64 ``(N, H, W)``
    class indices; pixels equal to :data:`IGNORE_INDEX` are left out of the loss and the error.
    Keyword arguments are those of ``FinetuneModule``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        counted = y != IGNORE_INDEX
        n_counted = counted.sum()
        # A batch of ignored pixels only gives a zero loss (CrossEntropyLoss would give NaN).
        loss = self.loss_fn(logits, y) if n_counted > 0 else logits.sum() * 0.0
        error = ((logits.argmax(1) != y) & counted).sum().float() * 100 / n_counted.clamp(min=1)
        n = int(n_counted.item()) or 1
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}_error", error, on_step=False, on_epoch=True, sync_dist=True, batch_size=n, prog_bar=True)
        return loss


@dataclass
class SegmentTrainResult:
    """What :func:`train_segmentation` produced.

    Attributes:
        bundle_path: The bundle folder.
        history: One dict per epoch (``train_loss``, ``train_error`` %, ``val_loss``,
            ``val_error`` %, ``epoch_seconds``, ``samples_per_second`` (chips/s), ``lr``).
        metrics: Validation metrics of the best epoch over whole validation rasters
            (:func:`landsight.segment.evaluate.evaluate_segmentation`).
        best_epoch: Epoch (0-based) whose weights were bundled.
        skipped: ``(path, reason)`` of unpaired or unreadable rasters.
        run_id: MLflow run id ("" when tracking is off).
    """

    bundle_path: Path
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    best_epoch: int
    skipped: list[tuple[str, str]]
    run_id: str = ""


def train_segmentation(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    classes: str | Path | dict[str, Any] = "chesapeake",
    out: str | Path = "landcover.landsight",
    bands: Sequence[int] | None = None,
    arch: str = "unet",
    encoder: str = "tf_efficientnet_lite0",
    weights: str | Path | None = "imagenet",
    decoder_channels: Sequence[int] | None = None,
    epochs: int = 20,
    chip_size: int = 256,
    chips_per_epoch: int = 512,
    val_chips: int = 64,
    batch_size: int = 8,
    context: int | None = None,
    oversample: float = 0.0,
    augment: bool = True,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    lr_schedule: str = "cosine",
    backbone_lr_mult: float = 1.0,
    weight_decay: float = 1e-4,
    val_size: float = 0.2,
    random_state: int = 0,
    devices: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    num_workers: int = 0,
    resume: bool = False,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
) -> SegmentTrainResult:
    """Train a U-Net (or DeepLabV3+) on image / label raster pairs; write a segmentation bundle.

    Args:
        images: Glob pattern of image rasters, or a CSV of pairs (``image,label``).
        labels: Glob pattern of label rasters (codes or RGB colour masks); ``None`` with a CSV.
        classes: Class map YAML, built-in name (``"chesapeake"``, ``"dubai"``) or dict.
        out: Bundle folder; checkpoints go to ``<out>.checkpoints/``.
        bands: 1-based image bands (``None`` = all bands of the first raster).
        arch: ``"unet"`` or ``"deeplabv3plus"``.
        encoder: timm encoder name.
        weights: ``"imagenet"``, a weights file, or ``None`` (random, explicit).
        decoder_channels: U-Net decoder widths (default smp's).
        epochs: Epochs (>= 1).
        chip_size: Chip side in pixels (multiple of 32).
        chips_per_epoch: Training chips per epoch (over all processes).
        val_chips: Validation chips per epoch (fixed positions).
        batch_size: Chips per step and process.
        context: Loss only on the centre ``context x context`` pixels (the seed: 256 -> 128).
        oversample: Fraction of chips centred on rare classes (0..1).
        augment: Random flips and 90-degree rotations.
        optimizer: ``"adamw"`` or ``"sgd"``.
        lr: Learning rate of the decoder and head.
        lr_schedule: ``"constant"``, ``"cosine"``, ``"onecycle"`` or a per-epoch list.
        backbone_lr_mult: Encoder learning rate factor.
        weight_decay: Weight decay.
        val_size: Fraction of pairs held out for validation (whole rasters).
        random_state: Seed of the split, initialisation and validation chips.
        devices: Processes (CPU) or GPUs per node; > 1 trains with DDP.
        num_nodes: Nodes.
        accelerator: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        num_workers: DataLoader workers per process.
        resume: Continue from ``<out>.checkpoints/last.ckpt``.
        progress: Progress bars.
        tracking_uri: MLflow store.
        track: Record an MLflow run.
        overwrite: Start over: replace an existing bundle at ``out`` (whole) and the checkpoints
            of an earlier run. Without it (or ``resume``) either one existing is refused.

    Returns:
        A :class:`SegmentTrainResult`.

    Raises:
        LandsightValueError: Bad parameters or band counts; resume without a checkpoint.
        OutputExistsError: ``out`` or its checkpoints exist and neither ``overwrite`` nor ``resume``
            is set.
        DataNotFoundError: No raster matches.
        WeightsUnavailableError: The encoder's weights cannot be had.
    """
    from landsight.models.fit import check_run_outputs
    from landsight.tracking import tracked_run

    if epochs < 1 or batch_size < 1 or devices < 1 or num_nodes < 1:
        raise LandsightValueError(
            f"epochs, batch_size, devices and num_nodes must be >= 1, got {epochs!r}, {batch_size!r}, "
            f"{devices!r}, {num_nodes!r}"
        )
    if chip_size % 32:
        raise LandsightValueError(f"chip_size must be a multiple of 32 (the encoder's stride), got {chip_size!r}")
    ckpt_dir = check_run_outputs(out, resume=resume, overwrite=overwrite)
    params = {
        "images": str(images), "labels": str(labels), "classes": "dict" if isinstance(classes, dict) else str(classes),
        "bands": bands, "arch": arch, "encoder": encoder, "weights": weights, "epochs": epochs, "chip_size": chip_size,
        "chips_per_epoch": chips_per_epoch, "batch_size": batch_size, "context": context, "oversample": oversample,
        "augment": augment, "optimizer": optimizer, "lr": lr, "lr_schedule": lr_schedule,
        "backbone_lr_mult": backbone_lr_mult, "weight_decay": weight_decay, "val_size": val_size,
        "random_state": random_state, "devices": devices, "num_nodes": num_nodes, "out": str(out),
    }  # fmt: skip
    started = time.perf_counter()
    with tracked_run("segment-train", params, tracking_uri=tracking_uri, enabled=track) as run:
        result = _train(
            images, labels, classes=classes, out=Path(out), ckpt_dir=ckpt_dir, bands=bands, arch=arch,
            encoder=encoder, weights=weights, decoder_channels=decoder_channels, epochs=epochs, chip_size=chip_size,
            chips_per_epoch=chips_per_epoch, val_chips=val_chips, batch_size=batch_size, context=context,
            oversample=oversample, augment=augment, optimizer=optimizer, lr=lr, lr_schedule=lr_schedule,
            backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay, val_size=val_size,
            random_state=random_state, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
            num_workers=num_workers, resume=resume, progress=progress,
        )  # fmt: skip
        for row in result.history:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        run.log_metrics({f"val_{k}": v for k, v in result.metrics.items() if isinstance(v, float)})
        run.log_metrics({"best_epoch": result.best_epoch, "duration_seconds": time.perf_counter() - started})
        run.log_artifact(result.bundle_path, "bundle")
        result.run_id = run.run_id
    return result


def _train(
    images: str | Path,
    labels: str | Path | None,
    *,
    classes: str | Path | dict[str, Any],
    out: Path,
    ckpt_dir: Path,
    bands: Sequence[int] | None,
    arch: str,
    encoder: str,
    weights: str | Path | None,
    decoder_channels: Sequence[int] | None,
    epochs: int,
    chip_size: int,
    chips_per_epoch: int,
    val_chips: int,
    batch_size: int,
    context: int | None,
    oversample: float,
    augment: bool,
    optimizer: str,
    lr: float,
    lr_schedule: str,
    backbone_lr_mult: float,
    weight_decay: float,
    val_size: float,
    random_state: int,
    devices: int,
    num_nodes: int,
    accelerator: str,
    num_workers: int,
    resume: bool,
    progress: bool,
) -> SegmentTrainResult:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from landsight.models.fit import fit_module, parse_lr_schedule, steps_per_epoch
    from landsight.segment.chips import ChipDataset
    from landsight.segment.classmap import load_class_map
    from landsight.segment.model import build_model, encoder_parameters
    from landsight.segment.pairs import pair_rasters, split_pairs
    from landsight.segment.raster import open_raster, raster_bands
    from landsight.segment.stats import band_stats

    started = time.perf_counter()
    schedule = parse_lr_schedule(lr_schedule)
    class_map = load_class_map(classes)
    found = pair_rasters(images, labels)
    with open_raster(found.pairs[0].image) as src:
        band_list = raster_bands(src, bands)
    train_pairs, val_pairs = split_pairs(found.pairs, val_size, random_state)
    stats = band_stats([p.image for p in train_pairs], band_list, progress=progress)
    pl.seed_everything(random_state, workers=True, verbose=False)
    model, source = build_model(
        num_classes=class_map.num_classes, in_chans=len(band_list), mean=stats.mean, std=stats.std, arch=arch,
        encoder=encoder, weights=weights, decoder_channels=decoder_channels,
    )  # fmt: skip
    train_set = ChipDataset(train_pairs, class_map, bands=band_list, chip_size=chip_size, length=chips_per_epoch,
                            context=context, oversample=oversample, augment=augment)  # fmt: skip
    val_set = ChipDataset(val_pairs, class_map, bands=band_list, chip_size=chip_size, length=val_chips,
                          context=context, random_state=random_state)  # fmt: skip
    encoder_params, head_params = encoder_parameters(model)
    world = devices * num_nodes
    module = SegmentationModule(
        model, encoder_params, head_params, optimizer=optimizer, lr=lr, lr_schedule=schedule,
        backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay, epochs=epochs,
        steps_per_epoch=steps_per_epoch(chips_per_epoch, batch_size, world),
    )  # fmt: skip
    loader_args: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers,
                                   "persistent_workers": num_workers > 0}  # fmt: skip
    fitted = fit_module(
        module,
        DataLoader(train_set, shuffle=True, **loader_args),
        DataLoader(val_set, shuffle=False, **loader_args),
        ckpt_dir=ckpt_dir, epochs=epochs, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
        resume=resume, progress=progress,
    )  # fmt: skip
    history, best_epoch = fitted.history, fitted.best_epoch
    if not fitted.is_global_zero:  # torchrun / SLURM: rank 0 writes the bundle and evaluates
        return SegmentTrainResult(out, history, {}, best_epoch, found.skipped)
    meta = {
        "class_map": class_map.to_dict(), "bands": band_list, "band_stats": stats.to_dict(), "chip_size": chip_size,
        "context": context,
        "network": {"arch": arch, "encoder": encoder, "weights": source,
                    "decoder_channels": list(decoder_channels) if decoder_channels else None},
        "training": {"best_epoch": best_epoch, "history": history, "epochs": epochs,
                     "chips_per_epoch": chips_per_epoch, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                     "lr_schedule": lr_schedule, "oversample": oversample, "augment": augment, "devices": devices,
                     "seconds": round(time.perf_counter() - started, 2)},
        "data": {"images": str(images), "labels": str(labels), "train": [p.image for p in train_pairs],
                 "val": [p.image for p in val_pairs], "n_skipped": len(found.skipped)},
    }  # fmt: skip
    from landsight.bundle import staged_bundle
    from landsight.segment.evaluate import evaluate_segmentation

    with staged_bundle(out, overwrite=True) as stage:  # permission to replace was checked before training
        bundle = write_segmentation_bundle(stage, model, meta, skipped=found.skipped)
        metrics = evaluate_segmentation(bundle, val_pairs, progress=False, write_to=stage)
        bundle.meta["metrics"] = {k: metrics[k] for k in ("pixel_accuracy", "mean_iou", "n_pixels")}
        write_json(stage / BUNDLE_FILE, bundle.meta)
    return SegmentTrainResult(out, history, metrics, best_epoch, found.skipped)


def write_segmentation_bundle(
    out: str | Path, model: torch.nn.Module, meta: dict[str, Any], *, skipped: Sequence[tuple[str, str]] = ()
) -> Any:
    """Export a segmentation network to ONNX, its weights to safetensors, and write ``bundle.json``.

    ``task = "segmentation"``; ``weights.safetensors`` holds the network's state dict so training
    can continue from the bundle (prediction uses the ONNX graph only).

    Args:
        out: Bundle folder.
        model: Network mapping float32 ``(N, C, H, W)`` raw band values to ``(N, K, H, W)`` logits
            (a :class:`~landsight.segment.model.SegmentationNet`, or any such module).
        meta: Must hold ``class_map``, ``bands``, ``band_stats``, ``chip_size`` and ``context``.
        skipped: ``(path, reason)`` written to ``skipped.csv``.

    Returns:
        The loaded :class:`~landsight.segment.bundle.SegmentationBundle`.

    Raises:
        LandsightValueError: ``meta`` lacks a required entry.
    """
    from landsight.bundle import MODEL_FILE, WEIGHTS_FILE, write_bundle, write_skipped
    from landsight.segment.bundle import TASK, SegmentationBundle, model_io
    from landsight.segment.model import export_segmentation_onnx

    missing = [k for k in ("class_map", "bands", "band_stats", "chip_size", "context") if k not in meta]
    if missing:
        raise LandsightValueError(f"segmentation bundle metadata lacks {missing!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export_segmentation_onnx(model, len(meta["bands"]), out / MODEL_FILE)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    write_bundle(out, model=None, meta={"task": TASK, "model": model_io(len(meta["bands"])), "metrics": {}, **meta})
    write_skipped(out, skipped)
    return SegmentationBundle(out, json.loads((out / BUNDLE_FILE).read_text()))
