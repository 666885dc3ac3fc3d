"""The interactive map of :func:`landsight.results.maps.prediction_map`: an offline Leaflet HTML file (folium).

This module owns the HTML rendering of the drawable tiles: one GeoJSON layer per view (predicted
class, reference label, tiles that disagree with it, tiles that changed), the popups with the
file name, thumbnail and class probabilities, the legend, and the self-contained file itself
(Leaflet's JavaScript and CSS inlined by ``folium-offline``, folium's other resources left out),
written atomically.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.outputs import tmp_name
from landsight.predictions import PROBABILITY_PREFIX, probability_columns
from landsight.results.map_colors import HIGHLIGHT_COLOR, NEUTRAL_COLOR

if TYPE_CHECKING:
    import pandas as pd

#: Leaflet resources a prediction map needs; folium's other defaults are dropped.
_LEAFLET_JS = [("leaflet", "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js")]
_LEAFLET_CSS = [("leaflet_css", "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css")]


def _popup_html(row: Mapping[str, Any], prob_cols: Sequence[str], thumb: str | None) -> str:
    esc = html.escape
    parts = [f"<div style='font:12px sans-serif;min-width:180px'><b>{esc(Path(str(row['path'])).name)}</b><br>"]
    if thumb:
        parts.append(f"<img src='{thumb}' alt='tile' style='max-width:96px;max-height:96px'><br>")
    parts.append(f"predicted: <b>{esc(str(row['predicted']))}</b>")
    if row.get("reference"):
        parts.append(f"<br>reference: <b>{esc(str(row['reference']))}</b>")
    if row.get("before"):
        parts.append(f"<br>before: <b>{esc(str(row['before']))}</b>")
    if prob_cols:
        parts.append("<table style='margin-top:4px'>")
        ranked = sorted(prob_cols, key=lambda c: -float(row[c]))
        for c in ranked:
            parts.append(
                f"<tr><td>{esc(c[len(PROBABILITY_PREFIX) :])}</td>"
                f"<td style='text-align:right'>{float(row[c]):.3f}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</div>")
    return "".join(parts)


def _legend_html(colors: Mapping[str, str], extra: Sequence[tuple[str, str]]) -> str:
    esc = html.escape
    rows = [
        f"<div><span style='display:inline-block;width:14px;height:14px;background:{c};"
        f"margin-right:6px;vertical-align:middle;border:1px solid #333'></span>{esc(name)}</div>"
        for name, c in colors.items()
    ]
    rows += [
        f"<div><span style='display:inline-block;width:12px;height:12px;border:2px solid {c};"
        f"margin-right:6px;vertical-align:middle'></span>{esc(name)}</div>"
        for name, c in extra
    ]
    return (
        "<div id='landsight-legend' class='landsight-legend' style='position:fixed;bottom:28px;right:12px;"
        "z-index:1000;background:rgba(255,255,255,0.92);padding:8px 10px;border:1px solid #888;"
        "border-radius:4px;font:13px sans-serif;line-height:20px'><b>predicted class</b>" + "".join(rows) + "</div>"
    )


def _feature_collection(tiles: pd.DataFrame, props: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [np.round(poly, 7).tolist()]},
                "properties": p,
            }
            for poly, p in zip(tiles["polygon"], props, strict=True)
        ],
    }


def _add_layer(
    fmap: Any,
    tiles: pd.DataFrame,
    props: Sequence[dict[str, Any]],
    name: str,
    *,
    fill: bool,
    show: bool = True,
) -> None:
    import offlinefolium as folium

    if not len(tiles):
        return
    group = folium.FeatureGroup(name=name, show=show)

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        color = feature["properties"]["color"]
        if fill:
            return {"fillColor": color, "color": "#333333", "weight": 0.6, "fillOpacity": 0.7}
        return {"fillColor": color, "color": color, "weight": 3, "fillOpacity": 0.0}

    layer = folium.GeoJson(_feature_collection(tiles, props), name=name, style_function=style)
    folium.GeoJsonPopup(fields=["popup"], labels=False, max_width=320).add_to(layer)
    layer.add_to(group)
    group.add_to(fmap)


def _write_html(
    tiles: pd.DataFrame,
    out: Path,
    *,
    colors: Mapping[str, str],
    thumbs: Sequence[str | None],
    disagree: np.ndarray,
    changed: np.ndarray,
    basemap: str | None,
    attribution: str,
    title: str,
) -> Path:
    import offlinefolium as folium

    rings = np.concatenate(list(tiles["polygon"]))
    south, west = float(rings[:, 1].min()), float(rings[:, 0].min())
    north, east = float(rings[:, 1].max()), float(rings[:, 0].max())
    fmap = folium.Map(location=[(south + north) / 2, (west + east) / 2], tiles=None, control_scale=True)
    # Only Leaflet itself is needed; folium's jQuery / Bootstrap / icon fonts would be inlined for nothing.
    fmap.default_js = list(_LEAFLET_JS)
    fmap.default_css = list(_LEAFLET_CSS)
    if basemap:
        folium.TileLayer(basemap, attr=attribution or basemap, name="base map").add_to(fmap)

    prob_cols = probability_columns(tiles)
    records = tiles.drop(columns=["polygon"]).to_dict("records")
    popups = [_popup_html(r, prob_cols, t) for r, t in zip(records, thumbs, strict=True)]
    short = [_popup_html(r, prob_cols, None) for r in records]  # overlay layers: no second copy of the thumbnail

    predicted = [{"color": colors[c], "popup": p} for c, p in zip(tiles["predicted"], popups, strict=True)]
    _add_layer(fmap, tiles, predicted, "predicted class", fill=True)
    has_ref = bool((tiles["reference"] != "").any())
    if has_ref:
        ref_colors = [colors.get(c, NEUTRAL_COLOR) for c in tiles["reference"]]
        _add_layer(fmap, tiles, [{"color": c, "popup": p} for c, p in zip(ref_colors, short, strict=True)],
                   "reference label", fill=True, show=False)  # fmt: skip
        sel = np.flatnonzero(disagree)
        _add_layer(fmap, tiles.iloc[sel], [{"color": HIGHLIGHT_COLOR, "popup": short[i]} for i in sel],
                   "disagrees with reference", fill=False)  # fmt: skip
    if changed.any():
        sel = np.flatnonzero(changed)
        _add_layer(fmap, tiles.iloc[sel], [{"color": "#000000", "popup": short[i]} for i in sel],
                   "changed since before", fill=False)  # fmt: skip
    folium.LayerControl(collapsed=False).add_to(fmap)
    fmap.fit_bounds([[south, west], [north, east]])
    extra = []
    if has_ref:
        extra.append(("disagrees with reference", HIGHLIGHT_COLOR))
    if changed.any():
        extra.append(("changed since before", "#000000"))
    legend = _legend_html(colors, extra)
    if title:
        legend = legend.replace("<b>predicted class</b>", f"<b>{html.escape(title)}</b><br><b>predicted class</b>")
    fmap.get_root().html.add_child(folium.Element(legend))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    fmap.save(str(tmp))
    tmp.replace(out)
    return out
