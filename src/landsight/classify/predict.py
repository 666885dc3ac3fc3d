"""Batch prediction over a folder, glob or list file, to Parquet or CSV, resumable.

Rows are written in chunks to ``<out>.parts/`` as they are scored; at the end the parts and any
earlier output are combined into ``out`` atomically. Re-running into the same ``out`` (after a
crash, or with more images) scores only the paths not already there, plus the rows that failed
before (an unreadable file may have been replaced since).

Every table records what produced it (:func:`landsight.predictions.provenance`: the SHA-256 of
the bundle's ``model.onnx`` and its class list) in its Parquet schema metadata or CSV sidecar,
and ``<out>.parts/`` in ``_landsight.json``. A resume with another bundle, or into a file that
is not a landsight predictions table (a user's own ``labels.csv``), is refused unless
``overwrite=True``, which starts afresh.

Memory is bounded per file: each image's header is read before its pixels are decoded, and an
image whose estimated decoding memory (:attr:`landsight.data.readers.ImageHeader.decode_bytes`) is
over ``max_decode_bytes`` (default 512 MiB, as in ``landsight serve``) is not decoded; it gets a
row with ``error`` set, like any unreadable image, and the run goes on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from landsight.data.readers import DEFAULT_MAX_DECODE_BYTES
from landsight.errors import LandsightValueError
from landsight.outputs import write_json
from landsight.predictions import FORMATS, read_table, write_table
from landsight.ranges import check_ranges

if TYPE_CHECKING:
    import pandas as pd

    from landsight.classify.bundle import Bundle
    from landsight.data.stac import StacAsset

__all__ = ["FORMATS", "PARTS_RECORD", "predict", "read_table"]

PARTS_RECORD = "_landsight.json"
"""File in ``<out>.parts/`` holding the provenance of the part files (same keys as the table's)."""


def predict(
    bundle: str | Path | Bundle,
    inputs: str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    chunk_size: int = 1024,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = True,
    overwrite: bool = False,
    asset: str | None = None,
    to_crs: str | None = None,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
    allow_remote: bool = True,
) -> pd.DataFrame:
    """Predict every image of ``inputs`` with a bundle.

    Args:
        bundle: Bundle folder / zip, or a loaded :class:`landsight.bundle.Bundle`.
        inputs: A folder (recursive), a glob pattern, a list file (one path per line), one
            image, or a STAC Item / Catalog / ItemCollection JSON (one asset per Item; see
            :func:`landsight.data.listing.list_images`).
        out: ``.parquet`` or ``.csv`` file. When it (or its ``.parts`` folder) already holds
            rows written with the same bundle, those paths are skipped (resume), except error
            rows, which are scored again. ``None`` = return only.
        batch_size: Images per forward pass.
        num_workers: Decoding threads.
        chunk_size: Images scored between two writes of a part file.
        progress: Show a progress bar.
        tracking_uri: MLflow store (default ``sqlite:///mlruns.db``, or ``$MLFLOW_TRACKING_URI``).
        track: Record the run in MLflow (parameters, image and error counts, images/s).
        overwrite: Discard an existing ``out`` and ``<out>.parts/`` (whatever wrote them) and
            score every image afresh; ``out`` is replaced only when the new table is complete.
        asset: STAC asset key when ``inputs`` is a STAC JSON (``None`` = the first raster asset
            with role ``"data"`` or type ``image/tiff``).
        to_crs: GIS layer ``out`` only: CRS of the polygons (e.g. ``"EPSG:4326"``; default the
            first tile's CRS, others reprojected to it).
        max_decode_bytes: Largest estimated decoding memory of one image, in bytes (default
            512 MiB, :data:`~landsight.data.readers.DEFAULT_MAX_DECODE_BYTES`), read from its
            header before decoding; an image over it is skipped with an ``error`` row (``"too
            large to decode: ..."``), never fatal. None: no byte limit.
        allow_remote: False: a STAC ``inputs`` must not link to remote Items, Catalogs or
            assets (``--no-remote``; see :func:`landsight.data.stac.stac_items`).

    A GIS ``out`` (``.gpkg``, ``.geojson`` or GeoParquet ``.geoparquet``) is a layer of one
    polygon per georeferenced tile with all the table's columns
    (:func:`landsight.vectors.tile_polygons`), written once every image is scored (no resume,
    no ``.parts``); tiles without georeference are left out of the layer, not of the returned
    table. Its QGIS style ``<stem>.qml`` (loaded with the layer) and SLD ``<stem>.sld`` colour the
    tiles by ``predicted`` (:mod:`landsight.styles`).

    Returns:
        All rows (earlier ones included), columns as in
        :meth:`landsight.bundle.Bundle.predict`: ``path``, ``predicted``, ``confidence``,
        ``prob_<class>``..., ``error``, ``minx``, ``miny``, ``maxx``, ``maxy``, ``crs``, and for
        STAC ``inputs`` ``stac_item`` and ``datetime`` (:data:`landsight.predictions.STAC_COLUMNS`).
        A bad image gives a row with ``error`` set.

    Raises:
        LandsightValueError: ``out`` has an unsupported suffix, is a folder, or is one of the
            inputs (the list file, or a listed file); ``max_decode_bytes`` is not a positive
            integer or None.
        OutputExistsError: Without ``overwrite``: ``out`` or ``<out>.parts/`` exists but was not
            written by landsight predict (no provenance: a user's own table), or was written with
            another bundle (different ``model.onnx`` or classes); the message names both.
        DataNotFoundError: ``inputs`` holds no images.

    """
    from landsight.classify.bundle import as_bundle
    from landsight.data.listing import list_images
    from landsight.tracking import tracked_run
    from landsight.vectors import CLASSIFY_VECTOR_FORMATS, check_crs

    if max_decode_bytes is not None and (
        isinstance(max_decode_bytes, bool) or not isinstance(max_decode_bytes, int) or max_decode_bytes < 1
    ):
        raise LandsightValueError(
            f"max_decode_bytes must be a positive number of bytes or None; got {max_decode_bytes!r}"
        )
    check_ranges(batch_size=batch_size, num_workers=num_workers)
    check_crs(to_crs)  # before any image is scored
    out_path = Path(out) if out is not None else None
    gis = out_path is not None and out_path.suffix.lower() in CLASSIFY_VECTOR_FORMATS
    if out_path is not None and not gis and out_path.suffix not in FORMATS:
        raise LandsightValueError(f"out must end in one of {FORMATS + CLASSIFY_VECTOR_FORMATS}, got {str(out_path)!r}")
    if out_path is not None and out_path.is_dir():
        raise LandsightValueError(
            f"out {str(out_path)!r} is a folder (a Parquet dataset of --engine spark?); the local engine writes one "
            "file: give another name"
        )
    from landsight.data.stac import is_stac_source, stac_items

    stac = stac_items(inputs, asset, allow_remote=allow_remote) if is_stac_source(inputs) else None
    paths = [a.href for a in stac] if stac else list_images(inputs, asset=asset, allow_remote=allow_remote)
    if out_path is not None:
        _check_not_an_input(out_path, inputs, paths)
    if gis:
        from landsight.outputs import check_output

        check_output(out_path, overwrite=overwrite, what="predictions layer")
    model = as_bundle(bundle)
    params = {"bundle": str(model.path), "inputs": str(inputs), "out": str(out_path) if out_path else None,
              "backbone": model.meta["backbone"]["name"], "batch_size": batch_size,
              "max_decode_bytes": max_decode_bytes}  # fmt: skip
    with tracked_run("predict", params, tracking_uri=tracking_uri, enabled=track) as run:
        started = time.perf_counter()
        result, n_new = _predict(model, paths, None if gis else out_path, batch_size, num_workers, chunk_size,
                                 progress, overwrite, max_decode_bytes, stac)  # fmt: skip
        if gis:
            from landsight.styles import default_colours, write_layer_styles
            from landsight.vectors import tile_polygons, write_vector

            write_vector(tile_polygons(result, to_crs=to_crs), out_path, layer="predictions", overwrite=overwrite)
            colours = default_colours(model.classes)  # the QGIS / SLD styles beside it, as landsight map colours it
            write_layer_styles(out_path, "predicted", [(c, c, colours[c]) for c in model.classes])
        seconds = time.perf_counter() - started
        run.log_metrics({"n_images": len(result), "n_scored": n_new, "n_errors": int((result["error"] != "").sum()),
                         "images_per_second": n_new / seconds if n_new else 0.0})  # fmt: skip
    return result


def _check_not_an_input(out: Path, inputs: str | Path, paths: list[str]) -> None:
    """Refuse an ``out`` that is the list file or one of the listed files (links included).

    Only an existing ``out`` can be an input, so nothing is compared otherwise; then one
    ``stat`` per input compares devices and inodes (a link ``tile.jpg -> preds.parquet`` too).

    Raises:
        LandsightValueError: ``out`` is one of the inputs.
    """
    import os

    try:
        target = os.stat(out)
    except OSError:
        return
    for src in [str(Path(inputs).expanduser()), *paths]:
        try:
            st = os.stat(src)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            raise LandsightValueError(
                f"predictions output {str(out)!r} is also an input of this run ({src!r}); writing it would destroy "
                "the input. Choose another output path."
            )


def _parts_dir(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".parts")


def _clear_parts(parts_dir: Path, suffix: str) -> None:
    """Delete the part files and record of ``<out>.parts/`` (only those), then the folder if empty."""
    for part in parts_dir.glob(f"part-*{suffix}"):
        part.unlink()
    (parts_dir / PARTS_RECORD).unlink(missing_ok=True)
    try:
        parts_dir.rmdir()
    except OSError:
        pass  # something else is in there: not ours to delete


def _read_earlier(out_path: Path, parts_dir: Path, expected: dict[str, str], overwrite: bool) -> list[pd.DataFrame]:
    """Rows already written to ``out`` and ``<out>.parts/`` by this bundle (checked), or none with ``overwrite``."""
    from landsight.predictions import check_provenance, read_metadata

    parts = sorted(parts_dir.glob(f"part-*{out_path.suffix}")) if parts_dir.is_dir() else []
    if overwrite:
        if parts_dir.is_dir():
            _clear_parts(parts_dir, out_path.suffix)
        return []
    done: list[pd.DataFrame] = []
    if out_path.exists():
        check_provenance(read_metadata(out_path), expected, where=str(out_path))
        done.append(read_table(out_path))
    record = parts_dir / PARTS_RECORD
    if parts or record.exists():
        try:
            found = json.loads(record.read_text()) if record.is_file() else {}
        except (OSError, ValueError):
            found = {}
        check_provenance(found if isinstance(found, dict) else {}, expected, where=str(parts_dir))
        done.extend(read_table(p) for p in parts)
    return done


def _predict(
    model: Bundle,
    paths: list[str],
    out_path: Path | None,
    batch_size: int,
    num_workers: int,
    chunk_size: int,
    progress: bool,
    overwrite: bool = False,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
    stac: list[StacAsset] | None = None,
) -> tuple[pd.DataFrame, int]:
    import pandas as pd

    from landsight.predictions import add_stac_columns, prediction_columns, provenance

    columns = prediction_columns(model.classes)
    done: list[pd.DataFrame] = []
    parts_dir = _parts_dir(out_path) if out_path is not None else None
    expected = provenance(model) if out_path is not None else {}
    if out_path is not None and parts_dir is not None:
        done = _read_earlier(out_path, parts_dir, expected, overwrite)
    earlier = pd.concat([d for d in done if len(d)], ignore_index=True) if any(len(d) for d in done) else None
    if earlier is not None:
        earlier = earlier.drop_duplicates("path", keep="last")  # a part may repeat a row of out (crash at the end)
        good = set(earlier.loc[earlier["error"] == "", "path"])
        todo = [p for p in paths if p not in good]
        retry = set(todo)
        earlier = earlier[~earlier["path"].isin(retry)]  # failed rows of this run's inputs are scored again
    else:
        todo = list(paths)

    new: list[pd.DataFrame] = []
    if todo:
        from landsight.progress import progress_bar

        n_parts = 0
        if parts_dir is not None and out_path is not None:
            parts_dir.mkdir(parents=True, exist_ok=True)
            record = parts_dir / PARTS_RECORD
            if not record.is_file():
                write_json(record, expected)
            n_parts = len(list(parts_dir.glob("part-*")))
        with progress_bar(len(todo), "predict", enabled=progress) as bar:
            for start in range(0, len(todo), chunk_size):
                chunk = model.predict(
                    todo[start : start + chunk_size], batch_size=batch_size, num_workers=num_workers,
                    max_decode_bytes=max_decode_bytes,
                )  # fmt: skip
                new.append(chunk)
                if parts_dir is not None and out_path is not None:
                    write_table(chunk, parts_dir / f"part-{n_parts:06d}{out_path.suffix}")
                    n_parts += 1
                bar.advance(len(chunk))
    frames = ([earlier] if earlier is not None and len(earlier) else []) + [d for d in new if len(d)]
    result = pd.concat(frames, ignore_index=True) if frames else model.predict([])
    result = result.reindex(columns=columns)
    if stac:  # the Item's id and datetime of each asset (landsight.predictions.STAC_COLUMNS)
        result = add_stac_columns(result, stac)
    if out_path is not None and parts_dir is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        write_table(result, out_path, metadata=expected)
        if parts_dir.is_dir():
            _clear_parts(parts_dir, out_path.suffix)
    return result, len(todo)
