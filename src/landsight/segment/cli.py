"""The ``landsight segment`` sub-commands: parse options, call :mod:`landsight.segment`, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

segment_app = typer.Typer(
    help="Pixel-level land cover: train a U-Net on raster pairs, predict GeoTIFF maps, evaluate.",
    no_args_is_help=True,
)
console = Console()

ImagesOpt = Annotated[str, typer.Option(help="Glob of image rasters (quote it), or a CSV with columns image,label.")]
LabelsOpt = Annotated[str | None, typer.Option(help="Glob of label rasters whose wildcards match --images'.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
WindowOpt = Annotated[int, typer.Option(help="Prediction tile side in pixels (multiple of 32).")]


def _ints(value: str | None, name: str) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be comma-separated integers, got {value!r}") from exc


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} raster(s)[/yellow]")
        for path, reason in skipped[:10]:
            console.print(f"  [yellow]{path}[/yellow]: {reason}")


@segment_app.command("train")
def train_cmd(
    images: ImagesOpt,
    labels: LabelsOpt = None,
    classes: Annotated[str, typer.Option(help="Class map YAML, or 'chesapeake' / 'dubai'.")] = "chesapeake",
    bands: Annotated[str | None, typer.Option(help="1-based image bands, e.g. 1,2,3,4 (default all).")] = None,
    out: Annotated[Path, typer.Option(help="Bundle folder to write.")] = Path("landcover.landsight"),
    arch: Annotated[str, typer.Option(help="unet | deeplabv3plus")] = "unet",
    encoder: Annotated[str, typer.Option(help="timm encoder name.")] = "tf_efficientnet_lite0",
    weights: Annotated[str, typer.Option(help="'imagenet', 'none' (random) or a weights file.")] = "imagenet",
    epochs: int = 20,
    chip_size: Annotated[int, typer.Option(help="Chip side in pixels (multiple of 32).")] = 256,
    chips_per_epoch: int = 512,
    val_chips: int = 64,
    batch_size: int = 8,
    context: Annotated[int | None, typer.Option(help="Loss on the centre CONTEXT pixels only (seed: 128).")] = None,
    oversample: Annotated[float, typer.Option(help="Fraction of chips centred on rare classes.")] = 0.0,
    no_augment: Annotated[bool, typer.Option(help="No flips / rotations.")] = False,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    lr_schedule: str = "cosine",
    backbone_lr_mult: float = 1.0,
    val_size: Annotated[float, typer.Option(help="Fraction of pairs held out for validation.")] = 0.2,
    seed: int = 0,
    devices: Annotated[int, typer.Option(help="Processes / GPUs (DDP when > 1).")] = 1,
    num_nodes: int = 1,
    num_workers: int = 0,
    resume: bool = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store.")] = None,
    no_track: Annotated[bool, typer.Option(help="Do not record an MLflow run.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a segmentation network on image / label raster pairs and write a bundle."""
    from landsight.segment.evaluate import metrics_table
    from landsight.segment.train import train_segmentation

    result = train_segmentation(
        images, labels, classes=classes, out=out, bands=_ints(bands, "--bands"), arch=arch, encoder=encoder,
        weights=None if weights.lower() == "none" else weights, epochs=epochs, chip_size=chip_size,
        chips_per_epoch=chips_per_epoch, val_chips=val_chips, batch_size=batch_size, context=context,
        oversample=oversample, augment=not no_augment, optimizer=optimizer, lr=lr, lr_schedule=lr_schedule,
        backbone_lr_mult=backbone_lr_mult, val_size=val_size, random_state=seed, devices=devices,
        num_nodes=num_nodes, num_workers=num_workers, resume=resume, progress=not quiet,
        tracking_uri=tracking_uri, track=not no_track,
    )  # fmt: skip
    from landsight.distributed import global_rank

    if global_rank() != 0:  # torchrun / srun: rank 0 reports
        return
    _print_skipped(result.skipped)
    console.print(metrics_table(result.metrics))
    console.print(f"best epoch {result.best_epoch + 1}; bundle: [bold]{result.bundle_path}[/bold]")


@segment_app.command("predict")
def predict_cmd(
    bundle: Annotated[Path, typer.Argument(help="Segmentation bundle folder or zip.")],
    raster: Annotated[Path, typer.Argument(help="Raster to map (any size).")],
    out: Annotated[Path, typer.Option(help="Output GeoTIFF of class codes.")] = Path("landcover.tif"),
    probabilities: Annotated[Path | None, typer.Option(help="Also write per-class probabilities here.")] = None,
    cog: Annotated[bool, typer.Option(help="Write Cloud Optimized GeoTIFFs.")] = False,
    window_size: WindowOpt = 576,
    batch_size: Annotated[int, typer.Option(help="Tiles per inference call.")] = 2,
    quiet: QuietOpt = False,
) -> None:
    """Write the land-cover map of a raster (same CRS and transform, colour table, nodata)."""
    from landsight.bundle import load_bundle

    loaded = load_bundle(bundle, task="segmentation")
    path = loaded.predict(raster, out, probabilities=probabilities, cog=cog, window_size=window_size,
                          batch_size=batch_size, progress=not quiet)  # fmt: skip
    console.print(f"land cover: [bold]{path}[/bold]" + (f", probabilities: [bold]{probabilities}[/bold]"
                                                         if probabilities else ""))  # fmt: skip


@segment_app.command("evaluate")
def evaluate_cmd(
    bundle: Annotated[Path, typer.Argument(help="Segmentation bundle folder or zip.")],
    images: ImagesOpt,
    labels: LabelsOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for segmentation_metrics.json.")] = Path("evaluation"),
    window_size: WindowOpt = 576,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store.")] = None,
    no_track: Annotated[bool, typer.Option(help="Do not record an MLflow run.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Pixel accuracy, per-class IoU / F1, mean IoU and the confusion matrix over whole rasters."""
    from landsight.segment.evaluate import evaluate_rasters, metrics_table

    metrics = evaluate_rasters(bundle, images, labels, out=out, window_size=window_size, progress=not quiet,
                               tracking_uri=tracking_uri, track=not no_track)  # fmt: skip
    _print_skipped(metrics["skipped"])
    console.print(metrics_table(metrics))
    console.print(f"metrics in [bold]{out / 'segmentation_metrics.json'}[/bold]")
