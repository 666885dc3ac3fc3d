"""Labelled tiles from a scene: chip classification training data from a land-cover map or polygons.

:func:`tile_scene` cuts one or more georeferenced scenes into ``size x size`` GeoTIFF tiles
(:mod:`landsight.data.tiling`) and gives each tile one class from the label source's window under
it, so that ``landsight train`` reads the folder (or its ``labels.csv``) directly:

* **label raster** (``lc.tif``): the window of the label raster under each tile. When its grid
  differs from the scene's (CRS, transform or size), it is warped onto the scene's grid through a
  ``WarpedVRT`` with nearest-neighbour resampling (codes are never averaged); pixels outside
  the label raster or under its nodata mask are unlabelled.
* **polygons** (``.gpkg``, ``.shp``, ``.geojson``...): the features under each tile are
  rasterized onto its window (:class:`landsight.data.vector_labels.VectorLabels`, reprojected to
  the scene's CRS); ``label_field`` holds a class name of the class map or a label code.

Codes map to classes through a segmentation class map (:mod:`landsight.segment.classmap`, the
``chesapeake`` one by default); ignored and unmapped codes count as unlabelled pixels. The rule
turns a tile's pixels into its class: ``majority`` (the most frequent class among the labelled
pixels; ties go to the lowest output code) or ``min-fraction:F`` (the majority class only where it
covers at least the fraction ``F`` of the tile's ``size * size`` pixels, padding included).

This module sits in ``segment/`` because it reads class maps; the tiling itself is in ``data/``.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.data.tiling import (
    check_edge,
    check_prefix,
    read_padded,
    scene_stem,
    tile_profile,
    tile_windows,
    write_tile,
)
from landsight.errors import DataNotFoundError, LandsightValueError
from landsight.outputs import Output, OutputPlan, check_plan, staged_folder
from landsight.segment.classmap import IGNORE_INDEX, ClassMap, labels_to_index, load_class_map
from landsight.segment.raster import open_raster

if TYPE_CHECKING:
    from landsight.data.vector_labels import VectorLabels

__all__ = ["LAYOUTS", "UNLABELLED", "LabelledTile", "SceneTiles", "parse_rule", "tile_scene"]

LAYOUTS = ("folders", "csv")
"""Output layouts: class folders ``<out>/<class>/<tile>.tif``, or flat tiles and ``<out>/labels.csv``."""

UNLABELLED = "unlabelled"
"""Folder of the tiles with no class, kept with ``keep_unlabelled=True`` in the folders layout."""

CSV_NAME = "labels.csv"
"""The map file of the ``csv`` layout: ``path,label,scene`` rows, paths relative to it."""


@dataclass
class LabelledTile:
    """One tile written by :func:`tile_scene`.

    Attributes:
        path: The GeoTIFF (its final path under ``out``).
        scene: The scene's tile-name prefix (its stem unless given).
        row: Grid row (0 = top).
        col: Grid column (0 = left).
        window: Its ``rasterio.windows.Window`` in the scene (pixels).
        bounds: ``(left, bottom, right, top)`` in the scene's CRS units.
        label: Class name, or ``None`` (unlabelled, or no label source given).
        fraction: Share of the tile's ``size * size`` pixels in ``label``'s class (0 when unlabelled).
    """

    path: Path
    scene: str
    row: int
    col: int
    window: Any
    bounds: tuple[float, float, float, float]
    label: str | None
    fraction: float


@dataclass
class SceneTiles:
    """What :func:`tile_scene` wrote.

    Attributes:
        out: The tiles folder.
        tiles: The tiles written, scene by scene in row-major order.
        counts: Tiles written per class name (``"unlabelled"`` for kept unlabelled tiles).
        n_unlabelled: Tiles with no class under the rule (written only with ``keep_unlabelled``).
        n_edge_dropped: Partial edge tiles left out (``edge="drop"``).
        csv_path: ``labels.csv`` of the ``csv`` layout, else ``None``.
        classes: The class map's class names (empty without a label source).
    """

    out: Path
    tiles: list[LabelledTile] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    n_unlabelled: int = 0
    n_edge_dropped: int = 0
    csv_path: Path | None = None
    classes: list[str] = field(default_factory=list)

    @property
    def n_unlabelled_dropped(self) -> int:
        """Unlabelled tiles left out (all of them unless ``keep_unlabelled``)."""
        return self.n_unlabelled - self.counts.get(UNLABELLED, 0)

    def describe(self, rule: str = "majority") -> list[str]:
        """Lines for the console: tiles written (per class), unlabelled and edge tiles left out."""
        per_class = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        size = int(self.tiles[0].window.width) if self.tiles else 0
        lines = [
            f"{len(self.tiles)} tiles of {size} px in {self.csv_path or self.out}"
            + (f": {per_class}" if per_class else "")
        ]
        if self.classes:
            kept = self.n_unlabelled - self.n_unlabelled_dropped
            lines.append(
                f"{self.n_unlabelled} unlabelled ({rule}): {kept} kept, {self.n_unlabelled_dropped} dropped; "
                f"{self.n_edge_dropped} partial edge tiles dropped"
            )
        elif self.n_edge_dropped:
            lines.append(f"{self.n_edge_dropped} partial edge tiles dropped")
        return lines


def parse_rule(rule: str) -> float | None:
    """Parse a labelling rule.

    Args:
        rule: ``"majority"`` or ``"min-fraction:F"`` with ``0 < F <= 1``.

    Returns:
        ``None`` for ``majority``, else ``F``.

    Raises:
        LandsightValueError: Any other rule.
    """
    if rule == "majority":
        return None
    if rule.startswith("min-fraction:"):
        try:
            frac = float(rule.split(":", 1)[1])
        except ValueError:
            frac = float("nan")
        if 0 < frac <= 1:
            return frac
    raise LandsightValueError(f"rule must be 'majority' or 'min-fraction:F' with 0 < F <= 1, got {rule!r}")


def _decide(index: np.ndarray, class_map: ClassMap, min_fraction: float | None) -> tuple[int | None, float]:
    """Class index of a tile from its ``(H, W)`` class indices, and its share of the tile's pixels."""
    k = class_map.num_classes
    counts = np.bincount(index[index != IGNORE_INDEX].ravel(), minlength=k)[:k]
    if counts.sum() == 0:
        return None, 0.0
    best = counts.max()
    winner = min(np.flatnonzero(counts == best), key=lambda i: class_map.classes[i].code)  # ties: lowest code
    fraction = float(best) / index.size
    if min_fraction is not None and fraction < min_fraction:
        return None, fraction
    return int(winner), fraction


class _RasterLabels:
    """A label raster read on a scene's grid (warped through a ``WarpedVRT`` when the grids differ)."""

    def __init__(self, path: str, class_map: ClassMap) -> None:
        self.path, self.class_map = path, class_map
        self._ctx = open_raster(path)
        self.src = self._ctx.__enter__()
        self.vrt: Any = None

    def close(self) -> None:
        if self.vrt is not None:
            self.vrt.close()
        self._ctx.__exit__(None, None, None)

    def on_grid(self, scene: Any) -> Any:
        """The label dataset to read with the scene's windows."""
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        src = self.src
        if src.crs == scene.crs and src.transform == scene.transform and src.shape == scene.shape:
            return src
        if src.crs is None or scene.crs is None:
            raise LandsightValueError(
                f"label raster {self.path!r} and scene {scene.name!r} are on different grids and "
                f"{'the labels have' if src.crs is None else 'the scene has'} no CRS to align them by; "
                "give both a CRS or labels on the scene's exact grid"
            )
        if self.vrt is not None:
            self.vrt.close()
        self.vrt = WarpedVRT(src, crs=scene.crs, transform=scene.transform, width=scene.width,
                             height=scene.height, resampling=Resampling.nearest,
                             add_alpha=src.nodata is None and src.count < 4)  # fmt: skip
        return self.vrt

    def index(self, grid: Any, scene: Any, window: Any) -> np.ndarray:
        """``(size, size)`` class indices of one window (``IGNORE_INDEX`` where unlabelled)."""
        bands = list(range(1, self.src.count + 1))
        codes = read_padded(grid, window, fill=0, indexes=bands)
        valid = read_padded(grid, window, fill=0, indexes=[1], masks=True)[0] > 0
        index = labels_to_index(codes, self.class_map)
        index[~valid] = IGNORE_INDEX
        return index


class _PolygonLabels:
    """Polygons rasterized window by window onto a scene's grid."""

    def __init__(self, path: str, label_field: str, class_map: ClassMap) -> None:
        from landsight.data.vector_labels import VectorLabels

        codes: dict[str | int, int] = {}
        for c in class_map.classes:
            codes[c.name] = c.codes[0]
            codes.update({code: code for code in c.codes})
        codes.update({code: code for code in class_map.ignore_codes})
        used = set(codes.values())
        self.fill = class_map.ignore_codes[0] if class_map.ignore_codes else next(i for i in range(65536)
                                                                                  if i not in used)  # fmt: skip
        self.class_map = class_map
        self.labels: VectorLabels = VectorLabels.open(path, label_field, codes=codes)

    def close(self) -> None:
        pass

    def on_grid(self, scene: Any) -> Any:
        return scene

    def index(self, grid: Any, scene: Any, window: Any) -> np.ndarray:
        from rasterio.windows import transform as window_transform

        shape = (int(window.height), int(window.width))
        codes = self.labels.rasterize(shape, window_transform(window, scene.transform), scene.crs, fill=self.fill)
        index = self.class_map.remap(codes)
        inside_h, inside_w = scene.height - int(window.row_off), scene.width - int(window.col_off)
        index[inside_h:, :] = IGNORE_INDEX  # the padding of partial edge tiles is never labelled
        index[:, inside_w:] = IGNORE_INDEX
        return index


def _scenes(scene: str | Path | Sequence[str | Path], prefix: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """``(path, prefix)`` of each scene, checked: files exist, prefixes plain and distinct."""
    paths = [str(scene)] if isinstance(scene, str | Path) else [str(s) for s in scene]
    if not paths:
        raise LandsightValueError("tile_scene needs at least one scene")
    if prefix is None:
        names = [scene_stem(p) for p in paths]
    elif isinstance(prefix, str):
        if len(paths) > 1:
            raise LandsightValueError(
                f"one prefix {prefix!r} for {len(paths)} scenes would collide; give one per scene"
            )
        names = [prefix]
    else:
        names = list(prefix)
        if len(names) != len(paths):
            raise LandsightValueError(f"{len(names)} prefixes for {len(paths)} scenes; give one per scene")
    for p in paths:
        if "://" not in p and not Path(p).is_file():
            raise DataNotFoundError(f"scene {p!r} does not exist")
    for n in names:
        check_prefix(n)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LandsightValueError(
            f"scenes share the tile-name prefix(es) {dup!r}, so their tiles would collide; give distinct prefixes"
        )
    return list(zip(paths, names, strict=True))


def tile_scene(
    scene: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    size: int,
    labels: str | Path | None = None,
    label_field: str | None = None,
    classes: str | Path | dict[str, Any] | ClassMap = "chesapeake",
    rule: str = "majority",
    keep_unlabelled: bool = False,
    edge: str = "drop",
    prefix: str | Sequence[str] | None = None,
    layout: str = "folders",
    overwrite: bool = False,
    asset: str | None = None,
    allow_remote: bool = True,
) -> SceneTiles:
    r"""Cut scenes into ``size x size`` GeoTIFF tiles, each labelled with one class, for ``landsight train``.

    Tiles keep the scene's CRS, bands and dtype, each with its window's transform (so
    ``split="spatial"`` locates them). They are named ``<prefix>_<row>_<col>.tif`` (the grid
    starts at the scene's top-left pixel), so several scenes share a folder and
    ``split="group", group=r"regex:([^/]+)_\d+_\d+\.tif$"`` keeps each scene's tiles together.

    Args:
        scene: One or more georeferenced rasters (GeoTIFF, JPEG 2000, a COG URL...).
        out: Tiles folder, written whole at the end (group commit; manifest kind ``"tiles"``).
        size: Tile side in pixels of the scene (1 .. its shorter side).
        labels: Label source: a label raster of codes (any grid and CRS: warped onto each
            scene's grid with nearest resampling) or a vector file (``.gpkg``, ``.shp``,
            ``.geojson``..., any CRS: reprojected to each scene's). ``None``: unlabelled tiles,
            written flat in ``out``.
        label_field: The polygons' attribute holding a class name or a label code (required
            for a vector ``labels``; not used for a raster).
        classes: Class map: a built-in name (``"chesapeake"``, ``"dubai"``), a YAML file, its
            dict or a :class:`~landsight.segment.classmap.ClassMap`. Its ignore codes and codes
            it does not map are unlabelled pixels.
        rule: ``"majority"`` or ``"min-fraction:F"`` (see the module docstring).
        keep_unlabelled: Write the tiles the rule leaves without a class too: in ``unlabelled/``
            (folders layout) or with a blank label (CSV layout; ``train`` refuses blank rows, so
            this is for labelling them later). Default: leave them out.
        edge: ``"drop"``: leave out the partial tiles of the right and bottom strips;
            ``"keep"``: pad them to ``size`` with the scene's nodata value (0 without one,
            declared as the tile's nodata); the padding counts as unlabelled pixels.
        prefix: Tile-name prefix (one scene) or one per scene (``None``: each scene's file stem).
        layout: ``"folders"``: ``out/<class>/<prefix>_<row>_<col>.tif``; ``"csv"``: flat tiles
            and ``out/labels.csv`` (``path,label,scene``; paths relative to it, ``scene`` usable
            as ``group="scene"``).
        overwrite: Replace an earlier tiles folder at ``out`` whole (never one holding files
            landsight did not write).
        asset: Refused (STAC sources are cut by :func:`landsight.data.tiling.cut_tiles`, unlabelled).
        allow_remote: False: refuse URL scenes (``--no-remote``).

    Returns:
        The tiles written with their labels, the count per class, and the unlabelled and edge
        tiles left out.

    Raises:
        DataNotFoundError: A scene or ``labels`` does not exist.
        LandsightValueError: A bad ``size``, ``rule``, ``edge``, ``layout`` or prefix; colliding
            prefixes; a vector ``labels`` without ``label_field`` or with unknown class values;
            label and scene grids that differ without CRSs to align them; ``out`` overlapping an input.
        OutputExistsError: ``out`` exists and ``overwrite`` is False, or it is not a tiles folder
            landsight made.
    """
    from rasterio.windows import bounds

    from landsight.data.stac import is_stac_source
    from landsight.data.vector_labels import is_vector_labels

    check_edge(edge)
    scenes = [scene] if isinstance(scene, str | Path) else list(scene)
    if asset is not None or any(is_stac_source(s) for s in scenes):
        raise LandsightValueError("labelled or several scenes must be raster files, not a STAC JSON (nor --asset)")
    if not allow_remote and any("://" in str(s) and not str(s).startswith("file://") for s in scenes):
        raise LandsightValueError("a scene is a URL but remote reads are off (--no-remote); use a local copy")
    if layout not in LAYOUTS:
        raise LandsightValueError(f"layout must be one of {list(LAYOUTS)!r}, got {layout!r}")
    min_fraction = parse_rule(rule)
    sources = _scenes(scenes, prefix)
    class_map = classes if isinstance(classes, ClassMap) else load_class_map(classes)
    vector = labels is not None and is_vector_labels(labels)
    if labels is not None:
        if not Path(labels).exists():
            raise DataNotFoundError(f"labels {str(labels)!r} do not exist")
        if vector and not label_field:
            raise LandsightValueError(f"vector labels {str(labels)!r} need label_field (--label-field)")
        if class_map.num_classes and any(c.name in ("", UNLABELLED) or "/" in c.name for c in class_map.classes):
            raise LandsightValueError(f"class names must be plain folder names other than {UNLABELLED!r}")
    out_dir = Path(out)
    inputs = [("scene", Path(p)) for p, _ in sources if "://" not in p]
    inputs += [("--labels", Path(labels))] if labels is not None else []
    check_plan(OutputPlan("tile", inputs=inputs, outputs=[Output(out_dir, "--out", "tiles")], overwrite=overwrite))

    result = SceneTiles(out_dir, classes=class_map.names if labels is not None else [])
    counts: Counter[str] = Counter()
    source: _RasterLabels | _PolygonLabels | None = None
    if labels is not None:
        if vector:
            source = _PolygonLabels(str(labels), str(label_field), class_map)
        else:
            source = _RasterLabels(str(labels), class_map)
    rows: list[tuple[str, str, str]] = []
    try:
        with staged_folder(out_dir, "tiles", overwrite=overwrite) as stage:
            for path, name in sources:
                with open_raster(path) as src:
                    windows, dropped = tile_windows(src.width, src.height, size, edge)
                    result.n_edge_dropped += dropped
                    profile = tile_profile(src, size)
                    grid = source.on_grid(src) if source is not None else None
                    for r, c, window in windows:
                        label, fraction = None, 0.0
                        if source is not None:
                            k, fraction = _decide(source.index(grid, src, window), class_map, min_fraction)
                            label = None if k is None else class_map.names[k]
                            if label is None:
                                result.n_unlabelled += 1
                                if not keep_unlabelled:
                                    continue
                        file = f"{name}_{r}_{c}.tif"
                        folder = (label or UNLABELLED) if layout == "folders" and source is not None else ""
                        (stage / folder).mkdir(exist_ok=True)
                        write_tile(src, stage / folder / file, window, profile)
                        rel = f"{folder}/{file}" if folder else file
                        box = tuple(bounds(window, src.transform))
                        result.tiles.append(LabelledTile(out_dir / rel, name, r, c, window, box, label, fraction))
                        if source is not None:
                            counts[label or UNLABELLED] += 1
                        rows.append((rel, label or "", name))
            if layout == "csv":
                with open(stage / CSV_NAME, "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["path", "label", "scene"])
                    writer.writerows(rows)
                result.csv_path = out_dir / CSV_NAME
    finally:
        if source is not None:
            source.close()
    result.counts = dict(sorted(counts.items()))
    return result
