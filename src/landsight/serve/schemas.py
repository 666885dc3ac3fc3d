"""Request and response models of the scoring service (they make the OpenAPI document).

Two families: landsight's own (``/predict``, ``/predict/batch``, ``/metadata``, ``/health/*``) and
the Open Inference Protocol v2 (KServe, Triton, Seldon MLServer: ``/v2/...``), whose field names
follow the specification: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer.

    Attributes:
        detail: What went wrong and, where it helps, how to fix it.
        error: A stable machine-readable code, e.g. ``"unreadable_image"`` or ``"payload_too_large"``.

    """

    detail: str = Field(examples=["cannot read image 'upload.jpg': not an image (unidentified format)"])
    error: str = Field(examples=["unreadable_image"])


class ClassScore(BaseModel):
    """One class and its probability."""

    label: str
    probability: float = Field(ge=0.0, le=1.0)


class Prediction(BaseModel):
    """The prediction for one image.

    Attributes:
        filename: The uploaded file's name (``"body"`` for a raw body).
        label: The most probable class.
        confidence: Its probability.
        top_k: The ``k`` most probable classes, most probable first.
        probabilities: Every class's probability, in the bundle's class order.
        width: Image width in pixels, as decoded.
        height: Image height in pixels, as decoded.
        bounds: ``(left, bottom, right, top)`` in ``crs`` units for georeferenced images.
        crs: ``"EPSG:<code>"`` (or WKT) for georeferenced images.

    """

    filename: str
    label: str
    confidence: float
    top_k: list[ClassScore]
    probabilities: dict[str, float]
    width: int
    height: int
    bounds: tuple[float, float, float, float] | None = None
    crs: str | None = None


class PredictResponse(Prediction):
    """Answer of ``POST /predict``: one :class:`Prediction` plus the model's name."""

    model: str


class BatchItem(BaseModel):
    """One file of a batch: its prediction, or why it could not be read.

    Attributes:
        filename: The uploaded file's name.
        prediction: None when the file could not be read.
        error: Empty when fine, else the reader's reason ("not an image (unidentified format)", ...).

    """

    filename: str
    prediction: Prediction | None = None
    error: str = ""


class BatchResponse(BaseModel):
    """Answer of ``POST /predict/batch``: one item per uploaded file, in upload order."""

    model: str
    n_ok: int
    n_failed: int
    items: list[BatchItem]


class Metadata(BaseModel):
    """Answer of ``GET /metadata``: what the loaded bundle is."""

    model: str
    task: str
    schema_version: int
    classes: list[str]
    backbone: dict[str, Any]
    head: dict[str, Any]
    metrics: dict[str, Any]
    preprocessing: dict[str, Any]
    input: dict[str, Any]
    created: str | None = None
    landsight_version: str


class Health(BaseModel):
    """Answer of the health routes."""

    status: Literal["alive", "ready", "loading"]


# -- Open Inference Protocol v2 ------------------------------------------------------------------


class V2Tensor(BaseModel):
    """Metadata of one input or output tensor (OIP v2 ``$metadata_tensor``)."""

    name: str
    datatype: str
    shape: list[int]


class V2ServerMetadata(BaseModel):
    """OIP v2 server metadata (``GET /v2``)."""

    name: str
    version: str
    extensions: list[str] = []


class V2ModelMetadata(BaseModel):
    """OIP v2 model metadata (``GET /v2/models/{name}``)."""

    name: str
    versions: list[str] = []
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]
    parameters: dict[str, Any] = {}


class V2Health(BaseModel):
    """OIP v2 server health (``GET /v2/health/live`` and ``GET /v2/health/ready``)."""

    live: bool | None = None
    ready: bool | None = None


class V2ModelReady(BaseModel):
    """OIP v2 model readiness (``GET /v2/models/{name}/ready``)."""

    name: str
    ready: bool


class V2InferInput(BaseModel):
    """One input tensor of an OIP v2 inference request.

    ``datatype`` ``"UINT8"``: ``shape`` ``[N, H, W, C]`` (or ``[H, W, C]``) and ``data`` the pixels,
    flat in row-major order (nested lists are accepted too); images of any size are resized to the
    network input. ``datatype`` ``"BYTES"``: ``shape`` ``[N]`` and ``data`` N base64-encoded image
    files (JPEG, PNG, TIFF, ...).
    """

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int]
    datatype: Literal["UINT8", "BYTES"]
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    """An output named in an OIP v2 request (only ``probabilities`` exists)."""

    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """OIP v2 inference request (``POST /v2/models/{name}/infer``): exactly one input tensor."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2InferInput] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2InferOutput(BaseModel):
    """One output tensor of an OIP v2 inference response."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class V2InferResponse(BaseModel):
    """OIP v2 inference response: ``probabilities`` FP32 ``[N, n_classes]``, flat row-major."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = {}
    outputs: list[V2InferOutput]
