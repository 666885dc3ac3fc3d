"""The loaded model behind the scoring service, and what every route shares.

:class:`ModelService` (the bundle, its onnxruntime session, the micro-batcher, decoding under the
pixel and memory budgets: per image, and process-wide through a
:class:`~landsight.serve.budget.DecodeBudget`), :class:`ApiError` (an HTTP error answered as
JSON), the FastAPI dependencies (:func:`get_settings`, :func:`get_service`, overridable in tests
with ``app.dependency_overrides``) and the shared OpenAPI response tables. Both route modules,
:mod:`landsight.serve.app` and :mod:`landsight.serve.v2`, import from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Query, Request
from fastapi import Path as PathParam

from landsight.classify.bundle import Bundle, as_bundle
from landsight.data.readers import ImageHeader, RasterImage, decode_image, peek_image
from landsight.serve.batching import MicroBatcher
from landsight.serve.budget import DecodeBudget
from landsight.serve.schemas import ClassScore, ErrorResponse, Prediction
from landsight.serve.settings import ServeSettings

__all__ = [
    "ERROR_CODES",
    "ERROR_RESPONSES",
    "NOT_FOUND_RESPONSES",
    "ApiError",
    "ModelName",
    "ModelService",
    "ServiceDep",
    "SettingsDep",
    "TopKQuery",
    "get_service",
    "get_settings",
    "model_name",
    "server_busy",
    "too_many_pixels",
    "too_much_memory",
]

ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "not_ready",
}


class ApiError(Exception):
    """An HTTP error answered as ``{"detail": detail, "error": error}``.

    Args:
        status_code: HTTP status, e.g. 413.
        error: Machine-readable code, e.g. ``"payload_too_large"``.
        detail: What went wrong and how to fix it.
        headers: Extra response headers, e.g. ``{"Retry-After": "5"}`` with a 503.

    """

    def __init__(self, status_code: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = headers


def model_name(path: str | Path) -> str:
    """Name the served model: the bundle folder's name without ``.zip`` and ``.landsight``.

    Args:
        path: Bundle folder or zip, e.g. ``"runs/eurosat.landsight"``.

    Returns:
        E.g. ``"eurosat"``.

    """
    name = Path(path).name
    for suffix in (".zip", ".landsight"):
        name = name.removesuffix(suffix)
    return name or "model"


# -- the loaded model ----------------------------------------------------------------------------


@dataclass
class ModelService:
    """A loaded bundle with its onnxruntime session and (optional) micro-batcher.

    Attributes:
        name: Model name (see :func:`model_name`).
        bundle: The loaded bundle.
        settings: Limits and batching.
        batcher: The running micro-batcher, or None when batching is off.
        ready: True once the session is warmed up.
        budget: The process-wide decoding budget (``settings.max_decode_total_bytes`` bytes),
            shared by every request to this service; its ``in_use`` and ``peak`` are read-only.

    """

    name: str
    bundle: Bundle
    settings: ServeSettings
    predict_fn: Callable[[np.ndarray], np.ndarray]
    batcher: MicroBatcher | None = None
    ready: bool = False
    budget: DecodeBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = DecodeBudget(self.settings.max_decode_total_bytes)

    @classmethod
    def load(cls, bundle_path: str | Path, settings: ServeSettings) -> ModelService:
        """Load the bundle, open its onnxruntime session, warm it up and start the batcher.

        Args:
            bundle_path: Bundle folder or zip.
            settings: Limits and batching; ``threads`` and ``device`` configure onnxruntime.

        Returns:
            The ready service.

        Raises:
            BundleError: Not a bundle, incomplete, or an unsupported schema version.

        """
        from landsight.runtime import OnnxModel, usable_cores

        bundle = as_bundle(bundle_path, device=settings.device)
        # parallel=1: concurrency comes from the micro-batcher's workers / the request threads.
        model = OnnxModel(bundle.path / bundle.model_file, device=settings.device, threads=settings.threads, parallel=1)

        def predict_fn(images: np.ndarray) -> np.ndarray:
            # Same contract as Bundle.predict_proba, with the service's own thread count.
            return np.asarray(model(np.ascontiguousarray(images, dtype=np.uint8)), dtype=np.float32)

        service = cls(name=model_name(bundle_path), bundle=bundle, settings=settings, predict_fn=predict_fn)
        h, w = bundle.preprocessing.input_size
        predict_fn(np.zeros((1, h, w, service.channels), dtype=np.uint8))  # warm-up: first run allocates
        if settings.batching:
            service.batcher = MicroBatcher(
                predict_fn,
                max_batch_size=settings.max_batch_size,
                max_wait_ms=settings.max_wait_ms,
                workers=settings.batch_workers or max(1, usable_cores() // settings.threads),
            ).start()
        service.ready = True
        return service

    def close(self) -> None:
        """Stop the micro-batcher (finishing queued work)."""
        self.ready = False
        if self.batcher is not None:
            self.batcher.close()

    @property
    def channels(self) -> int:
        """Channels of the network input: ``len(bands)``, or 3 for RGB."""
        bands = self.bundle.preprocessing.bands
        return len(bands) if bands else 3

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input ``(height, width)`` in pixels."""
        h, w = self.bundle.preprocessing.input_size
        return int(h), int(w)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, through the micro-batcher when it runs.

        Args:
            images: ``(N, H, W, C)`` uint8 at the network input size.

        Returns:
            ``(N, n_classes)`` float32 in ``bundle.classes`` order.

        """
        if self.batcher is not None:
            return self.batcher.predict(images)
        return self.predict_fn(images)

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold ``nbytes`` bytes of the process-wide decoding budget for the ``with`` block.

        Args:
            nbytes: Estimated decoding memory, in bytes.
            what: The image or tensor, for messages.

        Yields:
            None, once the bytes are reserved; they are released when the block ends.

        Raises:
            ApiError: 413 when ``nbytes`` alone is over ``max_decode_total_bytes``; 503
                (``server_busy``, with ``Retry-After``) when the budget stayed full for
                ``decode_wait_s`` seconds.

        """
        total = self.budget.total
        if nbytes > total:
            raise ApiError(
                413,
                "image_too_large",
                f"{what!r} needs about {nbytes} bytes of memory to decode, over the process-wide decoding budget "
                f"of {total} bytes (max_decode_total_bytes); send a smaller tile or raise "
                "LANDSIGHT_SERVE_MAX_DECODE_TOTAL_BYTES",
            )
        wait = self.settings.decode_wait_s
        if not self.budget.acquire(nbytes, wait):
            raise server_busy(what, nbytes, total, wait)
        try:
            yield
        finally:
            self.budget.release(nbytes)

    def decode(self, data: bytes, filename: str) -> tuple[np.ndarray, RasterImage]:
        """Check the pixel and memory limits from the header, then decode and resize one image file.

        The header is read without decoding the pixels (:func:`~landsight.data.readers.peek_image`:
        rasterio for TIFFs of any sample type, Pillow for the rest), and the decoder checks the
        header of what it actually decodes once more (``max_decode_bytes``). Decoding and resizing
        hold the header's estimate (:attr:`~landsight.data.readers.ImageHeader.decode_bytes`) in the
        process-wide :attr:`budget` (:meth:`reserve`); data whose header neither library reads
        holds ``min(max_decode_bytes, max_decode_total_bytes)``, the most one image may take.

        Args:
            data: The file's bytes.
            filename: Its name, for messages.

        Returns:
            ``(input_h, input_w, C)`` uint8 network input, and the decoded image's size and
            georeference: its ``array`` has shape ``(H, W, 0)``, the pixels being freed once
            resized (outside the budget, a full-size array must not outlive the decoding).

        Raises:
            ApiError: 400 empty data; 413 more than ``max_pixels`` pixels or more than
                ``max_decode_bytes`` (or ``max_decode_total_bytes``) of estimated decoding
                memory; 503 the process-wide budget stayed full for ``decode_wait_s`` seconds.
            ImageReadError: Not an image, truncated, corrupt, or a decompression bomb
                (:class:`~landsight.errors.ImageTooLargeError` over ``max_decode_bytes``).

        """
        if not data:
            raise ApiError(400, "empty_body", f"{filename!r} is empty (0 bytes); send the bytes of an image file")
        limit = self.settings.max_pixels
        header = peek_image(data, filename)
        if header is not None:
            if header.pixels > limit:
                raise too_many_pixels(filename, header.pixels, limit)
            if header.decode_bytes > self.settings.max_decode_bytes:
                raise too_much_memory(filename, header, self.settings.max_decode_bytes)
            need = header.decode_bytes
        else:  # unknown to both header readers (the decoder will most likely refuse it): the most it may take
            need = min(self.settings.max_decode_bytes, self.budget.total)
        with self.reserve(need, filename):
            image = decode_image(
                data, filename, self.bundle.preprocessing.bands, max_decode_bytes=self.settings.max_decode_bytes
            )
            h, w = image.array.shape[:2]
            if h * w > limit:
                raise too_many_pixels(filename, h * w, limit)
            resized = self.bundle.preprocessing.resize(image.array)
            image = RasterImage(np.empty((h, w, 0), dtype=np.uint8), image.bounds, image.crs)
        return resized, image

    def prediction(self, filename: str, proba: np.ndarray, image: RasterImage, top_k: int) -> Prediction:
        """Turn one row of probabilities into a :class:`Prediction`.

        Args:
            filename: The file's name.
            proba: ``(n_classes,)`` float32.
            image: The decoded image (size and georeference).
            top_k: Classes to list.

        Returns:
            The prediction.

        """
        classes = self.bundle.classes
        order = np.argsort(-proba, kind="stable")[: max(1, min(top_k, len(classes)))]
        return Prediction(
            filename=filename,
            label=classes[int(order[0])],
            confidence=float(proba[order[0]]),
            top_k=[ClassScore(label=classes[int(i)], probability=float(proba[i])) for i in order],
            probabilities={c: float(p) for c, p in zip(classes, proba, strict=True)},
            width=int(image.array.shape[1]),
            height=int(image.array.shape[0]),
            bounds=image.bounds,
            crs=image.crs,
        )


def too_many_pixels(filename: str, pixels: int, limit: int) -> ApiError:
    """Return the 413 error for an image of ``pixels`` pixels over ``limit`` (``max_pixels``)."""
    return ApiError(
        413,
        "image_too_large",
        f"{filename!r} has {pixels} pixels, over the limit of {limit} (max_pixels); "
        "send a smaller tile or raise LANDSIGHT_SERVE_MAX_PIXELS",
    )


def server_busy(what: str, nbytes: int, total: int, wait_s: float) -> ApiError:
    """Return the 503 error (with ``Retry-After``) for ``nbytes`` that found no room in the decoding budget.

    Args:
        what: The image or tensor.
        nbytes: Its estimated decoding memory, in bytes.
        total: The process-wide budget, in bytes (``max_decode_total_bytes``).
        wait_s: Seconds waited (``decode_wait_s``); ``Retry-After`` is that, rounded up, at least 1.

    Returns:
        The error to raise.

    """
    retry = max(1, math.ceil(wait_s))
    return ApiError(
        503,
        "server_busy",
        f"the server is decoding other images: {what!r} needs about {nbytes} bytes of decoding memory and the "
        f"process-wide budget of {total} bytes (max_decode_total_bytes) stayed full for {wait_s:g} s "
        f"(decode_wait_s); retry in {retry} s, or raise LANDSIGHT_SERVE_MAX_DECODE_TOTAL_BYTES",
        headers={"Retry-After": str(retry)},
    )


def too_much_memory(filename: str, header: ImageHeader, limit: int) -> ApiError:
    """Return the 413 error for an image whose decoding would need over ``limit`` bytes (``max_decode_bytes``)."""
    return ApiError(
        413,
        "image_too_large",
        f"{filename!r} is {header.height}x{header.width} pixels x {header.bands} band(s) of {header.dtype}: "
        f"decoding it needs about {header.decode_bytes} bytes of memory, over the limit of {limit} bytes "
        "(max_decode_bytes); send a smaller tile (`landsight tile` cuts rasters) or raise "
        "LANDSIGHT_SERVE_MAX_DECODE_BYTES",
    )


# -- dependencies (override them in tests with app.dependency_overrides) -------------------------


def get_settings(request: Request) -> ServeSettings:
    """Return the app's :class:`ServeSettings` (a FastAPI dependency)."""
    return request.app.state.settings


def get_service(request: Request) -> ModelService:
    """Return the loaded :class:`ModelService` (a FastAPI dependency).

    Raises:
        ApiError: 503 while the model is not loaded.

    """
    service: ModelService | None = getattr(request.app.state, "service", None)
    if service is None or not service.ready:
        raise ApiError(503, "not_ready", "the model is still loading; retry shortly")
    return service


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ServiceDep = Annotated[ModelService, Depends(get_service)]
ModelName = Annotated[str, PathParam(description="The model name: the bundle folder's name without .landsight.")]
TopKQuery = Annotated[
    int | None, Query(ge=1, le=10_000, description="Classes to list in top_k (default: the server's top_k).")
]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Empty body or malformed multipart",
        413: "Body, image or batch too large",
        415: "Unsupported Content-Type",
        422: "Unreadable image or invalid request",
        503: "Model not loaded yet, or the decoding-memory budget stayed full (Retry-After says when to retry)",
    }.items()
}

NOT_FOUND_RESPONSES: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "Unknown model"}}
