"""The classification verbs of ``landsight``: train, evaluate, predict, featurize, finetune, tune, demo.

Parse, call :mod:`landsight.classify` (or :mod:`landsight.spark`), print. Nothing else lives here.

Longer than 500 lines because it holds the seven classification verbs, whose options Typer reads
from their signatures (about 40 for ``finetune`` alone); each verb is only parse, call, print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from landsight.cli.options import (
    AssetOpt,
    BackboneOpt,
    BandsOpt,
    BatchOpt,
    BlockSizeOpt,
    ClassNamesOpt,
    ConfOpt,
    DeviceOpt,
    EngineOpt,
    FormatOpt,
    GroupOpt,
    MasterOpt,
    MaxDropOpt,
    OverwriteOpt,
    QuietOpt,
    SplitOpt,
    StagesOpt,
    TrackingOpt,
    TrackOpt,
    TrainPrecisionOpt,
    WeightsOpt,
    checkpoints_output,
    comma_list,
    number,
    quantized_output,
    spark_engine,
    weights_or_none,
)
from landsight.console import emit, err, note_skipped, parse_ints
from landsight.models.heads import HEADS
from landsight.outputs import Output
from landsight.ranges import option_range
from landsight.runconfig import configurable, record_config

app = typer.Typer()


def metrics_table(metrics: dict[str, Any], fmt: str) -> None:
    """Per-class precision / recall / F1 / support, the headline figures in the title."""
    import pandas as pd

    frame = pd.DataFrame(
        [{"class": name, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "support": m["support"]}
         for name, m in metrics["per_class"].items()]
    )  # fmt: skip
    title = f"accuracy {metrics['accuracy']:.2%} · balanced {metrics['balanced_accuracy']:.2%} · n={metrics['n']}"
    three = "{:.3f}".format
    shown = {k: v for k, v in metrics.items() if k not in ("confusion_matrix", "worst_errors", "skipped")}
    emit(frame, fmt, title=title, display={"precision": three, "recall": three, "f1": three}, json_value=shown)
    if metrics.get("classes_without_test_images"):
        err().print(f"[yellow]warning:[/yellow] no test images of {metrics['classes_without_test_images']!r}; "
                    "the figures above say nothing about these classes")  # fmt: skip



@app.command()
@configurable(
    inputs={"data": "DATA", "test": "--test", "class_names": "--class-names"},
    outputs={"out_": ("--out", "bundle")},
    derived=lambda v: quantized_output(v["out_"], v["precision"]),
)
def train(
    data: Annotated[str, typer.Argument(help="Class folders, CSV/TSV map file, or a zip of either.")],
    out_: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")] = Path("model.landsight"),
    test: Annotated[str | None, typer.Option(help="Separate labelled test data (else split DATA).")] = None,
    backbone: BackboneOpt = "tf_efficientnet_lite0",
    weights: WeightsOpt = "imagenet",
    bands: BandsOpt = None,
    tta: Annotated[
        str | None,
        typer.Option(help="none | rot4 (mean features of 4 rotations; 4x compute). Default rot4; none with --fast."),
    ] = None,
    stages: StagesOpt = "auto",
    head: Annotated[str, typer.Option(help=f"Head: {' | '.join(HEADS)} (models.heads.HEADS).")] = "logreg",
    c: Annotated[
        str | None,
        typer.Option("--C", help="logreg inverse regularisation or 'auto' (cross-validated; default; 1 with --fast)."),
    ] = None,
    standardize: Annotated[
        bool, typer.Option("--standardize/--no-standardize", help="logreg on standardised features.")
    ] = True,
    refit: Annotated[
        bool,
        typer.Option("--refit/--no-refit", help="After the held-out evaluation, ship a head refit on all images."),
    ] = True,
    fast: Annotated[
        bool, typer.Option("--fast", help="Single-view preset: --tta none --C 1 (4x less featurization, no CV).")
    ] = False,
    n_estimators: Annotated[int, typer.Option(help="forest trees.", **option_range("n_estimators"))] = 300,
    max_depth: Annotated[int | None, typer.Option(help="forest depth limit.")] = None,
    balanced: Annotated[
        bool, typer.Option("--balanced", help="Class weights inversely proportional to frequency.")
    ] = False,
    test_size: Annotated[float, typer.Option(help="Held-out fraction of DATA (stratified).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split and the head.")] = 0,
    split: SplitOpt = "random",
    block_size: BlockSizeOpt = None,
    group: GroupOpt = None,
    class_names: ClassNamesOpt = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Read and write the feature cache.")] = True,
    tracking_uri: TrackingOpt = None,
    track: TrackOpt = True,
    quiet: QuietOpt = False,
    engine: EngineOpt = "local",
    master: MasterOpt = "local[*]",
    conf: ConfOpt = None,
    dedup: Annotated[
        bool, typer.Option("--dedup/--no-dedup", help="Drop test images that near-duplicate training images (pHash).")
    ] = False,
    dedup_threshold: Annotated[int, typer.Option(help="--dedup Hamming-distance threshold, bits of 64.")] = 4,
    precision: TrainPrecisionOpt = "fp32",
    max_drop: MaxDropOpt = 1.0,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Featurize with a frozen pretrained backbone, fit a head, evaluate, write a bundle."""
    from landsight.classify.heldout import check_test_source
    from landsight.classify.train import resolve_recipe
    from landsight.classify.train import train as train_api

    check_test_source(data, test)  # both engines
    _check_precision(precision)
    on_spark = spark_engine(engine)
    if on_spark and (dedup or split != "random"):
        raise typer.BadParameter("--dedup and --split spatial|group work with --engine local only")
    # --fast and the Spark engine resolve here, once; the effective values are printed and saved
    resolved = resolve_recipe(fast=fast, engine=engine, tta=tta, C=c if c in (None, "auto") else number(c, "--C"))
    if not quiet:
        err().print(f"recipe: --tta {resolved['tta']} --C {resolved['C']}" + (" (--fast)" if fast else ""))
    recipe = dict(
        out=out_, test=test, backbone=backbone, weights=weights_or_none(weights), bands=parse_ints(bands, "--bands"),
        stages=stages, head=head, standardize=standardize, n_estimators=n_estimators, max_depth=max_depth,
        class_weight="balanced" if balanced else None, test_size=test_size, random_state=seed,
        class_names=class_names, batch_size=batch_size, tracking_uri=tracking_uri, track=track, overwrite=overwrite,
        **resolved,
    )  # fmt: skip
    if on_spark:
        from landsight import spark

        result = spark.train(data, master=master, conf=spark.parse_conf(conf), **recipe)
    else:
        result = train_api(
            data, device=device, cache=cache, progress=not quiet, dedup=dedup, dedup_threshold=dedup_threshold,
            refit=refit, split=split, block_size=block_size, group=group, **recipe,
        )  # fmt: skip
    record_config(result.bundle_path, run_id=result.run_id, tracking_uri=tracking_uri, resolved=resolved)
    note_skipped(result.skipped, where=result.bundle_path / "skipped.csv", what="image")
    if result.metrics:
        metrics_table(result.metrics, fmt)
    refit_note = f"; shipped head refit on all {result.n_fit}" if getattr(result, "refit", False) else ""
    err().print(
        f"trained on {result.n_train} images, tested on {result.n_test}{refit_note}; "
        f"bundle: [bold]{result.bundle_path}[/bold]"
    )
    _quantize_after_training(result.bundle_path, precision, max_drop, overwrite, quiet)


def _check_precision(precision: str) -> None:
    """Refuse a bad ``--precision`` before any training (the quantized sibling is in the output plan)."""
    from landsight.quantize import PRECISIONS

    if precision not in ("fp32", *PRECISIONS):
        raise typer.BadParameter(f"--precision must be one of {['fp32', *PRECISIONS]}, got {precision!r}")


def _quantize_after_training(
    bundle: Path, precision: str, max_drop: float | None, overwrite: bool, quiet: bool,
    test_paths: list[str] | None = None, test_labels: list[str] | None = None,
) -> None:  # fmt: skip
    """``--precision int8|fp16`` of train / finetune: the quantized copy beside the float32 bundle."""
    if precision == "fp32":
        return
    from landsight.quantize import QuantizationDropError, quantize_trained

    try:
        result = quantize_trained(
            bundle, precision=precision, test_paths=test_paths or [], test_labels=test_labels or [],
            max_drop=max_drop, overwrite=overwrite, progress=not quiet,
        )  # fmt: skip
    except QuantizationDropError as exc:
        raise QuantizationDropError(
            f"the float32 bundle {str(bundle)!r} was written; its {precision} copy was refused: {exc}",
            fp32=exc.fp32,
            quantized=exc.quantized,
            drop=exc.drop,
        ) from None
    err().print(
        f"{precision} bundle: [bold]{result.bundle_path}[/bold] ({result.metric} {result.fp32:.2f} % -> "
        f"{result.quantized:.2f} %, drop {result.drop:+.2f} points on {result.n_test:,} held-out images)"
    )


@app.command()
@configurable(
    inputs={"bundle": "BUNDLE", "data": "DATA", "class_names": "--class-names"},
    outputs={"out_": ("--out", "evaluation")},
)
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip.")],
    data: Annotated[str, typer.Argument(help="Labelled images (class folders, map file, zip).")],
    out_: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and the confusion matrix.")] = Path(
        "evaluation"
    ),
    class_names: ClassNamesOpt = None,
    batch_size: BatchOpt = 32,
    tracking_uri: TrackingOpt = None,
    track: TrackOpt = True,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Evaluate a bundle on labelled images."""
    from landsight.classify.evaluate import evaluate as evaluate_api

    metrics = evaluate_api(
        bundle, data, out=out_, class_names=class_names, batch_size=batch_size, progress=not quiet,
        tracking_uri=tracking_uri, track=track, overwrite=overwrite,
    )  # fmt: skip
    note_skipped([(s["path"], s["reason"]) for s in metrics["skipped"]], what="image")
    metrics_table(metrics, fmt)
    err().print(f"metrics and confusion matrix in [bold]{out_}[/bold]")


@app.command()
@configurable(
    inputs={"bundle": "BUNDLE", "inputs": "INPUTS"},
    outputs={"out_": ("--out", "file"), "raster": ("--raster", "file")},
    resumable=lambda v: ["out_"],  # re-running resumes; predict checks the table is its own
)
def predict(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip.")],
    inputs: Annotated[
        str,
        typer.Argument(help="Folder, glob pattern, list file or one image; with --tile-size: scene raster(s) or STAC."),
    ],
    out_: Annotated[
        str,
        typer.Option(
            "--out",
            help="Output .parquet or .csv (re-running resumes), or a GIS layer .gpkg / .geojson / .geoparquet "
            "(one polygon per georeferenced tile); --engine spark: a Parquet folder or URL such as s3a://.",
        ),
    ] = "predictions.parquet",
    to_crs: Annotated[
        str | None, typer.Option(help="GIS layer output: reproject tile polygons to this CRS (e.g. EPSG:4326).")
    ] = None,
    asset: AssetOpt = None,
    no_remote: Annotated[
        bool, typer.Option("--no-remote", help="STAC input: read local files only; refuse remote Items and assets.")
    ] = False,
    tile_size: Annotated[
        int | None,
        typer.Option(help="Classify whole scenes: windows of this many pixels (no tiles written).", min=1),
    ] = None,
    stride: Annotated[int | None, typer.Option(help="With --tile-size: window step in pixels.", min=1)] = None,
    raster: Annotated[
        Path | None, typer.Option("--raster", help="With --tile-size: class GeoTIFF, one pixel per window.")
    ] = None,
    batch_size: BatchOpt = 32,
    tracking_uri: TrackingOpt = None,
    track: TrackOpt = True,
    quiet: QuietOpt = False,
    engine: EngineOpt = "local",
    master: MasterOpt = "local[*]",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Predict images with a bundle; bad images give rows with an error. Prints images per class."""
    import pandas as pd

    from landsight.vectors import check_crs

    check_crs(to_crs, "--to-crs")  # before anything is scored
    if tile_size is None and (stride is not None or raster is not None):
        raise typer.BadParameter("--stride and --raster apply to whole scenes: give --tile-size")
    if spark_engine(engine):
        from landsight import spark

        if tile_size is not None:
            raise typer.BadParameter("--tile-size (whole scenes) works with --engine local only")
        if no_remote:
            raise typer.BadParameter("--no-remote (STAC inputs) works with --engine local only")
        res = spark.predict(
            bundle, inputs, out=out_, master=master, conf=spark.parse_conf(conf), batch_size=batch_size,
            tracking_uri=tracking_uri, track=track, overwrite=overwrite,
        )  # fmt: skip
        note_skipped(res.errors, what="image")
        emit(pd.DataFrame({"images": [res.n_images], "scored": [res.n_scored], "errors": [res.n_errors]}), fmt)
        if res.n_images and not res.n_scored:
            err().print(f"[red]error:[/red] none of the {res.n_images:,} inputs could be read")
            raise typer.Exit(1)
        err().print(f"{res.images_per_second:.1f} images/s; rows in [bold]{out_}[/bold]")
        return
    if tile_size is not None:
        from landsight.classify.scene import predict_scene

        df = predict_scene(
            bundle, inputs, tile_size=tile_size, stride=stride, out=out_, raster=raster, batch_size=batch_size,
            progress=not quiet, overwrite=overwrite, to_crs=to_crs, asset=asset, allow_remote=not no_remote,
            tracking_uri=tracking_uri, track=track,
        )  # fmt: skip
    else:
        from landsight.classify.predict import predict as predict_api

        df = predict_api(
            bundle, inputs, out=out_, batch_size=batch_size, progress=not quiet, tracking_uri=tracking_uri,
            track=track, overwrite=overwrite, to_crs=to_crs, asset=asset, allow_remote=not no_remote,
        )  # fmt: skip
    errors = df[df["error"] != ""]
    note_skipped(list(zip(errors["path"], errors["error"], strict=True)), what="image")
    if len(df) and len(errors) == len(df):  # nothing scored: a failure, not a partial success
        err().print(f"[red]error:[/red] none of the {len(df):,} inputs could be read; rows in {out_}")
        raise typer.Exit(1)
    counts = df.loc[df["error"] == "", "predicted"].value_counts()
    emit(pd.DataFrame({"class": counts.index.astype(str), "images": counts.to_numpy()}), fmt, title="predicted")
    err().print(f"{len(df)} rows in [bold]{out_}[/bold]")


@app.command()
@configurable(
    inputs={"inputs": "INPUTS"},
    outputs={"out_": ("--out", "file")},
)
def featurize(
    inputs: Annotated[str, typer.Argument(help="Folder, glob pattern, list file or one image.")],
    out_: Annotated[
        str,
        typer.Option("--out", help="Output .parquet (path + one feature vector per image; --engine spark: or a URL)."),
    ] = "features.parquet",
    backbone: BackboneOpt = "tf_efficientnet_lite0",
    weights: WeightsOpt = "imagenet",
    bands: BandsOpt = None,
    stages: Annotated[
        str,
        typer.Option(help="Backbone stages pooled before the final features: none | auto (train's default) | names."),
    ] = "none",
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    engine: EngineOpt = "local",
    master: MasterOpt = "local[*]",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Featurize images with a pretrained backbone into a Parquet table."""
    import pandas as pd

    from landsight.classify.featurize import featurize as featurize_api
    from landsight.data.listing import list_images
    from landsight.errors import LandsightValueError
    from landsight.outputs import atomic_path, check_output

    if spark_engine(engine):
        from landsight import spark

        res = spark.featurize(
            inputs, out=out_, backbone=backbone, weights=weights_or_none(weights), bands=parse_ints(bands, "--bands"),
            stages=stages, batch_size=batch_size, master=master, conf=spark.parse_conf(conf),
        )  # fmt: skip
        note_skipped(res.failures, what="image")
        err().print(f"{res.n_images} x {res.num_features} features in [bold]{out_}[/bold] (Parquet folder)")
        return
    if not out_.endswith(".parquet"):
        raise LandsightValueError(f"featurize writes Parquet; --out must end in .parquet, got {out_!r}")
    paths = list_images(inputs)
    target = check_output(out_, inputs=paths, overwrite=overwrite, what="features file")
    feats = featurize_api(
        paths, backbone, weights=weights_or_none(weights), bands=parse_ints(bands, "--bands"), stages=stages,
        batch_size=batch_size, device=device, progress=not quiet,
    )  # fmt: skip
    with atomic_path(target) as tmp:
        pd.DataFrame({"path": feats.paths, "sha256": feats.sha256, "features": list(feats.X)}).to_parquet(
            tmp, index=False
        )
    note_skipped(feats.failures, what="image")
    shape = f"{feats.X.shape[0]} x {feats.X.shape[1]}"
    err().print(f"{shape} features ({feats.n_cached} from cache) in [bold]{out_}[/bold]")


@app.command()
@configurable(
    inputs={"data": "DATA", "test": "--test", "class_names": "--class-names"},
    outputs={"out_": ("--out", "bundle")},
    derived=lambda v: [checkpoints_output(v["out_"], v["resume"]), *quantized_output(v["out_"], v["precision"])],
)
def finetune(
    data: Annotated[str, typer.Argument(help="Class folders, CSV/TSV map file, or a zip of either.")],
    out_: Annotated[
        Path, typer.Option("--out", help="Bundle folder to write (checkpoints in OUT.checkpoints/).")
    ] = Path("model.landsight"),
    test: Annotated[str | None, typer.Option(help="Separate labelled test data (else split DATA).")] = None,
    backbone: BackboneOpt = "tf_efficientnet_lite0",
    weights: WeightsOpt = "imagenet",
    bands: BandsOpt = None,
    retrain: Annotated[str, typer.Option(help="last | fc | all")] = "fc",
    epochs: Annotated[int, typer.Option(help="Maximum epochs.", **option_range("epochs"))] = 15,
    batch_size: BatchOpt = 32,
    optimizer: Annotated[str, typer.Option(help="sgd (momentum, L2) | adamw")] = "sgd",
    lr: Annotated[
        float | None, typer.Option(help="Final-layer learning rate (default 0.001 with a probe head, else 0.01).")
    ] = None,
    lr_schedule: Annotated[str, typer.Option(help="constant | cosine | onecycle | per-epoch list '0.2*10,0.1'")] = (
        "constant"
    ),
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="L2 penalty / AdamW weight decay.")] = 5e-4,
    backbone_lr_mult: Annotated[float, typer.Option(help="Backbone lr = lr x this (retrain all / fc).")] = 0.1,
    gradient_clip: Annotated[float | None, typer.Option(help="Clip the gradient norm.")] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="Default: on for fc and all.")] = None,
    feature_cache: Annotated[
        bool,
        typer.Option(
            "--feature-cache/--no-feature-cache",
            help="retrain last: train on cached features; fc: on the cached frozen trunk (4 rotations).",
        ),
    ] = True,
    val_size: Annotated[float, typer.Option(help="Held-out fraction validated every epoch.")] = 0.1,
    test_size: Annotated[float, typer.Option(help="Held-out fraction for the final test.")] = 0.2,
    early_stopping: Annotated[
        int | None, typer.Option(help="Stop after N epochs without a lower validation loss (0 = never).")
    ] = 3,
    head_init: Annotated[
        str, typer.Option(help="probe: start from the logistic regression on frozen features (LP-FT) | random")
    ] = "probe",
    batchnorm: Annotated[
        str | None, typer.Option(help="frozen: keep BatchNorm statistics (default with probe) | train")
    ] = None,
    tta: Annotated[str, typer.Option(help="rot4: the bundle averages 4 rotations (4x scoring) | none")] = "rot4",
    stages: StagesOpt = "auto",
    seed: Annotated[int, typer.Option(help="Seed of split, initialisation and data order.")] = 0,
    split: SplitOpt = "random",
    block_size: BlockSizeOpt = None,
    group: GroupOpt = None,
    devices: Annotated[
        int, typer.Option(help="Processes (CPU) or GPUs per node; > 1 = DDP.", **option_range("devices"))
    ] = 1,
    num_nodes: Annotated[int, typer.Option(help="Nodes of a cluster job.", **option_range("num_nodes"))] = 1,
    accelerator: Annotated[str, typer.Option(help="auto | cpu | gpu")] = "auto",
    num_workers: Annotated[
        int, typer.Option(help="DataLoader workers per process.", **option_range("num_workers"))
    ] = 2,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT.checkpoints/last.ckpt.")] = False,
    class_names: ClassNamesOpt = None,
    precision: TrainPrecisionOpt = "fp32",
    max_drop: MaxDropOpt = 1.0,
    tracking_uri: TrackingOpt = None,
    track: TrackOpt = True,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Fine-tune a pretrained CNN at a retraining depth (last | fc | all) and write a bundle."""
    from landsight.classify.finetune import finetune as finetune_api

    _check_precision(precision)

    result = finetune_api(
        data, out=out_, test=test, backbone=backbone, weights=weights_or_none(weights),
        bands=parse_ints(bands, "--bands"), retrain=retrain, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, lr=lr, lr_schedule=lr_schedule,
        momentum=momentum, weight_decay=weight_decay, backbone_lr_mult=backbone_lr_mult,
        gradient_clip=gradient_clip, augment=augment, cache_features=feature_cache, val_size=val_size,
        test_size=test_size, early_stopping=early_stopping or None, head_init=head_init, batchnorm=batchnorm,
        tta=tta, stages=stages, random_state=seed, devices=devices,
        num_nodes=num_nodes, accelerator=accelerator, num_workers=num_workers, resume=resume,
        class_names=class_names, progress=not quiet, tracking_uri=tracking_uri, track=track, overwrite=overwrite,
        split=split, block_size=block_size, group=group,
    )  # fmt: skip
    from landsight.distributed import global_rank

    if global_rank() != 0:  # torchrun / srun: rank 0 reports
        return
    record_config(result.bundle_path, run_id=result.run_id, tracking_uri=tracking_uri)
    note_skipped(result.skipped, where=result.bundle_path / "skipped.csv", what="image")
    for row in result.history:
        err().print(
            f"epoch {int(row['epoch']) + 1}: train loss {row.get('train_loss', float('nan')):.3f} "
            f"error {row.get('train_error', float('nan')):.1f}% · val loss {row.get('val_loss', float('nan')):.3f} "
            f"error {row.get('val_error', float('nan')):.1f}% · {row['epoch_seconds']:.1f} s, "
            f"{row['samples_per_second']:.1f} samples/s"
        )
    if result.metrics:
        metrics_table(result.metrics, fmt)
    err().print(
        f"best epoch {result.best_epoch + 1}; bundle: [bold]{result.bundle_path}[/bold]; run {result.run_id[:8]}"
    )
    _quantize_after_training(result.bundle_path, precision, max_drop, overwrite, quiet, result.test_paths,
                             result.test_labels)  # fmt: skip


@app.command()
@configurable(
    inputs={"data": "DATA", "test": "--test", "class_names": "--class-names"},
    outputs={"out_": ("--out", "bundle")},
    derived=lambda v: [Output(Path(f"{v['out_']}.tune.yaml"), "--out (OUT.tune.yaml)")],
)
def tune(
    data: Annotated[str, typer.Argument(help="Labelled images (class folders, map file, zip).")],
    out_: Annotated[Path, typer.Option("--out", help="Bundle folder of the best trial (+ OUT.tune.yaml).")] = Path(
        "model.landsight"
    ),
    trials: Annotated[
        int, typer.Option(help="Trials of the search (Optuna TPE, median pruning).", **option_range("trials"))
    ] = 50,
    finetune_: Annotated[
        bool, typer.Option("--finetune", help="Search lr, retraining depth and epochs of fine-tuning instead.")
    ] = False,
    test: Annotated[str | None, typer.Option(help="Separate labelled test data (else split DATA).")] = None,
    test_size: Annotated[float, typer.Option(help="Held-out fraction for the final test.")] = 0.2,
    cv: Annotated[
        int, typer.Option(help="Cross-validation folds of each frozen-feature trial.", **option_range("cv"))
    ] = 3,
    timeout: Annotated[float | None, typer.Option(help="Stop the search after this many seconds.")] = None,
    heads: Annotated[str, typer.Option(help="Heads to search, comma-separated.")] = ",".join(HEADS),
    tta: Annotated[str, typer.Option(help="Feature views to search, comma-separated: none,rot4.")] = "none,rot4",
    retrain: Annotated[str, typer.Option(help="--finetune: depths to search, comma-separated.")] = "last,fc,all",
    epochs: Annotated[str, typer.Option(help="--finetune: epoch range MIN,MAX.")] = "2,10",
    backbone: BackboneOpt = "tf_efficientnet_lite0",
    weights: WeightsOpt = "imagenet",
    bands: BandsOpt = None,
    class_names: ClassNamesOpt = None,
    split: SplitOpt = "random",
    block_size: BlockSizeOpt = None,
    group: GroupOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the sampler.")] = 0,
    tracking_uri: TrackingOpt = None,
    track: TrackOpt = True,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Search head / C / feature views (or fine-tuning lr / depth / epochs) with Optuna; bundle the best."""
    import pandas as pd

    from landsight.classify.tune import tune as tune_api

    span = parse_ints(epochs, "--epochs") or (2, 10)
    if len(span) != 2:
        raise typer.BadParameter(f"--epochs must be MIN,MAX, got {epochs!r}")
    result = tune_api(
        data, trials=trials, out=out_, finetune=finetune_, test=test, test_size=test_size, cv=cv, timeout=timeout,
        heads=tuple(comma_list(heads) or ()), tta=tuple(comma_list(tta) or ()),
        retrain=tuple(comma_list(retrain) or ()), epochs=(span[0], span[1]), backbone=backbone,
        weights=weights_or_none(weights), bands=parse_ints(bands, "--bands"),
        class_names=class_names, split=split, block_size=block_size, group=group, random_state=seed,
        progress=not quiet, tracking_uri=tracking_uri, track=track, overwrite=overwrite,
    )  # fmt: skip
    record_config(result.bundle_path, run_id=result.run_id, tracking_uri=tracking_uri)
    rows = pd.DataFrame([{"trial": t["number"], "state": t["state"], "value": t["value"], **t["params"]}
                         for t in result.trials])  # fmt: skip
    best = f"best {result.best_value:.2%}: {result.best_params}"
    emit(rows, fmt, title=best, display={"value": lambda v: f"{v:.2%}"},
         json_value={"best_params": result.best_params, "best_value": result.best_value, "metrics": {
             k: v for k, v in result.metrics.items() if k not in ("confusion_matrix", "most_confident_wrong")},
             "trials": result.trials})  # fmt: skip
    err().print(f"{best}; bundle: [bold]{result.bundle_path}[/bold]; study: [bold]{result.tune_path}[/bold]")


@app.command()
@configurable(
    outputs={"out_": ("--out", "demo")},
)
def demo(
    out_: Annotated[Path, typer.Option("--out", help="Folder for the bundle and predictions.")] = Path(
        "landsight-demo"
    ),
    head: Annotated[str, typer.Option(help=f"Head: {' | '.join(HEADS)} (models.heads.HEADS).")] = "logreg",
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Train, evaluate and predict on the real EuroSAT sample shipped in the package (--overwrite: an earlier demo)."""
    from landsight.classify.demo import demo as demo_api

    result = demo_api(out_, head=head, progress=not quiet, overwrite=overwrite)
    metrics_table(result.metrics, fmt)
    err().print(
        f"accuracy on {result.metrics['n']} held-out EuroSAT tiles: [bold]{result.metrics['accuracy']:.1%}[/bold]\n"
        f"bundle:       {result.bundle_path}\n"
        f"metrics:      {result.bundle_path / 'metrics.json'}, {result.bundle_path / 'confusion_matrix.png'}\n"
        f"predictions:  {result.predictions_path}"
    )

