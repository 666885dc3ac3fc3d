"""Cut a georeferenced raster into a grid of GeoTIFF tiles.

The way to classify a large scene tile by tile (``landsight predict`` on the tiles, then
``landsight map`` of the predictions): every tile keeps the raster's CRS, bands and dtype, with
the transform of its window, so the readers give each prediction its bounds and CRS. The raster
is read one window at a time, so its size does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landsight.errors import DataNotFoundError, LandsightValueError
from landsight.outputs import Output, OutputPlan, check_plan, staged_folder


@dataclass
class RasterTile:
    """One tile written by :func:`cut_tiles`.

    Attributes:
        path: The GeoTIFF written.
        row: Grid row (0 = top).
        col: Grid column (0 = left).
        window: Its ``rasterio.windows.Window`` in the source raster (pixels).
        bounds: ``(left, bottom, right, top)`` in the raster's CRS units.
    """

    path: Path
    row: int
    col: int
    window: Any
    bounds: tuple[float, float, float, float]


def cut_tiles(
    raster: str | Path,
    out: str | Path,
    *,
    size: int,
    prefix: str = "tile",
    overwrite: bool = False,
    asset: str | None = None,
    allow_remote: bool = True,
) -> list[RasterTile]:
    """Write the ``size x size`` tiles of a raster as GeoTIFFs named ``<prefix>_<row>_<col>.tif``.

    Partial tiles at the right and bottom edges are left out (a classifier expects whole tiles);
    the grid starts at the top-left pixel.

    Args:
        raster: Any raster GDAL reads (GeoTIFF, JPEG 2000...), e.g. a NAIP scene; a URL of a
            Cloud Optimized GeoTIFF (read window by window); or a STAC Item / Catalog /
            ItemCollection JSON (file or URL, :mod:`landsight.data.stac`): each Item's asset is
            cut, into ``<prefix>_<item id>_<row>_<col>.tif`` when there are several Items.
        out: Folder for the tiles: a landsight tiles folder (it holds a manifest), written whole
            at the end (group commit).
        size: Tile side in pixels (>= 1).
        prefix: File-name prefix.
        overwrite: Replace an earlier tiles folder at ``out`` whole (never one with files landsight
            did not write; otherwise refused before anything is written).
        asset: STAC asset key (``None`` = the first raster asset with role ``"data"`` or type
            ``image/tiff``); only for a STAC ``raster``.
        allow_remote: False: read local files only (``--no-remote``): a URL ``raster``, or a STAC
            JSON linking to a remote Item, Catalog or asset, is refused before anything is read.

    Returns:
        The tiles written, in row-major order.

    Raises:
        DataNotFoundError: ``raster`` does not exist.
        LandsightValueError: ``size`` < 1 or larger than the raster, or ``out`` is, holds or lies in the raster;
            a STAC source without the asset, unreadable, with a cycle or a remote href while
            ``allow_remote`` is False; ``asset`` given for a plain raster; a URL ``raster`` while
            ``allow_remote`` is False.
        OutputExistsError: ``out`` exists and ``overwrite`` is False, or it is not a tiles folder
            landsight made.
    """
    from landsight.data.stac import is_stac_source, stac_items

    if is_stac_source(raster):
        items = stac_items(raster, asset, allow_remote=allow_remote)
        sources = [(it.href, prefix if len(items) == 1 else f"{prefix}_{it.item_id}") for it in items]
    else:
        if asset is not None:
            raise LandsightValueError(
                f"asset={asset!r} applies to a STAC JSON source, not {str(raster)!r}; drop asset="
            )
        if not allow_remote and "://" in str(raster) and not str(raster).startswith("file://"):
            raise LandsightValueError(
                f"raster {str(raster)!r} is a URL but remote reads are off (--no-remote); use a local copy"
            )
        if "://" not in str(raster) and not Path(raster).is_file():
            raise DataNotFoundError(f"raster {str(raster)!r} does not exist")
        sources = [(str(raster), prefix)]
    out_dir = Path(out)
    local = [("raster", Path(src)) for src, _ in sources if "://" not in src]
    check_plan(OutputPlan("tile", inputs=local, outputs=[Output(out_dir, "out", "tiles")], overwrite=overwrite))
    tiles: list[RasterTile] = []
    # group commit: the folder is replaced whole, so no tile of an earlier run survives beside the new ones
    with staged_folder(out_dir, "tiles", overwrite=overwrite) as stage:
        for src_path, name in sources:
            tiles += _cut(src_path, stage, out_dir, size=size, prefix=name)
    return tiles


def _cut(src_path: str, stage: Path, out_dir: Path, *, size: int, prefix: str) -> list[RasterTile]:
    """Write one raster's tiles into ``stage``; the returned paths are their final ones in ``out_dir``."""
    import rasterio
    from rasterio.windows import Window, bounds

    tiles: list[RasterTile] = []
    with rasterio.open(src_path) as src:
        if not 1 <= size <= min(src.width, src.height):
            raise LandsightValueError(
                f"tile size must be in [1, {min(src.width, src.height)}] for {str(src_path)!r} "
                f"({src.width} x {src.height} px), got {size!r}"
            )
        profile = src.profile | {"driver": "GTiff", "width": size, "height": size}
        for key in ("blockxsize", "blockysize", "tiled"):
            profile.pop(key, None)
        for r in range(src.height // size):
            for c in range(src.width // size):
                window = Window(c * size, r * size, size, size)
                name = f"{prefix}_{r}_{c}.tif"
                with rasterio.open(stage / name, "w", **(profile | {"transform": src.window_transform(window)})) as dst:
                    dst.write(src.read(window=window))
                tiles.append(RasterTile(out_dir / name, r, c, window, tuple(bounds(window, src.transform))))
    return tiles
