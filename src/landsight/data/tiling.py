r"""Cut a georeferenced raster into a grid of GeoTIFF tiles.

The way to classify a large scene tile by tile (``landsight predict`` on the tiles, then
``landsight map`` of the predictions): every tile keeps the raster's CRS, bands and dtype, with
the transform of its window, so the readers give each prediction its bounds and CRS. The raster
is read one window at a time, so its size does not matter.

Tiles are named ``<prefix>_<row>_<col>.tif``, the prefix being the scene's file stem unless given,
so tiles of several scenes can share a folder and ``split="group"`` with
``group=r"regex:([^/]+)_\d+_\d+\.tif$"`` groups them by scene. The helpers here (the grid of
windows, padded reads, the tile profile) are shared with the labelled tiles of
:mod:`landsight.segment.scene_tiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    prefix: str | None = None,
    edge: str = "drop",
    overwrite: bool = False,
    asset: str | None = None,
    allow_remote: bool = True,
) -> list[RasterTile]:
    """Write the ``size x size`` tiles of a raster as GeoTIFFs named ``<prefix>_<row>_<col>.tif``.

    The grid starts at the top-left pixel. Partial tiles at the right and bottom edges are left
    out (``edge="drop"``: a classifier expects whole tiles) or padded to ``size`` with the
    raster's nodata value (0 when it has none, which the tile then declares as nodata).

    Args:
        raster: Any raster GDAL reads (GeoTIFF, JPEG 2000...), e.g. a NAIP scene; a URL of a
            Cloud Optimized GeoTIFF (read window by window); or a STAC Item / Catalog /
            ItemCollection JSON (file or URL, :mod:`landsight.data.stac`): each Item's asset is
            cut, into ``<prefix>_<item id>_<row>_<col>.tif`` when there are several Items.
        out: Folder for the tiles: a landsight tiles folder (it holds a manifest), written whole
            at the end (group commit).
        size: Tile side in pixels (>= 1).
        prefix: File-name prefix (``None`` = the raster's file stem; for a STAC source, each
            Item's id). With an explicit prefix, several STAC Items are named
            ``<prefix>_<item id>``.
        edge: ``"drop"`` (partial edge tiles left out) or ``"keep"`` (padded with nodata).
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
        LandsightValueError: ``size`` < 1 or larger than the raster, ``edge`` unknown, ``prefix``
            not a plain file-name part, or ``out`` is, holds or lies in the raster;
            a STAC source without the asset, unreadable, with a cycle or a remote href while
            ``allow_remote`` is False; ``asset`` given for a plain raster; a URL ``raster`` while
            ``allow_remote`` is False.
        OutputExistsError: ``out`` exists and ``overwrite`` is False, or it is not a tiles folder
            landsight made.
    """
    from landsight.data.stac import is_stac_source, stac_items

    check_edge(edge)
    if prefix is not None:
        check_prefix(prefix)
    if is_stac_source(raster):
        items = stac_items(raster, asset, allow_remote=allow_remote)
        sources = [(it.href, it.item_id if prefix is None else prefix if len(items) == 1 else f"{prefix}_{it.item_id}")
                   for it in items]  # fmt: skip
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
        sources = [(str(raster), scene_stem(raster) if prefix is None else prefix)]
    out_dir = Path(out)
    local = [("raster", Path(src)) for src, _ in sources if "://" not in src]
    check_plan(OutputPlan("tile", inputs=local, outputs=[Output(out_dir, "out", "tiles")], overwrite=overwrite))
    tiles: list[RasterTile] = []
    # group commit: the folder is replaced whole, so no tile of an earlier run survives beside the new ones
    with staged_folder(out_dir, "tiles", overwrite=overwrite) as stage:
        for src_path, name in sources:
            tiles += _cut(src_path, stage, out_dir, size=size, prefix=name, edge=edge)
    return tiles


EDGES = ("drop", "keep")
"""What happens to the partial tiles of the right and bottom edge strips (``edge=``)."""


def check_edge(edge: str) -> None:
    """Refuse an ``edge`` value outside :data:`EDGES`."""
    if edge not in EDGES:
        raise LandsightValueError(f"edge must be one of {list(EDGES)!r}, got {edge!r}")


def check_prefix(prefix: str) -> None:
    """Refuse a tile-name prefix that is empty, hidden or not a plain file-name part."""
    if not prefix or prefix.startswith(".") or any(ch in prefix for ch in '/\\:*?"<>|\0'):
        raise LandsightValueError(
            f"tile prefix {prefix!r} must be a plain file-name part (no path separators, not hidden, not empty)"
        )


def scene_stem(raster: str | Path) -> str:
    """The default tile-name prefix of a scene: its file name without the extension (URL query dropped)."""
    name = str(raster).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return Path(name).stem or "tile"


def tile_windows(width: int, height: int, size: int, edge: str = "drop") -> tuple[list[tuple[int, int, Any]], int]:
    """The grid of ``size x size`` windows over a ``width x height`` px raster, row-major from the top left.

    Args:
        width: Raster width, pixels.
        height: Raster height, pixels.
        size: Tile side, pixels (1 .. the raster's shorter side).
        edge: ``"drop"``: only whole windows; ``"keep"``: also the partial windows of the right and
            bottom strips (still ``size x size``, running past the raster).

    Returns:
        ``([(row, col, Window), ...], n_dropped)``: the windows and how many partial edge windows
        were left out (0 with ``edge="keep"``).

    Raises:
        LandsightValueError: ``size`` out of range or ``edge`` unknown.
    """
    from rasterio.windows import Window

    check_edge(edge)
    if not 1 <= size <= min(width, height):
        raise LandsightValueError(
            f"tile size must be in [1, {min(width, height)}] for a {width} x {height} px raster, got {size!r}"
        )
    whole_r, whole_c = height // size, width // size
    rows, cols = -(-height // size), -(-width // size)
    dropped = rows * cols - whole_r * whole_c
    if edge == "drop":
        rows, cols = whole_r, whole_c
    windows = [(r, c, Window(c * size, r * size, size, size)) for r in range(rows) for c in range(cols)]
    return windows, dropped if edge == "drop" else 0


def read_padded(src: Any, window: Any, *, fill: float, indexes: Any = None, masks: bool = False) -> np.ndarray:
    """Read a window that may run past the raster's right or bottom edge, padded with ``fill``.

    Args:
        src: An open rasterio dataset (or ``WarpedVRT``).
        window: The window, pixels (its offset inside the raster).
        fill: Value of the pixels outside the raster.
        indexes: Band indexes (``None`` = all bands).
        masks: Read the validity masks (``read_masks``: 0 = nodata) instead of the values; the
            pixels outside the raster are then 0 whatever ``fill``.

    Returns:
        ``(bands, window.height, window.width)`` array of the raster's dtype (uint8 masks).
    """
    from rasterio.windows import Window

    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    inner = Window(c0, r0, max(0, min(w, src.width - c0)), max(0, min(h, src.height - r0)))
    bands = list(range(1, src.count + 1)) if indexes is None else list(indexes)
    data = src.read_masks(bands, window=inner) if masks else src.read(bands, window=inner)
    if data.shape[1:] == (h, w):
        return data
    out = np.full((len(bands), h, w), 0 if masks else fill, dtype=data.dtype)
    out[:, : data.shape[1], : data.shape[2]] = data
    return out


def tile_profile(src: Any, size: int) -> dict[str, Any]:
    """GeoTIFF profile of ``size x size`` tiles of ``src`` (its CRS, bands, dtype, nodata; transform set per tile)."""
    profile = src.profile | {"driver": "GTiff", "width": size, "height": size}
    for key in ("blockxsize", "blockysize", "tiled"):
        profile.pop(key, None)
    return profile


def edge_fill(src: Any) -> float:
    """Value of the padding of partial edge tiles: the raster's nodata value, else 0."""
    return 0 if src.nodata is None else src.nodata


def write_tile(src: Any, path: Path, window: Any, profile: dict[str, Any], data: np.ndarray | None = None) -> None:
    """Write one tile of ``src``: ``data`` (read with :func:`read_padded` if ``None``) under the window's transform.

    A tile running past the raster is padded with :func:`edge_fill`, declared as its nodata value.
    """
    partial = window.col_off + window.width > src.width or window.row_off + window.height > src.height
    if data is None:
        data = read_padded(src, window, fill=edge_fill(src))
    extra = {"nodata": edge_fill(src)} if partial else {}
    import rasterio

    with rasterio.open(path, "w", **(profile | {"transform": src.window_transform(window)} | extra)) as dst:
        dst.write(data)


def _cut(src_path: str, stage: Path, out_dir: Path, *, size: int, prefix: str, edge: str) -> list[RasterTile]:
    """Write one raster's tiles into ``stage``; the returned paths are their final ones in ``out_dir``."""
    import rasterio
    from rasterio.windows import bounds

    tiles: list[RasterTile] = []
    with rasterio.open(src_path) as src:
        if not 1 <= size <= min(src.width, src.height):
            raise LandsightValueError(
                f"tile size must be in [1, {min(src.width, src.height)}] for {str(src_path)!r} "
                f"({src.width} x {src.height} px), got {size!r}"
            )
        profile = tile_profile(src, size)
        windows, _ = tile_windows(src.width, src.height, size, edge)
        for r, c, window in windows:
            name = f"{prefix}_{r}_{c}.tif"
            write_tile(src, stage / name, window, profile)
            tiles.append(RasterTile(out_dir / name, r, c, window, tuple(bounds(window, src.transform))))
    return tiles
