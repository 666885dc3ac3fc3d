"""onnxruntime sessions: one place that decides providers and threads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def available_providers(device: str = "auto") -> list[str]:
    """Return onnxruntime execution providers for ``device``.

    Args:
        device: ``"auto"`` (CUDA when onnxruntime has it, else CPU), ``"cpu"`` or ``"cuda"``.

    Returns:
        Provider names, best first.

    """
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """An onnxruntime inference session over one graph with a single input and output.

    Args:
        model: Path to an ``.onnx`` file, or its serialized bytes.
        device: See :func:`available_providers`.
        threads: Intra-op threads; default = the CPU cores this process may use.

    """

    def __init__(self, model: str | Path | bytes, *, device: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source: Any = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=available_providers(device))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the graph on one batch and return its single output."""
        return self.session.run([self.output_name], {self.input_name: x})[0]
