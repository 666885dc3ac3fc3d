"""Fine-tune a pretrained CNN at a chosen retraining depth, on one process or many.

Training runs in Lightning: checkpoints every epoch (``<out>.checkpoints/last.ckpt`` and the
best epoch by validation error), ``resume=True`` continues after a crash, optional early
stopping, data-parallel DDP over ``devices`` processes and ``num_nodes`` nodes (gloo on CPU,
nccl on GPU; each process sees its shard through a ``DistributedSampler``), mixed precision on
a GPU. Validation runs every epoch on held-out images, never training images. The best epoch is exported
to the same model bundle as the frozen-feature classifier, plus ``weights.safetensors``.

``retrain="last"`` with ``cache_features=True`` does not run the frozen backbone every epoch: it
featurizes once (the Parquet feature cache) and trains the final layer on the cached features.
Augmentation is then off, and the run says so. ``retrain="fc"`` (the default) with
``cache_features=True`` runs the frozen trunk once per image and 90-degree rotation and trains
the last stage and the final layer on its cached output (:mod:`landsight.models.trunk`), a random
rotation per image and epoch.

The defaults are LP-FT (Kumar et al., ICLR 2022): the final layer starts as the logistic
regression fitted on the frozen (rotation-averaged) features of the training split, BatchNorm
statistics stay as pretrained so that the head meets the features it was fitted on, the learning
rate is small (0.001; 0.01 with a random head) so that training starts from that optimum, the final
layer sees the same features as ``train``'s head (the pooled outputs of ``blocks.3-5`` next to
the final features, ``stages="auto"``; with the cached trunk they are cached with it, as they
lie before the trained stage), and the bundle's graph averages the four rotations
(``tta="rot4"``) as ``train``'s default does. Measured
against ``train``'s defaults in ``benchmarks/RESULTS.md`` ("Fine-tuning defaults vs the frozen
default").

Launching on a cluster: run the same ``landsight finetune ... --devices G --num-nodes M`` under
``torchrun`` or ``srun`` (Lightning reads their environment and does not spawn processes
itself), or from Spark with ``pyspark.ml.torch.distributor.TorchDistributor`` calling
:func:`finetune` (see the README).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.models.backbones import DEFAULT_BACKBONE, SUPPORTED_TTA, stages_label
from landsight.recipe import check_tta, run_params


@dataclass
class FinetuneResult:
    """What :func:`finetune` produced.

    Attributes:
        bundle_path: The bundle folder (``model.onnx``, ``bundle.json``, ``weights.safetensors``).
        metrics: Held-out test metrics (see :func:`landsight.classify.evaluate.compute_metrics`); empty
            when there is no test split.
        history: One dict per epoch: ``epoch``, ``train_loss``, ``train_error`` (%),
            ``val_loss``, ``val_error`` (%), ``epoch_seconds``, ``samples_per_second``, ``lr``.
        best_epoch: The epoch (0-based) whose weights were bundled.
        skipped: ``(path, reason)`` of unreadable images.
        run_id: MLflow run id ("" when tracking is off).
        test_paths: The held-out test images (empty on ranks other than 0).
        test_labels: Their labels, in the same order.
    """

    bundle_path: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    skipped: list[tuple[str, str]]
    run_id: str
    test_paths: list[str] = field(default_factory=list)
    test_labels: list[str] = field(default_factory=list)


def finetune(
    data: str | Path,
    *,
    out: str | Path = "model.landsight",
    test: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = "imagenet",
    bands: tuple[int, ...] | None = None,
    retrain: str = "fc",
    epochs: int = 15,
    batch_size: int = 32,
    optimizer: str = "sgd",
    lr: float | None = None,
    lr_schedule: str = "constant",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    backbone_lr_mult: float = 0.1,
    gradient_clip: float | None = None,
    augment: bool | None = None,
    cache_features: bool = True,
    val_size: float = 0.1,
    test_size: float = 0.2,
    early_stopping: int | None = 3,
    head_init: str = "probe",
    batchnorm: str | None = None,
    tta: str = "rot4",
    stages: str | Sequence[str] = "auto",
    random_state: int = 0,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    num_workers: int = 2,
    resume: bool = False,
    class_names: str | Path | None = None,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
) -> FinetuneResult:
    """Fine-tune a pretrained backbone with a new final layer and write a model bundle.

    Args:
        data: Labelled images in any catalog form (class folders, map file, zip).
        out: Bundle folder to write; checkpoints go to ``<out>.checkpoints/``.
        test: Separate labelled test images (else ``test_size`` of ``data`` is held out).
        backbone: Backbone registry name.
        weights: ``"imagenet"``, a weights file, or ``None`` (random, explicit).
        bands: 1-based bands to read (default RGB).
        retrain: ``"last"``, ``"fc"`` or ``"all"`` (see :mod:`landsight.models.classifier`).
        epochs: Maximum epochs (>= 1).
        batch_size: Minibatch size per process.
        optimizer: ``"sgd"`` (momentum SGD with L2 weight decay) or ``"adamw"``.
        lr: Learning rate of the final layer (backbone: ``lr * backbone_lr_mult``). Default:
            0.001 with ``head_init="probe"`` (the head starts at the probe's optimum; 0.01 moved the
            last stage away from it and cost 1.5 points on EuroSAT, 0.2-3 per split:
            ``benchmarks/RESULTS.md``), 0.01 with a random head.
        lr_schedule: ``"constant"``, ``"cosine"``, ``"onecycle"`` or a per-epoch list such as
            ``"0.2*10,0.1"`` (overrides ``lr``).
        momentum: SGD momentum.
        weight_decay: L2 penalty / AdamW weight decay.
        backbone_lr_mult: Discriminative learning-rate factor of the backbone.
        gradient_clip: Clip the gradient norm to this value (``None`` = off).
        augment: Aerial augmentation (flips, 90-degree rotations, colour jitter, random resized
            crop) of the images. Default: on for ``all``, off for ``last``; for ``fc`` with
            ``cache_features`` the default trains on the cached trunk, augmented by rotation,
            and ``True`` trains on augmented images instead.
        cache_features: ``retrain="last"``: train on cached features (no augmentation).
            ``retrain="fc"`` (unless ``augment`` is given): run the frozen trunk once per image
            and rotation and train the last stage on its cached output
            (:mod:`landsight.models.trunk`; several times faster per epoch).
        val_size: Fraction of ``data`` held out for per-epoch validation (> 0).
        test_size: Fraction of ``data`` held out for the final test (0 = none).
        early_stopping: Stop after this many epochs without a lower validation loss (default 3;
            ``None`` = run every epoch). Whether or not it stops, the bundle holds the epoch of the
            lowest validation loss.
        head_init: ``"probe"`` (default): the final layer starts as the logistic regression fitted
            on the frozen features of the training split (LP-FT, :func:`landsight.models.classifier.probe_init`;
            one featurization of the training images, cached); ``"random"``: PyTorch's default
            initialisation.
        batchnorm: ``"frozen"``: BatchNorm running statistics stay as pretrained (scale and shift
            still learn), so a probe-initialised head meets the features it was fitted on;
            ``"train"``: batch statistics. Default: ``"frozen"`` with ``head_init="probe"``,
            ``"train"`` otherwise.
        tta: ``"rot4"`` (default): the bundle's graph averages the features of the four
            90-degree rotations of each image, as ``train``'s default does (4x the scoring cost;
            training is unchanged); ``"none"``: one view.
        stages: Intermediate backbone stages whose pooled outputs join the final layer's input,
            as ``train``'s default (``"auto"``: ``blocks.3-5`` of EfficientNet-Lite; ``"none"``;
            names: :func:`landsight.models.backbones.resolve_stages`). With the cached trunk they
            are cached with it (they lie before the trained stage); a named stage inside the
            trained part trains on images instead.
        random_state: Seed of the split, the initialisation and the data order.
        split: How validation and test images are held out: ``"random"`` (stratified per
            image), ``"spatial"`` (whole square blocks of georeferenced tiles) or ``"group"``
            (whole groups); see :mod:`landsight.data.splits`. Recorded in ``bundle.json``
            ``data.split``.
        block_size: ``split="spatial"``: block side in CRS units (``None`` = from the extent).
        group: ``split="group"``: ``"regex:PATTERN"`` or a column of the CSV map file.
        devices: Processes (CPU) or GPUs per node; > 1 trains data-parallel (DDP).
        num_nodes: Nodes of a cluster job.
        accelerator: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        num_workers: DataLoader worker processes per training process.
        resume: Continue from ``<out>.checkpoints/last.ckpt`` (and replace ``out`` at the end).
        class_names: Class-names file for CNTK-style map files.
        progress: Show progress bars.
        tracking_uri: MLflow store (default ``sqlite:///mlruns.db``, or ``$MLFLOW_TRACKING_URI``).
        track: Record the run in MLflow.
        overwrite: Start over: replace an existing bundle at ``out`` (whole) and delete the
            checkpoints of an earlier run in ``<out>.checkpoints/``. Without it (or ``resume``)
            either one existing is refused before any work.

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        LandsightValueError: Bad parameters, fewer than two classes, unseen test labels, or
            ``resume=True`` without a checkpoint (all before training).
        OutputExistsError: ``out`` or its checkpoint folder exists and neither ``overwrite`` nor
            ``resume`` is set.
        WeightsUnavailableError: The backbone's weights cannot be had.
    """
    from landsight.classify.heldout import check_test_source
    from landsight.models.classifier import HEAD_INITS, RETRAIN_DEPTHS
    from landsight.models.fit import check_run_outputs, parse_lr_schedule
    from landsight.models.task import BATCHNORM_MODES, OPTIMIZERS
    from landsight.tracking import log_evaluation, tracked_run

    started = time.perf_counter()
    check_test_source(data, test)
    if retrain not in RETRAIN_DEPTHS:
        raise LandsightValueError(f"retrain must be one of {list(RETRAIN_DEPTHS)}, got {retrain!r}")
    if head_init not in HEAD_INITS:
        raise LandsightValueError(f"head_init must be one of {list(HEAD_INITS)}, got {head_init!r}")
    if batchnorm is None:
        batchnorm = "frozen" if head_init == "probe" else "train"
    if lr is None:
        lr = 0.001 if head_init == "probe" else 0.01
    if batchnorm not in BATCHNORM_MODES:
        raise LandsightValueError(f"batchnorm must be one of {list(BATCHNORM_MODES)}, got {batchnorm!r}")
    tta = check_tta(tta, SUPPORTED_TTA, task="classification")
    if optimizer not in OPTIMIZERS:
        raise LandsightValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if epochs < 1 or batch_size < 1 or devices < 1 or num_nodes < 1:
        raise LandsightValueError(
            f"epochs, batch_size, devices and num_nodes must be >= 1, got {epochs!r}, {batch_size!r}, "
            f"{devices!r}, {num_nodes!r}"
        )
    if not 0 < val_size < 1 or not 0 <= test_size < 1 or val_size + test_size >= 1:
        raise LandsightValueError(
            f"val_size must be in (0, 1) and test_size in [0, 1) with a sum below 1, got {val_size!r}, {test_size!r}"
        )
    schedule = parse_lr_schedule(lr_schedule)
    use_trunk = retrain == "fc" and cache_features and augment is None
    if augment is None:
        augment = retrain == "all"  # a cached trunk augments by rotation; 'last' has no backbone in the loop
    use_cache = retrain == "last" and cache_features
    if use_cache and augment:
        raise LandsightValueError(
            "augment=True needs the backbone in the loop; with retrain='last' pass cache_features=False"
        )
    ckpt_dir = check_run_outputs(out, resume=resume, overwrite=overwrite)
    params = run_params(
        finetune, locals(), exclude=("progress", "track", "tracking_uri", "overwrite", "class_names", "accelerator",
                                     "num_workers", "cache_features"),
        augment="rotations" if use_trunk else augment, cached_features=use_cache, cached_trunk=use_trunk,
        stages=stages_label(stages),
    )  # fmt: skip
    with tracked_run("finetune", params, tracking_uri=tracking_uri, enabled=track) as run:
        result = _finetune(
            data, out=Path(out), ckpt_dir=ckpt_dir, test=test, backbone=backbone, weights=weights, bands=bands,
            retrain=retrain, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, schedule=schedule,
            momentum=momentum, weight_decay=weight_decay, backbone_lr_mult=backbone_lr_mult,
            gradient_clip=gradient_clip, augment=augment, use_cache=use_cache, use_trunk=use_trunk, val_size=val_size,
            test_size=test_size, early_stopping=early_stopping, head_init=head_init, batchnorm=batchnorm, tta=tta,
            stages=stages, random_state=random_state, devices=devices,
            num_nodes=num_nodes, accelerator=accelerator, num_workers=num_workers, resume=resume,
            class_names=class_names, progress=progress, split_method=split, block_size=block_size, group=group,
        )  # fmt: skip
        for row in result.history:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        log_evaluation(run, result.metrics)
        best_val = min((row["val_error"] for row in result.history if "val_error" in row), default=float("nan"))
        run.log_metrics({"best_epoch": result.best_epoch, "best_val_error": best_val, "n_skipped": len(result.skipped),
                         "duration_seconds": time.perf_counter() - started})  # fmt: skip
        run.log_artifact(result.bundle_path, "bundle")
        result.run_id = run.run_id
    return result


def _finetune(
    data: str | Path,
    *,
    out: Path,
    ckpt_dir: Path,
    test: str | Path | None,
    backbone: str,
    weights: str | Path | None,
    bands: tuple[int, ...] | None,
    retrain: str,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float,
    schedule: list[float] | str,
    momentum: float,
    weight_decay: float,
    backbone_lr_mult: float,
    gradient_clip: float | None,
    augment: bool,
    use_cache: bool,
    use_trunk: bool,
    val_size: float,
    test_size: float,
    early_stopping: int | None,
    head_init: str,
    batchnorm: str,
    tta: str,
    stages: str | Sequence[str],
    random_state: int,
    devices: int,
    num_nodes: int,
    accelerator: str,
    num_workers: int,
    resume: bool,
    class_names: str | Path | None,
    progress: bool,
    split_method: str = "random",
    block_size: float | None = None,
    group: str | None = None,
) -> FinetuneResult:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from landsight.classify.finetune_data import (
        _catalog_splitter,
        _datasets,
        _probe_features,
        _read_once,
        _trunk_and_tail,
        _with_cached_stages,
    )
    from landsight.classify.module import ClassificationModule
    from landsight.models.backbones import create_backbone
    from landsight.models.classifier import ImageClassifier, probe_init, trainable_parameters
    from landsight.models.fit import data_fingerprint, fit_module, steps_per_epoch

    started = time.perf_counter()
    everything, split = _catalog_splitter(
        data, test, class_names=class_names, test_size=test_size, val_size=val_size, random_state=random_state,
        split_method=split_method, block_size=block_size, group=group,
    )  # fmt: skip
    catalog = split(everything)  # every split check before the heavy work
    classes = sorted(catalog.loc[catalog["split"] == "train", "label"].unique())

    bb = create_backbone(backbone, weights=weights, bands=bands, stages=stages)
    index = {c: i for i, c in enumerate(classes)}
    pl.seed_everything(random_state, workers=True, verbose=False)
    classifier = ImageClassifier(bb, len(classes))
    notices: list[str] = []
    split_net = _trunk_and_tail(classifier, bb) if use_trunk else None
    if use_trunk and split_net is None:
        augment = True
        notices.append("this backbone's last stage cannot be split off its trunk: training on images, augmented")
    if split_net is not None and bb.stages:
        split_net = _with_cached_stages(split_net, classifier, bb)
        if split_net is None:
            augment = True
            notices.append(f"stages {list(bb.stages)!r} reach into the trained part: training on images, augmented")

    read = _read_once(catalog, everything, split, classes=classes, backbone=bb, use_cache=use_cache,
                      split_net=split_net, progress=progress)  # fmt: skip
    catalog, skipped, work = read.catalog, read.skipped, read.work
    parts = {s: catalog[catalog["split"] == s] for s in ("train", "val", "test")}

    def labels(split: str) -> torch.Tensor:
        return torch.tensor([index[c] for c in parts[split]["label"]])

    backbone_params, head_params = trainable_parameters(classifier, retrain)
    train_set, val_set, model, augment_fn, loader_args = _datasets(
        parts, index, labels, read, classifier=classifier, backbone=bb, split_net=split_net, augment=augment,
        batch_size=batch_size, num_workers=num_workers, notices=notices,
    )  # fmt: skip
    probe: dict[str, Any] = {}
    if head_init == "probe" and not resume:  # a resumed run restores its own weights
        X_train = _probe_features(model, train_set, [str(p) for p in parts["train"]["path"]], backbone=bb,
                                  split_net=split_net, progress=progress)  # fmt: skip
        probe = probe_init(classifier.fc, np.asarray(X_train, dtype=np.float32), labels("train").numpy(),
                           random_state=random_state)  # fmt: skip
    if notices and progress:
        from rich.console import Console

        for notice in notices:
            Console(stderr=True).print(f"[cyan]{notice}[/cyan]")

    world = devices * num_nodes
    module = ClassificationModule(
        model, backbone_params, head_params, optimizer=optimizer, lr=lr, lr_schedule=schedule,
        backbone_lr_mult=backbone_lr_mult, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
        steps_per_epoch=steps_per_epoch(len(train_set), batch_size, world),
        augment=augment_fn, batchnorm=batchnorm,
    )  # fmt: skip
    fitted = fit_module(
        module,
        DataLoader(train_set, shuffle=True, drop_last=False, **loader_args),
        DataLoader(val_set, shuffle=False, **loader_args),
        ckpt_dir=ckpt_dir, epochs=epochs, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
        resume=resume, progress=progress, early_stopping=early_stopping, gradient_clip=gradient_clip,
        monitor="val_loss",  # best epoch and early stop by validation loss (smoother than the error)
        identity={"task": "classification", "backbone": backbone, "bands": list(bands or []), "retrain": retrain,
                  "classes": list(classes), "data": data_fingerprint(
                      pair for s in ("train", "val") for pair in parts[s][["path", "label"]].itertuples(index=False))},
    )  # fmt: skip
    if work is not None:
        work.cleanup()
    read.trunk_out.clear()
    history, best_epoch = fitted.history, fitted.best_epoch
    if not fitted.is_global_zero:  # torchrun / SLURM: rank 0 writes the bundle
        return FinetuneResult(out, {}, history, best_epoch, skipped, "")
    from landsight.bundle import staged_bundle
    from landsight.classify.finetune_bundle import _write_finetuned_bundle

    with staged_bundle(out, overwrite=True) as stage:  # permission to replace was checked before training
        metrics = _write_finetuned_bundle(
            stage, classifier=classifier, backbone=bb, classes=classes, test=parts["test"], skipped=skipped,
            history=history, best_epoch=best_epoch, retrain=retrain, data=data,
            split_info=dict(catalog.attrs.get("split", {})),
            head_params={"optimizer": optimizer, "lr": lr, "epochs": epochs, "batch_size": batch_size,
                         "lr_schedule": schedule if isinstance(schedule, str) else list(schedule),
                         "augment": "rotations" if split_net is not None else augment,
                         "cached_features": use_cache, "cached_trunk": split_net is not None, "devices": devices,
                         "early_stopping": early_stopping, "best_epoch_by": "val_loss",
                         "num_nodes": num_nodes, "head_init": head_init, "batchnorm": batchnorm,
                         **({"probe": probe} if probe else {})},
            tta=tta,
            seconds=time.perf_counter() - started,
        )  # fmt: skip
    test_rows = parts["test"]
    return FinetuneResult(out, metrics, history, best_epoch, skipped, "", [str(p) for p in test_rows["path"]],
                          [str(c) for c in test_rows["label"]])  # fmt: skip
