"""Quantized bundles: int8 (CPU) and fp16 (GPU) copies of a bundle's graph, refused when they lose accuracy.

:func:`quantize_bundle` turns a classification or segmentation bundle into a new bundle whose
``model.onnx`` is quantized and whose inputs, outputs and metadata are otherwise the same, so
every scorer (``predict``, Spark, ``serve``, maps, ``segment predict``) takes it as it is.

* ``precision="int8"``: static quantization with onnxruntime's own tools (QDQ format,
  per-channel symmetric int8 weights, asymmetric uint8 activations, ranges calibrated on a few
  hundred real inputs; :func:`landsight.models.quantize.quantize_int8`). The scikit-learn head
  of a ``train`` bundle is then refit (same settings and ``C``) on the int8 backbone's features
  of the images it was fitted on, which recovers most of the accuracy that post-training
  quantization of the depthwise backbone loses
  (:meth:`landsight.classify.quantize.ClassificationQuantizeData.refit_head`,
  ``benchmarks/RESULTS.md``).
* ``precision="fp16"``: float16 weights and activations, inputs and outputs kept
  (:func:`landsight.models.quantize.convert_fp16`). onnxruntime has fast float16 kernels on
  CUDA only; on a CPU such a bundle runs, slower than float32, which ``bundle.json`` says
  (``quantization.fast_on``).

The accuracy lost is measured on held-out data before anything is written: for classification
the bundle's own test split (reproduced from ``bundle.json``'s ``data``: same source, test size
and seed; or ``test`` data given), for segmentation the bundle's held-out validation rasters (or
``test`` pairs). Both the float32 and the quantized graph score the same decoded inputs. A drop of
more than ``max_drop`` points (accuracy, or pixel accuracy) raises :class:`QuantizationDropError`
and writes nothing.

This module is the orchestration only. The graph conversion is task-neutral
(:mod:`landsight.models.quantize`); calibration inputs, any head refit and the drop check belong
to each task (:data:`QUANTIZE_DATA` names the class, implementing
:class:`landsight.models.quantize.QuantizeData`, imported only when a bundle of that task is
quantized).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from landsight.errors import LandsightValueError
from landsight.models.quantize import (
    CALIBRATION_METHODS,
    PRECISIONS,
    QuantizeData,
    convert_fp16,
    prepared_float_model,
    quantize_int8,
)
from landsight.outputs import scratch_dir

__all__ = [
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "QUANTIZE_DATA",
    "QuantizationDropError",
    "QuantizeResult",
    "quantize_bundle",
    "quantized_sibling",
    "quantize_trained",
]

#: Task (``bundle.json``'s ``task``) -> ``"module:class"`` of its
#: :class:`~landsight.models.quantize.QuantizeData`, imported when a bundle of that task is quantized.
QUANTIZE_DATA = {
    "classification": "landsight.classify.quantize:ClassificationQuantizeData",
    "segmentation": "landsight.segment.quantize:SegmentationQuantizeData",
}
#: Where each precision has a fast path in onnxruntime.
_FAST_ON = {"int8": "cpu", "fp16": "cuda"}


class QuantizationDropError(LandsightValueError):
    """A quantized graph lost more accuracy on held-out data than allowed; nothing was written.

    Attributes:
        fp32: The float32 bundle's score (percent).
        quantized: The quantized graph's score (percent).
        drop: ``fp32 - quantized``, percentage points.
    """

    def __init__(self, message: str, *, fp32: float, quantized: float, drop: float) -> None:
        super().__init__(message)
        self.fp32, self.quantized, self.drop = fp32, quantized, drop


@dataclass
class QuantizeResult:
    """What :func:`quantize_bundle` wrote and measured.

    Attributes:
        bundle_path: The quantized bundle folder.
        precision: ``"int8"`` or ``"fp16"``.
        metric: Name of the score compared (``"accuracy"`` or ``"pixel_accuracy"``).
        fp32: Score of the source bundle on the held-out data, percent.
        quantized: Score of the quantized graph on the same data, percent.
        drop: ``fp32 - quantized``, percentage points (negative = the quantized one scored higher).
        n_test: Held-out images (classification) or pixels (segmentation) scored.
        calibration: ``source``, ``n`` and ``fingerprint`` of the calibration inputs (empty for fp16).
        extra: Further figures (mean IoU for segmentation).
        seconds: Wall time of the whole call.
    """

    bundle_path: Path
    precision: str
    metric: str
    fp32: float
    quantized: float
    drop: float
    n_test: int
    calibration: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def quantize_bundle(
    bundle: str | Path | Any,
    out: str | Path,
    *,
    precision: str = "int8",
    calibration: str | Path | None = None,
    n_calibration: int = 200,
    test: str | Path | None = None,
    test_labels: str | Path | None = None,
    max_drop: float | None = 1.0,
    method: str = "minmax",
    keep_float: Sequence[str] = (),
    refit_head: bool = True,
    random_state: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> QuantizeResult:
    """Write a quantized copy of a bundle after checking its accuracy on held-out data.

    Args:
        bundle: Source bundle (folder, zip, or loaded), classification or segmentation, float32.
        out: The new bundle folder (``*.landsight``).
        precision: ``"int8"`` (static, fast on CPUs) or ``"fp16"`` (fast on CUDA GPUs only).
        calibration: int8 calibration inputs. Classification: images (folder, glob, list file;
            default: the bundle's training split, read from ``data.source``). Segmentation: a
            glob of image rasters (default: the bundle's training rasters, ``data.train``).
        n_calibration: Calibration samples: images, or 256 x 256 raster windows (sampled
            without replacement with ``random_state``).
        test: Held-out labelled data for the drop check, when ``bundle.json`` does not record a
            reproducible test split (fine-tuned bundles) or to use other data. Classification:
            anything :func:`landsight.data.catalog.build_catalog` reads. Segmentation: a glob of
            image rasters (with ``test_labels``) or a CSV of pairs.
        test_labels: Segmentation only: glob of the label rasters paired with ``test``.
        max_drop: Largest accepted drop of accuracy (pixel accuracy for segmentation), in
            percentage points; ``None`` disables the refusal (the drop is still recorded).
        method: Calibration: ``"minmax"``, ``"percentile"`` (99.999 %) or ``"entropy"``.
        keep_float: Node-name substrings of more nodes to leave in float (int8 only).
        refit_head: int8 classification bundles with a scikit-learn head (``train``, not
            ``finetune`` or Spark): refit the head, with the same settings and ``C``, on the
            int8 backbone's features of the images the shipped head was fitted on, so that the
            head learns the quantized features it will be given (quantization-aware fitting of
            the head only; costs one int8 pass over those images). Ignored otherwise.
        random_state: Seed of the calibration sample.
        overwrite: Replace an existing bundle at ``out``.
        progress: Progress bars while scoring.

    Returns:
        A :class:`QuantizeResult`; ``out/bundle.json`` records ``precision``, ``calibration``
        (source, n, fingerprint) and ``quantization`` (metric, fp32, quantized, drop, n_test,
        method, format, fast_on, ``head_refit``: the images the head was refit on, or why not;
        ``input``: whether the image bytes feed the first int8 convolution directly);
        with a refit head, ``head`` describes the new head.

    Raises:
        LandsightValueError: Unknown precision or method, a bundle already quantized, no held-out
            data recorded and no ``test`` given, or no calibration input readable.
        QuantizationDropError: The drop exceeds ``max_drop`` (nothing written).
        BundleError: ``bundle`` is not a valid bundle.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.

    Example:
        >>> quantize_bundle("eurosat.landsight", "eurosat-int8.landsight")  # doctest: +SKIP
    """
    from landsight.bundle import check_bundle_out, load_bundle

    started = time.perf_counter()
    if precision not in PRECISIONS:
        raise LandsightValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if method not in CALIBRATION_METHODS:
        raise LandsightValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if n_calibration < 1:
        raise LandsightValueError(f"n_calibration must be >= 1, got {n_calibration!r}")
    source = bundle if hasattr(bundle, "meta") else load_bundle(bundle, device="cpu")
    if source.meta.get("precision", "fp32") != "fp32":
        raise LandsightValueError(
            f"bundle {str(source.path)!r} is already {source.meta['precision']}; "
            "quantize the float32 bundle it came from"
        )
    out = check_bundle_out(out, overwrite=overwrite)
    with scratch_dir("quantize") as tmp:
        work = Path(tmp)
        float_model = prepared_float_model(source.path / source.model_file, work)
        task_data = quantize_data(source.meta["task"])(
            source, calibration, n_calibration, test, random_state, progress, test_labels=test_labels
        )
        calib: dict[str, Any] = {}
        first_conv_input: dict[str, Any] | str | None = None
        quantized = work / "quantized.onnx"
        if precision == "int8":
            samples = task_data.calibration_samples()
            calib = {"source": task_data.calibration_source, "n": len(samples),
                     "fingerprint": task_data.calibration_fingerprint, "method": method}  # fmt: skip
            first_conv_input = quantize_int8(float_model, quantized, samples, method=method, keep_float=keep_float)
            quantized = task_data.finish_int8(quantized, work, refit_head=refit_head)
        else:
            convert_fp16(float_model, quantized)
        scores = task_data.compare(source.path / source.model_file, quantized)
        drop = scores["fp32"] - scores["quantized"]
        if max_drop is not None and drop > max_drop:
            raise QuantizationDropError(
                f"{precision} graph of {str(source.path)!r} scores {scores['quantized']:.2f} % {scores['metric']} "
                f"against {scores['fp32']:.2f} % in float32 on {scores['n_test']:,} held-out "
                f"{task_data.test_unit}: a drop of {drop:.2f} points, more than "
                f"max_drop={max_drop:g}. Nothing was written. Calibrate on more, and more representative, "
                "inputs (--calibration, --n-calibration), try --method percentile, or keep the float32 bundle.",
                fp32=scores["fp32"], quantized=scores["quantized"], drop=drop,
            )  # fmt: skip
        quantization = {
            "metric": scores["metric"], "fp32": round(scores["fp32"], 4), "quantized": round(scores["quantized"], 4),
            "drop": round(drop, 4), "n_test": scores["n_test"], "test_source": task_data.test_source,
            "max_drop": max_drop, "fast_on": _FAST_ON[precision], "source_bundle": str(source.path),
            "test_seen_by_head": bool(test is None and (source.meta.get("data") or {}).get("refit")),
            **({"format": "QDQ", "per_channel": True, "weights": "int8 symmetric", "activations": "uint8"}
               if precision == "int8" else {"io": "float32 kept"}),
            **scores.get("extra", {}),
            **task_data.quantization_entries(precision),
            **({"input": first_conv_input} if first_conv_input is not None else {}),
        }  # fmt: skip
        path = _write(source, out, quantized, precision=precision, calibration=calib, quantization=quantization,
                      overwrite=overwrite, head=task_data.head)  # fmt: skip
    return QuantizeResult(
        bundle_path=path, precision=precision, metric=scores["metric"], fp32=scores["fp32"],
        quantized=scores["quantized"], drop=drop, n_test=scores["n_test"], calibration=calib,
        extra=scores.get("extra", {}), seconds=round(time.perf_counter() - started, 2),
    )  # fmt: skip


def quantize_data(task: str) -> type[QuantizeData]:
    """The :class:`~landsight.models.quantize.QuantizeData` class of a task, imported from :data:`QUANTIZE_DATA`.

    Args:
        task: ``bundle.json``'s ``task`` (``"classification"``, ``"segmentation"``).

    Returns:
        The class; instances are built as ``cls(bundle, calibration, n, test, seed, progress,
        test_labels=...)``.

    Raises:
        LandsightValueError: No quantization is defined for ``task``.
    """
    if task not in QUANTIZE_DATA:
        raise LandsightValueError(f"cannot quantize a {task!r} bundle; tasks: {sorted(QUANTIZE_DATA)}")
    module, name = QUANTIZE_DATA[task].split(":")
    return getattr(import_module(module), name)


def quantized_sibling(bundle_path: str | Path, precision: str = "int8") -> Path:
    """Where ``train/finetune --precision`` put the quantized copy: ``model.landsight`` -> ``model-int8.landsight``.

    Args:
        bundle_path: The float32 bundle folder.
        precision: ``"int8"`` or ``"fp16"``.

    Returns:
        The sibling folder path (not created).
    """
    path = Path(bundle_path)
    return path.with_name(f"{path.stem}-{precision}{path.suffix or '.landsight'}")


def quantize_trained(
    bundle_path: str | Path,
    *,
    precision: str = "int8",
    test_paths: Sequence[str] = (),
    test_labels: Sequence[str] = (),
    max_drop: float | None = 1.0,
    overwrite: bool = False,
    progress: bool = False,
) -> QuantizeResult:
    """Quantize a bundle just trained (``train`` / ``finetune --precision``) into its sibling folder.

    The float32 bundle stays where it was written; the quantized copy goes to
    :func:`quantized_sibling`. Bundles that record a reproducible test split (``train``) are
    checked on it; others (``finetune``) on ``test_paths`` / ``test_labels``.

    Args:
        bundle_path: The float32 bundle just written.
        precision: ``"int8"`` or ``"fp16"``.
        test_paths: Held-out images of the training run, when the bundle cannot reproduce them.
        test_labels: Their labels, same order and length.
        max_drop: See :func:`quantize_bundle`.
        overwrite: Replace an existing sibling bundle.
        progress: Progress bars.

    Returns:
        The :class:`QuantizeResult` of :func:`quantize_bundle`.

    Raises:
        QuantizationDropError: The drop exceeds ``max_drop`` (the float32 bundle is kept, no sibling written).
        LandsightValueError: ``test_paths`` and ``test_labels`` differ in length.
    """
    import csv

    if len(test_paths) != len(test_labels):
        raise LandsightValueError(f"{len(test_paths)} test paths but {len(test_labels)} labels")
    out = quantized_sibling(bundle_path, precision)
    if not len(test_paths):
        return quantize_bundle(bundle_path, out, precision=precision, max_drop=max_drop, overwrite=overwrite,
                               progress=progress)  # fmt: skip
    with scratch_dir("quantize-test") as tmp:
        listing = Path(tmp) / "test.csv"
        with listing.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows((Path(p).absolute(), c) for p, c in zip(test_paths, test_labels, strict=True))
        return quantize_bundle(bundle_path, out, precision=precision, test=listing, max_drop=max_drop,
                               overwrite=overwrite, progress=progress)  # fmt: skip


# --- the new bundle ------------------------------------------------------------------------------


def _write(
    source: Any, out: Path, model: Path, *, precision: str, calibration: dict[str, Any],
    quantization: dict[str, Any], overwrite: bool, head: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """The new bundle: source reports copied, the quantized graph, ``bundle.json`` with the new entries."""
    from landsight.bundle import BUNDLE_FILE, MODEL_FILE, WEIGHTS_FILE, staged_bundle, write_bundle

    skip = {BUNDLE_FILE, MODEL_FILE, WEIGHTS_FILE}  # float weights would not match the quantized graph
    meta = {k: v for k, v in source.meta.items() if k not in ("schema_version", "created", "package_versions")}
    meta.update(precision=precision, calibration=calibration, quantization=quantization)
    if head is not None:
        meta["head"] = head
    with staged_bundle(out, overwrite=overwrite) as staging:
        for item in source.path.iterdir():
            if item.name in skip or item.name.startswith("."):
                continue
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            else:
                shutil.copy2(item, staging / item.name)
        shutil.copy2(model, staging / MODEL_FILE)
        write_bundle(staging, model=None, meta=meta)
    return out


def describe(meta: dict[str, Any]) -> str:
    """One line about a bundle's precision, for CLI output (``fp32`` when not quantized)."""
    precision = meta.get("precision", "fp32")
    q = meta.get("quantization")
    if not q:
        return precision
    return (f"{precision} ({q['metric']} {q['quantized']:.2f} % vs {q['fp32']:.2f} % in fp32, drop {q['drop']:.2f} "
            f"points; fast on {q['fast_on']})")  # fmt: skip
