"""Random chips (windows) of image / label raster pairs for training, read window by window.

Each chip is a ``chip_size x chip_size`` window at a random position of a random pair (pairs
drawn in proportion to their area), read with rasterio windowed reads, so rasters bigger than
memory are never read whole. Options:

* ``oversample``: that fraction of chips is centred on a block holding a class drawn uniformly
  among the classes present (class-balanced sampling of rare classes). The class presence per
  ``chip_size // 2`` block is indexed once, reading the labels window by window.
* ``context``: the loss counts only the centre ``context x context`` pixels of each chip (the
  seed's 256 -> 128): the border's labels are set to the ignore index, so the network still sees
  the border as context. Without it, every valid pixel counts.
* ``augment``: random flips and 90-degree rotations (overhead imagery has no "up").
* ``aux``: auxiliary categorical rasters (e.g. low-resolution NLCD) appended as one-hot channels
  (:mod:`landsight.segment.auxiliary`).

Labels are mapped to class indices through the class map (codes or RGB colour masks), with
:data:`~landsight.segment.classmap.IGNORE_INDEX` where ignored, nodata or outside the raster.
Vector labels (:class:`~landsight.data.vector_labels.VectorLabels`) are rasterized chip by chip
onto the image's grid (:func:`~landsight.segment.pairs.open_labels`); pixels outside every
polygon are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from landsight.errors import LandsightValueError
from landsight.segment.auxiliary import AuxSpec
from landsight.segment.classmap import IGNORE_INDEX, ClassMap
from landsight.segment.pairs import RasterPair, open_labels


def class_pixels(pairs: Sequence[RasterPair], class_map: ClassMap, *, window: int = 1024) -> np.ndarray:
    """Labelled pixels per class over label rasters (or vector labels), read window by window.

    Args:
        pairs: Pairs whose labels are counted.
        class_map: Maps codes / colours to class indices (ignored pixels are not counted).
        window: Block side in pixels.

    Returns:
        ``(K,)`` int64 pixel counts.
    """
    from landsight.segment.raster import iter_blocks

    k = class_map.num_classes
    counts = np.zeros(k, dtype=np.int64)
    for pair in pairs:
        with open_labels(pair) as src:
            for r, c, h, w in iter_blocks(pair.height, pair.width, window):
                counts += np.bincount(src.read(r, c, h, w, class_map).ravel(), minlength=256)[:k]
    return counts


def class_presence(pair: RasterPair, class_map: ClassMap, block: int) -> np.ndarray:
    """Which classes occur in each ``block x block`` cell of a pair's labels.

    Args:
        pair: The pair whose label raster (or vector labels) is indexed, window by window.
        class_map: Maps codes / colours to class indices.
        block: Cell size in pixels.

    Returns:
        ``(rows, cols, K)`` bool: ``[i, j, k]`` is True when class k occurs in cell (i, j).
    """
    from landsight.segment.raster import iter_blocks

    k = class_map.num_classes
    rows, cols = -(-pair.height // block), -(-pair.width // block)
    out = np.zeros((rows, cols, k), dtype=bool)
    side = max(block, (4096 // block) * block)  # windows of whole cells, at most ~4096 px square
    with open_labels(pair) as src:
        for r, c, h, w in iter_blocks(pair.height, pair.width, side):
            idx = src.read(r, c, h, w, class_map)
            for i in range(0, h, block):
                for j in range(0, w, block):
                    present = np.bincount(idx[i : i + block, j : j + block].ravel(), minlength=256)[:k] > 0
                    out[(r + i) // block, (c + j) // block] = present
    return out


class ChipDataset(Dataset):
    """Random training chips from raster pairs (a map-style dataset of ``length`` chips).

    With ``random_state=None`` every call draws a new chip (from torch's generator, which
    Lightning seeds per worker and per epoch, and the chip index, which Lightning's
    ``DistributedSampler`` shards across DDP processes), so epochs see different chips and
    each process its own; with an integer, chip ``i`` is always the same (validation).

    Args:
        pairs: Image / label pairs (sizes checked by :func:`~landsight.segment.pairs.pair_rasters`).
        class_map: Label codes / colours -> class indices.
        bands: 1-based image bands read (``None`` = all).
        chip_size: Chip side in pixels.
        length: Chips per epoch.
        context: Centre size counted by the loss (``None`` = all valid pixels); must be
            ``<= chip_size``.
        oversample: Fraction of chips centred on a cell holding a class drawn uniformly among
            the present classes (0 = plain uniform positions).
        augment: Random flips and 90-degree rotations.
        random_state: Fixed seed for reproducible chips, or ``None``.
        aux: Auxiliary rasters appended as one-hot channels (``None`` = none).

    Items: ``{"image": x, "mask": y}``: ``x`` float32 ``(C, chip_size, chip_size)`` raw band
    values (the model normalises; with ``aux``, ``C = len(bands) + aux.channels``, the one-hot
    channels last), ``y`` int64 ``(chip_size, chip_size)`` class indices, :data:`IGNORE_INDEX`
    where ignored (collated: ``(N, C, chip_size, chip_size)`` and ``(N, chip_size, chip_size)``).

    Raises:
        LandsightValueError: Bad sizes or an empty pair list.
    """

    def __init__(
        self,
        pairs: Sequence[RasterPair],
        class_map: ClassMap,
        *,
        bands: Sequence[int] | None = None,
        chip_size: int = 256,
        length: int = 1000,
        context: int | None = None,
        oversample: float = 0.0,
        augment: bool = False,
        random_state: int | None = None,
        aux: AuxSpec | None = None,
    ) -> None:
        if not pairs:
            raise LandsightValueError("ChipDataset needs at least one image/label pair")
        if chip_size < 8 or length < 1:
            raise LandsightValueError(f"chip_size must be >= 8 and length >= 1, got {chip_size!r}, {length!r}")
        if context is not None and not 0 < context <= chip_size:
            raise LandsightValueError(f"context must be in 1..chip_size ({chip_size}), got {context!r}")
        if not 0 <= oversample <= 1:
            raise LandsightValueError(f"oversample must be in [0, 1], got {oversample!r}")
        self.pairs, self.class_map, self.bands = list(pairs), class_map, None if bands is None else list(bands)
        self.chip_size, self.length, self.context = chip_size, length, context
        self.oversample, self.augment, self.random_state = oversample, augment, random_state
        self.aux = aux
        areas = np.array([p.height * p.width for p in self.pairs], dtype=np.float64)
        self._weights = areas / areas.sum()
        self.block = max(8, chip_size // 2)
        self._presence: list[np.ndarray] | None = None
        if oversample > 0:
            self._presence = [class_presence(p, class_map, self.block) for p in self.pairs]
        self._handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open rasters stay in their process
        return state

    def _open_aux(self, pair: RasterPair) -> Any:
        import contextlib

        from landsight.segment.auxiliary import open_aligned

        assert self.aux is not None
        key = f"aux:{pair.image}"
        if key not in self._handles:
            stack = contextlib.ExitStack()
            self._handles[key] = (stack, stack.enter_context(open_aligned(self.aux.path_for(pair.image),
                                                                          self._open(pair.image))))  # fmt: skip
        return self._handles[key][1]

    def _open(self, path: str) -> Any:
        if path not in self._handles:
            from landsight.segment.raster import open_dataset

            self._handles[path] = open_dataset(path)
        return self._handles[path]

    def _labels(self, pair: RasterPair) -> Any:
        """The pair's labels opened for window reads (a label raster, or vector labels on the image grid)."""
        key = f"labels:{pair.image}"
        if key not in self._handles:
            self._handles[key] = open_labels(pair)
        return self._handles[key]

    def _rng(self, index: int) -> np.random.Generator:
        if self.random_state is not None:
            return np.random.default_rng([self.random_state, index])
        # The index joins the draw: DDP ranks share torch's seed but get disjoint indices from
        # their DistributedSampler, so each process trains on its own chips.
        return np.random.default_rng([int(torch.randint(0, 2**62, (1,)).item()), index])

    def _position(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """Pick ``(pair index, top row, left col)`` of the next chip."""
        s = self.chip_size
        if self._presence is not None and rng.random() < self.oversample:
            present = np.stack([p.any(axis=(0, 1)) for p in self._presence]).any(axis=0)
            cls = int(rng.choice(np.flatnonzero(present)))
            holders = [i for i, p in enumerate(self._presence) if p[..., cls].any()]
            i = int(rng.choice(holders))
            cells = np.argwhere(self._presence[i][..., cls])
            ci, cj = cells[rng.integers(len(cells))]
            pair = self.pairs[i]
            r = int(ci * self.block + rng.integers(self.block) - s // 2)
            c = int(cj * self.block + rng.integers(self.block) - s // 2)
            return i, int(np.clip(r, min(0, pair.height - s), max(0, pair.height - s))), int(
                np.clip(c, min(0, pair.width - s), max(0, pair.width - s)))  # fmt: skip
        i = int(rng.choice(len(self.pairs), p=self._weights))
        pair = self.pairs[i]
        return i, int(rng.integers(max(1, pair.height - s + 1))), int(rng.integers(max(1, pair.width - s + 1)))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Read chip ``index`` (see the class docstring)."""
        from landsight.segment.raster import read_window

        rng = self._rng(index)
        i, r, c = self._position(rng)
        pair, s = self.pairs[i], self.chip_size
        image, valid = read_window(self._open(pair.image), r, c, s, s, bands=self.bands, masks=True)
        y = np.where(valid, self._labels(pair).read(r, c, s, s, self.class_map), IGNORE_INDEX)
        if self.context is not None and self.context < s:
            m0 = (s - self.context) // 2
            centre = np.full_like(y, IGNORE_INDEX)
            centre[m0 : m0 + self.context, m0 : m0 + self.context] = y[m0 : m0 + self.context, m0 : m0 + self.context]
            y = centre
        x = np.asarray(image, dtype=np.float32)
        if self.aux is not None:
            from landsight.segment.auxiliary import read_onehot

            x = np.concatenate([x, read_onehot(self._open_aux(pair), self.aux, r, c, s, s)])
        if self.augment:
            k = int(rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(x))
        return {"image": image, "mask": torch.from_numpy(np.ascontiguousarray(y).astype(np.int64))}
