"""Command-line options shared by the ``landsight`` verbs and the ``landsight segment`` verbs.

Typer annotations only; each verb declares the ones it takes. Boolean options read naturally in
``--help``: ``--track/--no-track``, never a doubled negative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landsight.console import TABLE_FORMATS

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
NCalibrationOpt = Annotated[int, typer.Option(help="Calibration inputs (images, or raster windows).")]
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
