"""Image / label raster pairs, matched by glob patterns or listed in a CSV file.

Glob patterns are matched on what their wildcards capture: ``naip/*.tif`` and
``labels/*_lc.tif`` pair ``naip/m_1.tif`` with ``labels/m_1_lc.tif`` (both capture ``m_1``);
``tile_*/images/*.jpg`` and ``tile_*/labels/*.png`` pair on ``(tile, name)``. A CSV file has
columns ``image,label`` (paths relative to the CSV file). Unpaired files and pairs whose sizes
differ are reported and skipped, never fatal; no pair at all is an error.

Labels may also be one vector layer (``labels`` a GeoPackage, Shapefile, GeoJSON, FlatGeobuf or
GeoParquet file, :data:`~landsight.data.vector_labels.VECTOR_LABEL_SUFFIXES`, with a
``label_field`` of class names or label codes): every georeferenced image that a feature
intersects is paired with the :class:`~landsight.data.vector_labels.VectorLabels`, which is
rasterized onto each window read (:class:`LabelWindows`); pixels outside every polygon are
ignored. A pair's label is thus a raster path or a ``VectorLabels``; read it through
:func:`open_labels` either way.
"""

from __future__ import annotations

import csv
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.data.vector_labels import VectorLabels, is_vector_labels
from landsight.errors import DataNotFoundError, LandsightValueError

if TYPE_CHECKING:
    from landsight.data.splits import SplitInfo
    from landsight.segment.classmap import ClassMap


@dataclass(frozen=True)
class RasterPair:
    """An image raster and the label raster covering the same pixels.

    Attributes:
        image: Image raster path.
        label: Label raster path (codes, or an RGB colour mask), or vector labels rasterized
            onto the image's grid.
        height: Rows of both rasters.
        width: Columns of both rasters.
    """

    image: str
    label: str | VectorLabels
    height: int
    width: int

    @property
    def label_path(self) -> str:
        """The label raster or vector file path."""
        return self.label if isinstance(self.label, str) else self.label.path


class LabelWindows:
    """A pair's labels opened for window reads, as class indices, whatever their kind.

    A label raster is read with :func:`landsight.segment.raster.read_labels`; vector labels are
    rasterized onto the window of the image's grid (its transform and CRS) and mapped through
    the class map like raster codes. Use :func:`open_labels` (a context manager too).

    Args:
        pair: The pair.
    """

    def __init__(self, pair: RasterPair) -> None:
        from landsight.segment.raster import open_dataset, open_raster

        self.pair, self._src, self._grid = pair, None, None
        if isinstance(pair.label, str):
            self._src = open_dataset(pair.label)
        else:
            with open_raster(pair.image) as a:
                self._grid = (a.transform, a.crs)

    def read(self, row: int, col: int, height: int, width: int, class_map: ClassMap) -> np.ndarray:
        """Label window as ``(height, width)`` uint8 class indices.

        Args:
            row: Top row (may be negative).
            col: Left column (may be negative).
            height: Window rows.
            width: Window columns.
            class_map: Codes / colours -> class indices.

        Returns:
            Class indices; :data:`~landsight.segment.classmap.IGNORE_INDEX` outside the raster,
            where the labels are nodata or ignored, and (vector labels) outside every feature.
        """
        from landsight.segment.classmap import IGNORE_INDEX
        from landsight.segment.raster import read_labels

        if self._src is not None:
            return read_labels(self._src, row, col, height, width, class_map)
        from rasterio.windows import Window, transform

        assert self._grid is not None and isinstance(self.pair.label, VectorLabels)
        win = transform(Window(col, row, width, height), self._grid[0])
        out = class_map.remap(self.pair.label.rasterize((height, width), win, self._grid[1], fill=-1))
        outside = np.ones((height, width), dtype=bool)
        r1, c1 = max(0, min(height, self.pair.height - row)), max(0, min(width, self.pair.width - col))
        outside[max(0, -row) : r1, max(0, -col) : c1] = False
        out[outside] = IGNORE_INDEX
        return out

    def close(self) -> None:
        """Close the label raster (nothing for vector labels)."""
        if self._src is not None:
            self._src.close()

    def __enter__(self) -> LabelWindows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_labels(pair: RasterPair) -> LabelWindows:
    """Open a pair's labels (raster or vector) for window reads; see :class:`LabelWindows`."""
    return LabelWindows(pair)


def vector_codes(class_map: ClassMap | None) -> dict[str | int, int] | Any:
    """Field value -> label code for vector labels: class names and the class map's label codes.

    Args:
        class_map: The class map; ``None`` accepts any integer code as it is.

    Returns:
        A mapping (name -> the class's first label code, label / ignore code -> itself), or a
        function for ``None``.
    """
    if class_map is None:
        return lambda v: int(v) if float(v).is_integer() else None
    table: dict[str | int, int] = {c: c for k in class_map.classes for c in k.codes}
    table.update({c: c for c in class_map.ignore_codes})
    for k in class_map.classes:
        table.setdefault(k.name, k.codes[0] if k.codes else k.code)
    return table


@dataclass
class PairSet:
    """Matched pairs and what was left out.

    Attributes:
        pairs: Pairs in a stable (sorted) order.
        skipped: ``(path, reason)`` of files that were unpaired or unreadable or mismatched.
    """

    pairs: list[RasterPair]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Regex for a glob pattern with one capture group per wildcard (``*``, ``**``, ``?``, ``[...]``)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*?/?)", i + 3
        elif pattern[i] == "*":
            out, i = out + "([^/]*)", i + 1
        elif pattern[i] == "?":
            out, i = out + "([^/])", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out, i = out + "([" + ("^" + body[1:] if body.startswith("!") else body) + "])", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _match(pattern: str) -> dict[tuple[str, ...], str]:
    regex = _glob_regex(pattern)
    found: dict[tuple[str, ...], str] = {}
    for path in sorted(glob.glob(pattern, recursive=True)):
        m = regex.match(path)
        if m and Path(path).is_file():
            found[m.groups()] = path
    return found


def pair_rasters(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    check_data: bool = True,
    label_field: str | None = None,
    class_map: ClassMap | None = None,
) -> PairSet:
    """Pair image and label rasters (or images and one vector label layer).

    Args:
        images: A glob pattern of image rasters (quote it in a shell), or a CSV file with
            columns ``image,label`` (then ``labels`` is ``None``).
        labels: A glob pattern of label rasters whose wildcards capture the same strings as
            those of ``images``; or a vector file (see the module docstring).
        check_data: Read every pixel of both rasters once
            (:func:`landsight.segment.raster.check_readable`), so that a file whose header is
            intact but whose data is truncated or corrupt is skipped here, with its reason,
            instead of failing training or evaluation halfway. Costs one decompression pass
            over the data (less than band statistics plus training or prediction read).
        label_field: Vector labels: the attribute holding class names or label codes.
        class_map: Vector labels: maps class names to codes and checks the values
            (:func:`vector_codes`).

    Returns:
        The :class:`PairSet`; pairs whose sizes differ or that cannot be opened or read are in
        ``skipped`` with the reason (a damaged file is listed under its own path).

    Raises:
        DataNotFoundError: No file matches, or the CSV does not exist.
        LandsightValueError: Nothing pairs up, or the CSV lacks the columns; vector labels
            without ``label_field``, or whose features lie outside every image (one line each;
            see :meth:`~landsight.data.vector_labels.VectorLabels.open` for the layer's checks).

    Example:
        >>> pair_rasters("naip/*.tif", "labels/*_lc.tif")  # doctest: +SKIP
    """
    if labels is not None and is_vector_labels(labels):
        return _pair_vector(images, labels, label_field, class_map, check_data)
    skipped: list[tuple[str, str]] = []
    if labels is None:
        candidates = _read_csv(Path(images))
    else:
        found_images, found_labels = _match(str(images)), _match(str(labels))
        if not found_images:
            raise DataNotFoundError(f"no image raster matches {str(images)!r}")
        if not found_labels:
            raise DataNotFoundError(f"no label raster matches {str(labels)!r}")
        keys = sorted(set(found_images) & set(found_labels))
        skipped += [(found_images[k], "no label raster pairs with it") for k in sorted(set(found_images) - set(keys))]
        skipped += [(found_labels[k], "no image raster pairs with it") for k in sorted(set(found_labels) - set(keys))]
        candidates = [(found_images[k], found_labels[k]) for k in keys]
    pairs = []
    from landsight.errors import ImageReadError, LandsightError
    from landsight.segment.raster import check_readable, open_raster

    for image, label in candidates:
        try:
            with open_raster(image) as a, open_raster(label) as b:
                if (a.height, a.width) != (b.height, b.width):
                    skipped.append((image, f"size {a.height}x{a.width} differs from label {label!r} "
                                           f"{b.height}x{b.width}"))  # fmt: skip
                    continue
                if a.crs and b.crs and (a.crs != b.crs or not a.transform.almost_equals(b.transform)):
                    skipped.append((image, f"CRS / transform ({a.crs}, {tuple(a.transform)[:6]}) differ from label "
                                           f"{label!r} ({b.crs}, {tuple(b.transform)[:6]})"))  # fmt: skip
                    continue
                if check_data:
                    check_readable(a)
                    check_readable(b)
                pairs.append(RasterPair(str(image), str(label), int(a.height), int(a.width)))
        except ImageReadError as exc:
            also = "" if exc.path == str(image) else f" (its image {str(image)!r} is skipped with it)"
            skipped.append((exc.path, f"{exc}{also}"))
        except LandsightError as exc:
            skipped.append((image, str(exc)))
    if not pairs:
        raise LandsightValueError(
            f"no usable image/label pairs from images={str(images)!r} labels={str(labels)!r}; "
            f"first problems: {skipped[:3]!r}. Check that both patterns' wildcards capture the same names."
        )
    return PairSet(pairs, skipped)


def _pair_vector(
    images: str | Path, labels: str | Path, label_field: str | None, class_map: ClassMap | None, check_data: bool
) -> PairSet:
    """:func:`pair_rasters` with a vector label layer: each image a feature intersects."""
    from landsight.data.vector_labels import window_bounds
    from landsight.errors import ImageReadError, LandsightError
    from landsight.segment.raster import check_readable, open_raster

    if not label_field:
        raise LandsightValueError(f"vector labels {str(labels)!r} need a label field (--label-field NAME)")
    vector = VectorLabels.open(labels, label_field, codes=vector_codes(class_map))
    found = _match(str(images))
    if not found:
        raise DataNotFoundError(f"no image raster matches {str(images)!r}")
    pairs, skipped, used, outside = [], [], np.zeros(len(vector), dtype=bool), []
    for image in found.values():
        try:
            with open_raster(image) as a:
                if a.crs is None:
                    skipped.append((image, "has no CRS: vector labels need georeferenced images"))
                    continue
                bounds = window_bounds((a.height, a.width), a.transform)
                idx = vector.select(bounds, a.crs)
                if not len(idx):
                    outside.append((image, bounds, a.crs))
                    skipped.append((image, f"no feature of {str(labels)!r} intersects it"))
                    continue
                used[idx] = True
                if check_data:
                    check_readable(a)
                pairs.append(RasterPair(str(image), vector, int(a.height), int(a.width)))
        except LandsightError as exc:
            skipped.append((exc.path if isinstance(exc, ImageReadError) else image, str(exc)))
    if not pairs and outside:
        image, bounds, crs = outside[0]
        raise LandsightValueError(
            f"every feature of {str(labels)!r} lies outside every image of {str(images)!r} (features "
            f"{tuple(round(v, 1) for v in vector.bounds_in(crs))} vs image {image!r} "
            f"{tuple(round(v, 1) for v in bounds)} in {crs}); check the layer's CRS and extent"
        )  # fmt: skip
    if not pairs:
        raise LandsightValueError(f"no usable images for vector labels {str(labels)!r} from images="
                                  f"{str(images)!r}; first problems: {skipped[:3]!r}")  # fmt: skip
    if not used.all():
        skipped.append((str(labels), f"{int((~used).sum())} of {len(vector)} features lie outside every image"))
    return PairSet(pairs, skipped)


def _read_csv(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DataNotFoundError(f"pairs file {str(path)!r} does not exist (or pass a labels pattern too)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise LandsightValueError(f"pairs file {str(path)!r} needs the header 'image,label' and at least one row")
    root = path.parent
    return [(str(root / r["image"]), str(root / r["label"])) for r in rows]


def split_pairs(
    pairs: list[RasterPair],
    val_size: float,
    random_state: int,
    *,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
) -> tuple[list[RasterPair], list[RasterPair]]:
    """Hold out whole pairs for validation (never chips of training rasters).

    Args:
        pairs: All pairs.
        val_size: Fraction of pairs held out; at least one when there are two or more pairs.
        random_state: Seed of the shuffle.
        split: ``"random"`` (whole rasters at random), ``"spatial"`` (georeferenced rasters
            grouped by square blocks of ``block_size`` CRS units, by their centres, so adjacent
            rasters stay on one side) or ``"group"`` (whole groups of ``group``); see
            :mod:`landsight.data.splits`.
        block_size: ``split="spatial"``: block side in CRS units (``None`` = from the extent).
        group: ``split="group"``: ``"regex:PATTERN"`` searched in each image path.

    Returns:
        ``(train, val)``; with a single pair, both are that pair (and validation is not held out).

    Raises:
        LandsightValueError: Bad split arguments, rasters without a CRS for ``"spatial"``, or
            fewer than two blocks / groups.
    """
    train, val, _ = split_pairs_info(pairs, val_size, random_state, split=split, block_size=block_size, group=group)
    return train, val


def split_pairs_info(
    pairs: list[RasterPair],
    val_size: float,
    random_state: int,
    *,
    split: str = "random",
    block_size: float | None = None,
    group: str | None = None,
) -> tuple[list[RasterPair], list[RasterPair], SplitInfo]:
    """:func:`split_pairs`, plus the :class:`~landsight.data.splits.SplitInfo` for ``bundle.json``.

    Args:
        pairs: All pairs.
        val_size: Fraction of pairs held out.
        random_state: Seed.
        split: ``"random"``, ``"spatial"`` or ``"group"``.
        block_size: Spatial block side in CRS units.
        group: Group source (``"regex:..."``).

    Returns:
        ``(train, val, info)``.

    Raises:
        LandsightValueError: As :func:`split_pairs`.
    """
    from landsight.data.splits import SplitInfo, assign_splits, check_split_args

    check_split_args(split, block_size, group)
    if len(pairs) < 2 or val_size <= 0:
        info = SplitInfo("none", val_size=val_size, random_state=random_state, fractions={"train": 1.0})
        if len(pairs) < 2 and val_size > 0:
            info.warnings.append("a single image/label pair: validation runs on the training raster")
        return list(pairs), list(pairs), info
    sides, info = assign_splits(
        [p.image for p in pairs], None, split=split, test_size=0.0, val_size=val_size, random_state=random_state,
        block_size=block_size, group=group,
    )  # fmt: skip
    return (
        [p for p, s in zip(pairs, sides, strict=True) if s == "train"],
        [p for p, s in zip(pairs, sides, strict=True) if s == "val"],
        info,
    )
