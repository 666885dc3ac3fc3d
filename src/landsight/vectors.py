"""GIS vector layers: writing GeoDataFrames, and classification predictions as tile polygons.

Formats by suffix (:data:`VECTOR_FORMATS`): GeoPackage (``.gpkg``), GeoJSON (``.geojson``) and
GeoParquet (``.parquet`` / ``.geoparquet``), written with geopandas (pyogrio engine for the OGR
formats, pyarrow for GeoParquet) to a temporary file in the destination's folder and renamed over
it only once complete (:func:`landsight.outputs.atomic_path`).

A classification predictions table (:mod:`landsight.predictions`) becomes one polygon per
georeferenced tile, the rectangle of its ``minx, miny, maxx, maxy`` bounds in its ``crs``, with
every column of the table as attributes (:func:`tile_polygons`). Tiles in several CRSs are
reprojected to the first tile's CRS, or to ``to_crs`` (e.g. ``"EPSG:4326"``); rows that are not
georeferenced (or failed) have no polygon and are left out of the layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

__all__ = ["CLASSIFY_VECTOR_FORMATS", "VECTOR_FORMATS", "check_vector_path", "tile_polygons", "write_vector"]

VECTOR_FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".parquet": "GeoParquet", ".geoparquet": "GeoParquet"}
"""Vector file suffix -> format."""

CLASSIFY_VECTOR_FORMATS = (".gpkg", ".geojson", ".geoparquet")
"""Suffixes that make classification ``predict --out`` write a tile layer (``.parquet`` stays the
predictions table, of which a GeoParquet layer is ``.geoparquet``)."""


def check_vector_path(path: str | Path) -> Path:
    """Check that a path has a vector suffix (:data:`VECTOR_FORMATS`).

    Raises:
        LandsightValueError: Another suffix.
    """
    path = Path(path)
    if path.suffix.lower() not in VECTOR_FORMATS:
        raise LandsightValueError(f"vector output must end in one of {list(VECTOR_FORMATS)}, got {str(path)!r}")
    return path


def write_vector(gdf: gpd.GeoDataFrame, path: str | Path, *, layer: str | None = None, overwrite: bool = False) -> Path:
    """Write a GeoDataFrame to a GeoPackage, GeoJSON or GeoParquet file, atomically.

    Args:
        gdf: The layer (its CRS is written with it; ``None`` = no CRS).
        path: Destination (suffix picks the format, :data:`VECTOR_FORMATS`).
        layer: GeoPackage layer name (default: the file's stem).
        overwrite: Replace an existing file (once the new one is complete).

    Returns:
        ``path``.

    Raises:
        LandsightValueError: Unsupported suffix.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from landsight.outputs import atomic_path, check_output

    path = check_output(check_vector_path(path), overwrite=overwrite, what="vector output")
    fmt = VECTOR_FORMATS[path.suffix.lower()]
    with atomic_path(path) as tmp:
        if fmt == "GeoParquet":
            gdf.to_parquet(tmp, index=False)
        else:
            kwargs: dict[str, Any] = {"layer": layer or path.stem} if fmt == "GPKG" else {}
            gdf.to_file(tmp, driver=fmt, engine="pyogrio", **kwargs)
    return path


def tile_polygons(table: pd.DataFrame, *, to_crs: str | None = None) -> gpd.GeoDataFrame:
    """One rectangle per georeferenced tile of a classification predictions table.

    Args:
        table: Predictions table (:mod:`landsight.predictions`: ``minx``, ``miny``, ``maxx``,
            ``maxy`` in units of ``crs``).
        to_crs: Output CRS (any pyproj string, e.g. ``"EPSG:4326"``); default the first
            georeferenced tile's CRS, to which tiles in other CRSs are reprojected.

    Returns:
        GeoDataFrame with every column of ``table`` for the rows with bounds and a CRS, in that
        order, and a ``geometry`` column of polygons in the output CRS (reprojected polygons keep
        their four corners: a rectangle in its own CRS, a quadrilateral in another).

    Raises:
        LandsightValueError: No row is georeferenced.
    """
    import geopandas as gpd
    import numpy as np
    import shapely

    from landsight.predictions import BOUNDS_COLUMNS

    missing = [c for c in (*BOUNDS_COLUMNS, "crs") if c not in table.columns]
    if missing:
        raise LandsightValueError(f"predictions table lacks {missing!r}: not a landsight predictions table")
    bounds = table[list(BOUNDS_COLUMNS)].to_numpy(dtype=np.float64)
    crs = table["crs"].fillna("").astype(str)
    keep = np.isfinite(bounds).all(axis=1) & (crs != "").to_numpy()
    if not keep.any():
        raise LandsightValueError(
            f"none of the {len(table)} predicted tiles is georeferenced (no bounds / CRS): nothing to map; "
            "write a .parquet or .csv table instead"
        )
    rows = table[keep].reset_index(drop=True)
    boxes = shapely.box(*bounds[keep].T)
    target = to_crs or str(rows["crs"].iloc[0])
    parts = []
    for tile_crs, index in rows.groupby("crs", sort=False).groups.items():
        part = gpd.GeoDataFrame(rows.loc[index], geometry=boxes[np.asarray(index)], crs=str(tile_crs))
        parts.append(part.to_crs(target))
    import pandas as pd

    out = pd.concat(parts).sort_index()
    return gpd.GeoDataFrame(out, geometry="geometry", crs=parts[0].crs if to_crs is None else target)
