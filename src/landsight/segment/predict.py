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

``tta``: dihedral test-time augmentation: every window is predicted in the 8 orientations of the
square (4 rotations by 90 degrees, each also mirrored), the probabilities mapped back and
averaged (8x the compute; overhead imagery has no "up"). A bundle trained with an auxiliary
raster (:mod:`landsight.segment.auxiliary`) reads it window by window beside the image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.segment.classmap import NODATA_CODE

if TYPE_CHECKING:
    from landsight.segment.bundle import SegmentationBundle

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


def predict_tiles(bundle: SegmentationBundle, tiles: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Class probabilities of square tiles, optionally averaged over the 8 dihedral orientations.

    Args:
        bundle: The segmentation bundle.
        tiles: ``(N, C, S, S)`` raw values (S a multiple of 32).
        tta: Average over 4 rotations x 2 mirrorings (each mapped back before averaging).

    Returns:
        ``(N, K, S, S)`` float32 probabilities.
    """
    if not tta:
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
    bundle: SegmentationBundle,
    *,
    window_size: int = 576,
    margin: int | None = None,
    batch_size: int = 2,
    progress: bool = False,
    aux_src: Any = None,
    tta: bool = False,
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


def _profile(src: Any, count: int, cog: bool) -> dict[str, Any]:
    return {
        "driver": "GTiff", "dtype": "uint8", "count": count, "height": src.height, "width": src.width,
        "crs": src.crs, "transform": src.transform, "nodata": NODATA_CODE, "tiled": True,
        "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER",
        "interleave": "band" if cog else "pixel",
    }  # fmt: skip


def predict_raster(
    bundle: SegmentationBundle,
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
    tta: bool = False,
    vector: str | Path | None = None,
    stats: str | Path | None = None,
    simplify: float | None = None,
    min_area: float | None = None,
    dissolve: str = "class",
    asset: str | None = None,
) -> Path:
    """Write the land-cover map of a raster.

    Every output is written to a temporary file in its own folder and renamed over ``out`` /
    ``probabilities`` only when the whole map is done, so a failed run (wrong band count,
    truncated input, interrupt) leaves an existing output byte-for-byte as it was.

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
        tta: Dihedral test-time augmentation (8 orientations averaged; 8x the compute).
        vector: Also write the map as polygons per class (``.gpkg``, ``.geojson`` or GeoParquet
            ``.parquet``; :func:`landsight.segment.vector.polygonize_raster`).
        stats: Also write the area per class (m², ha, % of valid pixels) as CSV
            (:func:`landsight.segment.vector.class_areas`).
        simplify: ``vector``: simplification tolerance in metres (CRS units).
        min_area: ``vector``: drop connected regions smaller than this, m².
        dissolve: ``vector``: ``"class"`` (one multipolygon per class) or ``"region"`` (one
            polygon per connected region).
        asset: When ``raster`` is a STAC Item JSON (file or URL; :mod:`landsight.data.stac`),
            the asset to read (``None`` = the first raster asset with role ``"data"`` or type
            ``image/tiff``); its COG is read window by window.

    Returns:
        The output path.

    Raises:
        DataNotFoundError: The raster does not exist.
        ImageReadError: It cannot be opened, or its pixel data is truncated or corrupt.
        LandsightValueError: Its band count does not fit the bundle; ``out`` or
            ``probabilities`` is the input raster, or both are the same file.
        OutputExistsError: ``out`` or ``probabilities`` exists and ``overwrite`` is False.
    """
    import contextlib

    import rasterio

    from landsight.data.stac import resolve_raster
    from landsight.outputs import atomic_path, check_output, same_file
    from landsight.segment.raster import open_raster

    raster = resolve_raster(raster, asset)  # a STAC Item JSON -> its asset's href
    out = check_output(out, inputs=[raster], overwrite=overwrite, what="output raster")
    extras = {}
    if vector:
        from landsight.vectors import check_vector_path

        extras["vector"] = check_vector_path(check_output(vector, inputs=[raster], overwrite=overwrite,
                                                          what="vector output"))  # fmt: skip
    if stats:
        extras["stats"] = check_output(stats, inputs=[raster], overwrite=overwrite, what="area statistics")
    targets = [(out, 1)]
    if probabilities:
        probs = check_output(probabilities, inputs=[raster], overwrite=overwrite, what="probability raster")
        if same_file(probs, out):
            raise LandsightValueError(f"probabilities and out are the same file {str(out)!r}; give two paths")
        targets.append((probs, bundle.class_map.num_classes))
    lut = bundle.class_map.index_to_code()
    with contextlib.ExitStack() as stack:
        # Renamed over the outputs in reverse order on success; deleted on any failure.
        finals = [stack.enter_context(atomic_path(p)) for p, _ in targets]
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=cache_mb))
        src = stack.enter_context(open_raster(raster))
        aux_src = None
        if getattr(bundle, "aux", None) is not None:
            from landsight.segment.auxiliary import aux_path, open_aligned

            aux_src = stack.enter_context(open_aligned(aux_path(str(aux or bundle.aux.template), raster), src))
        plain = [f.with_name(f"{f.stem}.plain{f.suffix}") if cog else f for f in finals]  # COG: copied at the end
        writes = [(w, n) for w, (_, n) in zip(plain, targets, strict=True)]
        try:
            dsts = [rasterio.open(p, "w", **_profile(src, n, cog)) for p, n in writes]
            try:
                _write_map(src, bundle, dsts, lut, window_size=window_size, batch_size=batch_size, progress=progress,
                           aux_src=aux_src, tta=tta)  # fmt: skip
            finally:
                for d in dsts:
                    d.close()
            if cog:
                from rasterio.shutil import copy as gdal_copy

                for final, (tmp, _) in zip(finals, writes, strict=True):
                    gdal_copy(tmp, final, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER")
        finally:
            if cog:
                for tmp, _ in writes:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(tmp)
    if extras:
        from landsight.segment.vector import write_raster_layers

        write_raster_layers(out, bundle.class_map, vector=extras.get("vector"), stats=extras.get("stats"),
                            simplify=simplify, min_area=min_area, dissolve=dissolve, overwrite=overwrite)  # fmt: skip
    return out


def _write_map(
    src: Any, bundle: SegmentationBundle, dsts: list[Any], lut: np.ndarray, *, window_size: int, batch_size: int,
    progress: bool, aux_src: Any = None, tta: bool = False,
) -> None:  # fmt: skip
    """Predict ``src`` core by core into the open label raster ``dsts[0]`` (and probabilities ``dsts[1]``)."""
    from rasterio.windows import Window

    dsts[0].write_colormap(1, bundle.class_map.colormap())
    dsts[0].update_tags(1, classes=",".join(f"{c.code}={c.name}" for c in bundle.class_map.classes))
    if len(dsts) > 1:
        dsts[1].descriptions = tuple(bundle.class_map.names)
        dsts[1].scales = (1 / PROB_SCALE,) * bundle.class_map.num_classes
    for t in iter_predictions(src, bundle, window_size=window_size, batch_size=batch_size, progress=progress,
                              aux_src=aux_src, tta=tta):  # fmt: skip
        h, w = t.valid.shape
        window = Window(t.col, t.row, w, h)
        codes = np.where(t.valid, lut[t.probabilities.argmax(axis=0)], NODATA_CODE).astype(np.uint8)
        dsts[0].write(codes, 1, window=window)
        if len(dsts) > 1:
            scaled = np.rint(t.probabilities * PROB_SCALE).astype(np.uint8)
            dsts[1].write(np.where(t.valid[None], scaled, NODATA_CODE), window=window)
