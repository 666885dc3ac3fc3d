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
from landsight.outputs import atomic_path, check_output


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
) -> list[RasterTile]:
    """Write the ``size x size`` tiles of a raster as GeoTIFFs named ``<prefix>_<row>_<col>.tif``.

    Partial tiles at the right and bottom edges are left out (a classifier expects whole tiles);
    the grid starts at the top-left pixel.

    Args:
        raster: Any raster GDAL reads (GeoTIFF, JPEG 2000...), e.g. a NAIP scene; a URL of a
            Cloud Optimized GeoTIFF (read window by window); or a STAC Item / Catalog /
            ItemCollection JSON (file or URL, :mod:`landsight.data.stac`): each Item's asset is
            cut, into ``<prefix>_<item id>_<row>_<col>.tif`` when there are several Items.
        out: Folder for the tiles (created).
        size: Tile side in pixels (>= 1).
        prefix: File-name prefix.
        overwrite: Replace tiles of the same names already in ``out`` (otherwise refused before
            anything is written).
        asset: STAC asset key (``None`` = the first raster asset with role ``"data"`` or type
            ``image/tiff``); only for a STAC ``raster``.

    Returns:
        The tiles written, in row-major order.

    Raises:
        DataNotFoundError: ``raster`` does not exist.
        LandsightValueError: ``size`` < 1 or larger than the raster, or ``out`` holds the raster;
            a STAC source without the asset; ``asset`` given for a plain raster.
        OutputExistsError: A tile file exists and ``overwrite`` is False.
    """
    import rasterio
    from rasterio.windows import Window, bounds

    from landsight.data.stac import is_stac_source, stac_items

    if is_stac_source(raster):
        items = stac_items(raster, asset)
        if len(items) == 1:
            return cut_tiles(items[0].href, out, size=size, prefix=prefix, overwrite=overwrite)
        return [t for it in items for t in cut_tiles(it.href, out, size=size, prefix=f"{prefix}_{it.item_id}",
                                                     overwrite=overwrite)]  # fmt: skip
    if asset is not None:
        raise LandsightValueError(f"asset={asset!r} applies to a STAC JSON source, not {str(raster)!r}; drop asset=")
    remote = "://" in str(raster)
    src_path = str(raster) if remote else Path(raster)
    if not remote and not Path(src_path).is_file():
        raise DataNotFoundError(f"raster {str(src_path)!r} does not exist")
    out_dir = Path(out)
    tiles: list[RasterTile] = []
    with rasterio.open(src_path) as src:
        if not 1 <= size <= min(src.width, src.height):
            raise LandsightValueError(
                f"tile size must be in [1, {min(src.width, src.height)}] for {str(src_path)!r} "
                f"({src.width} x {src.height} px), got {size!r}"
            )
        names = [out_dir / f"{prefix}_{r}_{c}.tif" for r in range(src.height // size) for c in range(src.width // size)]
        for path in names:
            check_output(path, inputs=[src_path], overwrite=overwrite, what="tile")
        out_dir.mkdir(parents=True, exist_ok=True)
        profile = src.profile | {"driver": "GTiff", "width": size, "height": size}
        for key in ("blockxsize", "blockysize", "tiled"):
            profile.pop(key, None)
        for r in range(src.height // size):
            for c in range(src.width // size):
                window = Window(c * size, r * size, size, size)
                path = out_dir / f"{prefix}_{r}_{c}.tif"
                with atomic_path(path) as tmp, rasterio.open(
                    tmp, "w", **(profile | {"transform": src.window_transform(window)})
                ) as dst:
                    dst.write(src.read(window=window))
                tiles.append(RasterTile(path, r, c, window, tuple(bounds(window, src.transform))))
    return tiles
