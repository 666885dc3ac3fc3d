"""The ``landsight segment`` verbs: train, predict, evaluate. Parse options, call :mod:`landsight.segment`, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from landsight.cli.options import (
    BlockSizeOpt,
    FormatOpt,
    GroupOpt,
    OverwriteOpt,
    QuietOpt,
    SplitOpt,
    TrackingOpt,
    TrackOpt,
    checkpoints_output,
)
from landsight.console import emit, err, note_skipped, parse_ints
from landsight.ranges import option_range
from landsight.runconfig import configurable, record_config

app = typer.Typer(
    help="Pixel-level land cover: train a U-Net on raster pairs, predict GeoTIFF maps, evaluate.",
    no_args_is_help=True,
)

ImagesOpt = Annotated[str, typer.Option(help="Glob of image rasters (quote it), or a CSV with columns image,label.")]
LabelsOpt = Annotated[
    str | None,
    typer.Option(help="Glob of label rasters whose wildcards match --images', or a vector file of polygons "
                      "(.gpkg .shp .geojson .json .fgb .parquet; needs --label-field)."),
]  # fmt: skip
LabelFieldOpt = Annotated[
    str | None,
    typer.Option(help="Vector --labels: the attribute holding class names or label codes (pixels outside "
                      "every polygon are ignored)."),
]  # fmt: skip
TtaOpt = Annotated[
    str,
    typer.Option(
        "--tta",
        help="Test-time augmentation: none | d4 (the 8 flips and 90-degree rotations averaged, 8x compute).",
    ),
]
AuxOpt = Annotated[
    str | None,
    typer.Option(help="Extra input raster(s) the bundle was trained with (e.g. NLCD): a path, or a template with "
                      "{stem}, {name}, {dir} of each image."),
]  # fmt: skip
WindowOpt = Annotated[
    int,
    typer.Option(
        "--window-size", help="Prediction window side in pixels (multiple of 32); bounds memory.",
        **option_range("window_size"),
    ),
]


def metrics_table(metrics: dict[str, Any], fmt: str) -> None:
    """Per-class IoU / F1 / precision / recall / pixels, the overall figures in the caption."""
    import pandas as pd

    frame = pd.DataFrame(
        [{"class": name, "iou": m["iou"], "f1": m["f1"], "precision": m["precision"], "recall": m["recall"],
          "pixels": m["support"]} for name, m in metrics["per_class"].items()]
    )  # fmt: skip
    caption = (f"pixel accuracy {metrics['pixel_accuracy']:.2%} · mean IoU {metrics['mean_iou']:.3f} · "
               f"{metrics['n_pixels']:,} pixels")  # fmt: skip
    three = "{:.3f}".format
    shown = {k: v for k, v in metrics.items() if k not in ("confusion_matrix", "skipped")}
    emit(frame, fmt, title="segmentation", caption=caption, json_value=shown,
         display={"iou": three, "f1": three, "precision": three, "recall": three, "pixels": "{:,}".format})  # fmt: skip


@app.command("train")
@configurable(
    inputs={"images": "--images", "labels": "--labels", "classes": "--classes"},
    outputs={"out_": ("--out", "bundle")},
    derived=lambda v: [checkpoints_output(v["out_"], v["resume"])],
)
def train_cmd(
    images: ImagesOpt,
    labels: LabelsOpt = None,
    label_field: LabelFieldOpt = None,
    classes: Annotated[str, typer.Option(help="Class map YAML, or 'chesapeake' / 'dubai'.")] = "chesapeake",
    bands: Annotated[str | None, typer.Option(help="1-based image bands, e.g. 1,2,3,4 (default all).")] = None,
    out_: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")] = Path("landcover.landsight"),
    arch: Annotated[str, typer.Option(help="unet | deeplabv3plus")] = "unet",
    encoder: Annotated[str, typer.Option(help="timm encoder name.")] = "tf_efficientnet_lite0",
    weights: Annotated[str, typer.Option(help="'imagenet', 'none' (random) or a weights file.")] = "imagenet",
    epochs: Annotated[int, typer.Option(**option_range("epochs"))] = 8,
    chip_size: Annotated[
        int, typer.Option(help="Chip side in pixels (multiple of 32).", **option_range("chip_size"))
    ] = 128,
    chips_per_epoch: Annotated[int, typer.Option(**option_range("chips_per_epoch"))] = 128,
    val_chips: Annotated[int, typer.Option(**option_range("val_chips"))] = 16,
    batch_size: Annotated[int, typer.Option(help="Chips per training step.", **option_range("batch_size"))] = 8,
    context: Annotated[int | None, typer.Option(help="Loss on the centre CONTEXT pixels of each chip only.")] = None,
    oversample: Annotated[float, typer.Option(help="Fraction of chips centred on rare classes.")] = 0.25,
    loss: Annotated[str, typer.Option(help="ce | weighted_ce | ce+dice | weighted_ce+dice")] = "weighted_ce+dice",
    early_stopping: Annotated[
        int | None, typer.Option(help="Stop after N epochs without a higher validation mIoU.")
    ] = None,
    aux_rasters: Annotated[
        str | None,
        typer.Option(help="Extra input raster per image, e.g. low-resolution NLCD labels: a template with {stem}, "
                          "{name}, {dir} such as '{dir}/../nlcd/{stem}_nlcd.tif'."),
    ] = None,  # fmt: skip
    split: SplitOpt = "random",
    block_size: BlockSizeOpt = None,
    group: GroupOpt = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random flips / rotations.")] = True,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    lr_schedule: str = "cosine",
    backbone_lr_mult: float = 1.0,
    val_size: Annotated[float, typer.Option(help="Fraction of pairs held out for validation.")] = 0.2,
    seed: int = 0,
    devices: Annotated[int, typer.Option(help="Processes / GPUs (DDP when > 1).", **option_range("devices"))] = 1,
    num_nodes: Annotated[int, typer.Option(**option_range("num_nodes"))] = 1,
    num_workers: Annotated[int, typer.Option(help="DataLoader workers.", **option_range("num_workers"))] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT.checkpoints/last.ckpt.")] = False,
    tracking_uri: TrackingOpt = None,
    track: TrackOpt = True,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Train a segmentation network on image / label raster pairs and write a bundle."""
    from landsight.segment.train import train_segmentation

    result = train_segmentation(
        images, labels, classes=classes, out=out_, bands=parse_ints(bands, "--bands"), arch=arch, encoder=encoder,
        weights=None if weights.lower() == "none" else weights, epochs=epochs, chip_size=chip_size,
        chips_per_epoch=chips_per_epoch, val_chips=val_chips, batch_size=batch_size, context=context,
        oversample=oversample, augment=augment, optimizer=optimizer, lr=lr, lr_schedule=lr_schedule,
        backbone_lr_mult=backbone_lr_mult, val_size=val_size, random_state=seed, devices=devices,
        num_nodes=num_nodes, num_workers=num_workers, resume=resume, progress=not quiet,
        tracking_uri=tracking_uri, track=track, overwrite=overwrite, loss=loss, early_stopping=early_stopping,
        aux_rasters=aux_rasters, split=split, block_size=block_size, group=group, label_field=label_field,
    )  # fmt: skip
    from landsight.distributed import global_rank

    if global_rank() != 0:  # torchrun / srun: rank 0 reports
        return
    record_config(result.bundle_path, run_id=result.run_id, tracking_uri=tracking_uri)
    note_skipped(result.skipped, what="raster")
    metrics_table(result.metrics, fmt)
    err().print(f"best epoch {result.best_epoch + 1}; bundle: [bold]{result.bundle_path}[/bold]")


@app.command("predict")
@configurable(
    inputs={"bundle": "BUNDLE", "raster": "RASTER"},
    outputs={"out_": ("--out", "file"), "probabilities": ("--probabilities", "file"), "vector": ("--vector", "file"),
             "stats": ("--stats", "file")},
)
def predict_cmd(
    bundle: Annotated[Path, typer.Argument(help="Segmentation bundle folder or zip.")],
    raster: Annotated[Path, typer.Argument(help="Raster to map (any size).")],
    out_: Annotated[Path, typer.Option("--out", help="Output GeoTIFF of class codes.")] = Path("landcover.tif"),
    probabilities: Annotated[Path | None, typer.Option(help="Also write per-class probabilities here.")] = None,
    cog: Annotated[bool, typer.Option("--cog", help="Write Cloud Optimized GeoTIFFs.")] = False,
    window_size: WindowOpt = 576,
    batch_size: Annotated[int, typer.Option(help="Windows per inference call.", **option_range("batch_size"))] = 2,
    tta: TtaOpt = "none",
    aux_rasters: AuxOpt = None,
    vector: Annotated[
        Path | None, typer.Option(help="Also write class polygons: .gpkg, .geojson or .parquet (GeoParquet).")
    ] = None,
    dissolve: Annotated[str, typer.Option(help="--vector: one feature per class | region (connected area).")] = (
        "class"
    ),
    simplify: Annotated[float | None, typer.Option(help="--vector: simplify polygons by this tolerance, metres.")] = (
        None
    ),
    min_area: Annotated[float | None, typer.Option(help="--vector: drop regions smaller than this, m².")] = None,
    stats: Annotated[Path | None, typer.Option(help="Write area per class (m², ha, %) to this CSV.")] = None,
    sieve: Annotated[
        int | None,
        typer.Option(help="Merge regions smaller than this many pixels into their neighbours (map and layers).", min=1),
    ] = None,
    max_polygons: Annotated[
        int | None, typer.Option(help="--vector: stop with an error above this many polygons [100,000].", min=1)
    ] = None,
    asset: Annotated[str | None, typer.Option(help="STAC input: the asset to read (default: the first image).")] = (
        None
    ),
    pixel_size: Annotated[
        float | None,
        typer.Option(
            metavar="METRES",
            help="--stats of a raster without a CRS: pixel side in metres (areas in m²).",
        ),
    ] = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write the land-cover map of a raster (same CRS and transform, colour table, nodata), and GIS layers."""
    from landsight.bundle import load_bundle
    from landsight.recipe import check_tta
    from landsight.segment.predict import SUPPORTED_TTA

    tta = check_tta(tta, SUPPORTED_TTA, task="segmentation")  # before the bundle is read
    loaded = load_bundle(bundle, task="segmentation")
    path = loaded.predict(raster, out_, probabilities=probabilities, cog=cog, window_size=window_size,
                          batch_size=batch_size, progress=not quiet, overwrite=overwrite, tta=tta, aux=aux_rasters,
                          vector=vector, dissolve=dissolve, simplify=simplify, min_area=min_area, stats=stats,
                          asset=asset, sieve=sieve, pixel_size=pixel_size,
                          **({"max_polygons": max_polygons} if max_polygons is not None else {}))  # fmt: skip
    for extra, what in ((vector, "polygons"), (stats, "areas")):
        if extra is not None:
            err().print(f"{what}: [bold]{extra}[/bold]")
    err().print(f"land cover: [bold]{path}[/bold]" + (f", probabilities: [bold]{probabilities}[/bold]"
                                                      if probabilities else ""))  # fmt: skip


@app.command("evaluate")
@configurable(
    inputs={"bundle": "BUNDLE", "images": "--images", "labels": "--labels"},
    outputs={"out_": ("--out", "evaluation")},
)
def evaluate_cmd(
    bundle: Annotated[Path, typer.Argument(help="Segmentation bundle folder or zip.")],
    images: ImagesOpt,
    labels: LabelsOpt = None,
    label_field: LabelFieldOpt = None,
    out_: Annotated[Path, typer.Option("--out", help="Folder for segmentation_metrics.json.")] = Path("evaluation"),
    window_size: WindowOpt = 576,
    tta: TtaOpt = "none",
    aux_rasters: AuxOpt = None,
    tracking_uri: TrackingOpt = None,
    track: TrackOpt = True,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Pixel accuracy, per-class IoU / F1, mean IoU, areas and the confusion matrix over whole rasters."""
    from landsight.segment.evaluate import evaluate_rasters

    metrics = evaluate_rasters(bundle, images, labels, out=out_, window_size=window_size, progress=not quiet,
                               tracking_uri=tracking_uri, track=track, overwrite=overwrite, tta=tta,
                               aux_rasters=aux_rasters, label_field=label_field)  # fmt: skip
    note_skipped(metrics["skipped"], what="raster")
    metrics_table(metrics, fmt)
    err().print(f"metrics in [bold]{out_ / 'segmentation_metrics.json'}[/bold]")
