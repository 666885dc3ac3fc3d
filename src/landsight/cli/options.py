"""Command-line options of every ``landsight`` verb, in one module.

Typer annotations, and the few parsers that turn an option's text into the Python API's value;
each verb declares the ones it takes. Boolean options read naturally in
``--help``: ``--track/--no-track``, never a doubled negative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landsight.console import TABLE_FORMATS
from landsight.outputs import Output
from landsight.ranges import option_range

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (results and errors still print).")]
TrackingOpt = Annotated[
    str | None, typer.Option(help="MLflow store (default sqlite:///mlruns.db or $MLFLOW_TRACKING_URI).")
]
TrackOpt = Annotated[bool, typer.Option("--track/--no-track", help="Record this run in MLflow.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output (never done without it).")]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help=f"Result format on stdout: {' | '.join(TABLE_FORMATS)}. Tables never cut cells in a pipe.",
    ),
]
ColumnsOpt = Annotated[str | None, typer.Option("--columns", help="Comma-separated columns to print (default: all).")]
BandsOpt = Annotated[str | None, typer.Option(help="1-based bands to read, e.g. '1,2,3,4'.")]
ClassNamesOpt = Annotated[Path | None, typer.Option(help="Class-names file for CNTK map files.")]
PrecisionOpt = Annotated[str, typer.Option(help="int8 (CPU: static QDQ, per-channel weights) | fp16 (GPU only).")]
TrainPrecisionOpt = Annotated[
    str,
    typer.Option(
        help="fp32 | int8 | fp16: also write a quantized copy beside OUT (OUT-int8.landsight; landsight quantize), "
        "refused beyond --max-drop.",
    ),
]
NCalibrationOpt = Annotated[
    int, typer.Option(help="Calibration inputs (images, or raster windows).", **option_range("n_calibration"))
]
MaxDropOpt = Annotated[
    float, typer.Option(help="Refuse the quantized bundle if held-out accuracy drops more than this, points.")
]
CalibrationMethodOpt = Annotated[str, typer.Option(help="Activation range calibration: minmax | percentile | entropy.")]
SplitOpt = Annotated[
    str, typer.Option(help="random | spatial (whole square blocks of georeferenced tiles) | group (whole groups).")
]
BlockSizeOpt = Annotated[
    float | None, typer.Option(help="--split spatial: block side in CRS units, e.g. metres (default: from the extent).")
]
GroupOpt = Annotated[
    str | None,
    typer.Option(help="--split group: 'regex:PATTERN' on the path (first capture group), or a map-file column."),
]

BackboneOpt = Annotated[str, typer.Option(help="timm model name, 'alexnet' or 'torchvision/<name>'.")]
StagesOpt = Annotated[
    str,
    typer.Option(
        help="Backbone stages pooled into the features too: auto (blocks.3-5 of EfficientNet-Lite) | none | "
        "comma-separated module names."
    ),
]
WeightsOpt = Annotated[
    str, typer.Option(help="'imagenet', 'none' (random, explicit) or a .safetensors / state-dict file.")
]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda")]
BatchOpt = Annotated[int, typer.Option(help="Images per forward pass.", **option_range("batch_size"))]
EngineOpt = Annotated[str, typer.Option(help="local | spark (pyspark; executors need only onnxruntime).")]
MasterOpt = Annotated[str, typer.Option(help="Spark master with --engine spark: local[*], spark://host:7077, yarn.")]
ConfOpt = Annotated[list[str] | None, typer.Option("--conf", help="Spark setting KEY=VALUE (--engine spark); repeat.")]
AssetOpt = Annotated[
    str | None, typer.Option(help="STAC input (Item / Catalog / ItemCollection JSON): the asset to read.")
]



def spark_engine(engine: str) -> bool:
    """``--engine``: True for ``spark``, False for ``local``; anything else is a usage error."""
    if engine not in ("local", "spark"):
        raise typer.BadParameter(f"--engine must be 'local' or 'spark', got {engine!r}")
    return engine == "spark"


def weights_or_none(value: str) -> str | None:
    """``--weights``: ``none`` (random initialisation) becomes None, anything else passes through."""
    return None if value.lower() == "none" else value


def number(value: str, name: str) -> float:
    """An option that takes a number or ``auto`` (``auto`` is handled by the caller)."""
    try:
        return float(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be a number or 'auto', got {value!r}") from exc


def comma_list(value: str | None) -> list[str] | None:
    """A comma-separated option (``--columns a,b``) as a list; None or empty gives None."""
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def checkpoints_output(out: str | Path, resume: bool) -> Output:
    """The checkpoint folder ``OUT.checkpoints/`` of a training run, continued with ``--resume``."""
    return Output(Path(f"{out}.checkpoints"), "--out (OUT.checkpoints)", "checkpoints", resumable=resume)


def quantized_output(out: str | Path, precision: str) -> list[Output]:
    """The quantized copy ``OUT-int8.landsight`` that ``--precision int8|fp16`` writes beside the bundle."""
    if precision == "fp32":
        return []
    from landsight.quantize import quantized_sibling

    return [Output(quantized_sibling(out, precision), f"--precision {precision} (OUT-{precision})", "bundle")]
