"""Windowed prediction over rasters of any size into a georeferenced label GeoTIFF.

The raster is cut into a grid of *cores*; each core is predicted from a prediction *window* that
extends it by ``margin`` pixels on every side (read with reflection padding past the raster's
edges), and only the core is kept: overlapping windows stitched by centre-cropping, so no window
edge shows in the map. Windows run through the bundle's ONNX graph in onnxruntime (no torch) in
small batches, and each core is written as soon as it is predicted: peak memory is a few windows,
independent of the raster's size.

The output has the input's CRS and transform, uint8 class codes from the class map, nodata
(:data:`~landsight.segment.classmap.NODATA_CODE`) where the input is nodata, and the class map's
colour table; optionally a Cloud Optimized GeoTIFF (GDAL's COG driver) and a per-class
probability raster (uint8, probability x 254, nodata 255, band descriptions = class names).

Every raster is opened and written through :mod:`landsight.segment.raster` (one opener,
window by window, outputs on the input's grid); this module only orchestrates. The optional
polygons (``vector``) and area statistics (``stats``) are gathered while the cores are written,
from the labels in memory (:class:`landsight.segment.vector.Polygonizer`, the writer's
:class:`~landsight.segment.raster.ClassCounts`): the finished map is never read again.

``tta``: dihedral test-time augmentation: every window is predicted in the 8 orientations of the
square (4 rotations by 90 degrees, each also mirrored), the probabilities mapped back and
averaged (8x the compute; overhead imagery has no "up"). A bundle trained with an auxiliary
raster (:mod:`landsight.segment.auxiliary`) reads it window by window beside the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.recipe import check_tta
from landsight.segment.classmap import NODATA_CODE

#: Default polygon budget of ``predict_raster(vector=...)`` (``--max-polygons``).
DEFAULT_MAX_POLYGONS = 100_000
#: The test-time augmentation modes (:data:`landsight.recipe.TTA_MODES`) segmentation implements.
SUPPORTED_TTA: tuple[str, ...] = ("none", "d4")

if TYPE_CHECKING:
    from landsight.segment.raster import LabelRasterWriter
    from landsight.segment.vector import Polygonizer

STRIDE = 32
BLOCK = 256
PROB_SCALE = 254


@dataclass
class TilePrediction:
    """Class probabilities of one core of the tile grid.

    Attributes:
        row: Top row of the core in the raster.
        col: Left column.
        probabilities: ``(K, h, w)`` float32.
        valid: ``(h, w)`` bool, False where the input is nodata.
    """

    row: int
    col: int
    probabilities: np.ndarray
    valid: np.ndarray


def tile_layout(height: int, width: int, window_size: int, margin: int) -> tuple[int, int]:
    """Choose the prediction window side and core side for a raster.

    Args:
        height: Raster rows.
        width: Raster columns.
        window_size: Requested prediction window side (a multiple of 32).
        margin: Context kept around each core, pixels.

    Returns:
        ``(window, core)``: the window side actually used (a multiple of 32, shrunk to fit small
        rasters) and the core side. Where the tile allows, the core is a multiple of the output's
        256-pixel blocks, so every output block is written whole, once, and leaves GDAL's cache
        at once; the tile then holds at least ``core + 2 * margin`` pixels.

    Raises:
        LandsightValueError: ``window_size`` not a multiple of 32 or not larger than ``2 * margin``.
    """
    if window_size % STRIDE or window_size <= 2 * margin:
        raise LandsightValueError(
            f"window_size must be a multiple of {STRIDE} larger than 2 x margin ({2 * margin}), got {window_size!r}"
        )
    fit = math.ceil((max(height, width) + 2 * margin) / STRIDE) * STRIDE
    if fit <= window_size:
        return fit, fit - 2 * margin
    core = (window_size - 2 * margin) // BLOCK * BLOCK or window_size - 2 * margin
    return math.ceil((core + 2 * margin) / STRIDE) * STRIDE, core


def predict_tiles(bundle: Any, tiles: np.ndarray, *, tta: str | bool = "none") -> np.ndarray:
    """Class probabilities of square tiles, optionally averaged over the 8 dihedral orientations.

    Args:
        bundle: The segmentation bundle.
        tiles: ``(N, C, S, S)`` raw values (S a multiple of 32).
        tta: ``"d4"``: average over 4 rotations x 2 mirrorings (each mapped back before
            averaging); ``"none"``: one view (:data:`SUPPORTED_TTA`; ``True`` / ``False`` are
            accepted for ``"d4"`` / ``"none"``).

    Returns:
        ``(N, K, S, S)`` float32 probabilities.

    Raises:
        LandsightValueError: ``tta`` is not a mode segmentation supports.
    """
    if check_tta(tta, SUPPORTED_TTA, task="segmentation") == "none":
        return bundle.predict_proba(tiles)
    total = np.zeros((tiles.shape[0], bundle.class_map.num_classes, *tiles.shape[2:]), dtype=np.float32)
    for flip in (False, True):
        base = tiles[..., ::-1] if flip else tiles
        for k in range(4):
            p = bundle.predict_proba(np.rot90(base, k, axes=(2, 3)))
            p = np.rot90(p, -k, axes=(2, 3))
            total += p[..., ::-1] if flip else p
    return total / 8


def iter_predictions(
    src: Any,
    bundle: Any,
    *,
    window_size: int = 576,
    margin: int | None = None,
    batch_size: int = 2,
    progress: bool = False,
    aux_src: Any = None,
    tta: str | bool = "none",
) -> Iterator[TilePrediction]:
    """Predict an open raster core by core (see the module docstring).

    Args:
        src: Open rasterio dataset with at least the bundle's bands.
        bundle: The segmentation bundle.
        window_size: Prediction window side in pixels (multiple of 32).
        margin: Context around each core (default: the bundle's, see
            :attr:`SegmentationBundle.margin`).
        batch_size: Tiles per onnxruntime call.
        progress: Show a rich progress bar (tiles/s).
        aux_src: The bundle's auxiliary raster aligned to ``src``
            (:func:`landsight.segment.auxiliary.open_aligned`); required when the bundle has one.
        tta: Dihedral test-time augmentation (:func:`predict_tiles`).

    Yields:
        :class:`TilePrediction` per core, row by row.

    Raises:
        LandsightValueError: The bundle needs an auxiliary raster and ``aux_src`` is ``None``.
    """
    from landsight.progress import progress_bar
    from landsight.segment.raster import raster_bands, read_window

    bands = raster_bands(src, bundle.bands)
    aux = getattr(bundle, "aux", None)
    if aux is not None and aux_src is None:
        raise LandsightValueError(
            f"bundle {str(bundle.path)!r} was trained with an auxiliary raster ({aux.template!r}); pass one aligned "
            f"with {str(src.name)!r} (aux=... / --aux-rasters)"
        )
    margin = bundle.margin if margin is None else margin
    tile, core = tile_layout(src.height, src.width, window_size, margin)
    cores = [(r, c) for r in range(0, src.height, core) for c in range(0, src.width, core)]
    with progress_bar(len(cores), f"segment {Path(src.name).name}", enabled=progress, unit="tiles") as bar:
        for start in range(0, len(cores), batch_size):
            batch = cores[start : start + batch_size]
            xs, valids = [], []
            for r, c in batch:
                x, mask = read_window(src, r - margin, c - margin, tile, tile, bands=bands, pad="reflect", masks=True)
                h, w = min(core, src.height - r), min(core, src.width - c)
                x = np.asarray(x, dtype=np.float32)
                if aux is not None:
                    from landsight.segment.auxiliary import read_onehot

                    x = np.concatenate([x, read_onehot(aux_src, aux, r - margin, c - margin, tile, tile,
                                                       pad="reflect")])  # fmt: skip
                xs.append(x)
                valids.append(mask[margin : margin + h, margin : margin + w])
            # Tiles that are all nodata skip the network (mosaics have large empty corners).
            run = [i for i, v in enumerate(valids) if v.any()]
            proba = predict_tiles(bundle, np.stack([xs[i] for i in run]), tta=tta) if run else None
            k = bundle.class_map.num_classes
            for i, ((r, c), valid) in enumerate(zip(batch, valids, strict=True)):
                h, w = valid.shape
                if proba is None or i not in run:
                    yield TilePrediction(r, c, np.zeros((k, h, w), dtype=np.float32), valid)
                else:
                    p = proba[run.index(i)]
                    yield TilePrediction(r, c, p[:, margin : margin + h, margin : margin + w], valid)
            bar.advance(len(batch))


def predict_raster(
    bundle: Any,
    raster: str | Path,
    out: str | Path,
    *,
    probabilities: str | Path | None = None,
    cog: bool = False,
    window_size: int = 576,
    batch_size: int = 2,
    progress: bool = True,
    cache_mb: int = 64,
    overwrite: bool = False,
    aux: str | Path | None = None,
    tta: str | bool = "none",
    vector: str | Path | None = None,
    stats: str | Path | None = None,
    simplify: float | None = None,
    min_area: float | None = None,
    dissolve: str = "class",
    asset: str | None = None,
    sieve: int | None = None,
    max_polygons: int | None = DEFAULT_MAX_POLYGONS,
    pixel_size: float | None = None,
) -> Path:
    """Write the land-cover map of a raster.

    Every output path is checked once, before any work (:func:`landsight.outputs.check_output`);
    every output is written to a temporary file in its own folder and renamed over its path only
    when all of them are done, so a failed run (wrong band count, truncated input, interrupt)
    leaves existing outputs byte-for-byte as they were. The rasters are written window by window
    through :func:`landsight.segment.raster.open_label_writer`; ``vector`` and ``stats`` come from
    what was gathered while writing (the writer's per-class pixel counts, and each window
    polygonized as it is written, :class:`landsight.segment.vector.Polygonizer`): the finished map
    is never read again, and they equal :func:`~landsight.segment.vector.polygonize_raster` /
    :func:`~landsight.segment.vector.class_areas` of it.

    Args:
        bundle: A segmentation bundle (:func:`landsight.load_bundle`).
        raster: Input raster with the bundle's bands (any size, any GDAL format).
        out: Output GeoTIFF: uint8 class codes, nodata 255, colour table, input CRS / transform.
        probabilities: Optional per-class probability GeoTIFF (uint8, ``round(p * 254)``, GDAL
            scale ``1/254``, nodata 255, one band per class named after it).
        cog: Write Cloud Optimized GeoTIFFs (GDAL COG driver: tiled, overviews).
        window_size: Prediction window side (multiple of 32); memory grows with its square, not with the raster.
        batch_size: Tiles per onnxruntime call.
        progress: Rich progress bar.
        cache_mb: GDAL block cache limit (``GDAL_CACHEMAX``) during the run, MB; GDAL's default
            is 5 % of the machine's memory, which is not bounded by the tile size.
        overwrite: Replace an existing ``out`` / ``probabilities`` / ``vector`` / ``stats`` (once
            the new one is complete).
        aux: The auxiliary raster of a bundle trained with one (e.g. the NLCD of this raster); a
            template of the bundle's kind (``{stem}``, ``{dir}``) is formatted with ``raster``.
            Default: the bundle's training template formatted with ``raster``.
        tta: ``"d4"``: dihedral test-time augmentation (8 orientations averaged; 8x the
            compute); ``"none"`` (default): one view. One vocabulary with classification
            (:data:`landsight.recipe.TTA_MODES`); ``True`` / ``False`` still mean ``"d4"`` / ``"none"``.
        vector: Also write the map as polygons per class (``.gpkg``, ``.geojson`` or GeoParquet
            ``.parquet``; layer ``landcover``, see :func:`landsight.segment.vector.polygonize_raster`).
        stats: Also write the area per class (m², ha, % of valid pixels) as CSV
            (:func:`landsight.segment.vector.class_area_table`).
        simplify: ``vector``: simplification tolerance in metres (CRS units).
        min_area: ``vector``: drop connected regions smaller than this, m².
        sieve: Replace connected regions smaller than this many pixels (4-connected) by their
            largest neighbour's class, in the map and so in every output (rasterio's ``sieve``,
            GDAL's ``GDALSieveFilter``). It runs per prediction window: a region cut by a window
            edge counts per window. ``None``: no sieving.
        max_polygons: ``vector``: stop with an error once the polygons gathered exceed this many
            (a noisy map can hold hundreds of thousands; polygonizing them costs minutes and
            gigabytes). ``None``: no budget.
        dissolve: ``vector``: ``"class"`` (one multipolygon per class) or ``"region"`` (one
            polygon per connected region).
        asset: When ``raster`` is a STAC Item JSON (file or URL; :mod:`landsight.data.stac`),
            the asset to read (``None`` = the first raster asset with role ``"data"`` or type
            ``image/tiff``); its COG is read window by window.
        pixel_size: ``stats``: the side of a pixel in metres, for a raster without a CRS
            (``--pixel-size``), so its areas come out in m² (NaN otherwise). Refused for a
            raster that has a CRS (its own pixel size counts).

    The map also gets GDAL's PAM sidecar ``<out>.aux.xml`` (band category names and a raster
    attribute table: QGIS shows class names, :func:`landsight.styles.write_raster_pam`) and
    ``vector`` its QGIS ``.qml`` and SLD ``.sld`` styles beside it
    (:func:`landsight.styles.write_layer_styles`), renamed into place with the outputs.

    Returns:
        The output path.

    Raises:
        DataNotFoundError: The raster does not exist.
        ImageReadError: It cannot be opened, or its pixel data is truncated or corrupt.
        LandsightValueError: Its band count does not fit the bundle; an output is the input
            raster, or ``probabilities`` and ``out`` are the same file; ``vector`` has another
            suffix than ``.gpkg`` / ``.geojson`` / ``.parquet``; bad ``dissolve`` / ``simplify`` /
            ``min_area`` (``min_area`` without a CRS, ``simplify`` in a geographic CRS); ``stats``
            of a geographic raster with a rotated transform.
        OutputExistsError: An output exists and ``overwrite`` is False.
    """
    import contextlib

    from landsight.data.stac import resolve_raster
    from landsight.outputs import atomic_path
    from landsight.segment.raster import gdal_cache, label_profile, open_label_writer, open_raster

    tta = check_tta(tta, SUPPORTED_TTA, task="segmentation")
    if sieve is not None and (isinstance(sieve, bool) or not isinstance(sieve, int) or sieve < 1):
        raise LandsightValueError(f"sieve must be a number of pixels >= 1 (or None), got {sieve!r}")
    if max_polygons is not None and (isinstance(max_polygons, bool) or not isinstance(max_polygons, int)
                                     or max_polygons < 1):  # fmt: skip
        raise LandsightValueError(f"max_polygons must be an int >= 1 (or None), got {max_polygons!r}")
    if pixel_size is not None and (isinstance(pixel_size, bool) or not isinstance(pixel_size, int | float)
                                   or not 0 < pixel_size < math.inf):  # fmt: skip
        raise LandsightValueError(f"pixel_size must be a positive number of metres (or None), got {pixel_size!r}")
    raster = resolve_raster(raster, asset)  # a STAC Item JSON -> its asset's href
    paths = _check_outputs(raster, out, probabilities=probabilities, vector=vector, stats=stats, overwrite=overwrite,
                           dissolve=dissolve, simplify=simplify, min_area=min_area)  # fmt: skip
    paths.update(_sidecars(paths))  # GIS styles, committed with the outputs they describe
    class_map = bundle.class_map
    with contextlib.ExitStack() as stack:
        # Renamed over the outputs in reverse order on success; deleted on any failure.
        tmp = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
        stack.enter_context(gdal_cache(cache_mb))
        src = stack.enter_context(open_raster(raster))
        aux_src = None
        if getattr(bundle, "aux", None) is not None:
            from landsight.segment.auxiliary import aux_path, open_aligned

            aux_src = stack.enter_context(open_aligned(aux_path(str(aux or bundle.aux.template), raster), src))
        polygons = None
        if vector or stats:
            from landsight.segment.vector import Polygonizer, check_polygon_crs, pixel_area_rows

            if vector:
                check_polygon_crs(src.crs, simplify, min_area, raster)
                polygons = Polygonizer(src.transform, nodata=NODATA_CODE, max_polygons=max_polygons)
            if stats:
                pixel_area_rows(src.crs, src.transform, 0, 1)  # a rotated geographic grid fails before the work
        if pixel_size is not None and src.crs:
            raise LandsightValueError(
                f"pixel_size is for a raster without a CRS, but {str(raster)!r} has one "
                f"({src.crs}): its areas use its own grid; drop pixel_size / --pixel-size"
            )
        with open_label_writer(
            tmp["out"], label_profile(src, nodata=NODATA_CODE, block=BLOCK, cog=cog), colormap=class_map.colormap(),
            tags={"classes": ",".join(f"{c.code}={c.name}" for c in class_map.classes)},
            probabilities=tmp.get("probabilities"), band_names=class_map.names, prob_scale=1 / PROB_SCALE, cog=cog,
        ) as writer:  # fmt: skip
            _write_map(src, bundle, writer, polygons, window_size=window_size, batch_size=batch_size,
                       progress=progress, aux_src=aux_src, tta=tta, sieve=sieve)  # fmt: skip
        from landsight.segment.vector import class_area_table, map_classes
        from landsight.styles import write_layer_styles, write_raster_pam

        classes = map_classes(class_map)
        write_raster_pam(tmp["out_aux"], classes)  # category names + RAT, read by GDAL / QGIS with the map
        if vector or stats:
            if polygons is not None:
                from landsight.vectors import write_vector

                layer = polygons.layer(src.crs, classes, dissolve=dissolve, simplify=simplify, min_area=min_area,
                                       pixel_size=pixel_size)  # fmt: skip
                write_vector(layer, tmp["vector"], layer="landcover")  # a fresh temporary path
                styles = {k: tmp[f"vector_{k}"] for k in ("qml", "sld")}
                write_layer_styles(paths["vector"], "code", classes, targets=styles)
            if stats:
                table = class_area_table(writer.counts, src.crs, src.transform, classes, pixel_size=pixel_size)
                table.to_csv(tmp["stats"], index=False)
    return paths["out"]


def _check_outputs(
    raster: str | Path, out: str | Path, *, probabilities: str | Path | None, vector: str | Path | None,
    stats: str | Path | None, overwrite: bool, dissolve: str, simplify: float | None, min_area: float | None,
) -> dict[str, Path]:  # fmt: skip
    """Check every output of :func:`predict_raster` once, before any work.

    Args:
        raster: The input raster (no output may be it).
        out: Label raster.
        probabilities: Probability raster, or ``None``.
        vector: Polygon layer, or ``None``.
        stats: Area CSV, or ``None``.
        overwrite: Existing outputs may be replaced.
        dissolve: ``vector`` option, validated here.
        simplify: ``vector`` option (metres), validated here.
        min_area: ``vector`` option (m²), validated here.

    Returns:
        ``{"out": ..., "probabilities": ..., "vector": ..., "stats": ...}`` for those given, in
        that order.

    Raises:
        LandsightValueError: See :func:`predict_raster`.
        OutputExistsError: An output exists and ``overwrite`` is False.
    """
    from landsight.outputs import check_output, same_file

    paths = {"out": check_output(out, inputs=[raster], overwrite=overwrite, what="output raster")}
    if vector:
        from landsight.segment.vector import check_polygon_options
        from landsight.vectors import check_vector_path

        paths["vector"] = check_vector_path(check_output(vector, inputs=[raster], overwrite=overwrite,
                                                         what="vector output"))  # fmt: skip
        check_polygon_options(dissolve, simplify, min_area)
    if stats:
        paths["stats"] = check_output(stats, inputs=[raster], overwrite=overwrite, what="area statistics")
    if probabilities:
        probs = check_output(probabilities, inputs=[raster], overwrite=overwrite, what="probability raster")
        if same_file(probs, paths["out"]):
            raise LandsightValueError(f"probabilities and out are the same file {str(out)!r}; give two paths")
        paths["probabilities"] = probs
    order = ("out", "probabilities", "vector", "stats")
    return {key: paths[key] for key in order if key in paths}


def _sidecars(paths: dict[str, Path]) -> dict[str, Path]:
    """The styles of :func:`predict_raster`'s outputs (:mod:`landsight.styles`), renamed into place with them.

    ``out_aux``: the map's GDAL PAM sidecar (``<out>.aux.xml``: category names and attribute
    table); ``vector_qml`` / ``vector_sld``: the polygon layer's QGIS / SLD styles. They are
    derived from the outputs, so an existing one is replaced with its output, unchecked.
    """
    from landsight.styles import pam_path, style_paths

    found = {"out_aux": pam_path(paths["out"])}
    if "vector" in paths:
        found.update({f"vector_{k}": p for k, p in style_paths(paths["vector"]).items()})
    return found


def _write_map(
    src: Any, bundle: Any, writer: LabelRasterWriter, polygons: Polygonizer | None, *,
    window_size: int, batch_size: int, progress: bool, aux_src: Any = None, tta: str | bool = "none",
    sieve: int | None = None,
) -> None:  # fmt: skip
    """Predict ``src`` core by core into ``writer`` (labels, probabilities if it writes them), and ``polygons``."""
    from rasterio.windows import Window

    lut = bundle.class_map.index_to_code()
    for t in iter_predictions(src, bundle, window_size=window_size, batch_size=batch_size, progress=progress,
                              aux_src=aux_src, tta=tta):  # fmt: skip
        h, w = t.valid.shape
        codes = np.where(t.valid, lut[t.probabilities.argmax(axis=0)], NODATA_CODE).astype(np.uint8)
        if sieve:
            from rasterio.features import sieve as sieve_regions

            codes = np.where(t.valid, sieve_regions(codes, size=sieve, mask=t.valid), NODATA_CODE).astype(np.uint8)
        scaled = None
        if writer.writes_probabilities:
            scaled = np.rint(t.probabilities * PROB_SCALE).astype(np.uint8)
            scaled = np.where(t.valid[None], scaled, NODATA_CODE)
        writer.write(Window(t.col, t.row, w, h), codes, scaled)
        if polygons is not None:
            polygons.add(codes, t.row, t.col)
