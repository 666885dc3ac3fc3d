"""STAC inputs: resolve a STAC Item, Catalog, Collection or ItemCollection to raster asset hrefs.

A STAC (SpatioTemporal Asset Catalog, https://stacspec.org) JSON describes scenes (Items) and
their files (assets, usually Cloud Optimized GeoTIFFs). ``landsight predict``, ``tile`` and
``segment predict`` take such a JSON (local file or http(s) URL) in place of a raster path:
:func:`stac_assets` picks one asset per Item and returns its absolute href, which rasterio
then reads by window (GDAL's ``/vsicurl/`` range requests for a remote COG: only the blocks
a window needs are fetched).

Accepted sources: an Item; a Catalog or Collection (every Item below it, following ``item`` and
``child`` links, each document read once: a link back to a catalog being walked, a cycle, is
refused); an ItemCollection / GeoJSON FeatureCollection of Items (a saved STAC API search). Items
are parsed with pystac. The asset is the one named ``asset=``, else the first asset with role
``"data"`` and a raster media type, else the first ``image/tiff`` / ``image/jp2`` asset, else the
first asset whose href ends in ``.tif`` / ``.tiff``.

Every problem is one line naming the file or URL: a missing source or linked document
(:class:`~landsight.errors.DataNotFoundError`), an unreadable one, a cycle, a missing asset, or
a remote href when remote reads are off (``allow_remote=False``, ``--no-remote``: the source,
every linked document and every asset href must then be local files; or a collection of host
names that may be contacted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from landsight.errors import DataNotFoundError, LandsightValueError

__all__ = ["AllowRemote", "StacAsset", "is_stac_source", "resolve_raster", "stac_assets", "stac_items"]

RASTER_MEDIA_PREFIXES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-hdf")
"""Media types (prefixes) taken as rasters; ``image/tiff; application=geotiff; profile=cloud-optimized`` included."""

AllowRemote = bool | Collection[str]
"""Which hosts a STAC source may make landsight contact: True any, False none (local files
only), or a collection of host names (``{"planetarycomputer.microsoft.com"}``)."""

MAX_CATALOG_DEPTH = 64
"""Deepest chain of nested catalogs followed; deeper is refused (a runaway or generated catalog)."""

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
_STAC_TYPES = ("Feature", "FeatureCollection", "Catalog", "Collection")
_FOLLOWED_RELS = ("item", "child")  # items first, as pystac's get_items(recursive=True) lists them


@dataclass(frozen=True)
class StacAsset:
    """One raster asset of one STAC Item.

    Attributes:
        item_id: The Item's ``id``.
        key: The asset's key in ``item.assets`` (``"image"``, ``"visual"``...).
        href: Absolute href: a local path or a URL (``https://``, ``s3://``...).
        media_type: The asset's ``type`` (``None`` when not given).
        bbox: The Item's ``(west, south, east, north)`` in WGS84 degrees, or ``None``.
        datetime: The Item's ``datetime`` property as written (RFC 3339), else its
            ``start_datetime``, else ``None``.
    """

    item_id: str
    key: str
    href: str
    media_type: str | None
    bbox: tuple[float, float, float, float] | None
    datetime: str | None = None


def _is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_stac_source(source: str | Path) -> bool:
    """Tell whether ``source`` is a STAC JSON: a URL or local ``.json`` / ``.geojson`` file of a STAC object.

    A local file is sniffed (its first 64 KiB must parse to a dict with a STAC ``type`` and
    ``stac_version``, or be a FeatureCollection); a URL ending in ``.json`` is assumed to be one
    (nothing is fetched).

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


# ----------------------------------------------------------------------------- hrefs and hosts


def _absolute(href: str, base: str | None) -> str:
    """``href`` made absolute: URLs kept, ``file://`` stripped, relative ones joined to ``base``'s folder."""
    if _is_url(href):
        return href
    href = href.removeprefix("file://")
    if base is not None and _is_url(base):
        return urljoin(base, href)
    path = Path(href).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base).parent / path
    return os.path.normpath(os.path.abspath(path))


def _key(href: str) -> str:
    """The identity of a document for the visited set: a resolved path, or the URL without fragment."""
    return href.split("#", 1)[0] if _is_url(href) else os.path.realpath(href)


def _hosts(allow_remote: AllowRemote) -> bool | frozenset[str]:
    """Normalise ``allow_remote`` (a single host name is accepted as a string)."""
    if isinstance(allow_remote, bool):
        return allow_remote
    hosts = [allow_remote] if isinstance(allow_remote, str) else list(allow_remote)
    if not all(isinstance(h, str) and h for h in hosts):
        raise LandsightValueError(
            f"allow_remote must be True, False or a collection of host names, got {allow_remote!r}"
        )
    return frozenset(h.lower() for h in hosts)


def _check_remote(href: str, allowed: bool | frozenset[str], what: str) -> None:
    """Refuse a URL ``href`` whose host may not be contacted; ``what`` names where it came from."""
    if not _is_url(href) or allowed is True:
        return
    host = (urlsplit(href).hostname or "").lower()
    if allowed is False:
        why = "remote reads are off (--no-remote / allow_remote=False)"
        fix = "use a local copy, or drop --no-remote to read it"
    else:
        if host in allowed:
            return
        why = f"only the hosts {sorted(allowed)!r} are allowed"
        fix = "use a local copy, or add the host to allow_remote"
    raise LandsightValueError(f"{what} is remote (host {host!r}) but {why}; {fix}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ----------------------------------------------------------------------------- reading


def _load(href: str, linked_from: str | None = None, rel: str = "") -> dict[str, Any]:
    """Read one STAC JSON document (local file or URL) as a dict; every failure is one line."""
    import pystac

    where = f" (the {rel} linked from {linked_from!r})" if linked_from is not None else ""
    if not _is_url(href) and not Path(href).is_file():
        if linked_from is None:
            raise DataNotFoundError(
                f"STAC source {href!r} does not exist; pass a STAC Item/Catalog/ItemCollection JSON"
            )
        raise DataNotFoundError(
            f"STAC catalog {linked_from!r} links to {rel} {href!r}, which does not exist; fix the link or "
            "restore the file"
        )
    try:
        if _is_url(href):
            doc = pystac.StacIO.default().read_json(href)
        else:
            doc = json.loads(Path(href).read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - URL errors, JSON errors, decoding errors: one message
        raise LandsightValueError(f"cannot read STAC JSON {href!r}{where}: {_one_line(exc)}") from exc
    if not isinstance(doc, dict):
        raise LandsightValueError(f"STAC JSON {href!r}{where} is not a JSON object")
    return doc


def _item(doc: dict[str, Any], href: str | None, where: str) -> Any:
    """A pystac Item from a dict; ``href`` is its own file (None for a feature of a collection)."""
    import pystac

    try:
        return pystac.Item.from_dict(doc, href=href, preserve_dict=False)
    except Exception as exc:  # noqa: BLE001 - pystac raises many types for bad documents
        raise LandsightValueError(f"{where} is not a valid STAC Item ({_one_line(exc)}); check the JSON") from exc


def _walk(
    doc: dict[str, Any],
    href: str,
    chain: list[str],
    seen: set[str],
    allowed: bool | frozenset[str],
    found: list[tuple[Any, str]],
) -> None:
    """Collect the Items below the catalog ``doc`` read from ``href`` (depth first, items before children).

    ``chain`` holds the keys of the catalogs being walked (a link back to one of them is a cycle);
    ``seen`` every document read already (one reached twice through two parents is read once).
    """
    if len(chain) > MAX_CATALOG_DEPTH:
        raise LandsightValueError(
            f"STAC catalog {href!r} is nested more than {MAX_CATALOG_DEPTH} catalogs deep; pass a catalog lower "
            "down, or check its child links"
        )
    links = [link for link in doc.get("links") or [] if isinstance(link, dict) and isinstance(link.get("href"), str)]
    for rel in _FOLLOWED_RELS:
        for link in links:
            if link.get("rel") != rel:
                continue
            target = _absolute(link["href"], href)
            _check_remote(target, allowed, f"{rel} {target!r} linked from STAC catalog {href!r}")
            key = _key(target)
            if key in chain:
                path = " -> ".join([*chain[chain.index(key) :], key])
                raise LandsightValueError(
                    f"STAC catalog {href!r} links back to {target!r} ({rel} link), a cycle ({path}); remove the "
                    "link that points back up the catalog"
                )
            if key in seen:
                continue
            seen.add(key)
            child = _load(target, href, rel)
            kind = child.get("type")
            if kind == "Feature":
                found.append((_item(child, target, f"STAC item {target!r}"), target))
            elif kind in ("Catalog", "Collection"):
                _walk(child, target, [*chain, key], seen, allowed, found)
            else:
                raise LandsightValueError(
                    f"STAC catalog {href!r} links to {rel} {target!r}, which is not a STAC Item, Catalog or "
                    f"Collection (type {kind!r})"
                )


def _read_items(source: str, allowed: bool | frozenset[str]) -> list[tuple[Any, str]]:
    """Every Item of a STAC source, each with the file or URL it was read from."""
    href = _absolute(source, None)
    _check_remote(href, allowed, f"STAC source {source!r}")
    doc = _load(href)
    if (
        "conformsTo" in doc
        and doc.get("type") == "Catalog"
        and any("item-search" in str(c) for c in doc.get("conformsTo") or [])
    ):
        raise LandsightValueError(
            f"{source!r} is a STAC API landing page; search it first and pass the result, e.g. "
            "pystac_client.Client.open(url).search(collections=[...], bbox=[...], max_items=100)"
            ".item_collection().save_object('items.json')"
        )
    kind = doc.get("type")
    if kind == "Feature":
        return [(_item(doc, href, f"STAC item {source!r}"), href)]
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise LandsightValueError(f"STAC ItemCollection {source!r} has no 'features' list; check the JSON")
        items = []
        for i, feature in enumerate(features):
            where = f"feature {i} of STAC ItemCollection {source!r}"
            if not isinstance(feature, dict):
                raise LandsightValueError(f"{where} is not a JSON object; check the JSON")
            items.append((_item(feature, None, where), href))
        return items
    if kind in ("Catalog", "Collection"):
        found: list[tuple[Any, str]] = []
        key = _key(href)
        _walk(doc, href, [key], {key}, allowed, found)
        return found
    raise LandsightValueError(
        f"{source!r} is not a STAC Item, Catalog, Collection or ItemCollection (type {kind!r}); check the JSON"
    )


def _is_raster(asset: Any) -> bool:
    media = (asset.media_type or "").lower()
    return media.startswith(RASTER_MEDIA_PREFIXES)


def _pick(item: Any, asset: str | None, where: str) -> tuple[str, Any]:
    assets = item.assets
    if asset is not None:
        if asset not in assets:
            raise LandsightValueError(
                f"STAC item {item.id!r} of {where!r} has no asset {asset!r}; its assets are {sorted(assets)!r}: "
                "pass one of them as asset= (--asset)"
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
        f"STAC item {item.id!r} of {where!r} has no raster asset (role 'data' or type image/tiff) among "
        f"{sorted(assets)!r}; pass asset= (--asset) with the key to read"
    )


def stac_items(source: str | Path, asset: str | None = None, *, allow_remote: AllowRemote = True) -> list[StacAsset]:
    """The chosen raster asset of every Item of a STAC source.

    Args:
        source: Path or URL of a STAC Item, Catalog, Collection or ItemCollection JSON.
        asset: Asset key to read in every Item (``"image"``, ``"visual"``, ``"B04"``...);
            ``None`` picks one as the module docstring says.
        allow_remote: Hosts the source may make landsight contact: True any (default), False
            none (the source, every linked Item / Catalog and every asset href must be local
            files; the CLI's ``--no-remote``), or a collection of host names.

    Returns:
        One :class:`StacAsset` per Item, in catalog order, hrefs absolute (relative hrefs are
        resolved against the JSON that holds them). An Item linked from two catalogs is listed
        once.

    Raises:
        DataNotFoundError: The local JSON, or a local Item / Catalog it links to, does not exist.
        LandsightValueError: A JSON cannot be read (bad JSON, failed URL) or is not a STAC
            object; a catalog links back to itself or an ancestor (a cycle); it holds no Item; an
            Item lacks the asset; a href is remote and ``allow_remote`` does not allow its host.
    """
    text = str(source)
    allowed = _hosts(allow_remote)
    found: list[StacAsset] = []
    for item, where in _read_items(text, allowed):
        key, a = _pick(item, asset, where)
        href = _absolute(a.get_absolute_href() or a.href, where)
        _check_remote(href, allowed, f"asset {key!r} ({href!r}) of STAC item {item.id!r} in {where!r}")
        bbox = tuple(float(v) for v in item.bbox[:4]) if item.bbox else None
        when = item.properties.get("datetime") or item.properties.get("start_datetime")
        found.append(StacAsset(str(item.id), key, href, a.media_type, bbox,  # type: ignore[arg-type]
                               str(when) if when else None))  # fmt: skip
    if not found:
        raise LandsightValueError(f"STAC source {text!r} holds no Item; pass an Item or a catalog with Items")
    return found


def stac_assets(source: str | Path, asset: str | None = None, *, allow_remote: AllowRemote = True) -> list[str]:
    """Absolute hrefs of the chosen raster asset of every Item of a STAC source.

    Args:
        source: Path or URL of a STAC Item, Catalog, Collection or ItemCollection JSON.
        asset: Asset key (``None`` = the first raster asset with role ``"data"`` or type
            ``image/tiff``).
        allow_remote: True (default), False (local files only) or a collection of host names;
            see :func:`stac_items`.

    Returns:
        One href per Item (local absolute path or URL), in catalog order.

    Raises:
        DataNotFoundError: The local JSON, or a local document it links to, does not exist.
        LandsightValueError: A JSON cannot be read or is not a STAC object; a cycle; no Item; an
            Item lacks the asset; a remote href that ``allow_remote`` does not allow.

    Example:
        >>> stac_assets("catalog/catalog.json", asset="image")  # doctest: +SKIP
        ['/data/naip/m_3907833_nw_17_1.tif']
    """
    return [a.href for a in stac_items(source, asset, allow_remote=allow_remote)]


def resolve_raster(raster: str | Path, asset: str | None = None, *, allow_remote: AllowRemote = True) -> str | Path:
    """One raster path for functions that read a single raster: a STAC JSON becomes its asset's href.

    Args:
        raster: A raster path, or a STAC JSON (see :func:`stac_assets`) resolving to one asset.
        asset: Asset key for a STAC source.
        allow_remote: For a STAC source: True (default), False or a collection of host names;
            see :func:`stac_items`.

    Returns:
        ``raster`` unchanged when it is not a STAC JSON, else the single asset href.

    Raises:
        LandsightValueError: The STAC source resolves to several Items (pass one Item), or
            ``asset`` is given for a plain raster; see :func:`stac_items` for the rest.
        DataNotFoundError: See :func:`stac_items`.
    """
    if not is_stac_source(raster):
        if asset is not None:
            raise LandsightValueError(
                f"asset={asset!r} applies to a STAC Item/Catalog JSON, but {str(raster)!r} is not one; drop asset="
            )
        return raster
    found = stac_items(raster, asset, allow_remote=allow_remote)
    if len(found) > 1:
        raise LandsightValueError(
            f"STAC source {str(raster)!r} holds {len(found)} items ({[a.item_id for a in found[:5]]!r}...); this "
            "reads one raster: pass a single Item's JSON (or list the assets with landsight.data.stac.stac_assets)"
        )
    return found[0].href
