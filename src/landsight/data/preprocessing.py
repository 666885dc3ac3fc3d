"""Preprocessing: how a decoded image becomes a backbone input (band choice, resize, normalisation).

It sits with the data code that applies it (the loader, the dataset, the Spark scorer), as timm
keeps ``resolve_data_config`` in ``timm/data/config.py``; each backbone describes its own
(:attr:`landsight.models.backbones.Backbone.preprocessing`), and bundles store it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Preprocessing"]


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a backbone input: band choice, resize, then normalisation.

    The whole tile is resized to ``input_size`` (no centre crop: aerial tiles have no centred
    subject and edge content matters). Normalisation ``(x / 255 - mean) / std`` happens inside
    the exported ONNX graph, so the graph takes the resized uint8 image.

    Attributes:
        input_size: ``(height, width)`` in pixels of the network input.
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"`` (resampling of the resize).
        mean: Per-channel mean, in [0, 1] units, one value per input channel.
        std: Per-channel standard deviation, in [0, 1] units.
        bands: 1-based band indices read from each image (``None`` = RGB).

    """

    input_size: tuple[int, int] = (224, 224)
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    bands: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the ``preprocessing`` entry of ``bundle.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Build from :meth:`to_dict` output."""
        bands = d.get("bands")
        return cls(
            input_size=tuple(d["input_size"]),  # type: ignore[arg-type]
            interpolation=str(d["interpolation"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            bands=None if bands is None else tuple(int(b) for b in bands),
        )

    @property
    def digest(self) -> str:
        """A short stable hash of these settings (part of the feature-cache key)."""
        return hashlib.sha256(repr(sorted(self.to_dict().items())).encode()).hexdigest()[:12]

    def resize(self, array: np.ndarray) -> np.ndarray:
        """Resize one decoded image to the network input size.

        Args:
            array: ``(H, W, C)`` uint8 image.

        Returns:
            ``(input_size[0], input_size[1], C)`` uint8 array.

        """
        from PIL import Image

        h, w = self.input_size
        if array.shape[:2] == (h, w):
            return array
        resample = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST,
        }[self.interpolation]
        if array.shape[2] == 3:
            return np.asarray(Image.fromarray(array, "RGB").resize((w, h), resample))
        bands = [
            np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, i])).resize((w, h), resample))
            for i in range(array.shape[2])
        ]
        return np.stack(bands, axis=2)
