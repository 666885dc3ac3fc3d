"""Land-cover maps for GIS: polygons per class and area statistics of a label raster.

* :func:`polygonize_raster`: the class regions of a label GeoTIFF (as written by
  :func:`landsight.segment.predict.predict_raster`) as polygons (``rasterio.features.shapes``,
  4-connected, read in windows; the pieces of a region cut by window seams are merged by a
  per-class union: :class:`Polygonizer`), dissolved to one multipolygon per class or one polygon
  per connected region, optionally without regions under ``min_area`` m² (they leave holes: no
  sieve) and simplified by ``simplify`` metres (Douglas-Peucker preserving each polygon's
  topology, not the shared edges between classes, so gaps / overlaps of up to the tolerance
  appear). Attributes: class ``code``, ``name``, ``colour`` (``#rrggbb``), ``area_m2``, ``area_ha``.
* :func:`class_areas`: area per class in m², ha and % of the valid pixels, counted window by
  window (bounded memory; :class:`~landsight.segment.raster.ClassCounts`) and converted with the
  raster's transform (:func:`class_area_table`): pixel count times the pixel area
  ``|det(transform)|`` times the square of the CRS's linear unit in metres for projected CRSs,
  geodesic areas on the CRS's ellipsoid (``pyproj.Geod``, per row of pixels) for geographic ones;
  without a CRS, ``pixel_size`` metres a side (``--pixel-size``), else NaN (counts and percentages).

``segment predict`` feeds the same :class:`Polygonizer` and counts with the windows it writes (so
``--vector`` / ``--stats`` equal these functions on the finished map, never read again). Polygon
areas are computed the same way, so without ``simplify`` / ``min_area`` they equal the raster's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import LandsightValueError, ResourceLimitError
from landsight.segment.classmap import NODATA_CODE

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

    from landsight.segment.classmap import ClassMap
    from landsight.segment.raster import ClassCounts

DISSOLVE = ("class", "region")
"""Polygon layouts: one multipolygon per class, or one polygon per connected region."""

AREA_COLUMNS = ["code", "name", "pixels", "area_m2", "area_ha", "percent"]
"""Columns of :func:`class_areas`."""


def map_classes(class_map: ClassMap) -> list[tuple[int, str, str]]:
    """``(code, name, #rrggbb)`` of a class map's classes, in its order."""
    return [(c.code, c.name, "#{:02x}{:02x}{:02x}".format(*c.colour)) for c in class_map.classes]


def _classes(src: Any, class_map: ClassMap | None) -> list[tuple[int, str, str]]:
    """``(code, name, #rrggbb)`` of the classes: the class map's, else the raster's ``classes`` tag + colour table."""
    if class_map is not None:
        return map_classes(class_map)
    tag = src.tags(1).get("classes", "")
    try:
        colours = src.colormap(1)
    except ValueError:  # no colour table
        colours = {}
    out = []
    for item in filter(None, tag.split(",")):
        code, _, name = item.partition("=")
        rgb = colours.get(int(code), (0, 0, 0, 255))[:3]
        out.append((int(code), name, "#{:02x}{:02x}{:02x}".format(*rgb)))
    return out


def _unit_metres(crs: Any) -> float:
    """Metres per linear unit of a projected CRS."""
    try:
        return float(crs.linear_units_factor[1])
    except Exception as exc:  # noqa: BLE001 - rasterio raises CRSError for unitless / odd CRSs
        raise LandsightValueError(f"cannot tell the linear unit of CRS {crs}: {exc}") from exc


def pixel_area_rows(crs: Any, transform: Any, row: int, height: int) -> np.ndarray | None:
    """Area in m² of one pixel in each of ``height`` rows from ``row``.

    Args:
        crs: The raster's rasterio CRS (or ``None``).
        transform: Its affine transform.
        row: First row.
        height: Rows.

    Returns:
        ``(height,)`` float64 m² per pixel (constant for projected CRSs, geodesic per row for
        geographic ones), or ``None`` without a CRS.

    Raises:
        LandsightValueError: A geographic CRS with a rotated transform (not north-up).
    """
    if not crs:
        return None
    if crs.is_geographic:
        from pyproj import CRS, Geod

        if transform.b or transform.d:
            raise LandsightValueError("geodesic pixel areas need a north-up transform; reproject the raster first")
        geod: Geod = CRS.from_user_input(crs.to_wkt()).get_geod()
        x0, x1 = transform.c, transform.c + transform.a
        tops = transform.f + transform.e * np.arange(row, row + height)
        out = np.empty(height)
        for i, top in enumerate(tops):
            bottom = top + transform.e
            area, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [top, top, bottom, bottom])
            out[i] = abs(area)
        return out
    return np.full(height, abs(transform.a * transform.e - transform.b * transform.d) * _unit_metres(crs) ** 2)


def class_areas(raster: str | Path, class_map: ClassMap | None = None, *, window: int = 1024) -> pd.DataFrame:
    """Area per class of a label raster (see the module docstring).

    Args:
        raster: Label raster of class codes (nodata 255 or the raster's nodata left out).
        class_map: Classes to report (default: the raster's ``classes`` tag, as written by
            ``segment predict``; codes found but not listed are reported as ``code_<n>``).
        window: Block side read at a time, pixels.

    Returns:
        One row per class (:data:`AREA_COLUMNS`), see :func:`class_area_table`.

    Raises:
        LandsightValueError: A geographic CRS with a rotated transform.
    """
    from landsight.segment.raster import ClassCounts, iter_blocks, open_raster, read_window

    with open_raster(raster) as src:
        classes = _classes(src, class_map)
        nodata = NODATA_CODE if src.nodata is None else int(src.nodata)
        counts = ClassCounts(src.height, nodata=nodata, by_row=bool(src.crs) and src.crs.is_geographic)
        for r, c, h, w in iter_blocks(src.height, src.width, window):
            counts.add(read_window(src, r, c, h, w, bands=[1])[0], r)
        return class_area_table(counts, src.crs, src.transform, classes)


def class_area_table(
    counts: ClassCounts, crs: Any, transform: Any, classes: Sequence[tuple[int, str, str]], *,
    pixel_size: float | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Area per class from the pixel counts of a label raster.

    The areas depend only on the counts, not on the windows they were counted in: pixels x the
    pixel area for projected CRSs; for geographic ones, the exactly rounded sum over rows of the
    row's pixels x its geodesic pixel area (``math.fsum``).

    Args:
        counts: Valid pixels per class code (:class:`~landsight.segment.raster.ClassCounts`,
            counted per row for a geographic ``crs``).
        crs: The raster's rasterio CRS (or ``None``).
        transform: Its affine transform.
        classes: ``(code, name, #rrggbb)`` of the classes to report, in order; codes counted but
            not listed follow as ``code_<n>``.
        pixel_size: Side of a pixel in metres, for a raster without a CRS (``--pixel-size``):
            its pixels are then ``pixel_size²`` m² each. Ignored when there is a CRS.

    Returns:
        One row per class (:data:`AREA_COLUMNS`): ``code``, ``name``, ``pixels`` (int),
        ``area_m2``, ``area_ha`` (float; NaN without a CRS or ``pixel_size``) and ``percent``.

    Raises:
        LandsightValueError: A geographic CRS with a rotated transform; a geographic CRS whose
            counts were not kept per row.
    """
    import math

    import pandas as pd

    pixels = counts.pixels
    total = pixels.sum()
    listed = {code for code, _, _ in classes}
    extra = [(int(code), f"code_{code}", "") for code in np.flatnonzero(pixels) if int(code) not in listed]
    row_areas = pixel_area_rows(crs, transform, 0, counts.height if crs and crs.is_geographic else 1)
    if row_areas is None and pixel_size is not None:  # no CRS: the pixel side the user gave, in metres
        row_areas, crs = np.full(1, float(pixel_size) ** 2), None
    if row_areas is not None and crs and crs.is_geographic and not counts.by_row and total:
        raise LandsightValueError("geodesic class areas need pixel counts per row (ClassCounts(by_row=True))")
    records = []
    for code, name, _ in [*classes, *extra]:
        if row_areas is None:
            m2 = float("nan")
        elif crs and crs.is_geographic:
            per_row = counts.rows.get(code)
            m2 = math.fsum(per_row * row_areas) if per_row is not None else 0.0
        else:
            m2 = float(pixels[code] * row_areas[0])
        share = 100.0 * pixels[code] / total if total else float("nan")
        records.append({"code": code, "name": name, "pixels": int(pixels[code]), "area_m2": m2,
                        "area_ha": m2 / 1e4, "percent": share})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=AREA_COLUMNS)


def _areas_m2(geoms: Any, crs: Any) -> np.ndarray:
    """Areas in m² of shapely geometries in ``crs`` (planar if projected, geodesic if geographic)."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    if crs is None or not crs:
        return np.full(len(geoms), np.nan)
    if crs.is_geographic:
        from pyproj import CRS

        geod = CRS.from_user_input(crs.to_wkt()).get_geod()
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms])
    return shapely.area(geoms) * _unit_metres(crs) ** 2


def check_polygon_options(dissolve: str, simplify: float | None, min_area: float | None) -> None:
    """Validate the options of :func:`polygonize_raster` that do not depend on the raster.

    Raises:
        LandsightValueError: Unknown ``dissolve``; negative ``simplify`` / ``min_area``.
    """
    if dissolve not in DISSOLVE:
        raise LandsightValueError(f"dissolve must be one of {list(DISSOLVE)}, got {dissolve!r}")
    if (simplify is not None and simplify < 0) or (min_area is not None and min_area < 0):
        raise LandsightValueError(f"simplify and min_area must be >= 0, got {simplify!r}, {min_area!r}")


def check_polygon_crs(crs: Any, simplify: float | None, min_area: float | None, name: str | Path) -> None:
    """Validate ``simplify`` / ``min_area`` (metres) against a raster's CRS.

    Args:
        crs: The raster's rasterio CRS (or ``None``).
        simplify: Tolerance, metres.
        min_area: Smallest region kept, m².
        name: The raster, for messages.

    Raises:
        LandsightValueError: ``min_area`` without a CRS; ``simplify`` in a geographic CRS.
    """
    if min_area and not crs:
        raise LandsightValueError(f"min_area is in m² but {str(name)!r} has no CRS")
    if simplify and crs and crs.is_geographic:
        raise LandsightValueError(f"simplify is in metres but {str(name)!r} is in a geographic CRS "
                                  f"({crs}); reproject it first")  # fmt: skip


class Polygonizer:
    """Polygons per class of a label raster, fed one window at a time.

    Each window is polygonized (``rasterio.features.shapes``, 4-connected) in pixel coordinates,
    which are exact integers, and its polygons are mapped to the CRS with the whole raster's
    transform (``x = c + a * col + b * row``, GDAL's own formula), so the edge two windows share
    has bit-identical coordinates in both and the per-class union (:meth:`layer`) merges the
    pieces of a region exactly. The union leaves a vertex where a straight edge crosses a window
    seam; those are dropped (a topology-preserving simplification with tolerance 0 removes exactly
    the collinear vertices), and each class's polygons are put in GEOS's normal form
    (``shapely.normalize``: shells clockwise and holes anticlockwise, as the union makes them,
    each ring starting at its lowest vertex, parts sorted). So the polygons do not depend on the
    windows they were cut into: a map polygonized in one window and the same map fed in 256- or
    512-pixel windows give the same layer, coordinate for coordinate and row for row, also after
    ``simplify`` (whose Douglas-Peucker result depends on where a ring starts). Memory: one window
    plus the polygons so far.

    Attributes:
        transform: The raster's affine transform.
        nodata: Code left out.
    """

    def __init__(self, transform: Any, *, nodata: int = NODATA_CODE, max_polygons: int | None = None) -> None:
        """Start empty.

        Args:
            transform: The raster's affine transform (``affine.Affine``).
            nodata: Code that is not a class.
            max_polygons: Polygon budget: :meth:`add` raises once more pieces than this were
                gathered (``None``: no budget).
        """
        self.transform = transform
        self.nodata = nodata
        self.max_polygons = max_polygons
        self.n_pieces = 0
        self._pieces: dict[int, list[Any]] = {}

    def add(self, labels: np.ndarray, row: int, col: int) -> None:
        """Polygonize one window of the map.

        Args:
            labels: ``(h, w)`` class codes (uint8, int16, uint16, int32 or float32).
            row: Raster row of the window's top line.
            col: Raster column of its left edge.

        Raises:
            ResourceLimitError: More polygons than ``max_polygons`` so far.
        """
        import rasterio.features
        import shapely
        from affine import Affine

        geoms, codes = [], []
        for geom, value in rasterio.features.shapes(labels, mask=labels != self.nodata,
                                                    transform=Affine.translation(col, row)):  # fmt: skip
            geoms.append(shapely.geometry.shape(geom))
            codes.append(int(value))
        if not geoms:
            return
        self.n_pieces += len(geoms)
        if self.max_polygons is not None and self.n_pieces > self.max_polygons:
            raise ResourceLimitError(
                f"the map has more than {self.max_polygons:,} polygons by row {row:,}; polygonizing them would cost "
                "minutes and gigabytes. Pass --sieve PIXELS to merge small regions first, or raise --max-polygons"
            )
        t = self.transform

        def to_crs(xy: np.ndarray) -> np.ndarray:
            x, y = xy[:, 0], xy[:, 1]
            return np.column_stack([t.c + t.a * x + t.b * y, t.f + t.d * x + t.e * y])

        for geom, code in zip(shapely.transform(np.asarray(geoms, dtype=object), to_crs), codes, strict=True):
            self._pieces.setdefault(code, []).append(geom)

    def layer(
        self, crs: Any, classes: Sequence[tuple[int, str, str]], *, dissolve: str = "class",
        simplify: float | None = None, min_area: float | None = None, pixel_size: float | None = None,
    ) -> gpd.GeoDataFrame:  # fmt: skip
        """The polygons fed so far as a layer (see :func:`polygonize_raster`).

        Args:
            crs: The raster's rasterio CRS (or ``None``).
            classes: ``(code, name, #rrggbb)`` of the classes (codes not listed are named ``code_<n>``).
            dissolve: ``"class"`` or ``"region"``.
            simplify: Tolerance in metres (``None`` = exact pixel edges).
            min_area: Drop regions smaller than this, m².
            pixel_size: Without a CRS: a pixel's side in metres, so ``area_m2`` is pixels x
                ``pixel_size²`` instead of NaN.

        Returns:
            GeoDataFrame, see :func:`polygonize_raster`.

        Raises:
            LandsightValueError: See :func:`check_polygon_options` and :func:`check_polygon_crs`.
        """
        import geopandas as gpd
        import shapely

        check_polygon_options(dissolve, simplify, min_area)
        check_polygon_crs(crs, simplify, min_area, "the map")
        names = {code: (name, colour) for code, name, colour in classes}
        codes, geoms = [], []
        for code in sorted(self._pieces):
            merged = shapely.union_all(self._pieces[code], grid_size=None)
            # canonical form: no window-seam vertices, rings from their lowest vertex, parts sorted
            merged = shapely.normalize(shapely.simplify(merged, 0.0, preserve_topology=True))
            parts = list(shapely.get_parts(merged))
            if min_area:
                parts = [p for p, a in zip(parts, _areas_m2(parts, crs), strict=True) if a >= min_area]
            if not parts:
                continue
            if dissolve == "class":
                codes.append(code)
                geoms.append(shapely.multipolygons(parts) if len(parts) > 1 else parts[0])
            else:
                codes += [code] * len(parts)
                geoms += parts
        geoms_arr = np.asarray(geoms, dtype=object)
        if simplify and len(geoms_arr):
            tolerance = simplify / (_unit_metres(crs) if crs else 1.0)
            geoms_arr = shapely.simplify(geoms_arr, tolerance, preserve_topology=True)
        area = _areas_m2(geoms_arr, crs)
        if crs is None and pixel_size is not None and len(geoms_arr):  # pixels x the side the user gave
            area = shapely.area(geoms_arr) / abs(self.transform.determinant) * float(pixel_size) ** 2
        frame = gpd.GeoDataFrame(
            {"code": np.asarray(codes, dtype=np.int32),
             "name": [names.get(k, (f"code_{k}", ""))[0] for k in codes],
             "colour": [names.get(k, ("", "#000000"))[1] for k in codes],
             "area_m2": area, "area_ha": area / 1e4},
            geometry=gpd.GeoSeries(list(geoms_arr), crs=crs.to_wkt() if crs else None),
            crs=crs.to_wkt() if crs else None,
        )  # fmt: skip
        if crs and crs.to_epsg():
            frame = frame.set_crs(epsg=crs.to_epsg(), allow_override=True)
        if dissolve == "region":
            frame = frame.sort_values(["code", "area_m2"], ascending=[True, False], kind="stable")
            frame = frame.reset_index(drop=True)
        return frame


def polygonize_raster(
    raster: str | Path,
    class_map: ClassMap | None = None,
    *,
    dissolve: str = "class",
    simplify: float | None = None,
    min_area: float | None = None,
    window: int = 2048,
) -> gpd.GeoDataFrame:
    """Polygons per class of a label raster (see the module docstring and :class:`Polygonizer`).

    Args:
        raster: Label raster of class codes (nodata left out).
        class_map: Classes (default: the raster's ``classes`` tag and colour table).
        dissolve: ``"class"``: one (multi)polygon per class; ``"region"``: one polygon per
            4-connected region (holes kept).
        simplify: Simplification tolerance in metres (converted to CRS units for projected CRSs;
            refused for geographic ones); ``None`` = exact pixel edges.
        min_area: Drop connected regions smaller than this many m² (needs a CRS).
        window: Block side polygonized at a time, pixels (memory: one block plus the polygons;
            the polygons do not depend on it).

    Returns:
        GeoDataFrame in the raster's CRS, columns ``code``, ``name``, ``colour``, ``area_m2``,
        ``area_ha`` (after simplification; NaN without a CRS), ``geometry``; rows by class code
        (then by decreasing area for ``"region"``).

    Raises:
        LandsightValueError: Unknown ``dissolve``; negative ``simplify`` / ``min_area``;
            ``min_area`` without a CRS; ``simplify`` in a geographic CRS.
    """
    from landsight.segment.raster import iter_blocks, open_raster, read_window

    check_polygon_options(dissolve, simplify, min_area)
    with open_raster(raster) as src:
        crs, classes = src.crs, _classes(src, class_map)
        check_polygon_crs(crs, simplify, min_area, raster)
        nodata = NODATA_CODE if src.nodata is None else int(src.nodata)
        polygons = Polygonizer(src.transform, nodata=nodata)
        for r, c, h, w in iter_blocks(src.height, src.width, window):
            polygons.add(read_window(src, r, c, h, w, bands=[1])[0], r, c)
    return polygons.layer(crs, classes, dissolve=dissolve, simplify=simplify, min_area=min_area)


def write_raster_layers(
    raster: str | Path,
    class_map: ClassMap | None = None,
    *,
    vector: str | Path | None = None,
    stats: str | Path | None = None,
    simplify: float | None = None,
    min_area: float | None = None,
    dissolve: str = "class",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the polygons and / or the area statistics of an existing label raster (read again).

    ``segment predict`` does not use this: it gathers both while writing the map (see
    :func:`landsight.segment.predict.predict_raster`). Both outputs are renamed into place only
    when both are complete.

    Args:
        raster: Label raster (e.g. the output of ``segment predict``).
        class_map: Classes (default: from the raster's tags).
        vector: ``.gpkg`` / ``.geojson`` / ``.parquet`` (GeoParquet) polygon layer
            (:func:`polygonize_raster`).
        stats: CSV of :func:`class_areas`.
        simplify: See :func:`polygonize_raster`.
        min_area: See :func:`polygonize_raster`.
        dissolve: See :func:`polygonize_raster`.
        overwrite: Replace existing files (each written atomically).

    Returns:
        ``{"vector": path, "stats": path}`` for those written.

    Raises:
        OutputExistsError: An output exists and ``overwrite`` is False.
        LandsightValueError: See :func:`polygonize_raster`; an unsupported vector suffix.
    """
    import contextlib

    from landsight.outputs import atomic_path, check_output
    from landsight.styles import write_layer_styles
    from landsight.vectors import check_vector_path, write_vector

    paths: dict[str, Path] = {}  # each output checked once, before any work
    if vector:
        paths["vector"] = check_output(check_vector_path(vector), inputs=[raster], overwrite=overwrite,
                                       what="vector output")  # fmt: skip
        check_polygon_options(dissolve, simplify, min_area)
    if stats:
        paths["stats"] = check_output(stats, inputs=[raster], overwrite=overwrite, what="area statistics")
    with contextlib.ExitStack() as stack:
        tmp = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}  # renamed on success
        if vector:
            layer = polygonize_raster(raster, class_map, dissolve=dissolve, simplify=simplify, min_area=min_area)
            write_vector(layer, tmp["vector"], layer="landcover")  # a fresh temporary path
        if stats:
            class_areas(raster, class_map).to_csv(tmp["stats"], index=False)
    if vector:  # its QGIS / SLD styles (landsight.styles), once the layer is in place
        write_layer_styles(paths["vector"], "code", list(layer[["code", "name", "colour"]].itertuples(False, None)))
    return paths


def label_areas(counts: Sequence[float] | np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-class area summary of weighted pixel counts (used by the evaluation output).

    Args:
        counts: ``(2, K)``: label and predicted area (m², or pixels when not georeferenced) per class.
        names: Class names.

    Returns:
        ``name -> {"label", "predicted", "label_percent", "predicted_percent"}``.
    """
    c = np.asarray(counts, dtype=np.float64)
    totals = c.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100 * c / totals
    return {n: {"label": float(c[0, k]), "predicted": float(c[1, k]), "label_percent": float(pct[0, k]),
                "predicted_percent": float(pct[1, k])} for k, n in enumerate(names)}  # fmt: skip
