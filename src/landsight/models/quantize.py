"""int8 and fp16 conversion of an ONNX graph, whatever task it serves.

The task-neutral half of :mod:`landsight.quantize`: the graph work, and the interface
(:class:`QuantizeData`) through which each task hands over its calibration inputs and held-out
comparison (:class:`landsight.classify.quantize.ClassificationQuantizeData`,
:class:`landsight.segment.quantize.SegmentationQuantizeData`). Nothing here knows tasks.

* int8 (:func:`quantize_int8`): static quantization with onnxruntime's own tools
  (``onnxruntime.quantization.quantize_static``; QDQ format, per-channel symmetric int8 weights,
  asymmetric uint8 activations, ranges calibrated on a few hundred real inputs). Only the
  network is quantized (the uint8 / float32 ``image`` input is unchanged). When the input
  normalisation is the same affine map on every band (EfficientNet-Lite: mean = std = 0.5) it is
  a uint8 quantization itself, and the image bytes go straight into the first int8 convolution
  (:func:`landsight.models.onnx_graph.bytes_into_first_qconv`); otherwise the cast and
  normalisation stay float. The global pooling that makes the features and the scikit-learn head
  (``ai.onnx.ml`` operators) stay float too: the head's standardisation would magnify a coarse
  quantization step of the features (:func:`float_nodes`). onnxruntime fuses the QDQ pairs into
  int8 convolution kernels (VNNI / AVX-512 on x86).
* fp16 (:func:`convert_fp16`): float16 weights and activations
  (``onnxruntime.transformers.float16.convert_float_to_float16``, inputs and outputs kept).
  onnxruntime has fast float16 kernels on CUDA only.

Sources: onnxruntime quantization guide
(https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html), Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
CVPR 2018 (asymmetric uint8 activations, symmetric int8 weights, int32 bias).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "CalibrationReader",
    "QuantizeData",
    "convert_fp16",
    "fingerprint",
    "float_nodes",
    "prepared_float_model",
    "quantize_int8",
    "run_all",
]

#: Precisions :func:`landsight.quantize.quantize_bundle` writes; ``fp32`` is what training writes.
PRECISIONS = ("int8", "fp16")
#: Calibration methods of onnxruntime's static quantization (``minmax`` is the fastest).
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
#: Operators whose outputs stay float: the pooled features feed a standardising head.
FLOAT_OPS = ("GlobalAveragePool", "GlobalMaxPool", "Flatten")


class QuantizeData(Protocol):
    """What a task gives :func:`landsight.quantize.quantize_bundle`: calibration inputs and a held-out check.

    One class per task, named in :data:`landsight.quantize.QUANTIZE_DATA`; the orchestration
    calls only what is listed here, so it has no per-task branches. Implementations are built as
    ``cls(bundle, calibration, n, test, seed, progress, test_labels=...)``:

    * ``bundle``: the loaded float32 bundle (``meta``, ``path``, ``model_file``...).
    * ``calibration``: the user's calibration inputs, or ``None`` for the bundle's training data.
    * ``n``: number of calibration samples to draw.
    * ``test`` / ``test_labels``: user's held-out data, or ``None`` for the bundle's own.
    * ``seed``: seed of the calibration sample (and of any refit).
    * ``progress``: progress bars where the task has long passes.

    Attributes:
        test_unit: What ``n_test`` counts, for messages (``"images"``, ``"pixels"``).
        calibration_source: Where the calibration inputs come from (``bundle.json``'s
            ``calibration.source``).
        calibration_fingerprint: 16 hex digits identifying the calibration inputs; set by
            :meth:`calibration_samples`.
        test_source: Where the held-out data comes from; set by :meth:`compare`.
        head: A new ``bundle.json`` ``head`` entry when :meth:`finish_int8` replaced the head,
            else ``None``.
    """

    test_unit: str
    calibration_source: str
    calibration_fingerprint: str
    test_source: str
    head: dict[str, Any] | None

    def __init__(
        self, bundle: Any, calibration: str | Path | None, n: int, test: str | Path | None, seed: int,
        progress: bool = False, *, test_labels: str | Path | None = None,
    ) -> None: ...  # fmt: skip

    def calibration_samples(self) -> np.ndarray:
        """Decoded calibration inputs, as the graph's ``image`` input takes them: ``(n, H, W, C)``."""
        ...

    def finish_int8(self, quantized: Path, work: Path, *, refit_head: bool) -> Path:
        """Task step after int8 quantization (a head refit); returns the graph to keep (maybe ``quantized``)."""
        ...

    def compare(self, fp32: Path, quantized: Path) -> dict[str, Any]:
        """Score both graphs on the held-out data.

        Returns ``metric``, ``n_test``, ``fp32`` and ``quantized`` (percent) and optionally ``extra``.
        """
        ...

    def quantization_entries(self, precision: str) -> dict[str, Any]:
        """Task-specific entries of ``bundle.json``'s ``quantization`` (``head_refit``...); may be empty."""
        ...


def prepared_float_model(model_path: Path, work: Path) -> Path:
    """Copy the float graph with one opset entry per domain (merged graphs repeat them; the quantizer refuses that).

    Args:
        model_path: The float32 ``model.onnx``.
        work: Scratch folder; ``work / "float.onnx"`` is written.

    Returns:
        Path of the cleaned copy.
    """
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


def float_nodes(model_path: Path, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes left in float: input preprocessing, pooling / flatten, and ``keep_float`` matches.

    The preprocessing is everything before the first Conv / MatMul / Gemm (cast, scale, normalise,
    same-padding arithmetic): its inputs are exact in float and it costs nothing.

    Args:
        model_path: The float graph.
        keep_float: Node-name substrings of more nodes to leave in float.

    Returns:
        Node names, in graph order.
    """
    import onnx

    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    out: list[str] = []
    seen_compute = False
    for node in nodes:
        seen_compute = seen_compute or node.op_type in ("Conv", "MatMul", "Gemm")
        if (
            (not seen_compute and node.op_type not in ("Pad",))
            or node.op_type in FLOAT_OPS
            or any(s in node.name for s in keep_float)
        ):
            out.append(node.name)
    return out


class CalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over in-memory samples, ``batch`` per call.

    Args:
        name: The graph's input name.
        samples: Calibration inputs, ``(n, ...)`` in the input's dtype.
        batch: Samples per call.
    """

    def __init__(self, name: str, samples: np.ndarray, batch: int = 8) -> None:
        self._batches: Iterator[np.ndarray] = iter([samples[i : i + batch] for i in range(0, len(samples), batch)])
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as ``{input name: array}``, or ``None`` at the end."""
        x = next(self._batches, None)
        return None if x is None else {self._name: x}

    def __iter__(self) -> CalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        x = self.get_next()
        if x is None:
            raise StopIteration
        return x


def quantize_int8(
    float_model: Path, out: Path, samples: np.ndarray, *, method: str, keep_float: Sequence[str]
) -> dict[str, Any] | str:
    """Static QDQ int8 quantization of ``float_model`` (per-channel weights) calibrated on ``samples``.

    Args:
        float_model: The float graph, from :func:`prepared_float_model`.
        out: Where the int8 graph is written.
        samples: Calibration inputs for the graph's first input, ``(n, H, W, C)`` (uint8 images
            or float32 raster windows).
        method: One of :data:`CALIBRATION_METHODS`.
        keep_float: Node-name substrings of more nodes to leave in float.

    Returns:
        How the image reaches the first int8 convolution: the bytes directly
        (:func:`landsight.models.onnx_graph.bytes_into_first_qconv`'s record, with
        ``image_bytes_direct``) or a sentence saying why through float.

    Raises:
        KeyError: ``method`` is not one of :data:`CALIBRATION_METHODS`.
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

    reader_cls = type("LandsightCalibration", (CalibrationReader, CalibrationDataReader), {})
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
            nodes_to_exclude=float_nodes(float_model, keep_float),
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


def convert_fp16(float_model: Path, out: Path) -> Path:
    """float16 weights and activations, float32 inputs/outputs, scikit-learn (``ai.onnx.ml``) nodes kept float32.

    Args:
        float_model: The float graph.
        out: Where the float16 graph is written.

    Returns:
        ``out``.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(float_model))
    keep = [n.name for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep, disable_shape_infer=True)
    onnx.save(half, str(out))
    return out


def run_all(model_path: Path, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run a graph (CPU, landsight's session settings) over batches.

    Args:
        model_path: The graph.
        batches: Inputs, each ``(b, H, W, C)`` in the graph input's dtype.

    Returns:
        The first output of each batch, float32, ``(b, ...)``.
    """
    from landsight.runtime import OnnxModel

    model = OnnxModel(model_path, device="cpu")
    return [np.asarray(model(b), dtype=np.float32) for b in batches]


def fingerprint(parts: Sequence[str]) -> str:
    """16 hex digits of the SHA-256 of ``parts``, one per line (identifies calibration inputs).

    Args:
        parts: Strings (file digests, window offsets...), in a stable order.

    Returns:
        The digest prefix.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]
