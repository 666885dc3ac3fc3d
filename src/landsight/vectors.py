"""GIS vector layers: writing GeoDataFrames, and classification predictions as tile polygons.

Formats by suffix (:data:`VECTOR_FORMATS`): GeoPackage (``.gpkg``), GeoJSON (``.geojson``) and
GeoParquet (``.parquet`` / ``.geoparquet``), written with geopandas (pyogrio engine for the OGR
formats, pyarrow for GeoParquet) to a temporary file in the destination's folder and renamed over
it only once complete (:func:`landsight.outputs.atomic_path`).

A classification predictions table (:mod:`landsight.predictions`) becomes one polygon per
georeferenced tile, the rectangle of its ``minx, miny, maxx, maxy`` bounds in its ``crs``, with
every column of the table as attributes (:func:`tile_polygons`). Tiles in several CRSs are
reprojected to the first tile's CRS, or to ``to_crs`` (e.g. ``"EPSG:4326"``); rows that are not
georeferenced (or failed) have no polygon and are left out of the layer. The maps of
:mod:`landsight.results.maps` draw the same polygons in WGS84.
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


def check_crs(crs: str | None, option: str = "to_crs") -> str | None:
    """Refuse, before any work, a CRS that pyproj cannot read (``--to-crs EPSG:99999``).

    Args:
        crs: Any pyproj CRS string (``"EPSG:4326"``, WKT, PROJ), or None.
        option: How the user named it, for the message.

    Returns:
        ``crs`` unchanged.

    Raises:
        LandsightValueError: pyproj cannot read it.
    """
    if crs is None:
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise LandsightValueError(f"{option} {crs!r} is not a CRS pyproj knows; give e.g. 'EPSG:4326'") from None
    return crs


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


def tile_polygons(
    table: pd.DataFrame,
    *,
    to_crs: str | None = None,
    skip_failed: bool = False,
    skipped: list[tuple[str, str]] | None = None,
    allow_empty: bool = False,
) -> gpd.GeoDataFrame:
    """One polygon per georeferenced tile of a classification predictions table.

    Each tile is the rectangle of its ``minx, miny, maxx, maxy`` bounds in its ``crs``; its four
    corners are reprojected (not just its bounds), so a tile keeps its true, slightly rotated
    footprint in another CRS. The single implementation behind ``predict --out preds.gpkg``
    (:mod:`landsight.classify.predict`) and the maps (:mod:`landsight.results.maps`, which asks for
    ``to_crs="EPSG:4326"``, ``skip_failed=True``, ``skipped=[]`` and ``allow_empty=True``).

    Args:
        table: Predictions table (:mod:`landsight.predictions`: ``minx``, ``miny``, ``maxx``,
            ``maxy`` in units of ``crs``).
        to_crs: Output CRS (any pyproj string, e.g. ``"EPSG:4326"``); default the first
            georeferenced tile's CRS, to which tiles in other CRSs are reprojected.
        skip_failed: Also leave out the rows whose prediction failed (non-empty ``error``).
        skipped: A list that receives ``(path, reason)`` for each row left out (a failed
            prediction with ``skip_failed``, or no bounds / CRS), in table order.
        allow_empty: Return an empty layer instead of raising when no row is left (a table
            without bounds / CRS columns then has every row left out).

    Returns:
        GeoDataFrame with every column of ``table`` for the rows kept, in that order (a fresh
        ``RangeIndex``), and a ``geometry`` column of closed 5-point polygons in the output CRS
        (a rectangle in its own CRS, a quadrilateral in another).

    Raises:
        LandsightValueError: No row is georeferenced (unless ``allow_empty``), the table lacks a
            bounds or ``crs`` column (unless ``allow_empty``), or a CRS is not understood.
    """
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely
    from pyproj.exceptions import CRSError

    from landsight.predictions import BOUNDS_COLUMNS

    missing = [c for c in (*BOUNDS_COLUMNS, "crs") if c not in table.columns]
    if missing and not allow_empty:
        raise LandsightValueError(f"predictions table lacks {missing!r}: not a landsight predictions table")
    n = len(table)
    if missing:
        bounds, georeferenced = np.full((n, 4), np.nan), np.zeros(n, dtype=bool)
    else:
        bounds = table[list(BOUNDS_COLUMNS)].to_numpy(dtype=np.float64)
        crs = table["crs"].fillna("").astype(str)
        georeferenced = np.isfinite(bounds).all(axis=1) & (crs != "").to_numpy()
    errors = table["error"].fillna("").astype(str).tolist() if "error" in table.columns else [""] * n
    failed = np.array([bool(e) for e in errors], dtype=bool) if skip_failed else np.zeros(n, dtype=bool)
    keep = georeferenced & ~failed
    if skipped is not None:
        for path, error, bad, geo in zip(table["path"], errors, failed, georeferenced, strict=True):
            if bad:
                skipped.append((str(path), f"prediction failed: {error}"))
            elif not geo:
                skipped.append((str(path), "not georeferenced (no bounds or CRS)"))
    if not keep.any():
        if allow_empty:
            return gpd.GeoDataFrame(table.iloc[:0].reset_index(drop=True), geometry=[], crs=to_crs)
        raise LandsightValueError(
            f"none of the {len(table)} predicted tiles is georeferenced (no bounds / CRS): nothing to map; "
            "write a .parquet or .csv table instead"
        )
    rows = table[keep].reset_index(drop=True)
    b = bounds[keep]
    xs = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0], b[:, 0]], axis=1)
    ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3], b[:, 1]], axis=1)
    rings = shapely.polygons(np.stack([xs, ys], axis=2))  # closed rings: corners (minx, miny) anticlockwise
    target = to_crs or str(rows["crs"].iloc[0])
    parts = []
    for tile_crs, index in rows.groupby("crs", sort=False).groups.items():
        try:
            part = gpd.GeoDataFrame(rows.loc[index], geometry=rings[np.asarray(index)], crs=str(tile_crs))
        except CRSError as exc:
            raise LandsightValueError(f"predictions CRS {str(tile_crs)!r} is not understood: {exc}") from exc
        try:
            parts.append(part.to_crs(target))
        except CRSError as exc:
            raise LandsightValueError(f"to_crs {target!r} is not understood: {exc}") from exc
    out = pd.concat(parts).sort_index()
    return gpd.GeoDataFrame(out, geometry="geometry", crs=parts[0].crs if to_crs is None else target)
