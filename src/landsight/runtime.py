"""onnxruntime sessions: one place that decides providers, threads and parallel calls."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
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


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxModel:
    """An onnxruntime inference session over one graph with a single input and output.

    On the CPU a batch is split into ``parallel`` slices run at the same time, each by one
    intra-op thread, with spin-waiting off. On a 2-core CPU this beats one 2-thread call
    (``benchmarks/RESULTS.md``: 68.9 vs 32.9 images/s for ``tf_efficientnet_lite0`` when another
    process holds a core, and equal when the machine is idle), because small convolutions do not
    split well across threads and spinning threads steal cores from decoding.

    Args:
        model: Path to an ``.onnx`` file, or its serialized bytes.
        device: See :func:`available_providers`.
        threads: Intra-op threads per call (default 1).
        parallel: Concurrent calls per batch (default: cores / threads on CPU, 1 on CUDA).
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        device: str = "auto",
        threads: int | None = None,
        parallel: int | None = None,
    ) -> None:
        import onnxruntime as ort

        providers = available_providers(device)
        threads = threads or 1
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Errors only: int8 graphs otherwise print one warning per ReLU6 bound the optimizer folds away.
        options.log_severity_level = 3
        source: Any = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        on_gpu = providers[0] != "CPUExecutionProvider"
        self.parallel = 1 if on_gpu else max(1, parallel or usable_cores() // threads)
        self._pool = ThreadPoolExecutor(self.parallel) if self.parallel > 1 else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the graph on one batch (first axis = batch) and return its single output."""
        if self._pool is None or len(x) < 2:
            return self._run(x)
        slices = np.array_split(x, min(self.parallel, len(x)))
        return np.concatenate(list(self._pool.map(self._run, slices)))


class OnnxBundleModel:
    """Base of the loaded bundle classes: ``path``, ``meta``, ``device`` and a lazy ``model``.

    Args:
        path: The bundle folder; the graph is ``path / model_file``.
        meta: ``bundle.json`` as a dict.
        device: See :func:`available_providers`.
    """

    model_file = "model.onnx"

    def __init__(self, path: Path, meta: dict[str, Any], device: str = "auto") -> None:
        self.path = Path(path)
        self.meta = meta
        self.device = device
        self._model: OnnxModel | None = None

    @property
    def model(self) -> OnnxModel:
        """The onnxruntime session over the bundle's graph (created on first use)."""
        if self._model is None:
            self._model = OnnxModel(self.path / self.model_file, device=self.device)
        return self._model
