"""Open Inference Protocol v2 routes (KServe, Triton, Seldon MLServer clients) of the scoring service.

Specification: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/

* ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``: server metadata and health.
* ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``: model metadata and readiness.
* ``POST /v2/models/{name}/infer``: one input tensor, ``UINT8 [N, H, W, C]`` pixels (any size; resized
  to the network input) or ``BYTES [N]`` base64-encoded image files; the output ``probabilities``
  is ``FP32 [N, n_classes]``, flat in row-major order.

``name`` is the bundle folder's name without ``.landsight``; another name answers 404.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from landsight import __version__
from landsight.serve.schemas import (
    V2Health,
    V2InferInput,
    V2InferOutput,
    V2InferRequest,
    V2InferResponse,
    V2ModelMetadata,
    V2ModelReady,
    V2ServerMetadata,
    V2Tensor,
)
from landsight.serve.service import (
    ERROR_RESPONSES,
    NOT_FOUND_RESPONSES,
    ApiError,
    ModelName,
    ModelService,
    ServiceDep,
    SettingsDep,
    too_many_pixels,
)
from landsight.serve.settings import ServeSettings

__all__ = ["add_v2_routes"]


def add_v2_routes(app: FastAPI, name: str) -> None:  # noqa: C901 - one closure per route keeps them together
    """Add the OIP v2 routes for the model ``name`` to ``app``.

    Args:
        app: The app of :func:`landsight.serve.app.create_app`.
        name: The served model's name.

    """

    def check_model(model: str) -> None:
        if model != name:
            raise ApiError(404, "model_not_found", f"model {model!r} is not served here; this server serves {name!r}")

    v2 = ["open inference protocol v2"]

    @app.get("/v2", response_model=V2ServerMetadata, tags=v2)
    def v2_server() -> V2ServerMetadata:
        """OIP v2 server metadata."""
        return V2ServerMetadata(name="landsight", version=__version__, extensions=[])

    @app.get("/v2/health/live", response_model=V2Health, response_model_exclude_none=True, tags=v2)
    def v2_live() -> V2Health:
        """OIP v2 server liveness."""
        return V2Health(live=True)

    @app.get(
        "/v2/health/ready",
        response_model=V2Health,
        response_model_exclude_none=True,
        tags=v2,
        responses={503: {"model": V2Health, "description": "Model not loaded yet"}},
    )
    def v2_ready(request: Request) -> Any:
        """OIP v2 server readiness."""
        service: ModelService | None = request.app.state.service
        if service is None or not service.ready:
            return JSONResponse({"ready": False}, status_code=503)
        return V2Health(ready=True)

    @app.get("/v2/models/{model}", response_model=V2ModelMetadata, tags=v2, responses=NOT_FOUND_RESPONSES)
    def v2_model(model: ModelName, service: ServiceDep) -> V2ModelMetadata:
        """OIP v2 model metadata: input `image` UINT8 [-1, H, W, C] (or BYTES [-1]), output FP32."""
        check_model(model)
        h, w = service.input_size
        return V2ModelMetadata(
            name=name,
            versions=[],
            platform="onnxruntime_onnx",
            inputs=[V2Tensor(name="image", datatype="UINT8", shape=[-1, h, w, service.channels])],
            outputs=[V2Tensor(name="probabilities", datatype="FP32", shape=[-1, len(service.bundle.classes)])],
            parameters={"classes": service.bundle.classes, "bytes_input": "BYTES [-1]: base64-encoded image files"},
        )

    @app.get("/v2/models/{model}/ready", response_model=V2ModelReady, tags=v2, responses=NOT_FOUND_RESPONSES)
    def v2_model_ready(model: ModelName, service: ServiceDep) -> V2ModelReady:
        """OIP v2 model readiness."""
        check_model(model)
        return V2ModelReady(name=name, ready=service.ready)

    @app.post(
        "/v2/models/{model}/infer",
        response_model=V2InferResponse,
        tags=v2,
        responses=ERROR_RESPONSES | NOT_FOUND_RESPONSES,
    )
    def v2_infer(model: ModelName, body: V2InferRequest, service: ServiceDep, settings: SettingsDep) -> V2InferResponse:
        """OIP v2 inference: one input, UINT8 [N, H, W, C] pixels or BYTES [N] base64 image files."""
        check_model(model)
        for out in body.outputs or []:
            if out.name != "probabilities":
                raise ApiError(422, "invalid_request", f"unknown output {out.name!r}; this model has 'probabilities'")
        images = _v2_images(body.inputs[0], service, settings)
        proba = service.predict_proba(images)
        return V2InferResponse(
            model_name=name,
            id=body.id,
            outputs=[
                V2InferOutput(
                    name="probabilities",
                    shape=[int(proba.shape[0]), int(proba.shape[1])],
                    datatype="FP32",
                    data=proba.ravel().tolist(),
                )
            ],
        )


def _v2_images(tensor: V2InferInput, service: ModelService, settings: ServeSettings) -> np.ndarray:
    """``(N, input_h, input_w, C)`` uint8 network input from an OIP v2 input tensor.

    Raises:
        ApiError: 422 shape, datatype or data that do not fit; 413 too many images or pixels, or
            UINT8 pixels needing more than ``max_decode_bytes`` (9 bytes a value: the int64 array
            NumPy makes of the JSON numbers, then uint8), checked from ``shape`` before converting;
            503 the process-wide decoding budget (``max_decode_total_bytes``, which BYTES images and
            the UINT8 conversion hold while they decode) stayed full for ``decode_wait_s`` seconds.
        ImageReadError: A BYTES element is not a readable image.

    """
    shape = list(tensor.shape)
    if tensor.datatype == "BYTES":
        if len(shape) not in (1, 2) or shape[0] < 1 or (len(shape) == 2 and shape[1] != 1):
            raise ApiError(422, "invalid_request", f"BYTES input must have shape [N] or [N, 1]; got {shape!r}")
        n = shape[0]
        if len(tensor.data) != n:
            raise ApiError(
                422, "invalid_request", f"shape {shape!r} says {n} element(s); data holds {len(tensor.data)}"
            )
        _check_count(n, settings)
        arrays = []
        for i, item in enumerate(tensor.data):
            if not isinstance(item, str):
                raise ApiError(
                    422, "invalid_request", f"BYTES data[{i}] must be a base64 string; got {type(item).__name__}"
                )
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ApiError(422, "invalid_request", f"BYTES data[{i}] is not valid base64: {exc}") from None
            arrays.append(service.decode(raw, f"{tensor.name}[{i}]")[0])
        return np.stack(arrays)
    # UINT8 pixels
    if len(shape) == 3:
        shape = [1, *shape]
    c_want = service.channels
    if len(shape) != 4 or any(s < 1 for s in shape):
        raise ApiError(
            422,
            "invalid_request",
            f"UINT8 input must have shape [N, H, W, {c_want}] (or [H, W, {c_want}]); got {shape!r}",
        )
    n, h, w, c = shape
    if c != c_want:
        raise ApiError(422, "invalid_request", f"UINT8 input has {c} channel(s); this model takes {c_want}")
    _check_count(n, settings)
    if h * w > settings.max_pixels:
        raise too_many_pixels(tensor.name, h * w, settings.max_pixels)
    expected = n * h * w * c
    if expected * 9 > settings.max_decode_bytes:
        raise ApiError(
            413,
            "image_too_large",
            f"UINT8 input {tensor.name!r} of shape {shape!r} needs about {expected * 9} bytes of memory to "
            f"convert, over the limit of {settings.max_decode_bytes} bytes (max_decode_bytes); send fewer or "
            "smaller images per request or raise LANDSIGHT_SERVE_MAX_DECODE_BYTES",
        )
    with service.reserve(expected * 9, tensor.name):
        try:
            array = np.asarray(tensor.data)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ApiError(422, "invalid_request", f"UINT8 data is not a (nested) list of integers: {exc}") from None
        if array.size != expected:
            raise ApiError(
                422, "invalid_request", f"shape {tensor.shape!r} needs {expected} values; data holds {array.size}"
            )
        if array.size and (array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255):
            raise ApiError(422, "invalid_request", "UINT8 data must hold integers in 0..255")
        images = array.astype(np.uint8).reshape(n, h, w, c)
        del array
        if (h, w) == service.input_size:
            return images
        return np.stack([service.bundle.preprocessing.resize(img) for img in images])


def _check_count(n: int, settings: ServeSettings) -> None:
    if n > settings.max_batch_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{n} images in one request exceeds max_batch_files={settings.max_batch_files}; split the request",
        )
