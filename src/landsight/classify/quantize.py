"""Classification side of :func:`landsight.quantize.quantize_bundle`: calibration images, head refit, drop check.

:class:`ClassificationQuantizeData` implements :class:`landsight.models.quantize.QuantizeData`
for classification bundles:

* calibration: decoded training images (the bundle's train split, reproduced from
  ``bundle.json``'s ``data``: same source, test size, seed and split method), or the images given;
* head refit (int8 only): the scikit-learn head of a ``train`` bundle is refit, with the same
  settings and ``C``, on the int8 backbone's features of the images it was fitted on:
  quantization-aware fitting of the head alone, which recovers most of the accuracy that
  post-training quantization of the depthwise backbone loses (``benchmarks/RESULTS.md``). Which
  heads can be refit is read from ``bundle.json``'s ``head.kind`` (and ``engine``), not from
  class names;
* drop check: accuracy of the float32 and the quantized graph on the bundle's own test split (or
  the labelled ``test`` data given), on the same decoded images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError
from landsight.models.heads import HEADS
from landsight.models.quantize import fingerprint, run_all

__all__ = ["ClassificationQuantizeData"]


class ClassificationQuantizeData:
    """Calibration images and the held-out split of a classification bundle.

    Args:
        bundle: The loaded float32 classification bundle (:class:`landsight.classify.bundle.Bundle`).
        calibration: Calibration images (folder, glob, list file), or ``None`` for the bundle's
            training split (``data.source``).
        n: Calibration images to draw (without replacement, with ``seed``).
        test: Labelled held-out data (anything :func:`landsight.data.catalog.build_catalog`
            reads), or ``None`` for the bundle's reproducible test split.
        seed: Seed of the calibration sample and of a refit head.
        progress: Progress bar over the head-refit pass.
        test_labels: Not used by classification (labels come with ``test``); accepted for the
            common :class:`~landsight.models.quantize.QuantizeData` constructor.

    Attributes:
        test_unit: ``"images"``.
        calibration_source: Where the calibration images come from.
        calibration_fingerprint: Digest of the calibration images' bytes (set by
            :meth:`calibration_samples`).
        test_source: Where the held-out images come from (set by :meth:`compare`).
        head: ``bundle.json``'s ``head`` of a refit head, else ``None``.
        head_refit: What the refit did (``n_images``, ``images``, ``C``), or why it was not done.
    """

    test_unit = "images"

    def __init__(
        self, bundle: Any, calibration: str | Path | None, n: int, test: str | Path | None, seed: int,
        progress: bool = False, *, test_labels: str | Path | None = None,
    ) -> None:  # fmt: skip
        del test_labels  # classification labels come with ``test``
        self.bundle, self.n, self.seed, self.progress = bundle, n, seed, progress
        self._calibration, self._test = calibration, test
        self._catalog: Any = None
        default = f"{self._data('source')} (train split)"
        self.calibration_source = str(calibration) if calibration is not None else default
        self.calibration_fingerprint = ""
        self.test_source = ""
        self.head: dict[str, Any] | None = None  # bundle.json "head" of a refit head
        self.head_refit: dict[str, Any] | str = "not asked"

    def _data(self, key: str) -> Any:
        return (self.bundle.meta.get("data") or {}).get(key)

    def _split(self) -> Any:
        """The bundle's training catalog with its ``split`` column, as ``landsight.train`` made it (or None)."""
        import pandas as pd

        from landsight.data.splitting import training_catalog

        if self._catalog is None:
            data = self.bundle.meta.get("data") or {}
            if (
                "source" not in data
                or "random_state" not in data
                or (data.get("test_size") is None and data.get("test_source") is None)
            ):
                return None
            info = data.get("split") or {}
            method = info.get("method", "random")
            skipped = self.bundle.path / "skipped.csv"
            exclude = pd.read_csv(skipped)["path"].tolist() if skipped.is_file() else []
            catalog = training_catalog(
                data["source"], test=data.get("test_source"), test_size=float(data.get("test_size") or 0),
                random_state=int(data["random_state"]), exclude=exclude,
                split=method if method in ("random", "spatial", "group") else "random",
                block_size=info.get("block_size"), group=info.get("group"),
            )  # fmt: skip
            dropped = {d["path"] for d in data.get("dropped_duplicates") or []}
            self._catalog = catalog[~catalog["path"].isin(dropped)]
        return self._catalog

    def calibration_samples(self) -> np.ndarray:
        """Decode ``n`` calibration images drawn with ``seed``.

        Returns:
            uint8 ``(n_read, H, W, C)`` images, resized as the bundle scores them (unreadable
            files are left out).

        Raises:
            LandsightValueError: No calibration images given and none recorded, or none readable.
        """
        from landsight.data.listing import list_images

        if self._calibration is not None:
            paths = list_images(self._calibration)
        else:
            split = self._split()
            if split is None:
                if self._data("source") is None:
                    raise LandsightValueError(
                        f"bundle {str(self.bundle.path)!r} records no training data; pass calibration images"
                    )
                from landsight.data.catalog import build_catalog

                paths = build_catalog(self._data("source"))["path"].tolist()
            else:
                paths = split.loc[split["split"] == "train", "path"].tolist()
        rng = np.random.default_rng(self.seed)
        chosen = [paths[i] for i in sorted(rng.permutation(len(paths))[: self.n])]
        images, digests = self._decode(chosen)
        if not len(images):
            raise LandsightValueError(f"no calibration image could be read from {self.calibration_source!r}")
        self.calibration_fingerprint = fingerprint(sorted(digests))
        return images

    def _decode(self, paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        from landsight.data.loader import iter_batches

        arrays, digests = [], []
        for batch in iter_batches(list(paths), self.bundle.preprocessing, batch_size=32):
            for item in batch.items:
                if item.array is not None:
                    arrays.append(item.array)
                    digests.append(item.sha256)
        if not arrays:
            return np.empty((0,), dtype=np.uint8), []
        return np.stack(arrays), digests

    def _head_images(self) -> tuple[list[str], list[str]] | str:
        """Paths and labels the shipped head was fitted on, or why they cannot be known.

        A head can be refit when ``bundle.json`` says landsight fitted it with scikit-learn:
        ``head.kind`` is one of :data:`landsight.models.heads.HEADS` and the bundle was not
        trained on Spark (``engine.name``). Fine-tuned bundles (``kind: finetune``) have their
        head inside the network.
        """
        head = self.bundle.meta.get("head") or {}
        engine = (self.bundle.meta.get("engine") or {}).get("name", "local")
        if head.get("kind") not in HEADS or engine != "local":
            what = head.get("kind") if engine == "local" else f"{head.get('kind')} ({engine})"
            return f"head {what!r} is not a scikit-learn head landsight fits"
        split = self._split()
        if split is None:
            return "bundle.json records no reproducible training split"
        fitted = split if self._data("refit") else split[split["split"] == "train"]
        return fitted["path"].tolist(), fitted["label"].tolist()

    def finish_int8(self, quantized: Path, work: Path, *, refit_head: bool) -> Path:
        """Refit the head on the int8 features when asked (:meth:`refit_head`); else keep ``quantized``.

        Args:
            quantized: The int8 graph (image -> probabilities).
            work: Scratch folder.
            refit_head: Whether to refit.

        Returns:
            The graph to ship.
        """
        return self.refit_head(quantized, work) if refit_head else quantized

    def refit_head(self, quantized: Path, work: Path) -> Path:
        """Refit the head on the int8 backbone's features; return the new graph (``quantized`` when not possible).

        Args:
            quantized: The int8 graph (uint8 ``image`` ``(n, H, W, C)`` -> float32
                ``probabilities`` ``(n, n_classes)``) with its float32 ``features`` tensor.
            work: Scratch folder.

        Returns:
            Path of the int8 backbone merged with the refit head, or ``quantized`` unchanged
            when the head cannot be refit (``self.head_refit`` then says why).

        Raises:
            LandsightValueError: The refit head's classes differ from the bundle's.
        """
        import onnx
        import onnx.utils

        from landsight.data.loader import iter_batches
        from landsight.models.heads import describe_head, fit_head, head_from_description
        from landsight.models.onnx_graph import FEATURES_OUTPUT, IMAGE_INPUT, head_to_onnx, merge_backbone_head
        from landsight.progress import progress_bar
        from landsight.runtime import OnnxModel

        images = self._head_images()
        if isinstance(images, str):
            self.head_refit = f"not refit: {images}"
            return quantized
        paths, labels = images
        backbone = work / "quantized_backbone.onnx"
        try:
            onnx.utils.extract_model(str(quantized), str(backbone), [IMAGE_INPUT], [FEATURES_OUTPUT])
        except Exception as exc:  # noqa: BLE001  (a graph without a features tensor: nothing to refit)
            self.head_refit = f"not refit: no {FEATURES_OUTPUT!r} tensor in the graph ({type(exc).__name__})"
            return quantized
        model = OnnxModel(backbone, device="cpu")
        by_path = dict(zip(paths, labels, strict=True))
        features, y = [], []
        with progress_bar(len(paths), "int8 features for the head", enabled=self.progress) as bar:
            for batch in iter_batches(paths, self.bundle.preprocessing, batch_size=32):
                idx, stack = batch.stack()
                if stack is not None:
                    features.append(np.asarray(model(stack), dtype=np.float32))
                    y += [by_path[batch.items[i].path] for i in idx]
                bar.advance(len(batch.items))
        if not features or sorted(set(y)) != sorted(self.bundle.classes):
            self.head_refit = "not refit: the head's training images no longer cover every class"
            return quantized
        old = self.bundle.meta["head"]
        params = old.get("params", {})
        head = head_from_description(old, random_state=self.seed)  # the same head, settings and C
        X = np.concatenate(features)
        fit_head(head, X, np.asarray(y, dtype=object))
        if [str(c) for c in head.classes_] != list(self.bundle.classes):
            raise LandsightValueError(f"refit head classes {list(head.classes_)!r} != bundle classes")
        merged = merge_backbone_head(onnx.load(str(backbone)), head_to_onnx(head, X.shape[1]))
        out = work / "quantized_refit.onnx"
        onnx.save(merged, str(out))
        self.head = {**describe_head(head), "fitted_on": "int8 features", "float32_head": old}
        self.head_refit = {"n_images": len(y), "images": "all images" if self._data("refit") else "train split",
                           "C": params.get("C")}  # fmt: skip
        return out

    def _test_set(self) -> tuple[list[str], list[str]]:
        from landsight.data.catalog import build_catalog

        if self._test is not None:
            catalog = build_catalog(self._test, min_classes=1)
            self.test_source = str(self._test)
            return catalog["path"].tolist(), catalog["label"].tolist()
        split = self._split()
        if split is None or not (split["split"] == "test").any():
            raise LandsightValueError(
                f"bundle {str(self.bundle.path)!r} records no reproducible test split (fine-tuned bundles, or "
                "trained with test_size=0); pass labelled held-out data with test= (--test) to measure the drop"
            )
        test = split[split["split"] == "test"]
        refit = " (the shipped head was refit on it too)" if self._data("refit") else ""
        self.test_source = f"{self._data('test_source') or self._data('source')} (test split){refit}"
        return test["path"].tolist(), test["label"].tolist()

    def compare(self, fp32: Path, quantized: Path) -> dict[str, Any]:
        """Accuracy of both graphs on the same decoded held-out images.

        Args:
            fp32: The float32 graph.
            quantized: The quantized graph (same input and output).

        Returns:
            ``{"metric": "accuracy", "n_test": images scored, "fp32": percent, "quantized": percent}``.

        Raises:
            LandsightValueError: No test split recorded and no ``test`` given, test labels that
                are not classes of the bundle, or no test image readable.
        """
        from landsight.classify.evaluate import compute_metrics
        from landsight.data.loader import iter_batches

        paths, labels = self._test_set()
        unknown = sorted(set(labels) - set(self.bundle.classes))
        if unknown:
            raise LandsightValueError(f"test labels {unknown!r} are not classes of the bundle {self.bundle.classes!r}")
        batches, kept = [], []
        for batch in iter_batches(paths, self.bundle.preprocessing, batch_size=32):
            idx, stack = batch.stack()
            if stack is not None:
                batches.append(stack)
                kept += [batch.items[i].path for i in idx]
        if not batches:
            raise LandsightValueError(f"no test image could be read from {self.test_source!r}")
        by_path = dict(zip(paths, labels, strict=True))
        y = [by_path[p] for p in kept]
        scores = {}
        for name, model in (("fp32", fp32), ("quantized", quantized)):
            proba = np.concatenate(run_all(model, batches))
            scores[name] = 100 * compute_metrics(y, proba, self.bundle.classes)["accuracy"]
        return {"metric": "accuracy", "n_test": len(y), **scores}

    def quantization_entries(self, precision: str) -> dict[str, Any]:
        """``head_refit`` for int8 bundles (what the refit did, why not, or ``"not asked"``); nothing for fp16.

        Args:
            precision: ``"int8"`` or ``"fp16"``.

        Returns:
            Entries for ``bundle.json``'s ``quantization``.
        """
        return {"head_refit": self.head_refit} if precision == "int8" else {}
