"""Whole-scene classification: slide windows over rasters and score them, writing no tiles.

:func:`predict_scene` is ``landsight predict BUNDLE scene.tif --tile-size N [--stride S]``: the
one-command form of ``landsight tile`` + ``predict`` + ``map``. Windows of ``tile_size`` pixels
start at the top-left pixel every ``stride`` pixels (default ``tile_size``: a grid with no
overlap); partial windows at the right and bottom edges are left out, as
:func:`landsight.data.tiling.cut_tiles` leaves out partial tiles. Each window is read with
rasterio (``read(window=...)``) and converted exactly as the readers convert a GeoTIFF tile
(:func:`landsight.data.readers.decode_image`: the bundle's ``bands``, else bands 1-3 or a
palette's colours or a grey band repeated; other dtypes stretched to uint8 per window), then
resized and scored by the bundle in batches. So a window scores the same as the tile
``landsight tile`` writes for it, read back by ``landsight predict``.

The output is a predictions table (:mod:`landsight.predictions`), one row per window, with its
bounds and CRS; its ``path`` is the window id ``<scene>#<row>_<col>`` (:func:`window_id`: the
scene as listed, then the window's grid row and column, 0 = top / left). ``out`` may be a table
(``.parquet`` / ``.csv``, resumable as :func:`landsight.classify.predict.predict` is: rows go to
``<out>.parts/`` as they are scored and a re-run with the same bundle and grid scores only the
missing windows and those that failed) or a GIS layer (``.gpkg`` / ``.geojson`` /
``.geoparquet``, one polygon per window, written at the end, not resumable). ``raster`` adds a
class GeoTIFF on the window grid (:func:`~landsight.classify.scene_grid.write_class_grid`).

Memory: one batch of windows is read ahead of the one being scored, and GDAL's block cache is
capped (``cache_mb``), so peak memory does not grow with the scene; only the table does (about a
hundred bytes a window, plus one byte a window for ``raster``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.classify.scene_grid import GRID_KEY, SceneGrid, crs_text, window_id, write_class_grid
from landsight.errors import LandsightValueError, OutputExistsError

if TYPE_CHECKING:
    import pandas as pd

    from landsight.classify.bundle import Bundle
    from landsight.data.loader import LoadedImage

__all__ = ["predict_scene"]


def _scene_sources(scene: Any, asset: str | None, allow_remote: bool) -> list[str]:
    """The rasters of ``scene``: a path, a URL, a list of them, or anything ``list_images`` lists (STAC too)."""
    from landsight.data.listing import list_images
    from landsight.data.stac import is_stac_source

    if isinstance(scene, list | tuple):
        if not scene:
            raise LandsightValueError("no scene given: pass a raster, several, or a STAC JSON")
        return [s for item in scene for s in _scene_sources(item, asset, allow_remote)]
    text = str(scene)
    if "://" in text and not text.startswith("file://") and not is_stac_source(scene):
        if not allow_remote:
            raise LandsightValueError(f"scene {text!r} is a URL but remote reads are off (--no-remote)")
        if asset is not None:
            raise LandsightValueError(f"asset={asset!r} applies to a STAC JSON source, not {text!r}; drop asset=")
        return [text]
    path = Path(scene).expanduser()
    if asset is None and path.is_file() and path.suffix.lower() not in (".txt", ".lst") and not is_stac_source(scene):
        return [os.path.abspath(path)]  # any raster GDAL reads (.jp2, .vrt...), not only image suffixes
    return list_images(scene, asset=asset, allow_remote=allow_remote)


def _open_grid(source: str, tile_size: int, stride: int, bands: Sequence[int] | None, n_channels: int) -> SceneGrid:
    """Read a scene's header and check it can be cut into windows the model takes."""
    import rasterio

    from landsight.data.readers import check_bands

    try:
        with rasterio.open(source) as src:
            width, height, count, transform, crs = src.width, src.height, src.count, src.transform, src.crs
    except rasterio.errors.RasterioIOError as exc:
        raise LandsightValueError(f"scene {source!r} cannot be opened as a raster: {exc}") from exc
    if tile_size > min(width, height):
        raise LandsightValueError(
            f"tile size must be in [1, {min(width, height)}] for {source!r} ({width} x {height} px), got {tile_size!r}"
        )
    check_bands(bands, count, source)
    channels = len(bands) if bands is not None else 3
    if channels != n_channels:
        raise LandsightValueError(
            f"scene {source!r} gives {channels} channels after band selection, the model needs {n_channels}"
        )
    return SceneGrid(source, width, height, tile_size, stride, transform, crs_text(crs))


def _window_reader(src: Any, bands: Sequence[int] | None) -> Any:
    """A function window -> ``(H, W, C)`` uint8, converting as :func:`landsight.data.readers.decode_image`."""
    from rasterio.enums import ColorInterp

    from landsight.data.readers import _rgb, _to_uint8

    band_list = list(bands) if bands is not None else None
    if band_list is None and src.count == 1 and src.colorinterp[0] == ColorInterp.palette:
        lut = np.zeros((256, 3), dtype=np.uint8)
        for index, rgba in src.colormap(1).items():
            if 0 <= index < 256:
                lut[index] = rgba[:3]

        def read_palette(window: Any) -> np.ndarray:
            index = src.read(1, window=window)
            return lut[index if index.dtype == np.uint8 else index.astype(np.intp).clip(0, 255)]

        return read_palette
    wanted = band_list if band_list is not None else [1, 2, 3] if src.count >= 3 else [1]

    def read(window: Any) -> np.ndarray:
        return _rgb(_to_uint8(np.moveaxis(src.read(wanted, window=window), 0, -1)), band_list)

    return read


def _iter_batches(
    grids: Sequence[SceneGrid], todo: set[str] | None, model: Bundle, batch_size: int
) -> Iterator[list[LoadedImage]]:
    """Read the windows of every grid (only the ids in ``todo`` when given), ``batch_size`` at a time.

    Runs in the reading thread; a window that cannot be read gets an item with ``error`` set.
    """
    import rasterio

    from landsight.data.loader import LoadedImage

    batch: list[LoadedImage] = []
    for grid in grids:
        with rasterio.open(grid.source) as src:
            read = _window_reader(src, model.preprocessing.bands)
            for r in range(grid.rows):
                for c in range(grid.cols):
                    wid = window_id(grid.source, r, c)
                    if todo is not None and wid not in todo:
                        continue
                    item = LoadedImage(path=wid, bounds=grid.bounds(r, c), crs=grid.crs or None)
                    try:
                        item.array = model.preprocessing.resize(read(grid.window(r, c)))
                    except (rasterio.errors.RasterioError, OSError, ValueError) as exc:
                        item.error = f"cannot read the window: {exc}"
                    batch.append(item)
                    if len(batch) == batch_size:
                        yield batch
                        batch = []
    if batch:
        yield batch


def _read_ahead(batches: Iterator[list[LoadedImage]]) -> Iterator[list[LoadedImage]]:
    """Yield ``batches`` with the next one read in a thread while the caller scores this one."""
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="landsight-scene") as pool:
        try:
            pending = pool.submit(next, batches, done)
            while True:
                batch = pending.result()
                if batch is done:
                    return
                pending = pool.submit(next, batches, done)
                yield batch  # type: ignore[misc]
        finally:  # close the datasets in the thread that opened them (rasterio's environment is per thread)
            pool.submit(batches.close).result()


def _score(model: Bundle, items: list[LoadedImage]) -> pd.DataFrame:
    import pandas as pd

    from landsight.data.loader import ImageBatch
    from landsight.predictions import prediction_columns, prediction_rows

    idx, stack = ImageBatch(items).stack()
    proba = model.predict_proba(stack) if stack is not None else np.empty((0, len(model.classes)), np.float32)
    return pd.DataFrame(prediction_rows(items, idx, proba, model.classes), columns=prediction_columns(model.classes))


def _check_grid(table: Path, parts_dir: Path, grid_text: str) -> None:
    """Refuse to resume a table written with another window grid (or by ``predict`` on files)."""
    from landsight.classify.predict import PARTS_RECORD
    from landsight.predictions import read_metadata

    found: list[tuple[str, str | None]] = []
    if table.exists():
        found.append((str(table), read_metadata(table).get(GRID_KEY)))
    record = parts_dir / PARTS_RECORD
    if record.is_file():
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            data = {}
        found.append((str(parts_dir), data.get(GRID_KEY) if isinstance(data, dict) else None))
    for where, grid in found:
        if grid != grid_text:
            what = f"windows of {grid}" if grid else "no scene windows (a table of image files)"
            raise OutputExistsError(
                f"{where!r} holds {what}, but this run scores windows of {grid_text}; resuming would mix two grids. "
                "Choose another output path, or pass --overwrite (overwrite=True) to score everything afresh"
            )


def _score_all(
    model: Bundle, grids: list[SceneGrid], table: Path | None, batch_size: int, chunk_size: int, progress: bool,
    overwrite: bool, grid_text: str,
) -> tuple[pd.DataFrame, int]:  # fmt: skip
    """Score every window not already in ``table`` (resume); write ``table`` when given."""
    import pandas as pd

    from landsight.classify.predict import PARTS_RECORD, _clear_parts, _parts_dir, _read_earlier
    from landsight.outputs import write_json
    from landsight.predictions import prediction_columns, provenance, write_table
    from landsight.progress import progress_bar

    columns = prediction_columns(model.classes)
    ids = [window_id(g.source, r, c) for g in grids for r in range(g.rows) for c in range(g.cols)]
    expected = {**provenance(model), GRID_KEY: grid_text} if table is not None else {}
    parts_dir = _parts_dir(table) if table is not None else None
    earlier = None
    if table is not None and parts_dir is not None:
        done = _read_earlier(table, parts_dir, expected, overwrite)
        if not overwrite:
            _check_grid(table, parts_dir, grid_text)
        frames = [d for d in done if len(d)]
        if frames:
            earlier = pd.concat(frames, ignore_index=True).drop_duplicates("path", keep="last")
    todo_set: set[str] | None = None
    n_todo = len(ids)
    if earlier is not None:
        good = set(earlier.loc[earlier["error"] == "", "path"])
        todo_set = {i for i in ids if i not in good}
        n_todo = len(todo_set)
        earlier = earlier[~earlier["path"].isin(todo_set)]
    new: list[pd.DataFrame] = []
    if n_todo:
        n_parts = 0
        if parts_dir is not None:
            parts_dir.mkdir(parents=True, exist_ok=True)
            if not (parts_dir / PARTS_RECORD).is_file():
                write_json(parts_dir / PARTS_RECORD, expected)
            n_parts = len(list(parts_dir.glob("part-*")))
        chunk: list[pd.DataFrame] = []

        def flush() -> None:
            nonlocal n_parts
            if not chunk:
                return
            part = pd.concat(chunk, ignore_index=True)
            new.append(part)
            chunk.clear()
            if parts_dir is not None and table is not None:
                write_table(part, parts_dir / f"part-{n_parts:06d}{table.suffix}")
                n_parts += 1

        with progress_bar(n_todo, "predict", enabled=progress) as bar:
            for items in _read_ahead(_iter_batches(grids, todo_set, model, batch_size)):
                chunk.append(_score(model, items))
                bar.advance(len(items))
                if sum(len(c) for c in chunk) >= chunk_size:
                    flush()
            flush()
    frames = ([earlier] if earlier is not None and len(earlier) else []) + [d for d in new if len(d)]
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    result = result.reindex(columns=columns)
    if table is not None and parts_dir is not None:
        table.parent.mkdir(parents=True, exist_ok=True)
        write_table(result, table, metadata=expected)
        if parts_dir.is_dir():
            _clear_parts(parts_dir, table.suffix)
    return result, n_todo


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise LandsightValueError(f"{name} must be an int in [1, inf), got {value!r}")
    return int(value)


def predict_scene(
    bundle: str | Path | Bundle,
    scene: str | Path | Sequence[str | Path],
    *,
    tile_size: int,
    stride: int | None = None,
    out: str | Path | None = None,
    raster: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    overwrite: bool = False,
    chunk_size: int = 1024,
    to_crs: str | None = None,
    asset: str | None = None,
    allow_remote: bool = True,
    cache_mb: int = 64,
    tracking_uri: str | None = None,
    track: bool = True,
) -> pd.DataFrame:
    """Classify every ``tile_size`` window of one or more scenes, without writing tiles.

    Args:
        bundle: Classification bundle folder / zip, or a loaded bundle.
        scene: A raster GDAL reads (path or URL), a list of them, a folder / glob / list file of
            rasters, or a STAC Item / Catalog / ItemCollection JSON (each Item's ``asset``).
        tile_size: Window side in pixels (as ``landsight tile --size``).
        stride: Step between windows in pixels (default ``tile_size``; smaller overlaps them).
        out: ``.parquet`` / ``.csv`` table (resumable), or a ``.gpkg`` / ``.geojson`` /
            ``.geoparquet`` layer of window polygons; None = return only.
        raster: A ``.tif`` class grid of the (single) scene, one pixel per window
            (:func:`~landsight.classify.scene_grid.write_class_grid`).
        batch_size: Windows per forward pass.
        progress: Show a progress bar.
        overwrite: Score everything afresh, replacing ``out`` and ``raster``.
        chunk_size: Windows scored between two writes of a part file (resume granularity).
        to_crs: GIS layer ``out`` only: CRS of the polygons (default the scene's).
        asset: STAC asset key for a STAC ``scene``.
        allow_remote: False: refuse URLs and remote STAC links (``--no-remote``).
        cache_mb: GDAL block cache limit while reading, MB (GDAL's default, 5 % of the machine's
            memory, would grow with the scene).
        tracking_uri: MLflow store.
        track: Record the run in MLflow.

    Returns:
        The predictions table (earlier rows of a resumed ``out`` included), one row per window,
        columns as :func:`landsight.predictions.prediction_columns`; ``path`` is the window id
        (:func:`~landsight.classify.scene_grid.window_id`).

    Raises:
        LandsightValueError: A size out of range or larger than a scene, a scene that cannot be
            opened or lacks the bundle's bands, an unsupported ``out`` / ``raster`` suffix,
            ``raster`` with several scenes, or an output that is an input.
        OutputExistsError: Without ``overwrite``: ``raster`` or a GIS ``out`` exists; a table
            ``out`` written by another bundle, another grid, or not by landsight.
        DataNotFoundError: ``scene`` lists no raster.
    """
    import rasterio

    from landsight.classify.bundle import as_bundle
    from landsight.classify.predict import _check_not_an_input
    from landsight.outputs import check_output
    from landsight.predictions import FORMATS
    from landsight.ranges import check_ranges
    from landsight.tracking import tracked_run
    from landsight.vectors import CLASSIFY_VECTOR_FORMATS, check_crs

    check_crs(to_crs)  # before any window is scored
    tile_size = _positive("tile_size", tile_size)
    stride = tile_size if stride is None else _positive("stride", stride)
    check_ranges(batch_size=batch_size)
    chunk_size = _positive("chunk_size", chunk_size)
    out_path = Path(out) if out is not None else None
    gis = out_path is not None and out_path.suffix.lower() in CLASSIFY_VECTOR_FORMATS
    if out_path is not None and not gis and out_path.suffix not in FORMATS:
        raise LandsightValueError(f"out must end in one of {FORMATS + CLASSIFY_VECTOR_FORMATS}, got {str(out_path)!r}")
    if out_path is not None and out_path.is_dir():
        raise LandsightValueError(f"out {str(out_path)!r} is a folder; give a file name")
    raster_path = Path(raster) if raster is not None else None
    if raster_path is not None and raster_path.suffix.lower() not in (".tif", ".tiff"):
        raise LandsightValueError(f"raster must be a .tif / .tiff file, got {str(raster_path)!r}")
    sources = _scene_sources(scene, asset, allow_remote)
    if raster_path is not None and len(sources) != 1:
        raise LandsightValueError(f"raster (one class grid) needs one scene, got {len(sources)}; predict each alone")
    listed = scene if isinstance(scene, str | Path) else sources[0]  # a list file or STAC JSON is an input too
    for path in (out_path, raster_path):
        if path is not None:
            _check_not_an_input(path, listed, sources)
    if gis:
        check_output(out_path, overwrite=overwrite, what="predictions layer")  # type: ignore[arg-type]
    if raster_path is not None:
        check_output(raster_path, overwrite=overwrite, what="class raster")
    model = as_bundle(bundle)
    grid_text = json.dumps({"tile_size": tile_size, "stride": stride})
    params = {"bundle": str(model.path), "scenes": len(sources), "out": str(out_path) if out_path else None,
              "tile_size": tile_size, "stride": stride, "batch_size": batch_size}  # fmt: skip
    with rasterio.Env(GDAL_CACHEMAX=cache_mb), tracked_run("predict_scene", params, tracking_uri=tracking_uri,
                                                           enabled=track) as run:  # fmt: skip
        grids = [_open_grid(s, tile_size, stride, model.preprocessing.bands, len(model.preprocessing.mean))
                 for s in sources]  # fmt: skip
        started = time.perf_counter()
        table = None if gis else out_path
        result, n_new = _score_all(model, grids, table, batch_size, chunk_size, progress, overwrite, grid_text)
        if gis:
            from landsight.styles import default_colours, write_layer_styles
            from landsight.vectors import tile_polygons, write_vector

            write_vector(tile_polygons(result, to_crs=to_crs), out_path, layer="predictions", overwrite=overwrite)  # type: ignore[arg-type]
            colours = default_colours(model.classes)  # the QGIS / SLD styles beside the layer
            write_layer_styles(out_path, "predicted", [(c, c, colours[c]) for c in model.classes])
        if raster_path is not None:
            write_class_grid(result, grids[0], model.classes, raster_path, overwrite=overwrite)
        seconds = time.perf_counter() - started
        run.log_metrics({"n_windows": len(result), "n_scored": n_new, "n_errors": int((result["error"] != "").sum()),
                         "windows_per_second": n_new / seconds if n_new else 0.0})  # fmt: skip
    return result
