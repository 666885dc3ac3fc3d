"""Vector (polygon) labels, rasterized window by window onto image rasters.

A :class:`VectorLabels` is one vector layer (GeoPackage, Shapefile, GeoJSON, FlatGeobuf: anything
pyogrio reads; GeoParquet through pyarrow) whose ``label_field`` holds a class name or a class
code per feature. :meth:`VectorLabels.open` reads the layer once, checks it and maps every value
to an integer label code; :meth:`VectorLabels.rasterize` then burns the features that intersect
one raster window into a ``(height, width)`` array of codes, for that window only, so a scene is
never rasterized whole.

**CRS.** The layer must declare a CRS. Windows name their own CRS; the features are reprojected
to it once per CRS (cached) and selected through the spatial index by the window's bounds.

**Sparse labels.** Pixels that no feature covers get ``fill`` (pass the ignore / nodata code),
so training on a few digitized polygons leaves the rest of the image out of the loss.

**Overlaps: the later feature in file order wins.** Features are burnt in file order, each over
the ones before it (``rasterio.features.rasterize`` with ``MergeAlg.replace``); to make a class
win everywhere, put its features last. A pixel is covered when its centre lies inside a polygon
(GDAL's default; ``all_touched=False``). Lines and points burn the pixels they pass through.

This module reads data only; it knows nothing of class maps. Callers give ``codes``, a mapping
from field value to code (or a function), e.g. built from a segmentation class map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import DataNotFoundError, LandsightValueError, ResourceLimitError

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["MAX_FEATURES", "VECTOR_LABEL_SUFFIXES", "VectorLabels", "is_vector_labels", "window_bounds"]

VECTOR_LABEL_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".geoparquet")
"""File suffixes read as vector labels (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, GeoParquet)."""

MAX_FEATURES = 1_000_000
"""Most features :meth:`VectorLabels.open` reads from one layer (the layer is held in memory)."""

Codes = Mapping[str | int, int] | Callable[[Any], int | None]
"""Field value -> label code: a mapping (names matched case-insensitively, numeric strings as
integers) or a function returning ``None`` (or raising ``KeyError`` / ``ValueError``) for unknown
values."""


def is_vector_labels(path: str | Path) -> bool:
    """Whether ``path`` names a vector label file (by its suffix, :data:`VECTOR_LABEL_SUFFIXES`)."""
    return Path(str(path)).suffix.lower() in VECTOR_LABEL_SUFFIXES


def _key(value: Any) -> Any:
    """Normalise a field value or mapping key: integral numbers -> int, strings stripped and lowercased."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return text.lower()
    return value


def _lookup(codes: Codes) -> tuple[Callable[[Any], int | None], list[str]]:
    """A value -> code function and the valid values to name in errors."""
    if callable(codes) and not isinstance(codes, Mapping):
        fn = codes

        def call(value: Any) -> int | None:
            try:
                out = fn(value)
            except (KeyError, ValueError):
                return None
            return None if out is None else int(out)

        return call, []
    table = {_key(k): int(v) for k, v in codes.items()}
    return (lambda value: table.get(_key(value))), [str(k) for k in codes]


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _crs_key(crs: Any) -> str:
    """A hashable identity of a CRS given as rasterio / pyproj CRS, ``"EPSG:..."`` or WKT."""
    from pyproj import CRS

    return CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs).to_wkt()


def window_bounds(shape: tuple[int, int], transform: Any) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of a ``shape`` window under an affine ``transform`` (any rotation)."""
    h, w = shape
    xs, ys = zip(*(transform @ (c, r) for r, c in ((0, 0), (0, w), (h, 0), (h, w))), strict=True)
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def _read_layer(path: Path, label_field: str, layer: str | int | None, max_features: int) -> gpd.GeoDataFrame:
    """Read ``label_field`` and the geometry of one layer, after checking its size, fields and CRS."""
    import geopandas as gpd

    where = f"vector labels {str(path)!r}"
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
            fields = [n for n in pq.read_schema(path).names if n != "geometry"]
        except Exception as exc:  # noqa: BLE001 - any pyarrow failure is a bad file
            raise LandsightValueError(f"cannot read {where}: {exc}") from exc
        count, crs_text = meta.num_rows, "?"
    else:
        import pyogrio

        try:
            info = pyogrio.read_info(path, layer=layer, force_feature_count=True)
        except Exception as exc:  # noqa: BLE001 - pyogrio raises DataSourceError / DataLayerError / ...
            raise LandsightValueError(f"cannot read {where}: {str(exc).splitlines()[0]}") from exc
        count, fields, crs_text = int(info["features"]), list(info["fields"]), info["crs"]
        if not crs_text:
            raise LandsightValueError(f"{where} has no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:...) and retry")
    if count > max_features:
        raise ResourceLimitError(f"{where} has {count} features, over the limit of {max_features}; "
                                 "clip it to the images' extent or split it")  # fmt: skip
    if label_field not in fields:
        raise LandsightValueError(f"{where} has no field {label_field!r}; its fields: {', '.join(fields) or '(none)'}")
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            frame = gpd.read_parquet(path, columns=[label_field, "geometry"])
        else:
            frame = gpd.read_file(path, layer=layer, columns=[label_field], engine="pyogrio")
    except Exception as exc:  # noqa: BLE001
        raise LandsightValueError(f"cannot read {where}: {str(exc).splitlines()[0]}") from exc
    if frame.crs is None:
        raise LandsightValueError(f"{where} has no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:...) and retry")
    return frame


class VectorLabels:
    """A vector label layer: features with a label code each, rasterized onto windows on demand.

    Build it with :meth:`open`. Instances pickle (the reprojection cache is dropped), so a
    dataset holding one can go to DataLoader workers.

    Attributes:
        path: The vector file.
        label_field: The attribute holding class names or codes.
        crs: The layer's CRS (``pyproj.CRS``).
        codes: ``(N,)`` int64 label code of each feature, in file order.
    """

    def __init__(self, path: str, label_field: str, geometry: gpd.GeoSeries, codes: np.ndarray) -> None:
        self.path, self.label_field = path, label_field
        self._geometry = geometry.reset_index(drop=True)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.crs = geometry.crs
        self._cache: dict[str, gpd.GeoSeries] = {}

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"VectorLabels({self.path!r}, {self.label_field!r}, {len(self)} features)"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    @classmethod
    def open(
        cls,
        path: str | Path,
        label_field: str,
        *,
        codes: Codes,
        layer: str | int | None = None,
        max_features: int = MAX_FEATURES,
    ) -> VectorLabels:
        """Read a vector layer once and map its ``label_field`` values to label codes.

        Features with an empty or missing geometry are dropped.

        Args:
            path: Vector file (:data:`VECTOR_LABEL_SUFFIXES`).
            label_field: Attribute with the class name or code of each feature.
            codes: Field value -> label code: a mapping (string keys match case-insensitively,
                ``"3"`` matches ``3``) or a function returning ``None`` for unknown values.
            layer: Layer name or index of a multi-layer file (``None`` = the first).
            max_features: Refuse layers with more features (the layer is held in memory).

        Returns:
            The label source.

        Raises:
            DataNotFoundError: ``path`` does not exist.
            ResourceLimitError: The layer has more than ``max_features`` features.
            LandsightValueError: The file cannot be read, has no CRS, lacks ``label_field`` (the
                message lists the fields), or holds values ``codes`` does not know (the message
                names up to 5 of them and the valid values).
        """
        path = Path(str(path))
        if not path.exists():
            raise DataNotFoundError(f"vector labels {str(path)!r} do not exist")
        frame = _read_layer(path, label_field, layer, max_features)
        frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
        lookup, valid = _lookup(codes)
        values = frame[label_field].tolist()
        mapped: dict[Any, int | None] = {}
        out = np.zeros(len(values), dtype=np.int64)
        for i, value in enumerate(values):
            key = None if _is_null(value) else value
            if key not in mapped:
                mapped[key] = None if key is None else lookup(key)
            code = mapped[key]
            out[i] = -1 if code is None else code
        unknown = [k for k, v in mapped.items() if v is None]
        if unknown:
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            shown = ", ".join(repr(v) for v in unknown[:5]) + more
            names = f"; valid values: {', '.join(valid)}" if valid else ""
            raise LandsightValueError(
                f"vector labels {str(path)!r} field {label_field!r} has unknown class values {shown}{names}"
            )
        return cls(str(path), label_field, frame.geometry, out)

    def _in(self, crs: Any) -> gpd.GeoSeries:
        """The geometries reprojected to ``crs`` (cached per CRS, spatial index built once)."""
        if crs is None:
            raise LandsightValueError(f"vector labels {self.path!r} need a georeferenced image (its raster has no CRS)")
        key = _crs_key(crs)
        if key not in self._cache:
            from pyproj import CRS

            target = CRS.from_wkt(key)
            same = self.crs is not None and CRS(self.crs) == target
            geoms = self._geometry if same else self._geometry.to_crs(target)
            geoms.sindex  # noqa: B018 - build the spatial index once, here
            self._cache[key] = geoms
        return self._cache[key]

    def select(self, bounds: Sequence[float], crs: Any) -> np.ndarray:
        """Indices, in file order, of the features whose geometry intersects a box.

        Args:
            bounds: ``(minx, miny, maxx, maxy)`` in ``crs`` units.
            crs: The CRS of ``bounds``.

        Returns:
            ``(n,)`` int64 feature indices, ascending (file order).

        Raises:
            LandsightValueError: ``crs`` is ``None``.
        """
        from shapely.geometry import box

        geoms = self._in(crs)
        return np.sort(np.asarray(geoms.sindex.query(box(*bounds), predicate="intersects"), dtype=np.int64))

    def bounds_in(self, crs: Any) -> tuple[float, float, float, float]:
        """Total bounds of all features in ``crs``.

        Args:
            crs: Target CRS (rasterio / pyproj CRS, ``"EPSG:..."`` or WKT).

        Returns:
            ``(minx, miny, maxx, maxy)`` in ``crs`` units; NaNs for an empty layer.

        Raises:
            LandsightValueError: ``crs`` is ``None``.
        """
        return tuple(float(v) for v in self._in(crs).total_bounds)  # type: ignore[return-value]

    def covers_any(self, shape: tuple[int, int], transform: Any, crs: Any) -> bool:
        """Whether any feature intersects a raster (or window) of ``shape`` under ``transform``.

        Args:
            shape: ``(height, width)`` in pixels.
            transform: Affine pixel -> ``crs`` transform.
            crs: The raster's CRS.

        Returns:
            True when at least one feature intersects its bounds.
        """
        return len(self.select(window_bounds(shape, transform), crs)) > 0

    def dtype(self, fill: int) -> np.dtype:
        """Smallest of uint8 / int16 / int32 holding every code and ``fill``."""
        lo, hi = min(int(self.codes.min(initial=0)), fill), max(int(self.codes.max(initial=0)), fill)
        if lo >= 0 and hi <= 255:
            return np.dtype(np.uint8)
        if lo >= -(2**15) and hi < 2**15:
            return np.dtype(np.int16)
        return np.dtype(np.int32)

    def rasterize(self, shape: tuple[int, int], transform: Any, crs: Any, *, fill: int) -> np.ndarray:
        """Burn the features intersecting one window into an array of label codes.

        Only the features whose geometry intersects the window's bounds (spatial index) are
        burnt, and only onto this window. Later features in file order win where features
        overlap. A pixel is covered when its centre lies in a polygon.

        Args:
            shape: ``(height, width)`` of the window in pixels.
            transform: Affine transform of the window (pixel -> ``crs`` coordinates), e.g.
                ``rasterio.windows.transform(window, src.transform)``.
            crs: CRS of the window (the image raster's CRS); the features are reprojected to it.
            fill: Code of pixels no feature covers (the ignore / nodata code).

        Returns:
            ``(height, width)`` codes, uint8 when every code and ``fill`` fit, else int16 / int32.

        Raises:
            LandsightValueError: ``crs`` is ``None`` (an image without a CRS).
        """
        from rasterio.features import rasterize

        h, w = int(shape[0]), int(shape[1])
        dtype = self.dtype(fill)
        if h <= 0 or w <= 0:
            return np.full((max(h, 0), max(w, 0)), fill, dtype=dtype)
        idx = self.select(window_bounds((h, w), transform), crs)
        if len(idx) == 0:
            return np.full((h, w), fill, dtype=dtype)
        geoms = self._in(crs).values[idx]
        shapes: Iterable[tuple[Any, int]] = zip(geoms, self.codes[idx].tolist(), strict=True)
        return rasterize(shapes, out_shape=(h, w), transform=transform, fill=fill, dtype=dtype)
