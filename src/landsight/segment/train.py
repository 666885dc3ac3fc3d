"""Train a segmentation network on raster pairs and write a segmentation bundle.

The training loop is the fine-tuning machinery (:func:`landsight.models.fit.fit_module`, shared
with :mod:`landsight.classify.finetune`): :class:`~landsight.models.task.TaskModule`
(optimisers, schedules, discriminative learning rates: encoder at ``lr * backbone_lr_mult``),
:class:`~landsight.models.fit.EpochHistory` (per-epoch ``history.jsonl``), Lightning
checkpoints every epoch in ``<out>.checkpoints/`` (``resume=True`` continues), DDP over
``devices`` processes (``ddp_spawn`` on one machine, ``ddp`` under torchrun / SLURM; Lightning's
``DistributedSampler`` gives each process its own shard of the chips) and an MLflow run with
per-epoch metrics (:mod:`landsight.tracking`). What differs is the loss and the epoch kept:

* ``loss``: cross-entropy on raw logits with the ignore index (unknown / nodata / outside the
  ``context`` centre never count), optionally class-weighted (weights ``(n / n_k) ** 0.5`` from
  the training labels' pixel counts, normalised to a pixel-weighted mean of 1, capped at 10) and
  optionally plus the soft Dice loss of segmentation_models_pytorch (Milletari et al., 3DV 2016;
  ``smp.losses.DiceLoss``, multiclass, same ignore index), which weighs every class present in a
  batch equally whatever its pixel count.
* the bundled epoch is the one with the highest validation mean IoU (``val_miou``, over the
  classes present in the validation chips' labels or predictions, from a confusion matrix summed
  over all processes), and ``early_stopping`` stops after that many epochs without a better one.
* ``aux_rasters``: a categorical raster per image (e.g. low-resolution NLCD, Robinson et al.,
  CVPR 2019) one-hot encoded as extra input channels (:mod:`landsight.segment.auxiliary`).

References:
    Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015. Iakubovskii, segmentation_models_pytorch (losses). Robinson et
    al., "Large Scale High-Resolution Land Cover Mapping with Multi-Resolution Data", CVPR 2019.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landsight.bundle import BUNDLE_FILE
from landsight.errors import LandsightValueError
from landsight.models.task import BATCH_SIZE_KEY, TaskModule
from landsight.outputs import write_json
from landsight.recipe import run_params
from landsight.segment.classmap import IGNORE_INDEX

LOSSES = ("ce", "weighted_ce", "ce+dice", "weighted_ce+dice")
"""Training losses: cross-entropy, class-weighted cross-entropy, either plus soft Dice."""


def class_weights(counts: Sequence[int] | np.ndarray, *, power: float = 0.5, cap: float = 10.0) -> np.ndarray:
    """Class weights for cross-entropy from labelled pixel counts.

    Args:
        counts: ``(K,)`` labelled pixels per class in the training rasters.
        power: Weight ``(total / count) ** power`` (0.5: inverse square root of the frequency,
            milder than inverse frequency, which over-weights a class of a few hundred pixels).
        cap: Largest weight relative to the pixel-weighted mean of 1; absent classes get it.

    Returns:
        ``(K,)`` float32 weights whose mean over the labelled pixels is 1 (before the cap).
    """
    n = np.asarray(counts, dtype=np.float64)
    total = n.sum()
    if total <= 0:
        return np.ones(len(n), dtype=np.float32)
    w = np.where(n > 0, (total / np.maximum(n, 1)) ** power, 0.0)
    w = w / max((w * n).sum() / total, 1e-12)
    w = np.where(n > 0, np.minimum(w, cap), cap)
    return w.astype(np.float32)


class SegmentationModule(TaskModule):
    """:class:`~landsight.models.task.TaskModule` with a per-pixel loss and validation mean IoU.

    Batches are ``{"image": x, "mask": y}``: float32 ``(N, C, H, W)`` raw band values and int64
    ``(N, H, W)`` class indices; pixels equal to :data:`IGNORE_INDEX` are left out of the loss,
    the error and the IoU. Logs ``{stage}_loss``, ``{stage}_error`` (%, both averaged over the
    counted pixels) and, per validation epoch, ``val_miou``.

    Args:
        *args: Positional arguments of ``TaskModule`` (model, encoder and head parameters).
        num_classes: K (for the validation confusion matrix).
        loss: One of :data:`LOSSES`.
        weights: ``(K,)`` cross-entropy class weights (the ``weighted_*`` losses; see
            :func:`class_weights`).
        **kwargs: Keyword arguments of ``TaskModule``.

    Raises:
        LandsightValueError: Unknown loss, or a weighted loss without weights.
    """

    def __init__(
        self, *args: Any, num_classes: int = 0, loss: str = "ce", weights: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        if loss not in LOSSES:
            raise LandsightValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
        weight = None
        if loss.startswith("weighted"):
            if weights is None:
                raise LandsightValueError(f"loss {loss!r} needs class weights")
            weight = torch.tensor(list(weights), dtype=torch.float32)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)
        self.dice_fn: Any = None
        if loss.endswith("+dice"):
            from segmentation_models_pytorch.losses import DiceLoss

            self.dice_fn = DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE_INDEX)
        self.num_classes = int(num_classes)
        self._confusion: torch.Tensor | None = None

    def on_validation_epoch_start(self) -> None:
        """Start the epoch's validation confusion matrix."""
        self._confusion = None

    def on_validation_epoch_end(self) -> None:
        """Log ``val_miou``: mean IoU over classes present in labels or predictions, all processes."""
        k = self.num_classes
        if not k:
            return
        conf = self._confusion if self._confusion is not None else torch.zeros(k * k, device=self.device)
        conf = self.trainer.strategy.reduce(conf.float(), reduce_op="sum").view(k, k)
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        present = union > 0
        miou = (tp[present] / union[present]).mean() if bool(present.any()) else torch.tensor(0.0)
        self.log("val_miou", miou.float(), on_step=False, on_epoch=True, sync_dist=False, prog_bar=True)

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """Per-pixel loss and error % of a batch; in validation, add to the confusion matrix.

        Args:
            batch: ``"image"`` float32 ``(N, C, H, W)`` and ``"mask"`` int64 ``(N, H, W)``.
            stage: ``"train"``, ``"val"`` (confusion matrix for ``val_miou``) or ``"test"``.

        Returns:
            ``{"loss", "error", "batch_size"}``: scalar loss, scalar error in % of the counted
            pixels, and the counted pixels (at least 1), which weigh the batch in the epoch means.
        """
        x, y = batch["image"], batch["mask"]
        logits = self(x)
        counted = y != IGNORE_INDEX
        n_counted = counted.sum()
        # A batch of ignored pixels only gives a zero loss (CrossEntropyLoss would give NaN).
        if n_counted > 0:
            loss = self.loss_fn(logits, y)
            if self.dice_fn is not None:
                loss = loss + self.dice_fn(logits, y)
        else:
            loss = logits.sum() * 0.0
        pred = logits.argmax(1)
        error = ((pred != y) & counted).sum().float() * 100 / n_counted.clamp(min=1)
        if stage == "val" and self.num_classes:
            k = self.num_classes
            counts = torch.bincount(y[counted] * k + pred[counted], minlength=k * k)
            self._confusion = counts if self._confusion is None else self._confusion + counts
        return {"loss": loss, "error": error, BATCH_SIZE_KEY: n_counted.clamp(min=1)}


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
    epochs: int = 8,
    chip_size: int = 128,
    chips_per_epoch: int = 128,
    val_chips: int = 16,
    batch_size: int = 8,
    context: int | None = None,
    oversample: float = 0.25,
    augment: bool = True,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    lr_schedule: str = "cosine",
    backbone_lr_mult: float = 1.0,
    weight_decay: float = 1e-4,
    val_size: float = 0.2,
    random_state: int = 0,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    num_workers: int = 0,
    resume: bool = False,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
    loss: str = "weighted_ce+dice",
    early_stopping: int | None = None,
    aux_rasters: str | None = None,
    label_field: str | None = None,
) -> SegmentTrainResult:
    """Train a U-Net (or DeepLabV3+) on image / label raster pairs; write a segmentation bundle.

    Args:
        images: Glob pattern of image rasters, or a CSV of pairs (``image,label``).
        labels: Glob of label rasters (codes / RGB masks; ``None`` with a CSV) or a polygon vector file.
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
        split: How validation rasters are held out: ``"random"``, ``"spatial"`` (georeferenced
            rasters grouped in square blocks of ``block_size`` CRS units) or ``"group"`` (whole
            groups of ``group``); see :func:`landsight.segment.pairs.split_pairs`. Recorded in
            ``bundle.json`` ``data.split``.
        block_size: ``split="spatial"``: block side in CRS units (``None`` = from the extent).
        group: ``split="group"``: ``"regex:PATTERN"`` searched in each image path.
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
        loss: ``"ce"``, ``"weighted_ce"``, ``"ce+dice"`` or ``"weighted_ce+dice"`` (see the
            module docstring).
        early_stopping: Stop after this many epochs without a better validation mean IoU
            (``None``: run all ``epochs``; the best epoch is bundled either way).
        aux_rasters: Path template of each image's auxiliary categorical raster, e.g.
            ``"{dir}/../nlcd/{stem}_nlcd.tif"`` (fields ``{stem}``, ``{name}``, ``{dir}`` of the
            image path), one-hot encoded as extra input channels over the codes of the training
            rasters (:mod:`landsight.segment.auxiliary`); prediction then needs the same kind of
            raster. ``None``: image bands only.
        label_field: Vector ``labels``: the attribute of class names or label codes.

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
    if loss not in LOSSES:
        raise LandsightValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if early_stopping is not None and early_stopping < 1:
        raise LandsightValueError(f"early_stopping must be >= 1 epochs (or None), got {early_stopping!r}")
    ckpt_dir = check_run_outputs(out, resume=resume, overwrite=overwrite)
    params = run_params(
        train_segmentation, locals(),
        exclude=("progress", "track", "tracking_uri", "overwrite", "resume", "num_workers", "val_chips"),
    )
    started = time.perf_counter()
    with tracked_run("segment-train", params, tracking_uri=tracking_uri, enabled=track) as run:
        result = _train(
            images, labels, classes=classes, out=Path(out), ckpt_dir=ckpt_dir, bands=bands, arch=arch,
            encoder=encoder, weights=weights, decoder_channels=decoder_channels, epochs=epochs, chip_size=chip_size,
            chips_per_epoch=chips_per_epoch, val_chips=val_chips, batch_size=batch_size, context=context,
            oversample=oversample, augment=augment, optimizer=optimizer, lr=lr, lr_schedule=lr_schedule,
            backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay, val_size=val_size,
            random_state=random_state, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
            num_workers=num_workers, resume=resume, progress=progress, loss=loss, early_stopping=early_stopping,
            aux_rasters=aux_rasters, split=split, block_size=block_size,
            group=group, label_field=label_field,
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
    loss: str = "ce",
    early_stopping: int | None = None,
    aux_rasters: str | None = None,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
    label_field: str | None = None,
) -> SegmentTrainResult:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from landsight.models.fit import data_fingerprint, fit_module, parse_lr_schedule, steps_per_epoch
    from landsight.segment.auxiliary import AuxSpec, aux_path, scan_codes
    from landsight.segment.chips import ChipDataset, class_pixels
    from landsight.segment.classmap import load_class_map
    from landsight.segment.model import build_model, encoder_parameters
    from landsight.segment.pairs import pair_rasters, split_pairs_info
    from landsight.segment.raster import open_raster, raster_bands
    from landsight.segment.stats import band_stats

    started = time.perf_counter()
    schedule = parse_lr_schedule(lr_schedule)
    class_map = load_class_map(classes)
    found = pair_rasters(images, labels, label_field=label_field, class_map=class_map)
    with open_raster(found.pairs[0].image) as src:
        band_list = raster_bands(src, bands)
    train_pairs, val_pairs, split_info = split_pairs_info(
        found.pairs, val_size, random_state, split=split, block_size=block_size, group=group
    )
    stats = band_stats([p.image for p in train_pairs], band_list, progress=progress)
    aux = None
    mean, std = list(stats.mean), list(stats.std)
    if aux_rasters:
        aux = AuxSpec(str(aux_rasters), scan_codes([aux_path(str(aux_rasters), p.image) for p in train_pairs]))
        mean, std = mean + [0.0] * aux.channels, std + [1.0] * aux.channels  # one-hot channels as they are
    counts = class_pixels(train_pairs, class_map) if loss.startswith("weighted") else None
    pl.seed_everything(random_state, workers=True, verbose=False)
    model, source = build_model(
        num_classes=class_map.num_classes, in_chans=len(mean), mean=mean, std=std, arch=arch,
        encoder=encoder, weights=weights, decoder_channels=decoder_channels,
    )  # fmt: skip
    train_set = ChipDataset(train_pairs, class_map, bands=band_list, chip_size=chip_size, length=chips_per_epoch,
                            context=context, oversample=oversample, augment=augment, aux=aux)  # fmt: skip
    val_set = ChipDataset(val_pairs, class_map, bands=band_list, chip_size=chip_size, length=val_chips,
                          context=context, random_state=random_state, aux=aux)  # fmt: skip
    encoder_params, head_params = encoder_parameters(model)
    world = devices * num_nodes
    module = SegmentationModule(
        model, encoder_params, head_params, optimizer=optimizer, lr=lr, lr_schedule=schedule,
        backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay, epochs=epochs,
        steps_per_epoch=steps_per_epoch(chips_per_epoch, batch_size, world), num_classes=class_map.num_classes,
        loss=loss, weights=None if counts is None else class_weights(counts).tolist(),
    )  # fmt: skip
    loader_args: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers,
                                   "persistent_workers": num_workers > 0}  # fmt: skip
    fitted = fit_module(
        module,
        DataLoader(train_set, shuffle=True, **loader_args),
        DataLoader(val_set, shuffle=False, **loader_args),
        ckpt_dir=ckpt_dir, epochs=epochs, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
        resume=resume, progress=progress, early_stopping=early_stopping, monitor="val_miou", mode="max",
        identity={"task": "segmentation", "backbone": f"{arch}:{encoder}", "bands": list(band_list or []),
                  "classes": class_map.names, "aux_rasters": aux_rasters,
                  "data": data_fingerprint((q.image, str(q.label)) for q in [*train_pairs, *val_pairs])},
    )  # fmt: skip
    history, best_epoch = fitted.history, fitted.best_epoch
    if not fitted.is_global_zero:  # torchrun / SLURM: rank 0 writes the bundle and evaluates
        return SegmentTrainResult(out, history, {}, best_epoch, found.skipped)
    meta = {
        "class_map": class_map.to_dict(), "bands": band_list, "band_stats": stats.to_dict(), "chip_size": chip_size,
        "context": context, "aux": None if aux is None else aux.to_dict(),
        "network": {"arch": arch, "encoder": encoder, "weights": source,
                    "decoder_channels": list(decoder_channels) if decoder_channels else None},
        "training": {"best_epoch": best_epoch, "history": history, "epochs": epochs,
                     "chips_per_epoch": chips_per_epoch, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                     "lr_schedule": lr_schedule, "oversample": oversample, "augment": augment, "devices": devices,
                     "loss": loss, "early_stopping": early_stopping,
                     "class_weights": None if counts is None else class_weights(counts).tolist(),
                     "seconds": round(time.perf_counter() - started, 2)},
        "data": {"images": str(images), "labels": str(labels), "train": [p.image for p in train_pairs],
                 "val": [p.image for p in val_pairs], "n_skipped": len(found.skipped),
                 "split": split_info.to_dict(), "label_field": label_field},
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
    in_chans = len(meta["bands"]) + len((meta.get("aux") or {}).get("codes", []))
    export_segmentation_onnx(model, in_chans, out / MODEL_FILE)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    write_bundle(out, model=None, meta={"task": TASK, "model": model_io(in_chans), "metrics": {}, **meta})
    write_skipped(out, skipped)
    return SegmentationBundle(out, json.loads((out / BUNDLE_FILE).read_text()))
