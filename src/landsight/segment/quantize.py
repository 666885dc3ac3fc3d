"""Segmentation side of :func:`landsight.quantize.quantize_bundle`: calibration windows and the drop check.

:class:`SegmentationQuantizeData` implements :class:`landsight.models.quantize.QuantizeData`
for segmentation bundles:

* calibration: 256 x 256 windows (half-window stride, reflect-padded at the edges) of the
  bundle's training rasters (``data.train``) or of the rasters given, drawn without replacement;
* drop check: pixel accuracy (and mean IoU, as extra figures) of the float32 and the quantized
  graph on the bundle's held-out validation rasters (``data.val``), or on the ``test`` pairs
  given, through :func:`landsight.segment.evaluate.evaluate_segmentation`.

There is no head to refit: the int8 graph is shipped as the quantizer wrote it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.models.quantize import fingerprint

__all__ = ["SegmentationQuantizeData"]


class SegmentationQuantizeData:
    """Calibration windows and the held-out rasters of a segmentation bundle.

    Args:
        bundle: The loaded float32 segmentation bundle
            (:class:`landsight.segment.bundle.SegmentationBundle`).
        calibration: Glob of image rasters to calibrate on, or ``None`` for the bundle's training
            rasters (``data.train``).
        n: Calibration windows to draw (without replacement, with ``seed``).
        test: Held-out data: a glob of image rasters (with ``test_labels``) or a CSV of pairs;
            ``None`` for the bundle's held-out rasters (``data.val``).
        seed: Seed of the calibration sample.
        progress: Accepted for the common :class:`~landsight.models.quantize.QuantizeData`
            constructor; the comparison runs without progress bars.
        test_labels: Glob of the label rasters paired with ``test``.

    Attributes:
        WINDOW: Side of a calibration window, pixels.
        test_unit: ``"pixels"``.
        calibration_source: Where the calibration rasters come from.
        calibration_fingerprint: Digest of the rasters, window offsets and size (set by
            :meth:`calibration_samples`).
        test_source: Where the held-out pairs come from (set by :meth:`compare`).
        head: Always ``None`` (no separate head).
    """

    WINDOW = 256
    test_unit = "pixels"

    def __init__(
        self, bundle: Any, calibration: str | Path | None, n: int, test: str | Path | None, seed: int,
        progress: bool = False, *, test_labels: str | Path | None = None,
    ) -> None:  # fmt: skip
        self.bundle, self.n, self.seed, self.progress = bundle, n, seed, progress
        self._calibration, self._test, self._test_labels = calibration, test, test_labels
        data = bundle.meta.get("data") or {}
        default = f"{data.get('images')} (train rasters)"
        self.calibration_source = str(calibration) if calibration is not None else default
        self.calibration_fingerprint = ""
        self.test_source = ""
        self.head: dict[str, Any] | None = None

    def calibration_samples(self) -> np.ndarray:
        """Read ``n`` calibration windows of the bundle's bands.

        Returns:
            float32 ``(n_windows, WINDOW, WINDOW, n_bands)`` windows (fewer than ``n`` when the
            rasters hold fewer).

        Raises:
            LandsightValueError: No calibration raster found.
        """
        import glob

        from landsight.cache import file_digest
        from landsight.segment.raster import open_raster, read_window

        data = self.bundle.meta.get("data") or {}
        rasters = (
            sorted(glob.glob(str(self._calibration), recursive=True))
            if self._calibration is not None
            else list(data.get("train") or [])
        )
        rasters = [r for r in rasters if Path(r).is_file()]
        if not rasters:
            raise LandsightValueError(
                f"no calibration raster found ({self.calibration_source!r}); pass a glob of image rasters"
            )
        size = self.WINDOW
        spots: list[tuple[str, int, int]] = []
        for path in rasters:
            with open_raster(path) as src:
                rows = range(0, max(1, src.height - size + 1), size // 2)
                cols = range(0, max(1, src.width - size + 1), size // 2)
                spots += [(path, r, c) for r in rows for c in cols]
        rng = np.random.default_rng(self.seed)
        chosen = sorted(rng.permutation(len(spots))[: self.n].tolist())
        tiles = []
        for i in chosen:
            path, r, c = spots[i]
            with open_raster(path) as src:
                tiles.append(read_window(src, r, c, size, size, bands=self.bundle.bands, pad="reflect"))
        self.calibration_fingerprint = fingerprint(
            [file_digest(p) for p in rasters] + [f"{spots[i][1]},{spots[i][2]}" for i in chosen] + [str(size)]
        )
        return np.stack(tiles).astype(np.float32)

    def finish_int8(self, quantized: Path, work: Path, *, refit_head: bool) -> Path:
        """Nothing to do after int8 quantization (no separate head): returns ``quantized``.

        Args:
            quantized: The int8 graph.
            work: Scratch folder (unused).
            refit_head: Ignored: a segmentation network has no separate head.

        Returns:
            ``quantized``.
        """
        return quantized

    def _pairs(self) -> list[Any]:
        from landsight.segment.pairs import pair_rasters

        if self._test is not None:
            self.test_source = str(self._test) + (f" + {self._test_labels}" if self._test_labels else "")
            return pair_rasters(self._test, self._test_labels).pairs
        data = self.bundle.meta.get("data") or {}
        val = set(data.get("val") or [])
        if not val or not data.get("images"):
            raise LandsightValueError(
                f"bundle {str(self.bundle.path)!r} records no held-out rasters; pass test= (--images/--labels)"
            )
        labels = data.get("labels")
        found = pair_rasters(data["images"], None if labels in (None, "None") else labels,
                             label_field=data.get("label_field"), class_map=self.bundle.class_map)  # fmt: skip
        pairs = [p for p in found.pairs if p.image in val]
        if not pairs:
            raise LandsightValueError(
                f"the held-out rasters of {str(self.bundle.path)!r} ({sorted(val)!r}) are no longer found; pass test="
            )
        self.test_source = f"{data['images']} (held-out rasters: {len(pairs)})"
        return pairs

    def compare(self, fp32: Path, quantized: Path) -> dict[str, Any]:
        """Pixel accuracy and mean IoU of both graphs on the same held-out rasters.

        Args:
            fp32: The float32 graph.
            quantized: The quantized graph (same input and output).

        Returns:
            ``{"metric": "pixel_accuracy", "n_test": pixels scored, "fp32": percent,
            "quantized": percent, "extra": {"mean_iou_fp32", "mean_iou_quantized", "mean_iou_drop"}}``.

        Raises:
            LandsightValueError: No held-out rasters recorded or found, and no ``test`` given.
        """
        from landsight.segment.bundle import SegmentationBundle
        from landsight.segment.evaluate import evaluate_segmentation

        pairs = self._pairs()
        results = {}
        for name, model in (("fp32", fp32), ("quantized", quantized)):
            bundle = SegmentationBundle(self.bundle.path, self.bundle.meta, device="cpu")
            bundle.model_file = str(Path(model).resolve())  # absolute: path / model_file is the model
            results[name] = evaluate_segmentation(bundle, pairs, progress=False)
        return {
            "metric": "pixel_accuracy", "n_test": results["fp32"]["n_pixels"],
            "fp32": 100 * results["fp32"]["pixel_accuracy"], "quantized": 100 * results["quantized"]["pixel_accuracy"],
            "extra": {"mean_iou_fp32": round(results["fp32"]["mean_iou"], 4),
                      "mean_iou_quantized": round(results["quantized"]["mean_iou"], 4),
                      "mean_iou_drop": round(results["fp32"]["mean_iou"] - results["quantized"]["mean_iou"], 4)},
        }  # fmt: skip

    def quantization_entries(self, precision: str) -> dict[str, Any]:
        """No segmentation-specific ``quantization`` entries (mean IoU comes with :meth:`compare`).

        Args:
            precision: ``"int8"`` or ``"fp16"``.

        Returns:
            ``{}``.
        """
        return {}
