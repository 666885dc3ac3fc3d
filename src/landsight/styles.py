"""GIS styles beside landsight's outputs, so QGIS shows class names and colours, not codes.

* Vector layers get a QGIS style (:func:`write_qml`, ``<layer stem>.qml``, which QGIS loads
  automatically with the layer) and an OGC SLD 1.1 style (:func:`write_sld`, ``<layer stem>.sld``,
  for GeoServer / MapServer, and QGIS's *Load Style*): a categorized renderer on the class field,
  one category per class with its colour and name.
* Class GeoTIFFs get a GDAL PAM sidecar (:func:`write_raster_pam`, ``<raster>.aux.xml``) with the
  band's category names (``GetCategoryNames``: a list indexed by code, ``""`` for unused codes)
  and a raster attribute table (``GetDefaultRAT``: ``Value``, ``Class name``, ``R``, ``G``,
  ``B``). rasterio cannot write either, and GDAL's GeoTIFF driver itself keeps both in this
  sidecar (its PAM, ``GDAL_PAM_ENABLED``), so the sidecar is what GDAL would write: every GDAL
  reader, QGIS included, merges it with the GeoTIFF (whose colour table stays inside the file).

Each style is written atomically (:func:`landsight.outputs.atomic_path`) by the caller's choice
of path: writers that commit a group of outputs together (``segment predict``) write them to the
group's temporary paths, :func:`style_paths` / :func:`pam_path` give the final names.

A class is ``(value, name, colour)``: the value in the class field (an integer code, or the class
name itself for classification tiles), the label shown, and ``#rrggbb`` or an RGB(A) tuple.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from landsight.errors import LandsightValueError

__all__ = [
    "StyleClass",
    "default_colours",
    "pam_path",
    "raster_pam_xml",
    "style_paths",
    "write_layer_styles",
    "write_qml",
    "write_raster_pam",
    "write_sld",
]

StyleClass = tuple[int | str, str, str | Sequence[int]]
"""``(value, name, colour)`` of one class (see the module docstring)."""

QGIS_VERSION = "3.28.0-Firenze"
"""QGIS version written in the ``.qml`` header (any QGIS 3 reads it)."""

_OUTLINE = "35,35,35,255"
_SLD = "http://www.opengis.net/sld"
_SE = "http://www.opengis.net/se"
_OGC = "http://www.opengis.net/ogc"


def _rgb(colour: str | Sequence[int]) -> tuple[int, int, int]:
    """``#rrggbb`` or an RGB(A) tuple -> ``(r, g, b)`` ints."""
    if isinstance(colour, str):
        text = colour.lstrip("#")
        if len(text) != 6:
            raise LandsightValueError(f"colour must be '#rrggbb' or an RGB tuple, got {colour!r}")
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    r, g, b = (int(v) for v in list(colour)[:3])
    return r, g, b


def _hex(colour: str | Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*_rgb(colour))


def default_colours(names: Sequence[str]) -> dict[str, str]:
    """Class name -> ``#rrggbb``: the one palette of every landsight map and style.

    Matplotlib ``tab10``; ``tab20`` + ``tab20b`` above 10 classes (40 distinct colours, repeating
    beyond). The one palette: the HTML / PNG maps (:func:`landsight.results.map_colors.class_colors`), the
    QGIS styles and the class-grid rasters all read it, so a class has one colour everywhere.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if len(names) <= 10:
        palette = [to_hex(c) for c in colormaps["tab10"].colors]
    else:
        palette = [to_hex(c) for name in ("tab20", "tab20b") for c in colormaps[name].colors]
    return {c: palette[i % len(palette)] for i, c in enumerate(names)}


def style_paths(layer: str | Path) -> dict[str, Path]:
    """``{"qml": <stem>.qml, "sld": <stem>.sld}`` beside a vector layer (QGIS loads ``<stem>.qml``)."""
    layer = Path(layer)
    return {"qml": layer.with_suffix(".qml"), "sld": layer.with_suffix(".sld")}


def pam_path(raster: str | Path) -> Path:
    """GDAL's PAM sidecar of a raster: ``<raster>.aux.xml``."""
    raster = Path(raster)
    return raster.with_name(raster.name + ".aux.xml")


def _option(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, "Option", {"name": name, "type": "QString", "value": value})


def _fill_symbol(name: str, rgb: tuple[int, int, int]) -> ET.Element:
    """A QGIS fill symbol: solid ``rgb``, thin dark outline.

    Written as both the QGIS >= 3.26 ``Option`` map and the older ``prop`` list: any QGIS 3 reads it.
    """
    colour = "{},{},{},255".format(*rgb)
    props = {"color": colour, "style": "solid", "outline_color": _OUTLINE, "outline_style": "solid",
             "outline_width": "0.26", "outline_width_unit": "MM", "joinstyle": "bevel"}  # fmt: skip
    symbol = ET.Element("symbol", {"type": "fill", "name": name, "alpha": "1", "clip_to_extent": "1",
                                   "force_rhr": "0"})  # fmt: skip
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "pass": "0", "locked": "0", "enabled": "1"})
    options = ET.SubElement(layer, "Option", {"type": "Map"})
    for k, v in props.items():
        _option(options, k, v)
    for k, v in props.items():
        ET.SubElement(layer, "prop", {"k": k, "v": v})
    return symbol


def qml_tree(field: str, classes: Sequence[StyleClass]) -> ET.ElementTree:
    """The QGIS style document: ``renderer-v2`` of type ``categorizedSymbol`` on ``field``."""
    root = ET.Element("qgis", {"version": QGIS_VERSION, "styleCategories": "Symbology"})
    renderer = ET.SubElement(root, "renderer-v2", {"type": "categorizedSymbol", "attr": field, "forceraster": "0",
                                                   "symbollevels": "0", "enableorderby": "0",
                                                   "referencescale": "-1"})  # fmt: skip
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, (value, name, colour) in enumerate(classes):
        # QGIS matches a feature's value as text, so "1" matches an integer code field too
        ET.SubElement(categories, "category", {"value": str(value), "label": str(name), "symbol": str(i),
                                               "render": "true"})  # fmt: skip
        symbols.append(_fill_symbol(str(i), _rgb(colour)))
    source = ET.SubElement(renderer, "source-symbol")
    source.append(_fill_symbol("0", (160, 160, 160)))
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygons
    return ET.ElementTree(root)


def _write_xml(tree: ET.ElementTree, path: Path, *, doctype: str = "") -> Path:
    from landsight.outputs import atomic_path

    ET.indent(tree)
    body = ET.tostring(tree.getroot(), encoding="unicode")
    with atomic_path(path) as tmp:
        Path(tmp).write_text(doctype + body + "\n", encoding="utf-8")
    return path


def write_qml(path: str | Path, field: str, classes: Sequence[StyleClass]) -> Path:
    """Write a QGIS ``.qml`` style: a categorized renderer on ``field``, one category per class.

    Args:
        path: The ``.qml`` file (beside a layer: ``style_paths(layer)["qml"]``); written atomically.
        field: The attribute holding the class (``code`` for land-cover polygons, ``predicted``
            for classification tiles).
        classes: ``(value, name, colour)`` per class, in legend order.

    Returns:
        ``path``.
    """
    return _write_xml(qml_tree(field, classes), Path(path),
                      doctype="<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")  # fmt: skip


def sld_tree(field: str, classes: Sequence[StyleClass], *, name: str = "landsight") -> ET.ElementTree:
    """The OGC SLD 1.1 document: one rule per class (``PropertyIsEqualTo`` on ``field``)."""
    ET.register_namespace("", _SLD)
    ET.register_namespace("se", _SE)
    ET.register_namespace("ogc", _OGC)
    root = ET.Element(f"{{{_SLD}}}StyledLayerDescriptor", {"version": "1.1.0"})
    layer = ET.SubElement(root, f"{{{_SLD}}}NamedLayer")
    ET.SubElement(layer, f"{{{_SE}}}Name").text = name
    style = ET.SubElement(ET.SubElement(layer, f"{{{_SLD}}}UserStyle"), f"{{{_SE}}}FeatureTypeStyle")
    for value, label, colour in classes:
        rule = ET.SubElement(style, f"{{{_SE}}}Rule")
        ET.SubElement(rule, f"{{{_SE}}}Name").text = str(label)
        ET.SubElement(ET.SubElement(rule, f"{{{_SE}}}Description"), f"{{{_SE}}}Title").text = str(label)
        equal = ET.SubElement(ET.SubElement(rule, f"{{{_OGC}}}Filter"), f"{{{_OGC}}}PropertyIsEqualTo")
        ET.SubElement(equal, f"{{{_OGC}}}PropertyName").text = field
        ET.SubElement(equal, f"{{{_OGC}}}Literal").text = str(value)
        symbolizer = ET.SubElement(rule, f"{{{_SE}}}PolygonSymbolizer")
        fill = ET.SubElement(symbolizer, f"{{{_SE}}}Fill")
        ET.SubElement(fill, f"{{{_SE}}}SvgParameter", {"name": "fill"}).text = _hex(colour)
        stroke = ET.SubElement(symbolizer, f"{{{_SE}}}Stroke")
        ET.SubElement(stroke, f"{{{_SE}}}SvgParameter", {"name": "stroke"}).text = "#232323"
        ET.SubElement(stroke, f"{{{_SE}}}SvgParameter", {"name": "stroke-width"}).text = "0.5"
    return ET.ElementTree(root)


def write_sld(path: str | Path, field: str, classes: Sequence[StyleClass], *, name: str = "landsight") -> Path:
    """Write an OGC SLD 1.1 style (``<stem>.sld``) equivalent to :func:`write_qml`'s; atomically."""
    return _write_xml(sld_tree(field, classes, name=name), Path(path),
                      doctype='<?xml version="1.0" encoding="UTF-8"?>\n')  # fmt: skip


def write_layer_styles(
    layer: str | Path, field: str, classes: Sequence[StyleClass], *, targets: dict[str, Path] | None = None
) -> dict[str, Path]:
    """Write the ``.qml`` and ``.sld`` of a vector layer.

    Args:
        layer: The vector layer (its stem names the styles, :func:`style_paths`).
        field: The class attribute.
        classes: ``(value, name, colour)`` per class.
        targets: Where to write instead (``{"qml": tmp, "sld": tmp}``: a group's temporary paths).

    Returns:
        ``{"qml": path, "sld": path}`` as written.
    """
    paths = targets or style_paths(layer)
    write_qml(paths["qml"], field, classes)
    write_sld(paths["sld"], field, classes, name=Path(layer).stem)
    return paths


def raster_pam_xml(classes: Sequence[StyleClass]) -> ET.ElementTree:
    """GDAL's PAM document for band 1 of a class raster: category names and a thematic RAT.

    The layout is the one GDAL serializes (``GDALPamRasterBand``): ``<CategoryNames>`` with one
    ``<Category>`` per code from 0 to the largest class code (``""`` where no class has the code),
    and ``<GDALRasterAttributeTable tableType="thematic">`` with the fields ``Value`` (integer,
    usage MinMax), ``Class name`` (string, usage Name), ``R``, ``G``, ``B`` (integer, usage Red /
    Green / Blue) and one row per class.

    Raises:
        LandsightValueError: A class value is not an integer code in 0..65535.
    """
    codes = []
    for value, _, _ in classes:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
            raise LandsightValueError(f"raster class values must be integer codes 0..65535, got {value!r}")
        codes.append(value)
    names = {int(v): str(n) for v, n, _ in classes}
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", {"band": "1"})
    categories = ET.SubElement(band, "CategoryNames")
    for code in range(max(codes, default=-1) + 1):
        ET.SubElement(categories, "Category").text = names.get(code, "")
    rat = ET.SubElement(band, "GDALRasterAttributeTable", {"tableType": "thematic"})
    fields = (("Value", 0, 5), ("Class name", 2, 2), ("R", 0, 6), ("G", 0, 7), ("B", 0, 8))  # GFT_*, GFU_*
    for i, (name, kind, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", {"index": str(i)})
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(kind)
        ET.SubElement(defn, "Usage").text = str(usage)
    for i, (value, name, colour) in enumerate(classes):
        row = ET.SubElement(rat, "Row", {"index": str(i)})
        for cell in (value, name, *_rgb(colour)):
            ET.SubElement(row, "F").text = str(cell)
    return ET.ElementTree(root)


def write_raster_pam(path: str | Path, classes: Sequence[StyleClass]) -> Path:
    """Write the PAM sidecar of a class raster (:func:`raster_pam_xml`) to ``path``, atomically.

    Args:
        path: The sidecar: ``pam_path(raster)``, or a group's temporary path renamed to it.
        classes: ``(code, name, colour)`` per class.

    Returns:
        ``path``.
    """
    return _write_xml(raster_pam_xml(classes), Path(path))
