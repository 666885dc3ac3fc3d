"""Segmentation bundles: ``task = "segmentation"`` in the same bundle folder format.

``bundle.json`` holds the class map, the 1-based band indices, the per-band statistics, the chip
size and context the network was trained with, the architecture, training history and metrics.
``model.onnx`` maps ``image`` float32 ``(N, C, H, W)`` raw band values (normalisation inside the
graph; H and W dynamic, multiples of 32) to ``probabilities`` float32 ``(N, K, H, W)``.
Loading reads JSON and ONNX only; prediction needs onnxruntime, not torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import BundleError
from landsight.runtime import OnnxBundleModel
from landsight.segment.auxiliary import AuxSpec
from landsight.segment.classmap import ClassMap
from landsight.segment.stats import BandStats

TASK = "segmentation"


def model_io(in_chans: int) -> dict[str, Any]:
    """The ``model`` entry of a segmentation ``bundle.json``."""
    return {
        "file": "model.onnx",
        "input": {"name": "image", "dtype": "float32", "layout": "NCHW", "shape": ["N", in_chans, "H", "W"],
                  "normalized": False, "multiple_of": 32},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", "n_classes", "H", "W"]},
    }  # fmt: skip


class SegmentationBundle(OnnxBundleModel):
    """A loaded segmentation bundle; create it with :func:`landsight.load_bundle`.

    Attributes:
        path: The bundle folder.
        meta: ``bundle.json`` as a dict.
        class_map: The :class:`~landsight.segment.classmap.ClassMap`.
        band_stats: The training rasters' :class:`~landsight.segment.stats.BandStats`.
        bands: 1-based bands read from input rasters.
        chip_size: Training chip side, pixels.
        context: Centre size the loss counted (``None`` = the whole chip).
        aux: Auxiliary raster encoding (:class:`~landsight.segment.auxiliary.AuxSpec`) when the
            network was trained with one, else ``None``.
        in_channels: Network input channels: ``len(bands)`` plus the auxiliary one-hot channels.
    """

    def __init__(self, path: Path, meta: dict[str, Any], device: str = "auto") -> None:
        super().__init__(path, meta, device)
        self.class_map = ClassMap.from_dict(meta["class_map"], f"bundle {str(path)!r}")
        self.band_stats = BandStats.from_dict(meta["band_stats"])
        self.bands: list[int] = [int(b) for b in meta["bands"]]
        self.chip_size = int(meta["chip_size"])
        self.context: int | None = None if meta.get("context") is None else int(meta["context"])
        self.classes: list[str] = self.class_map.names
        self.aux = AuxSpec.from_dict(meta.get("aux"))
        self.in_channels = len(self.bands) + (self.aux.channels if self.aux else 0)

    def __repr__(self) -> str:
        return f"SegmentationBundle({str(self.path)!r}, classes={self.classes!r}, bands={self.bands!r})"

    @property
    def margin(self) -> int:
        """Context pixels kept around each predicted core: the trained border when ``context`` is set, else 32."""
        if self.context is not None and self.context < self.chip_size:
            return (self.chip_size - self.context) // 2
        return 32

    def validate(self, input_shape: Sequence[int | str], output_shape: Sequence[int | str]) -> None:
        """Check the metadata against the graph's input ``(N, C, H, W)`` and output ``(N, K, H, W)`` shapes.

        Raises:
            BundleError: The band count or class count differs from the graph's.
        """
        where = f"bundle {str(self.path)!r}"
        channels = len(self.bands) + len((self.meta.get("aux") or {}).get("codes", []))
        if len(input_shape) != 4 or (isinstance(input_shape[1], int) and input_shape[1] != channels):
            raise BundleError(
                f"{where} reads {channels} channel(s) but model.onnx expects input {list(input_shape)!r}; "
                "bundle.json was edited or belongs to another model"
            )
        if len(output_shape) != 4 or (isinstance(output_shape[1], int) and output_shape[1] != len(self.classes)):
            raise BundleError(
                f"{where} lists {len(self.classes)} classes but model.onnx outputs {list(output_shape)!r}; "
                "bundle.json was edited or belongs to another model"
            )

    def predict_proba(self, tiles: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of tiles.

        Args:
            tiles: ``(N, C, H, W)`` raw band values (any numeric dtype), H and W multiples of 32.

        Returns:
            ``(N, K, H, W)`` float32 probabilities.
        """
        return np.asarray(self.model(np.ascontiguousarray(tiles, dtype=np.float32)), dtype=np.float32)

    def predict(self, raster: str | Path, out: str | Path, **kwargs: Any) -> Path:
        """Write the land-cover GeoTIFF of ``raster``; see :func:`landsight.segment.predict.predict_raster`."""
        from landsight.segment.predict import predict_raster

        return predict_raster(self, raster, out, **kwargs)
