"""Maps of tile predictions: an interactive, offline Leaflet map (folium) and a static PNG.

Input is any predictions table with bounds and CRS, as written by :func:`landsight.classify.predict.predict`
(columns ``path``, ``predicted``, ``confidence``, ``prob_<class>``..., ``error``, ``minx``,
``miny``, ``maxx``, ``maxy``, ``crs``). Each georeferenced tile becomes one polygon, its four
corners reprojected to WGS84 (EPSG:4326) by :func:`landsight.vectors.tile_polygons`, coloured by
the predicted class. Optional layers: the reference label of each tile, the tiles where prediction and
reference disagree, and the tiles whose class changed since an older predictions table (see
:mod:`landsight.results.change`).

The HTML is self-contained: Leaflet's JavaScript and CSS are inlined from the PyPI package
``folium-offline`` (import name ``offlinefolium``; the folium API with its web resources embedded)
and the resources a prediction map does not use (jQuery, Bootstrap, Font Awesome, awesome-markers)
are left out, so the file opens without a network. No base map is drawn unless a tile URL is given
(``basemap``), which then needs a network when viewed. The HTML rendering lives in
:mod:`landsight.results.maps_html`, the colours in :mod:`landsight.results.map_colors`.

Example:
    >>> from landsight.results.maps import prediction_map
    >>> prediction_map("preds.parquet", "map.html", png="map.png")  # doctest: +SKIP

"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from landsight.errors import DataNotFoundError, LandsightValueError
from landsight.predictions import PROBABILITY_PREFIX, load_predictions, probability_columns
from landsight.results.map_colors import HIGHLIGHT_COLOR, NEUTRAL_COLOR, class_colors
from landsight.results.maps_html import _write_html

if TYPE_CHECKING:
    import pandas as pd

    from landsight.results.change import ChangeResult

__all__ = [
    "MapResult",
    "class_colors",
    "load_reference",
    "prediction_map",
    "static_map",
    "thumbnail_data_uri",
]


@dataclass
class MapResult:
    """What :func:`prediction_map` wrote.

    Attributes:
        html: The HTML map, or None when only a PNG was asked for.
        png: The static PNG map, or None.
        n_tiles: Tiles drawn (georeferenced rows without an error).
        n_skipped: Rows left out (an ``error``, or no bounds / CRS), listed in ``skipped``.
        skipped: ``(path, reason)`` of each row left out.
        n_disagree: Tiles whose prediction differs from the reference (0 without reference).
        n_changed: Tiles whose class changed since ``compare`` (0 without comparison).
        change: The :class:`landsight.results.change.ChangeResult` of ``compare`` (per-tile table and
            transition counts), or None.

    """

    html: Path | None
    png: Path | None
    n_tiles: int
    n_skipped: int
    skipped: list[tuple[str, str]]
    n_disagree: int = 0
    n_changed: int = 0
    change: ChangeResult | None = None


def load_reference(source: str | Path | pd.DataFrame | Mapping[str, str]) -> dict[str, str]:
    """Read reference labels, one per tile path.

    Args:
        source: A CSV / Parquet file or DataFrame with columns ``path`` and ``label`` (paths
            as in the predictions table), or a mapping path -> label.

    Returns:
        Path -> reference label.

    Raises:
        DataNotFoundError: The file does not exist.
        LandsightValueError: The table lacks ``path`` or ``label``.

    """
    import pandas as pd

    if isinstance(source, Mapping):
        return {str(k): str(v) for k, v in source.items()}
    if isinstance(source, pd.DataFrame):
        table, name = source, "the reference table"
    else:
        path = Path(source)
        name = repr(str(path))
        if not path.is_file():
            raise DataNotFoundError(f"reference file {name} does not exist")
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    if not {"path", "label"} <= set(table.columns):
        raise LandsightValueError(f"{name} must have columns 'path' and 'label', got {list(table.columns)!r}")
    labelled = table.dropna(subset=["label"])
    return {str(p): str(v) for p, v in zip(labelled["path"], labelled["label"], strict=True) if str(v) != ""}


def _drawable_tiles(table: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The rows of a predictions table that can be drawn, as WGS84 corner rings.

    Args:
        table: A predictions table (see :func:`load_predictions`).

    Returns:
        ``(drawable, skipped)``: the rows kept by :func:`landsight.vectors.tile_polygons` (in
        EPSG:4326, failed rows left out), with an extra column ``polygon`` (a ``(5, 2)`` float64
        array of closed-ring longitude, latitude corners), and ``(path, reason)`` for each row
        left out (an error, or no bounds / CRS).

    Raises:
        LandsightValueError: A CRS is not understood.

    """
    import pandas as pd
    import shapely

    from landsight.vectors import tile_polygons

    skipped: list[tuple[str, str]] = []
    layer = tile_polygons(table, to_crs="EPSG:4326", skip_failed=True, skipped=skipped, allow_empty=True)
    drawable = pd.DataFrame(layer.drop(columns="geometry"))
    rings = shapely.get_coordinates(layer.geometry.to_numpy()).reshape(len(layer), 5, 2)
    drawable["polygon"] = list(rings)
    return drawable, skipped


def thumbnail_data_uri(path: str | Path, *, size: int = 96) -> str | None:
    """Read an image and encode a small RGB thumbnail as a ``data:image/png;base64`` URI.

    Args:
        path: Image file (any format :func:`landsight.data.readers.read_image` reads; the
            first three bands of a multiband raster).
        size: Longest side of the thumbnail in pixels.

    Returns:
        The data URI, or None when the image cannot be read (never raises for a bad image).

    """
    from PIL import Image

    from landsight.data.readers import read_image
    from landsight.errors import LandsightError

    try:
        array = read_image(path).array
    except (LandsightError, OSError):
        return None
    img = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array[..., :3])
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def prediction_map(
    predictions: str | Path | pd.DataFrame,
    out: str | Path | None,
    *,
    png: str | Path | None = None,
    reference: str | Path | pd.DataFrame | Mapping[str, str] | None = None,
    compare: str | Path | pd.DataFrame | None = None,
    basemap: str | None = None,
    attribution: str = "",
    thumbnails: bool = True,
    thumbnail_size: int = 96,
    title: str = "",
    progress: bool = True,
    overwrite: bool = False,
) -> MapResult:
    """Draw predicted classes tile by tile on an interactive HTML map and / or a static PNG.

    Layers (toggled in the map's layer control): "predicted class" (one filled polygon per tile,
    coloured by class, popup with the file name, a thumbnail and all class probabilities);
    with ``reference``, "reference label" (filled) and "disagrees with reference" (outlines);
    with ``compare``, "changed since before" (outlines; see :func:`landsight.results.change.compare_predictions`).
    A legend lists the class colours.

    Args:
        predictions: Predictions table (file or DataFrame) with bounds and CRS.
        out: HTML file to write, or None for the PNG only.
        png: Static PNG map to write as well (matplotlib), or None.
        reference: Reference labels per path (see :func:`load_reference`), or None.
        compare: An older predictions table of the same tiles, for the change layer, or None.
        basemap: XYZ tile URL (``https://.../{z}/{x}/{y}.png``) for a background map; needs a
            network when the HTML is viewed. None = no background (works offline).
        attribution: Attribution text of ``basemap`` (required by most tile providers).
        thumbnails: Embed a thumbnail of each tile (base64 PNG) in its popup.
        thumbnail_size: Longest side of a thumbnail, pixels.
        title: Title shown above the legend and on the PNG.
        progress: Show a progress bar while thumbnails are made.
        overwrite: Replace existing map files (they are never replaced without it).

    Returns:
        A :class:`MapResult`. Rows with an ``error`` or without bounds are skipped and listed.

    Raises:
        DataNotFoundError: A table file does not exist.
        LandsightValueError: No tile can be drawn (none georeferenced), neither ``out`` nor
            ``png`` was given, or an output is one of the input tables.
        OutputExistsError: ``out`` or ``png`` exists and ``overwrite`` is False.

    """
    from landsight.outputs import check_output
    from landsight.progress import progress_bar

    if out is None and png is None:
        raise LandsightValueError("give out (an .html file) and / or png (a .png file)")
    inputs = [p for p in (predictions, reference, compare) if isinstance(p, str | Path)]
    for path, what in ((out, "map"), (png, "map PNG")):
        if path is not None:
            check_output(path, inputs=inputs, overwrite=overwrite, what=what)
    table = load_predictions(predictions)
    tiles, skipped = _drawable_tiles(table)
    if not len(tiles):
        raise LandsightValueError(
            f"no tile of the predictions can be drawn: {len(skipped)} row(s) lack bounds / CRS or failed "
            f"(first: {skipped[:3]!r}); predict georeferenced tiles (GeoTIFF) to map them"
        )
    ref = load_reference(reference) if reference is not None else {}
    tiles["reference"] = [ref.get(str(p), "") for p in tiles["path"]]
    changes = None
    if compare is not None:
        from landsight.results.change import compare_predictions

        changes = compare_predictions(compare, tiles.drop(columns=["polygon"]))
        before = dict(zip(changes.table["path"], changes.table["before"], strict=True))
        tiles["before"] = [before.get(str(p), "") for p in tiles["path"]]
    else:
        tiles["before"] = ""

    classes = sorted(c for c in set(tiles["predicted"]) | set(tiles["reference"]) | set(tiles["before"]) if c)
    prob_classes = [c[len(PROBABILITY_PREFIX) :] for c in probability_columns(tiles)]
    ordered = prob_classes + [c for c in classes if c not in prob_classes]  # all model classes: stable colours
    colors = class_colors(ordered)
    disagree = (tiles["reference"] != "") & (tiles["reference"] != tiles["predicted"])
    changed = (tiles["before"] != "") & (tiles["before"] != tiles["predicted"])
    result = MapResult(None, None, len(tiles), len(skipped), skipped, int(disagree.sum()), int(changed.sum()), changes)

    if out is not None:
        thumbs: list[str | None] = [None] * len(tiles)
        if thumbnails:
            with progress_bar(len(tiles), "thumbnails", enabled=progress) as bar:
                for i, p in enumerate(tiles["path"]):
                    thumbs[i] = thumbnail_data_uri(p, size=thumbnail_size)
                    bar.advance()
        result.html = _write_html(
            tiles, Path(out), colors=colors, thumbs=thumbs, disagree=disagree.to_numpy(),
            changed=changed.to_numpy(), basemap=basemap, attribution=attribution, title=title,
        )  # fmt: skip
    if png is not None:
        result.png = static_map(tiles, png, colors=colors, title=title)
    return result


def static_map(
    tiles: pd.DataFrame,
    out: str | Path,
    *,
    colors: Mapping[str, str] | None = None,
    title: str = "",
    dpi: int = 120,
) -> Path:
    """Draw the tiles as coloured polygons in longitude / latitude on a PNG (matplotlib).

    One panel for the predicted class; a second for the reference label when ``tiles`` has a
    non-empty ``reference`` column (tiles that disagree outlined in magenta), and a third for the
    earlier class when it has a non-empty ``before`` column (changed tiles outlined in black).

    Args:
        tiles: The drawable tiles of :func:`prediction_map`: column ``polygon`` (a ``(5, 2)``
            longitude / latitude ring per tile, from :func:`landsight.vectors.tile_polygons` in
            EPSG:4326), with ``predicted`` and optionally ``reference`` and ``before``.
        out: PNG file to write.
        colors: Class -> colour (default :func:`class_colors` of the classes present).
        title: Figure title.
        dpi: PNG resolution.

    Returns:
        The PNG path.

    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    def col(name: str) -> list[str]:
        return [str(v) for v in tiles[name]] if name in tiles.columns else [""] * len(tiles)

    pred, ref, before = col("predicted"), col("reference"), col("before")
    if colors is None:
        colors = class_colors(sorted({c for c in pred + ref + before if c}))
    panels = [("predicted", pred, None)]
    if any(ref):
        panels.append(("reference", ref, [r != "" and r != p for r, p in zip(ref, pred, strict=True)]))
    if any(before):
        panels.append(("before", before, [b != "" and b != p for b, p in zip(before, pred, strict=True)]))
    rings = list(tiles["polygon"])
    allpts = np.concatenate(rings)
    lat0 = float(np.deg2rad(allpts[:, 1].mean()))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.8, 5.2), squeeze=False)
    for ax, (name, labels, flagged) in zip(axes[0], panels, strict=True):
        faces = [colors.get(c, NEUTRAL_COLOR) for c in labels]
        ax.add_collection(PolyCollection(rings, facecolors=faces, edgecolors="#333333", linewidths=0.4))
        if flagged is not None and any(flagged):
            hl = [r for r, f in zip(rings, flagged, strict=True) if f]
            edge = HIGHLIGHT_COLOR if name == "reference" else "#000000"
            ax.add_collection(PolyCollection(hl, facecolors="none", edgecolors=edge, linewidths=2.0))
        ax.set_xlim(allpts[:, 0].min(), allpts[:, 0].max())
        ax.set_ylim(allpts[:, 1].min(), allpts[:, 1].max())
        ax.set_aspect(1.0 / max(np.cos(lat0), 1e-6))
        ax.set_title({"predicted": "predicted class", "reference": "reference label (magenta: disagrees)",
                      "before": "before (black: changed)"}[name], fontsize=10)  # fmt: skip
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.tick_params(labelsize=7)
    handles = [Patch(facecolor=c, edgecolor="#333333", label=n) for n, c in colors.items()]
    fig.legend(handles=handles, loc="center right", fontsize=9, title="class")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    from landsight.outputs import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(out)
