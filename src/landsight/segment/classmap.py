"""Class maps: raster codes -> training classes, names, display colours, the ignore index.

A class map is a small YAML file (two ship with landsight: ``chesapeake`` and ``dubai``)::

    name: chesapeake
    ignore:
      codes: [0]                     # label codes never trained on nor scored (unknown / nodata)
      mask_colours: [[0, 0, 0]]      # colours of RGB masks treated likewise (optional)
    classes:
      - {code: 1, name: water, colour: [0, 112, 255]}
      - {code: 4, name: barren_impervious, colour: [156, 156, 156], codes: [4, 5, 6]}

Each class has an output ``code`` (written into predicted rasters), a ``name``, a display
``colour`` (the predicted raster's colour table) and the label ``codes`` that map into it
(default ``[code]``; several codes are lumped, as the seed tutorial lumped Chesapeake 4, 5 and 6).
Colour-coded RGB masks are converted with ``mask_colours`` (default ``[colour]`` when ``colour``
is given; a class without ``colour`` gets a ``tab10`` display colour and no mask colour). Internally a
class is its position in ``classes`` (0..K-1); :data:`IGNORE_INDEX` marks pixels left out.
Codes not in the map are ignored too, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import DataNotFoundError, LandsightValueError

IGNORE_INDEX = 255
"""Class index of pixels that are not trained on nor scored (unknown, unmapped, nodata)."""

NODATA_CODE = 255
"""Code written into predicted rasters where the input is nodata."""

BUILTIN = ("chesapeake", "dubai")

#: Display colours of classes whose map gives none (matplotlib's ``tab10``).
DEFAULT_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                   (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))  # fmt: skip


def _rgb(value: Any, where: str) -> tuple[int, int, int]:
    try:
        r, g, b = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise LandsightValueError(f"{where}: a colour must be three integers [r, g, b], got {value!r}") from exc
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise LandsightValueError(f"{where}: colour components must be in 0..255, got {value!r}")
    return r, g, b


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Pack ``(..., 3)`` uint8 colours into ``(...)`` int32 ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@dataclass(frozen=True)
class SegmentationClass:
    """One output class of a class map.

    Attributes:
        code: Code written into predicted rasters (0..254).
        name: Class name.
        colour: Display colour ``(r, g, b)`` of the predicted raster's colour table.
        codes: Label codes mapped into this class.
        mask_colours: Colours of RGB masks mapped into this class.
    """

    code: int
    name: str
    colour: tuple[int, int, int]
    codes: tuple[int, ...]
    mask_colours: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class ClassMap:
    """A parsed class map (see the module docstring for the YAML format).

    Attributes:
        name: Map name.
        classes: Output classes; class index ``i`` is ``classes[i]``.
        ignore_codes: Label codes left out of training and scoring.
        ignore_colours: RGB mask colours left out likewise.
    """

    name: str
    classes: tuple[SegmentationClass, ...]
    ignore_codes: tuple[int, ...] = ()
    ignore_colours: tuple[tuple[int, int, int], ...] = field(default_factory=tuple)

    @property
    def num_classes(self) -> int:
        """Number of output classes K."""
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    @property
    def codes(self) -> list[int]:
        """Output codes in index order."""
        return [c.code for c in self.classes]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "class map") -> ClassMap:
        """Build and validate a class map from its YAML / JSON dict.

        Args:
            d: The parsed document (``name``, ``classes``, optional ``ignore``).
            source: Where it came from, for error messages.

        Returns:
            The class map.

        Raises:
            LandsightValueError: Missing or malformed entries, duplicate codes or colours, codes
                outside 0..65535, output codes outside 0..254.
        """
        if not isinstance(d, dict) or not isinstance(d.get("classes"), list) or not d["classes"]:
            raise LandsightValueError(f"{source}: expected a mapping with a non-empty 'classes' list, got {d!r:.200}")
        ignore = d.get("ignore") or {}
        ignore_codes = tuple(int(c) for c in ignore.get("codes", []))
        ignore_colours = tuple(_rgb(c, source) for c in ignore.get("mask_colours", []))
        classes = []
        for i, entry in enumerate(d["classes"]):
            if not isinstance(entry, dict) or "code" not in entry or "name" not in entry:
                raise LandsightValueError(f"{source}: classes[{i}] needs 'code' and 'name', got {entry!r}")
            code = int(entry["code"])
            if not 0 <= code < NODATA_CODE:
                raise LandsightValueError(f"{source}: classes[{i}] code must be in 0..254, got {code!r}")
            colour = _rgb(entry.get("colour", DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]), source)
            codes = tuple(int(c) for c in entry.get("codes", [code]))
            # Colour masks use the display colour unless told otherwise (only when it was given).
            masks = tuple(_rgb(c, source) for c in entry.get("mask_colours", [colour] if "colour" in entry else []))
            classes.append(SegmentationClass(code, str(entry["name"]), colour, codes, masks))
        all_codes = [c for k in classes for c in k.codes] + list(ignore_codes)
        dup = sorted({c for c in all_codes if all_codes.count(c) > 1})
        if dup or any(not 0 <= c <= 65535 for c in all_codes):
            raise LandsightValueError(f"{source}: label codes must be unique and in 0..65535; duplicated: {dup!r}")
        out_codes = [k.code for k in classes]
        if len(set(out_codes)) != len(out_codes):
            raise LandsightValueError(f"{source}: output codes must be unique, got {out_codes!r}")
        all_colours = [c for k in classes for c in k.mask_colours] + list(ignore_colours)
        if len(set(all_colours)) != len(all_colours):
            raise LandsightValueError(f"{source}: mask colours must be unique, got {all_colours!r}")
        return cls(str(d.get("name", "classes")), tuple(classes), ignore_codes, ignore_colours)

    def to_dict(self) -> dict[str, Any]:
        """JSON / YAML-ready dict that :meth:`from_dict` reads back (the bundle's ``class_map``)."""
        return {
            "name": self.name,
            "ignore": {"codes": list(self.ignore_codes), "mask_colours": [list(c) for c in self.ignore_colours]},
            "classes": [
                {"code": c.code, "name": c.name, "colour": list(c.colour), "codes": list(c.codes),
                 "mask_colours": [list(m) for m in c.mask_colours]}
                for c in self.classes
            ],
        }  # fmt: skip

    def code_lut(self) -> np.ndarray:
        """Lookup table from label code to class index.

        Returns:
            ``(65536,)`` uint8: class index for mapped codes, :data:`IGNORE_INDEX` for ignored
            and unmapped codes. Index it with a uint8 or uint16 label array.
        """
        lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
        for i, c in enumerate(self.classes):
            lut[list(c.codes)] = i
        return lut

    def remap(self, labels: np.ndarray) -> np.ndarray:
        """Map label codes to class indices.

        Args:
            labels: ``(H, W)`` integer label codes (uint8 or uint16; other integer types are
                range-checked).

        Returns:
            ``(H, W)`` uint8 class indices; :data:`IGNORE_INDEX` for ignored / unmapped codes.
        """
        if labels.dtype in (np.uint8, np.uint16):
            return self.code_lut()[labels]
        bad = (labels < 0) | (labels > 65535)
        out = self.code_lut()[np.where(bad, 0, labels).astype(np.uint16)]
        out[bad] = IGNORE_INDEX
        return out

    def colours_to_index(self, rgb: np.ndarray) -> np.ndarray:
        """Convert a colour-coded RGB mask to class indices through the ``mask_colours`` table.

        Args:
            rgb: ``(H, W, 3)`` or ``(3, H, W)`` uint8 mask (channel axis detected by size 3).

        Returns:
            ``(H, W)`` uint8 class indices; :data:`IGNORE_INDEX` for ignore colours and for
            colours not in the table.
        """
        if rgb.ndim != 3 or 3 not in (rgb.shape[0], rgb.shape[-1]):
            raise LandsightValueError(f"a colour mask must be (H, W, 3) or (3, H, W), got shape {rgb.shape!r}")
        if rgb.shape[-1] != 3:
            rgb = np.moveaxis(rgb, 0, -1)
        keys, values = [], []
        for i, c in enumerate(self.classes):
            for m in c.mask_colours:
                keys.append(_pack(np.array(m)))
                values.append(i)
        if not keys:
            raise LandsightValueError(
                f"class map {self.name!r} has no mask_colours, so a 3-band colour mask cannot be read; "
                "give each class its mask colour(s) or use a 1-band coded label raster"
            )
        order = np.argsort(keys)
        sorted_keys = np.asarray(keys, dtype=np.int32)[order]
        sorted_values = np.asarray(values, dtype=np.uint8)[order]
        packed = _pack(rgb)
        pos = np.clip(np.searchsorted(sorted_keys, packed), 0, len(sorted_keys) - 1)
        found = sorted_keys[pos] == packed
        return np.where(found, sorted_values[pos], IGNORE_INDEX).astype(np.uint8)

    def index_to_code(self) -> np.ndarray:
        """Lookup table class index -> output code: ``(256,)`` uint8, :data:`NODATA_CODE` elsewhere."""
        lut = np.full(256, NODATA_CODE, dtype=np.uint8)
        lut[: self.num_classes] = self.codes
        return lut

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table of predicted rasters: output code -> ``(r, g, b, 255)``; nodata is transparent."""
        table = {c.code: (*c.colour, 255) for c in self.classes}
        table[NODATA_CODE] = (0, 0, 0, 0)
        return table


def load_class_map(source: str | Path | dict[str, Any]) -> ClassMap:
    """Load a class map from a YAML file, a built-in name (``"chesapeake"``, ``"dubai"``) or a dict.

    Args:
        source: Path of a ``.yaml`` / ``.yml`` / ``.json`` file, a built-in name, or the parsed dict.

    Returns:
        The validated :class:`ClassMap`.

    Raises:
        DataNotFoundError: The file does not exist and ``source`` is not a built-in name.
        LandsightValueError: The file is not valid YAML or not a valid class map.

    Example:
        >>> load_class_map("chesapeake").names
        ['water', 'trees', 'herbaceous', 'barren_impervious']
    """
    import yaml

    if isinstance(source, dict):
        return ClassMap.from_dict(source)
    if str(source) in BUILTIN and not Path(source).exists():
        text = resources.files("landsight.segment").joinpath("classmaps", f"{source}.yaml").read_text()
        return ClassMap.from_dict(yaml.safe_load(text), f"built-in class map {str(source)!r}")
    path = Path(source)
    if not path.is_file():
        raise DataNotFoundError(
            f"class map {str(path)!r} does not exist; give a YAML file or one of the built-in names {list(BUILTIN)!r}"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LandsightValueError(f"class map {str(path)!r} is not valid YAML: {exc}") from exc
    return ClassMap.from_dict(doc, f"class map {str(path)!r}")


def labels_to_index(labels: np.ndarray, class_map: ClassMap) -> np.ndarray:
    """Convert a label window read from a raster to class indices, whatever its form.

    Args:
        labels: ``(1, H, W)`` codes (any integer dtype) or ``(3, H, W)`` / ``(4, H, W)`` uint8
            colour mask (a 4th, alpha band is dropped), as read by rasterio.
        class_map: The class map.

    Returns:
        ``(H, W)`` uint8 class indices (:data:`IGNORE_INDEX` where ignored).

    Raises:
        LandsightValueError: Any other band count.
    """
    if labels.shape[0] == 1:
        return class_map.remap(labels[0])
    if labels.shape[0] in (3, 4):
        return class_map.colours_to_index(labels[:3])
    raise LandsightValueError(
        f"label rasters must have 1 band (codes) or 3 bands (RGB colour mask), got {labels.shape[0]} bands"
    )

