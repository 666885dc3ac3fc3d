"""STAC inputs: resolve a STAC Item, Catalog, Collection or ItemCollection to raster asset hrefs.

A STAC (SpatioTemporal Asset Catalog, https://stacspec.org) JSON describes scenes (Items) and
their files (assets, usually Cloud Optimized GeoTIFFs). ``landsight predict``, ``tile`` and
``segment predict`` take such a JSON (local file or http(s) URL) in place of a raster path:
:func:`stac_assets` picks one asset per Item and returns its absolute href, which rasterio
then reads by window (GDAL's ``/vsicurl/`` range requests for a remote COG: only the blocks
a window needs are fetched).

Accepted sources (read with pystac): an Item; a Catalog or Collection (every Item below it,
following child links); an ItemCollection / GeoJSON FeatureCollection of Items (a saved STAC
API search). The asset is the one named ``asset=``, else the first asset with role ``"data"``
and a raster media type, else the first ``image/tiff`` / ``image/jp2`` asset, else the first
asset whose href ends in ``.tif`` / ``.tiff``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landsight.errors import DataNotFoundError, LandsightValueError

__all__ = ["StacAsset", "is_stac_source", "resolve_raster", "stac_assets", "stac_items"]

RASTER_MEDIA_PREFIXES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-hdf")
"""Media types (prefixes) taken as rasters; ``image/tiff; application=geotiff; profile=cloud-optimized`` included."""

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
_STAC_TYPES = ("Feature", "FeatureCollection", "Catalog", "Collection")


@dataclass(frozen=True)
class StacAsset:
    """One raster asset of one STAC Item.

    Attributes:
        item_id: The Item's ``id``.
        key: The asset's key in ``item.assets`` (``"image"``, ``"visual"``...).
        href: Absolute href: a local path or a URL (``https://``, ``s3://``...).
        media_type: The asset's ``type`` (``None`` when not given).
        bbox: The Item's ``(west, south, east, north)`` in WGS84 degrees, or ``None``.
    """

    item_id: str
    key: str
    href: str
    media_type: str | None
    bbox: tuple[float, float, float, float] | None


def _is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_stac_source(source: str | Path) -> bool:
    """Tell whether ``source`` is a STAC JSON: a URL or local ``.json`` / ``.geojson`` file of a STAC object.

    A local file is sniffed (its first 64 KiB must parse to a dict with a STAC ``type`` and
    ``stac_version``, or be a FeatureCollection); a URL ending in ``.json`` is assumed to be one.

    Args:
        source: A path or URL.

    Returns:
        True for a STAC JSON source.
    """
    text = str(source)
    if not text.lower().endswith((".json", ".geojson")):
        return False
    if _is_url(text):
        return True
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8") as fh:
            head = fh.read(65536)
        doc = json.loads(head) if len(head) < 65536 else json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        isinstance(doc, dict)
        and doc.get("type") in _STAC_TYPES
        and ("stac_version" in doc or doc.get("type") == "FeatureCollection")
    )


def _read(source: str) -> Any:
    """Read a STAC object or ItemCollection with pystac (local file or URL)."""
    import pystac

    href = source if _is_url(source) else os.path.abspath(Path(source.removeprefix("file://")).expanduser())
    if not _is_url(source) and not Path(href).is_file():
        raise DataNotFoundError(f"STAC source {source!r} does not exist; pass a STAC Item/Catalog/ItemCollection JSON")
    try:
        doc = pystac.StacIO.default().read_json(href)
    except Exception as exc:  # noqa: BLE001 - URL errors, JSON errors: one message
        raise LandsightValueError(f"cannot read STAC JSON {source!r}: {exc}") from exc
    if not isinstance(doc, dict):
        raise LandsightValueError(f"STAC source {source!r} is not a JSON object")
    if (
        "conformsTo" in doc
        and doc.get("type") == "Catalog"
        and any("item-search" in c for c in doc.get("conformsTo", []))
    ):
        raise LandsightValueError(
            f"{source!r} is a STAC API landing page; search it first and pass the result, e.g. "
            "pystac_client.Client.open(url).search(collections=[...], bbox=[...], max_items=100)"
            ".item_collection().save_object('items.json')"
        )
    try:
        if doc.get("type") == "FeatureCollection":
            return pystac.ItemCollection.from_dict(doc, root=None, preserve_dict=False)
        return pystac.read_dict(doc, href=href)
    except Exception as exc:  # noqa: BLE001 - pystac raises many types for bad documents
        raise LandsightValueError(
            f"{source!r} is not a STAC Item, Catalog, Collection or ItemCollection ({exc}); check the JSON"
        ) from exc


def _items(obj: Any) -> Iterable[Any]:
    import pystac

    if isinstance(obj, pystac.Item):
        yield obj
    elif isinstance(obj, pystac.ItemCollection):
        yield from obj.items
    elif isinstance(obj, pystac.Catalog):  # Collection is a Catalog
        yield from obj.get_items(recursive=True)
    else:
        raise LandsightValueError(f"unsupported STAC object {type(obj).__name__}")


def _is_raster(asset: Any) -> bool:
    media = (asset.media_type or "").lower()
    return media.startswith(RASTER_MEDIA_PREFIXES)


def _pick(item: Any, asset: str | None, source: str) -> tuple[str, Any]:
    assets = item.assets
    if asset is not None:
        if asset not in assets:
            raise LandsightValueError(
                f"STAC item {item.id!r} of {source!r} has no asset {asset!r}; its assets are {sorted(assets)!r}: "
                "pass one of them as asset="
            )
        return asset, assets[asset]
    for key, a in assets.items():
        if "data" in (a.roles or []) and (_is_raster(a) or (a.media_type is None and a.href.lower().endswith(
                _RASTER_SUFFIXES))):  # fmt: skip
            return key, a
    for key, a in assets.items():
        if _is_raster(a):
            return key, a
    for key, a in assets.items():
        if a.href.lower().split("?", 1)[0].endswith(_RASTER_SUFFIXES):
            return key, a
    raise LandsightValueError(
        f"STAC item {item.id!r} of {source!r} has no raster asset (role 'data' or type image/tiff) among "
        f"{sorted(assets)!r}; pass asset= with the key to read"
    )


def stac_items(source: str | Path, asset: str | None = None) -> list[StacAsset]:
    """The chosen raster asset of every Item of a STAC source.

    Args:
        source: Path or URL of a STAC Item, Catalog, Collection or ItemCollection JSON.
        asset: Asset key to read in every Item (``"image"``, ``"visual"``, ``"B04"``...);
            ``None`` picks one as the module docstring says.

    Returns:
        One :class:`StacAsset` per Item, in catalog order, hrefs absolute (relative hrefs are
        resolved against the JSON's own location).

    Raises:
        DataNotFoundError: The local JSON does not exist.
        LandsightValueError: It is not a STAC object, holds no Item, or an Item lacks the asset.
    """
    text = str(source)
    obj = _read(text)
    found: list[StacAsset] = []
    for item in _items(obj):
        key, a = _pick(item, asset, text)
        href = a.get_absolute_href() or a.href
        if not _is_url(href):
            href = os.path.abspath(href.removeprefix("file://"))
        bbox = tuple(float(v) for v in item.bbox[:4]) if item.bbox else None
        found.append(StacAsset(str(item.id), key, href, a.media_type, bbox))  # type: ignore[arg-type]
    if not found:
        raise LandsightValueError(f"STAC source {text!r} holds no Item; pass an Item or a catalog with Items")
    return found


def stac_assets(source: str | Path, asset: str | None = None) -> list[str]:
    """Absolute hrefs of the chosen raster asset of every Item of a STAC source.

    Args:
        source: Path or URL of a STAC Item, Catalog, Collection or ItemCollection JSON.
        asset: Asset key (``None`` = the first raster asset with role ``"data"`` or type
            ``image/tiff``).

    Returns:
        One href per Item (local absolute path or URL), in catalog order.

    Raises:
        DataNotFoundError: The local JSON does not exist.
        LandsightValueError: It is not a STAC object, holds no Item, or an Item lacks the asset.

    Example:
        >>> stac_assets("catalog/catalog.json", asset="image")  # doctest: +SKIP
        ['/data/naip/m_3907833_nw_17_1.tif']
    """
    return [a.href for a in stac_items(source, asset)]


def resolve_raster(raster: str | Path, asset: str | None = None) -> str | Path:
    """One raster path for functions that read a single raster: a STAC JSON becomes its asset's href.

    Args:
        raster: A raster path, or a STAC JSON (see :func:`stac_assets`) resolving to one asset.
        asset: Asset key for a STAC source.

    Returns:
        ``raster`` unchanged when it is not a STAC JSON, else the single asset href.

    Raises:
        LandsightValueError: The STAC source resolves to several Items (pass one Item), or
            ``asset`` is given for a plain raster.
    """
    if not is_stac_source(raster):
        if asset is not None:
            raise LandsightValueError(
                f"asset={asset!r} applies to a STAC Item/Catalog JSON, but {str(raster)!r} is not one; drop asset="
            )
        return raster
    found = stac_items(raster, asset)
    if len(found) > 1:
        raise LandsightValueError(
            f"STAC source {str(raster)!r} holds {len(found)} items ({[a.item_id for a in found[:5]]!r}...); this "
            "reads one raster: pass a single Item's JSON (or list the assets with landsight.data.stac.stac_assets)"
        )
    return found[0].href
