"""The colours of the prediction maps, shared by the interactive HTML map and the static PNG map.

This module owns the class palette (:func:`class_colors`: distinct, stable colours per class) and
the two fixed colours of the maps: the neutral fill of tiles without a reference label and the
highlight outline of tiles that disagree with their reference. Both renderers
(:mod:`landsight.results.maps_html` and :func:`landsight.results.maps.static_map`) take their
colours from here.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["HIGHLIGHT_COLOR", "NEUTRAL_COLOR", "class_colors"]

#: Colour of tiles whose reference label is missing, and of changed / disagreeing outlines.
NEUTRAL_COLOR = "#9e9e9e"
HIGHLIGHT_COLOR = "#ff00ff"


def class_colors(classes: Sequence[str]) -> dict[str, str]:
    """Give each class a distinct, stable colour (matplotlib ``tab10``; ``tab20`` + ``tab20b`` above 10 classes).

    The palette is :func:`landsight.styles.default_colours`, so a map and a QGIS style agree.

    Args:
        classes: Class names; the same list always gives the same colours.

    Returns:
        Class name -> ``"#rrggbb"``.

    """
    from landsight.styles import default_colours

    return default_colours(classes)
