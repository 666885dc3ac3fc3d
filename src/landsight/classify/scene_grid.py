"""The window grid of a scene (ids, windows, bounds) and its class raster, one pixel per window.

Used by :mod:`landsight.classify.scene`: a window of ``tile_size`` pixels starts every ``stride``
pixels from the top-left pixel; partial windows at the right and bottom edges are left out. Its
id, the ``path`` of its predictions row, is ``<scene>#<row>_<col>`` (:func:`window_id`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GRID_KEY", "NODATA_CLASS", "SceneGrid", "crs_text", "parse_window_id", "window_id", "write_class_grid"]

GRID_KEY = "landsight.windows"
"""Table metadata entry recording the window grid (``tile_size`` and ``stride``) of a scene table."""

NODATA_CLASS = 255
"""Value of the class grid raster where a window has no prediction (failed, or not a whole window)."""

_SEP = "#"


def window_id(scene: str, row: int, col: int) -> str:
    """The ``path`` of a window's row: ``"<scene>#<row>_<col>"`` (grid row and column, 0 = top / left)."""
    return f"{scene}{_SEP}{row}_{col}"


def parse_window_id(path: str) -> tuple[str, int, int]:
    """Split a :func:`window_id` into ``(scene, row, col)``.

    Raises:
        LandsightValueError: ``path`` is not a window id.
    """
    scene, sep, cell = str(path).rpartition(_SEP)
    row, _, col = cell.partition("_")
    if not sep or not row.isdigit() or not col.isdigit():
        raise LandsightValueError(f"{path!r} is not a window id '<scene>#<row>_<col>'")
    return scene, int(row), int(col)


@dataclass(frozen=True)
class SceneGrid:
    """The windows of one scene.

    Attributes:
        source: The scene as listed (path or URL); the prefix of its window ids.
        width: Scene width in pixels.
        height: Scene height in pixels.
        tile_size: Window side in pixels.
        stride: Step between windows in pixels.
        transform: The scene's affine transform (pixels -> CRS units).
        crs: ``"EPSG:<code>"``, else WKT; ``""`` when the scene has no CRS (then no bounds either).
    """

    source: str
    width: int
    height: int
    tile_size: int
    stride: int
    transform: Any
    crs: str

    @property
    def rows(self) -> int:
        """Window rows (0 when the scene is smaller than a window)."""
        return max(0, (self.height - self.tile_size) // self.stride + 1)

    @property
    def cols(self) -> int:
        """Window columns."""
        return max(0, (self.width - self.tile_size) // self.stride + 1)

    def window(self, row: int, col: int) -> Any:
        """The ``rasterio.windows.Window`` of a grid cell."""
        from rasterio.windows import Window

        return Window(col * self.stride, row * self.stride, self.tile_size, self.tile_size)

    def bounds(self, row: int, col: int) -> tuple[float, float, float, float] | None:
        """``(left, bottom, right, top)`` of a window in CRS units; None without a CRS."""
        from rasterio.windows import bounds

        if not self.crs:
            return None
        return tuple(float(v) for v in bounds(self.window(row, col), self.transform))  # type: ignore[return-value]

    def grid_transform(self) -> Any:
        """Transform of the class grid: one pixel per window, the ``stride``-sided square centred on it."""
        from rasterio.transform import Affine

        half = (self.tile_size - self.stride) / 2
        return self.transform @ Affine.translation(half, half) @ Affine.scale(self.stride, self.stride)


def crs_text(crs: Any) -> str:
    """The CRS as the readers write it: ``EPSG:<code>`` when it has one, else its WKT; ``""`` for none."""
    if crs is None:
        return ""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def _colour_table(classes: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """Class index -> RGBA from the one map palette (:func:`landsight.styles.default_colours`)."""
    from landsight.styles import default_colours

    colours = default_colours(classes)
    table = {i: (*(int(colours[c][k : k + 2], 16) for k in (1, 3, 5)), 255) for i, c in enumerate(classes)}
    table[NODATA_CLASS] = (0, 0, 0, 0)
    return table  # type: ignore[return-value]


def write_class_grid(result: pd.DataFrame, grid: SceneGrid, classes: Sequence[str], path: str | Path, *,
                     overwrite: bool = False) -> Path:  # fmt: skip
    """Write the predicted classes of one scene's windows as a GeoTIFF, one pixel per window.

    Pixel ``(row, col)`` is window ``<scene>#<row>_<col>``; its value is the class index in the
    bundle's order (the ``classes`` tag holds the names as JSON), :data:`NODATA_CLASS` (nodata,
    transparent) where the window failed. Each pixel is the ``stride``-sided square centred on its
    window (:meth:`SceneGrid.grid_transform`; the window itself when ``stride = tile_size``), in
    the scene's CRS. Band 1 has a colour table with the map colours.

    Args:
        result: The predictions table (rows of other scenes are ignored).
        grid: The scene's grid.
        classes: The bundle's classes.
        path: ``.tif`` / ``.tiff`` output, replaced atomically.
        overwrite: Replace an existing file.

    Returns:
        ``path``.
    """
    import rasterio

    from landsight.outputs import atomic_path, check_output

    path = check_output(Path(path), overwrite=overwrite, what="class raster")
    codes = np.full((grid.rows, grid.cols), NODATA_CLASS, dtype=np.uint8)
    index = {name: i for i, name in enumerate(classes)}
    for wid, predicted, error in zip(result["path"], result["predicted"], result["error"], strict=True):
        scene, r, c = parse_window_id(wid)
        if scene == grid.source and not error and predicted in index and r < grid.rows and c < grid.cols:
            codes[r, c] = index[predicted]
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "height": grid.rows, "width": grid.cols,
               "transform": grid.grid_transform(), "nodata": NODATA_CLASS, "compress": "deflate",
               "crs": rasterio.crs.CRS.from_user_input(grid.crs) if grid.crs else None}  # fmt: skip
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(codes, 1)
        dst.write_colormap(1, _colour_table(classes))
        dst.update_tags(classes=json.dumps(list(classes)), tile_size=str(grid.tile_size), stride=str(grid.stride))
    from landsight.styles import default_colours, pam_path, write_raster_pam

    colours = default_colours(classes)  # category names + attribute table, as QGIS reads them
    write_raster_pam(pam_path(path), [(i, c, colours[c]) for i, c in enumerate(classes)])
    return path
