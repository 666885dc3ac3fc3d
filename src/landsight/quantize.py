"""Quantized bundles: int8 (CPU) and fp16 (GPU) copies of a bundle's graph, refused when they lose accuracy.

:func:`quantize_bundle` turns a classification or segmentation bundle into a new bundle whose
``model.onnx`` is quantized and whose inputs, outputs and metadata are otherwise the same, so
every scorer (``predict``, Spark, ``serve``, maps, ``segment predict``) takes it as it is.

* ``precision="int8"``: static quantization with onnxruntime's own tools
  (``onnxruntime.quantization.quantize_static``; QDQ format, per-channel symmetric int8 weights,
  asymmetric uint8 activations, ranges calibrated on a few hundred real inputs). Only the
  network is quantized (the uint8 / float32 ``image`` input is unchanged). When the input
  normalisation is the same affine map on every band (EfficientNet-Lite: mean = std = 0.5) it is
  a uint8 quantization itself, and the image bytes go straight into the first int8 convolution
  (:func:`landsight.models.onnx_graph.bytes_into_first_qconv`); otherwise the cast and
  normalisation stay float. The global pooling that makes the features and the
  scikit-learn head (``ai.onnx.ml`` operators), whose standardisation would magnify a coarse
  quantization step of the features. onnxruntime fuses the QDQ pairs into int8 convolution
  kernels (VNNI / AVX-512 on x86). The scikit-learn head of a ``train`` bundle is then refit
  (same settings and ``C``) on the int8 backbone's features of the images it was fitted on:
  quantization-aware fitting of the head alone, which recovers most of the accuracy that
  post-training quantization of the depthwise backbone loses (``benchmarks/RESULTS.md``).
* ``precision="fp16"``: float16 weights and activations
  (``onnxruntime.transformers.float16.convert_float_to_float16``, inputs and outputs kept).
  onnxruntime has fast float16 kernels on CUDA only; on a CPU such a bundle runs, slower than
  float32, which ``bundle.json`` says (``quantization.fast_on``).

The accuracy lost is measured on held-out data before anything is written: for classification
the bundle's own test split (reproduced from ``bundle.json``'s ``data``: same source, test size
and seed; or ``test`` data given), for segmentation the bundle's held-out validation rasters (or
``test`` pairs). Both the float32 and the quantized graph score the same decoded inputs. A drop of
more than ``max_drop`` points (accuracy, or pixel accuracy) raises :class:`QuantizationDropError`
and writes nothing.

Sources: onnxruntime quantization guide
(https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html), Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
CVPR 2018 (asymmetric uint8 activations, symmetric int8 weights, int32 bias).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError

__all__ = [
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "QuantizationDropError",
    "QuantizeResult",
    "quantize_bundle",
    "quantized_sibling",
    "quantize_trained",
]

#: Precisions :func:`quantize_bundle` writes; ``fp32`` is what training writes.
PRECISIONS = ("int8", "fp16")
#: Calibration methods of onnxruntime's static quantization (``minmax`` is the fastest).
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
#: Operators whose outputs stay float: the pooled features feed a standardising head.
_FLOAT_OPS = ("GlobalAveragePool", "GlobalMaxPool", "Flatten")
#: Heads :func:`landsight.models.heads.make_head` rebuilds (``bundle.json``'s ``head.estimator``).
_SKLEARN_HEADS = ("LogisticRegression", "LogisticRegressionCV", "RandomForestClassifier")
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
    task = source.meta["task"]
    with tempfile.TemporaryDirectory(prefix="landsight-quantize-") as tmp:
        work = Path(tmp)
        float_model = _prepared_float_model(source.path / source.model_file, work)
        if task == "classification":
            task_data = _ClassificationData(source, calibration, n_calibration, test, random_state, progress)
        else:
            task_data = _SegmentationData(source, calibration, n_calibration, test, test_labels, random_state)
        calib: dict[str, Any] = {}
        first_conv_input: dict[str, Any] | str | None = None
        if precision == "int8":
            samples = task_data.calibration_samples()
            calib = {"source": task_data.calibration_source, "n": len(samples),
                     "fingerprint": task_data.calibration_fingerprint, "method": method}  # fmt: skip
            quantized = work / "quantized.onnx"
            first_conv_input = _quantize_int8(float_model, quantized, samples, method=method, keep_float=keep_float)
            if task == "classification" and refit_head:
                quantized = task_data.refit_head(quantized, work)
        else:
            quantized = work / "quantized.onnx"
            _convert_fp16(float_model, quantized)
        scores = task_data.compare(source.path / source.model_file, quantized)
        drop = scores["fp32"] - scores["quantized"]
        if max_drop is not None and drop > max_drop:
            raise QuantizationDropError(
                f"{precision} graph of {str(source.path)!r} scores {scores['quantized']:.2f} % {scores['metric']} "
                f"against {scores['fp32']:.2f} % in float32 on {scores['n_test']:,} held-out "
                f"{'images' if task == 'classification' else 'pixels'}: a drop of {drop:.2f} points, more than "
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
            **({"head_refit": task_data.head_refit} if task == "classification" and precision == "int8" else {}),
            **({"input": first_conv_input} if first_conv_input is not None else {}),
        }  # fmt: skip
        path = _write(source, out, quantized, precision=precision, calibration=calib, quantization=quantization,
                      overwrite=overwrite, head=getattr(task_data, "head", None))  # fmt: skip
    return QuantizeResult(
        bundle_path=path, precision=precision, metric=scores["metric"], fp32=scores["fp32"],
        quantized=scores["quantized"], drop=drop, n_test=scores["n_test"], calibration=calib,
        extra=scores.get("extra", {}), seconds=round(time.perf_counter() - started, 2),
    )  # fmt: skip


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
    with tempfile.TemporaryDirectory(prefix="landsight-quantize-test-") as tmp:
        listing = Path(tmp) / "test.csv"
        with listing.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows((Path(p).absolute(), c) for p, c in zip(test_paths, test_labels, strict=True))
        return quantize_bundle(bundle_path, out, precision=precision, test=listing, max_drop=max_drop,
                               overwrite=overwrite, progress=progress)  # fmt: skip


# --- graphs --------------------------------------------------------------------------------------


def _prepared_float_model(model_path: Path, work: Path) -> Path:
    """Copy the float graph with one opset entry per domain (merged graphs repeat them; the quantizer refuses that)."""
    import onnx

    model = onnx.load(str(model_path))
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    del model.opset_import[:]
    for domain, version in versions.items():
        model.opset_import.add(domain=domain, version=version)
    path = work / "float.onnx"
    onnx.save(model, str(path))
    return path


def _float_nodes(model_path: Path, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes left in float: input preprocessing, pooling / flatten, and ``keep_float`` matches.

    The preprocessing is everything before the first Conv / MatMul / Gemm (cast, scale, normalise,
    same-padding arithmetic): its inputs are exact in float and it costs nothing.
    """
    import onnx

    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    out: list[str] = []
    seen_compute = False
    for node in nodes:
        seen_compute = seen_compute or node.op_type in ("Conv", "MatMul", "Gemm")
        if (
            (not seen_compute and node.op_type not in ("Pad",))
            or node.op_type in _FLOAT_OPS
            or any(s in node.name for s in keep_float)
        ):
            out.append(node.name)
    return out


class _Reader:
    """onnxruntime ``CalibrationDataReader`` over in-memory samples, 8 per call."""

    def __init__(self, name: str, samples: np.ndarray, batch: int = 8) -> None:
        self._batches: Iterator[np.ndarray] = iter([samples[i : i + batch] for i in range(0, len(samples), batch)])
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {self._name: x}

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        x = self.get_next()
        if x is None:
            raise StopIteration
        return x


def _quantize_int8(
    float_model: Path, out: Path, samples: np.ndarray, *, method: str, keep_float: Sequence[str]
) -> dict[str, Any] | str:
    """Static QDQ int8 quantization of ``float_model`` (per-channel weights) calibrated on ``samples``.

    Returns how the image reaches the first int8 convolution: the bytes directly
    (:func:`landsight.models.onnx_graph.bytes_into_first_qconv`'s record) or why through float.
    """
    import logging

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from landsight.models.onnx_graph import bytes_into_first_qconv

    reader_cls = type("LandsightCalibration", (_Reader, CalibrationDataReader), {})
    name = onnx.load(str(float_model), load_external_data=False).graph.input[0].name
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]  # fmt: skip
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(max(level, logging.ERROR))  # the quantizer warns per bias at WARNING on the root logger
    try:
        quantize_static(
            str(float_model), str(out), reader_cls(name, samples),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=calibrate,
            nodes_to_exclude=_float_nodes(float_model, keep_float),
        )  # fmt: skip
    finally:
        quant_logger.setLevel(level)
    model = onnx.load(str(out))
    used = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}
    unused = [init for init in model.graph.initializer if init.name not in used]  # constants of removed Clips
    for init in unused:
        model.graph.initializer.remove(init)
    onnx.save(model, str(out))
    direct = bytes_into_first_qconv(out)
    if direct is None:
        return "float normalisation, then quantized (the normalisation differs between bands or is not a uint8 scale)"
    return {"image_bytes_direct": True, **{k: round(v, 8) if isinstance(v, float) else v for k, v in direct.items()}}


def _convert_fp16(float_model: Path, out: Path) -> Path:
    """float16 weights and activations, float32 inputs/outputs, scikit-learn (``ai.onnx.ml``) nodes kept float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(float_model))
    keep = [n.name for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep, disable_shape_infer=True)
    onnx.save(half, str(out))
    return out


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


def _run_all(model_path: Path, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run a graph (CPU, landsight's session settings) over batches."""
    from landsight.runtime import OnnxModel

    model = OnnxModel(model_path, device="cpu")
    return [np.asarray(model(b), dtype=np.float32) for b in batches]


def _fingerprint(parts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


# --- classification ------------------------------------------------------------------------------


class _ClassificationData:
    """Calibration images and the held-out split of a classification bundle."""

    def __init__(
        self, bundle: Any, calibration: str | Path | None, n: int, test: str | Path | None, seed: int,
        progress: bool,
    ) -> None:  # fmt: skip
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

        from landsight.data.catalog import training_catalog

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
        from landsight.data.catalog import list_images

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
        self.calibration_fingerprint = _fingerprint(sorted(digests))
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
        """Paths and labels the shipped head was fitted on, or why they cannot be known."""
        head = self.bundle.meta.get("head") or {}
        if head.get("estimator") not in _SKLEARN_HEADS:
            return f"head {head.get('estimator') or head.get('kind')!r} is not a scikit-learn head landsight fits"
        split = self._split()
        if split is None:
            return "bundle.json records no reproducible training split"
        fitted = split if self._data("refit") else split[split["split"] == "train"]
        return fitted["path"].tolist(), fitted["label"].tolist()

    def refit_head(self, quantized: Path, work: Path) -> Path:
        """Refit the head on the int8 backbone's features; return the new graph (``quantized`` when not possible).

        Args:
            quantized: The int8 graph (image -> probabilities) with its ``features`` tensor.
            work: Scratch folder.

        Returns:
            Path of the int8 backbone merged with the refit head, or ``quantized`` unchanged
            when the head cannot be refit (``self.head_refit`` then says why).
        """
        import onnx
        import onnx.utils

        from landsight.data.loader import iter_batches
        from landsight.models.heads import describe_head, fit_head, make_head
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
        if old["kind"] == "logreg":
            head = make_head("logreg", C=float(params["C"]), standardize=bool(params.get("standardize", True)),
                             class_weight=params.get("class_weight"), random_state=self.seed)  # fmt: skip
        else:
            head = make_head("forest", n_estimators=int(params["n_estimators"]), max_depth=params.get("max_depth"),
                             class_weight=params.get("class_weight"), random_state=self.seed)  # fmt: skip
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
            proba = np.concatenate(_run_all(model, batches))
            scores[name] = 100 * compute_metrics(y, proba, self.bundle.classes)["accuracy"]
        return {"metric": "accuracy", "n_test": len(y), **scores}


# --- segmentation --------------------------------------------------------------------------------


class _SegmentationData:
    """Calibration windows and the held-out rasters of a segmentation bundle."""

    WINDOW = 256

    def __init__(
        self, bundle: Any, calibration: str | Path | None, n: int, test: str | Path | None,
        test_labels: str | Path | None, seed: int,
    ) -> None:  # fmt: skip
        self.bundle, self.n, self.seed = bundle, n, seed
        self._calibration, self._test, self._test_labels = calibration, test, test_labels
        data = bundle.meta.get("data") or {}
        default = f"{data.get('images')} (train rasters)"
        self.calibration_source = str(calibration) if calibration is not None else default
        self.calibration_fingerprint = ""
        self.test_source = ""

    def calibration_samples(self) -> np.ndarray:
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
        self.calibration_fingerprint = _fingerprint(
            [file_digest(p) for p in rasters] + [f"{spots[i][1]},{spots[i][2]}" for i in chosen] + [str(size)]
        )
        return np.stack(tiles).astype(np.float32)

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
        found = pair_rasters(data["images"], None if labels in (None, "None") else labels)
        pairs = [p for p in found.pairs if p.image in val]
        if not pairs:
            raise LandsightValueError(
                f"the held-out rasters of {str(self.bundle.path)!r} ({sorted(val)!r}) are no longer found; pass test="
            )
        self.test_source = f"{data['images']} (held-out rasters: {len(pairs)})"
        return pairs

    def compare(self, fp32: Path, quantized: Path) -> dict[str, Any]:
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


def describe(meta: dict[str, Any]) -> str:
    """One line about a bundle's precision, for CLI output (``fp32`` when not quantized)."""
    precision = meta.get("precision", "fp32")
    q = meta.get("quantization")
    if not q:
        return precision
    return (f"{precision} ({q['metric']} {q['quantized']:.2f} % vs {q['fp32']:.2f} % in fp32, drop {q['drop']:.2f} "
            f"points; fast on {q['fast_on']})")  # fmt: skip
