"""The ``landsight`` command line: the root, the verbs every task shares, and the task verbs.

Parse, call the Python API, print. Nothing else lives here. Each task's verbs are in their own
module (:mod:`landsight.cli.classify`, :mod:`landsight.cli.segment`); the option annotations in
:mod:`landsight.cli.options`.

Results go to stdout in ``--format table|csv|tsv|json``; progress, notes and skipped inputs go to
stderr (:mod:`landsight.console`). Exit codes: 0 success, 1 a bug, 2 a user error, 3 some inputs
skipped.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Annotated

import typer

import landsight.cli.classify as classify  # not `from landsight.cli import`: cli/__init__ imports this module
import landsight.cli.segment as segment
from landsight.cli.options import (
    AssetOpt,
    CalibrationMethodOpt,
    ColumnsOpt,
    FormatOpt,
    MaxDropOpt,
    NCalibrationOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuietOpt,
    TrackingOpt,
    comma_list,
)
from landsight.console import emit, emit_quantization, err, note_skipped, out
from landsight.errors import LandsightError
from landsight.outputs import Output
from landsight.ranges import option_range
from landsight.runconfig import configurable

app = typer.Typer(
    help="Transfer learning on imagery, aerial imagery first.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(classify.app)  # train, evaluate, predict, featurize, finetune, tune, demo: top-level verbs

VERSIONED = ("torch", "torchvision", "timm", "onnxruntime", "scikit-learn", "pyspark", "rasterio", "lightning")


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from landsight import __version__

    lines = [f"landsight {__version__}"]
    for name in VERSIONED:
        try:
            lines.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            lines.append(f"{name} (not installed)")
    out().print("\n".join(lines))
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the versions of landsight and its engines."
        ),
    ] = False,
) -> None:
    """Transfer learning on imagery, aerial imagery first."""


@app.command()
@configurable(
    inputs={"bundle": "BUNDLE", "calibration": "--calibration", "test": "--test", "labels": "--labels"},
    outputs={"out_": ("--out", "bundle")},
)
def quantize(
    bundle: Annotated[Path, typer.Argument(help="Float32 bundle folder or zip (classification or segmentation).")],
    out_: Annotated[Path, typer.Option("--out", help="Quantized bundle folder to write.")] = Path(
        "model-int8.landsight"
    ),
    precision: PrecisionOpt = "int8",
    calibration: Annotated[
        str | None,
        typer.Option(
            help="Calibration images (folder, glob, list file) or rasters (glob); default: the bundle's training data."
        ),
    ] = None,
    n_calibration: NCalibrationOpt = 200,
    test: Annotated[
        str | None,
        typer.Option(
            help="Held-out data for the drop check: labelled images, or image rasters (glob, with --labels); "
            "default: the bundle's own test split."
        ),
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="Segmentation: the label rasters of --test (glob).")
    ] = None,
    max_drop: MaxDropOpt = 1.0,
    method: CalibrationMethodOpt = "minmax",
    refit_head: Annotated[
        bool,
        typer.Option(
            "--refit-head/--no-refit-head",
            help="Classification, int8: refit the scikit-learn head on the int8 backbone's features of its "
            "training images.",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the calibration sample.")] = 0,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Quantize a bundle for faster CPU scoring; refused when held-out accuracy drops more than --max-drop."""
    from landsight.quantize import quantize_bundle

    result = quantize_bundle(
        bundle, out_, precision=precision, calibration=calibration, n_calibration=n_calibration, test=test,
        test_labels=labels, max_drop=max_drop, method=method, refit_head=refit_head, random_state=seed,
        overwrite=overwrite, progress=not quiet,
    )  # fmt: skip
    emit_quantization(result, fmt)


@segment.app.command("quantize", hidden=True, deprecated=True)
@configurable(
    inputs={"bundle": "BUNDLE", "calibration": "--calibration", "images": "--images", "labels": "--labels"},
    outputs={"out_": ("--out", "bundle")},
)
def segment_quantize(
    bundle: Annotated[Path, typer.Argument(help="Float32 segmentation bundle folder or zip.")],
    out_: Annotated[Path, typer.Option("--out", help="Quantized bundle folder to write.")] = Path(
        "landcover-int8.landsight"
    ),
    precision: PrecisionOpt = "int8",
    calibration: Annotated[str | None, typer.Option(help="Glob of calibration rasters.")] = None,
    n_calibration: NCalibrationOpt = 200,
    images: Annotated[str | None, typer.Option(help="Held-out image rasters for the drop check (glob).")] = None,
    labels: Annotated[str | None, typer.Option(help="Their label rasters (glob).")] = None,
    max_drop: MaxDropOpt = 1.0,
    method: CalibrationMethodOpt = "minmax",
    seed: int = 0,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Deprecated spelling of `landsight quantize BUNDLE --test IMAGES --labels LABELS`."""
    quantize.__wrapped__(  # type: ignore[attr-defined] - the verb without its --config wrapper
        bundle, out_=out_, precision=precision, calibration=calibration, n_calibration=n_calibration, test=images,
        labels=labels, max_drop=max_drop, method=method, refit_head=False, seed=seed, quiet=quiet,
        overwrite=overwrite, fmt=fmt,
    )  # fmt: skip


@app.command()
@configurable(
    outputs={"plot": ("--plot", "file")},
)
def runs(
    sort: Annotated[str, typer.Option(help="Column or metric to sort by.")] = "started",
    ascending: Annotated[bool, typer.Option("--ascending", help="Sort ascending (default: descending).")] = False,
    compare: Annotated[list[str] | None, typer.Option(help="Run ids (prefixes) to compare; repeat.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of training / validation error curves of --compare runs.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Most runs to print (default: 30 in a table, all otherwise).")] = (
        None
    ),
    columns: ColumnsOpt = None,
    tracking_uri: TrackingOpt = None,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """List recorded runs (sortable by any metric; --format json gives every parameter and metric)."""
    from landsight.results.runs import TABLE_COLUMNS, list_runs, plot_curves

    table = list_runs(tracking_uri=tracking_uri, sort=sort, ascending=ascending, details=fmt != "table")
    if compare:
        table = table[table["full_run_id"].map(lambda r: any(r.startswith(c) for c in compare))]
    shown = comma_list(columns) or (list(TABLE_COLUMNS) if fmt == "table" else None)
    rows = table.head(limit if limit is not None else (30 if fmt == "table" else len(table)))
    pct = "{:.2%}".format
    one = "{:.1f}".format
    emit(rows, fmt, title="landsight runs", columns=shown,
         display={"accuracy": pct, "balanced_accuracy": pct, "best_val_error": one, "seconds": one,
                  "started": lambda v: str(v)[:16]})  # fmt: skip
    if plot is not None:
        if not compare:
            raise typer.BadParameter("--plot needs --compare RUN [--compare RUN ...]")
        path = plot_curves(compare, plot, tracking_uri=tracking_uri, overwrite=overwrite)
        err().print(f"error curves in [bold]{path}[/bold]")


@app.command()
@configurable(
    inputs={"bundle": "BUNDLE"},
)
def serve(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip to serve.")],
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 for all (containers).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", **option_range("port"))] = 8000,
    workers: Annotated[
        int, typer.Option(help="uvicorn worker processes, each with its own model.", **option_range("workers"))
    ] = 1,
    batching: Annotated[
        bool | None, typer.Option("--batching/--no-batching", help="Micro-batch concurrent requests [on].")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Most images per forward pass [8].")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Milliseconds a micro-batch waits for more [1].")] = None,
    top_k: Annotated[int | None, typer.Option(help="Classes listed per prediction [5].")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Largest request body, bytes [32 MiB].")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Largest image, pixels [40e6].")] = None,
    max_decode_bytes: Annotated[
        int | None, typer.Option(help="Largest estimated decoding memory per image, bytes [512 MiB].")
    ] = None,
    max_decode_total_bytes: Annotated[
        int | None,
        typer.Option(help="Decoding memory of all requests together per process, bytes [1 GiB]; 503 when full."),
    ] = None,
    decode_wait_s: Annotated[
        float | None, typer.Option(help="Seconds a request waits for decoding memory before 503 [5].")
    ] = None,
    max_batch_files: Annotated[int | None, typer.Option(help="Most files per /predict/batch [64].")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads per forward pass [1].")] = None,
    batch_workers: Annotated[
        int | None, typer.Option(help="Parallel forward passes per worker process [cores / threads].")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda [auto].")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a bundle over HTTP: /predict, /predict/batch, /metadata, /health/*, Open Inference Protocol v2."""
    from landsight.serve import run
    from landsight.serve.settings import ServeSettings

    options = {
        "batching": batching,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "top_k": top_k,
        "max_body_bytes": max_body_bytes,
        "max_pixels": max_pixels,
        "max_decode_bytes": max_decode_bytes,
        "max_decode_total_bytes": max_decode_total_bytes,
        "decode_wait_s": decode_wait_s,
        "max_batch_files": max_batch_files,
        "threads": threads,
        "batch_workers": batch_workers,
        "device": device,
    }
    # Options left unset fall back to LANDSIGHT_SERVE_<FIELD> environment variables, then defaults.
    settings = ServeSettings.from_env(**{k: v for k, v in options.items() if v is not None})

    def announce(url: str) -> None:
        err().print(f"serving [bold]{bundle}[/bold] on [bold]{url}[/bold] ({workers} worker(s); docs at {url}/docs)")

    run(bundle, host=host, port=port, workers=workers, settings=settings, log_level=log_level, announce=announce)


@app.command()
@configurable(inputs={"raster": "RASTER", "labels": "--labels"}, outputs={"out_": ("--out", "tiles")})
def tile(
    raster: Annotated[list[Path], typer.Argument(help="Georeferenced raster(s) (GeoTIFF, JP2...) or a STAC JSON.")],
    out_: Annotated[Path, typer.Option("--out", help="Folder for the tiles.")] = Path("tiles"),
    size: Annotated[int, typer.Option(help="Tile side in pixels.", **option_range("size"))] = 256,
    labels: Annotated[Path | None, typer.Option(help="Label raster (codes; any grid) or polygons (.gpkg...).")] = None,
    label_field: Annotated[str | None, typer.Option(help="Polygons' attribute: class name or code.")] = None,
    classes: Annotated[str, typer.Option(help="Class map of the codes: chesapeake | dubai | a YAML.")] = "chesapeake",
    rule: Annotated[str, typer.Option(help="Tile label: majority | min-fraction:F (of the tile).")] = "majority",
    keep_unlabelled: Annotated[bool, typer.Option("--keep-unlabelled", help="Keep tiles without a class.")] = False,
    edge: Annotated[str, typer.Option(help="Partial edge tiles: drop | keep (padded with nodata).")] = "drop",
    prefix: Annotated[str | None, typer.Option(help="Tile-name prefix (default: the scene's file stem).")] = None,
    layout: Annotated[str, typer.Option(help="With --labels: folders (OUT/<class>/) | csv.")] = "folders",
    asset: AssetOpt = None,
    no_remote: Annotated[bool, typer.Option("--no-remote", help="STAC input: read local files only.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Cut rasters into GeoTIFF tiles named <scene>_<row>_<col>.tif; with --labels, labelled for `train`."""
    from landsight.data.tiling import cut_tiles
    from landsight.segment.scene_tiles import tile_scene

    if labels is None and len(raster) == 1:
        tiles = cut_tiles(raster[0], out_, size=size, prefix=prefix, edge=edge, overwrite=overwrite, asset=asset,
                          allow_remote=not no_remote)  # fmt: skip
        grid = f"{tiles[-1].row + 1} x {tiles[-1].col + 1} of {size} px"
        err().print(f"{len(tiles)} tiles ({grid}) in [bold]{out_}[/bold]")
        return
    result = tile_scene(raster, out_, size=size, labels=labels, label_field=label_field, classes=classes, rule=rule,
                        keep_unlabelled=keep_unlabelled, edge=edge, prefix=prefix, layout=layout, overwrite=overwrite,
                        asset=asset, allow_remote=not no_remote)  # fmt: skip
    for line in result.describe(rule):
        err().print(line)


@app.command("map")
@configurable(
    inputs={"predictions": "PREDICTIONS", "reference": "--reference", "compare": "--compare"},
    outputs={"out_": ("--out", "file"), "png": ("--png", "file"), "change_out": ("--change-out", "file")},
    derived=lambda v: [Output(Path(v["change_out"]).with_name(f"{Path(v['change_out']).stem}_transitions.csv"),
                              "--change-out (transitions)")] if v.get("change_out") else [],
)
def map_(
    predictions: Annotated[Path, typer.Argument(help="Predictions .parquet / .csv with bounds and CRS.")],
    out_: Annotated[Path | None, typer.Option("--out", help="Interactive HTML map to write (offline).")] = Path(
        "map.html"
    ),
    png: Annotated[Path | None, typer.Option(help="Static PNG map to write as well.")] = None,
    reference: Annotated[Path | None, typer.Option(help="CSV / Parquet of reference labels: path,label.")] = None,
    compare: Annotated[Path | None, typer.Option(help="Older predictions of the same tiles: change layer.")] = None,
    change_out: Annotated[Path | None, typer.Option(help="With --compare: per-tile change CSV.")] = None,
    basemap: Annotated[str | None, typer.Option(help="XYZ tile URL for a background map (online).")] = None,
    attribution: Annotated[str, typer.Option(help="Attribution of --basemap.")] = "",
    thumbnails: Annotated[
        bool, typer.Option("--thumbnails/--no-thumbnails", help="Tile thumbnails in the popups.")
    ] = True,
    title: Annotated[str, typer.Option(help="Title on the map.")] = "",
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Map predicted classes tile by tile (HTML + optional PNG), with reference and change layers."""
    from landsight.results.maps import prediction_map

    result = prediction_map(
        predictions, out_, png=png, reference=reference, compare=compare, basemap=basemap, attribution=attribution,
        thumbnails=thumbnails, title=title, progress=not quiet, overwrite=overwrite,
    )  # fmt: skip
    note_skipped(result.skipped, what="tile")
    note = f", {result.n_disagree} disagree with the reference" if reference is not None else ""
    err().print(f"{result.n_tiles} tiles drawn{note}")
    for path in (result.html, result.png):
        if path is not None:
            err().print(f"map: [bold]{path}[/bold]")
    change = result.change
    if change is not None:
        from landsight.results.change import write_change

        transitions = change.transitions.rename(columns={"count": "tiles"})
        emit(transitions, fmt, title=f"{change.n_changed} of {len(change.table)} tiles changed class")
        if change_out is not None:
            files = write_change(change, change_out, overwrite=overwrite)
            err().print(f"change tables: [bold]{files['tiles']}[/bold], [bold]{files['transitions']}[/bold]")


@app.command()
@configurable(
    inputs={"source": "SOURCE"},
    outputs={"out_": ("--out", "file")},
)
def report(
    source: Annotated[str, typer.Argument(help="Bundle folder / zip, or an MLflow run id (prefix).")],
    out_: Annotated[Path, typer.Option("--out", help="HTML file to write (self-contained).")] = Path("report.html"),
    n_wrong: Annotated[
        int, typer.Option(help="Most confidently wrong images to show.", **option_range("n_wrong"))
    ] = 12,
    tracking_uri: TrackingOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a self-contained HTML report of a run or a bundle."""
    from landsight.results.report import build_report

    path = build_report(source, out_, tracking_uri=tracking_uri, n_wrong=n_wrong, overwrite=overwrite)
    err().print(f"report: [bold]{path}[/bold]")


@app.command()
@configurable(
    inputs={"data": "DATA"},
    outputs={"report_csv": ("--report", "file"), "move_to": ("--move-to", "destination")},
)
def dedup(
    data: Annotated[list[str], typer.Argument(help="Folders, globs or list files; several = splits (train test).")],
    threshold: Annotated[
        int, typer.Option(help="Largest Hamming distance of near-duplicates, bits of 64.", **option_range("threshold"))
    ] = 4,
    method: Annotated[str, typer.Option(help="phash | dhash | ahash | whash")] = "phash",
    report_csv: Annotated[Path | None, typer.Option("--report", help="Write the groups to this CSV.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Delete all but one image of each group.")] = False,
    move_to: Annotated[Path | None, typer.Option(help="Move all but one image of each group here.")] = None,
    keep: Annotated[str | None, typer.Option(help="Prefer keeping images of this source (e.g. train/).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before removing / moving.")] = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Find near-duplicate images (perceptual hash); remove or move them only when asked."""
    from landsight.outputs import atomic_path, check_output
    from landsight.results.dedup import apply_removal, find_duplicates, plan_removal

    if remove and move_to is not None:
        raise typer.BadParameter("give --remove or --move-to, not both")
    if keep is not None:
        same = [d for d in data if d.rstrip("/") == keep.rstrip("/")]
        if not same:
            raise typer.BadParameter(f"--keep must be one of the DATA sources ({', '.join(data)}), got {keep!r}")
        keep = same[0]
    if report_csv is not None:
        check_output(report_csv, overwrite=overwrite, what="report CSV")
    result = find_duplicates(data, threshold=threshold, method=method, progress=not quiet)
    note_skipped(result.skipped, what="image")
    groups = result.groups.rename(columns={"split": "source", "distance": "bits"})
    emit(groups[[c for c in ("group", "path", "source", "bits") if c in groups.columns]], fmt,
         title="near-duplicate groups")  # fmt: skip
    n_cross = result.cross_split_groups["group"].nunique() if len(result.groups) else 0
    err().print(f"{result.n_images} images, {result.n_groups} near-duplicate groups ({n_cross} across sources)")
    if report_csv is not None:
        with atomic_path(report_csv) as tmp:
            result.groups.to_csv(tmp, index=False)
        err().print(f"groups: [bold]{report_csv}[/bold]")
    if not (remove or move_to is not None) or not len(result.groups):
        return
    plan = plan_removal(result, keep_split=keep)
    verb = f"move to {move_to}" if move_to is not None else "DELETE"
    console = err()
    console.print(f"[bold]{len(plan)} image(s) to {verb}[/bold] (one image of each group is kept):")
    for row in plan.itertuples():
        console.print(f"  {row.path}  (duplicate of {row.kept}, {row.distance} bits)")
    if not yes and not typer.confirm(f"{verb} these {len(plan)} image(s)?", default=False, err=True):
        console.print("nothing changed")
        raise typer.Exit(1)
    done = apply_removal(plan, move_to=move_to)
    console.print(f"{'moved' if move_to is not None else 'deleted'} {len(done)} image(s)")

app.add_typer(segment.app, name="segment")


class Interrupted(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt
    """SIGINT or SIGTERM: unwinds every ``finally`` (temporary files removed), then :func:`main` exits.

    A ``BaseException``, so no ``except Exception`` on the way swallows it, and Click does not
    turn it into its own "Aborted!".
    """


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, ``timeout``, SLURM, Kubernetes) is handled like Ctrl-C: clean up, then exit."""
    raise Interrupted(signum)


#: Exit codes: a user error (bad input, refused output), a failure of the environment, an interrupt.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                       errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                       errno.EPERM: "operation not permitted"}  # fmt: skip


def main() -> None:
    """Console-script entry point: one line for every error the user or the environment can fix.

    Exit codes: 0 success; 1 a bug, or a failure of the environment (full disk); 2 a user error
    (bad input, a refused output, a read-only or forbidden folder); 3 some inputs skipped;
    130 / 143 interrupted by SIGINT / SIGTERM, after every temporary file was removed and every
    existing output left as it was.
    """
    import signal
    import tempfile

    from landsight.console import EXIT_PARTIAL, EXIT_USER_ERROR, skipped_count
    from landsight.outputs import remove_stale_tmp

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    remove_stale_tmp(tempfile.gettempdir())  # scratch folders of killed runs
    try:
        app()
    except LandsightError as exc:
        err().print(f"[red]error:[/red] {exc}")
        raise SystemExit(EXIT_USER_ERROR) from None
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        err().print(f"[red]interrupted[/red] ({signal.Signals(signum).name}); existing outputs left as they were")
        raise SystemExit(128 + int(signum)) from None
    except UnicodeDecodeError as exc:
        err().print(f"[red]error:[/red] a text input is not UTF-8: {exc.reason} at byte {exc.start}")
        raise SystemExit(EXIT_USER_ERROR) from None
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        err().print(f"[red]error:[/red] {_ENVIRONMENT_ERRNOS[exc.errno]}{where}; nothing was replaced")
        raise SystemExit(1 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else EXIT_USER_ERROR) from None
    except SystemExit as exc:
        if exc.code in (0, None) and skipped_count():
            raise SystemExit(EXIT_PARTIAL) from None
        raise
