"""The real-time scoring service: a FastAPI app over one model bundle, and :func:`run` to serve it.

Routes (the OpenAPI document is at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /predict``: one image, as multipart field ``file`` or as a raw body with an image
  ``Content-Type`` (``image/png``, ``image/jpeg``, ``image/tiff``, ... or
  ``application/octet-stream``); answers the top-k classes and every class's probability.
* ``POST /predict/batch``: several images in the multipart field ``files``; one item per file,
  unreadable files get an ``error`` instead of a prediction.
* ``GET /health/live``, ``GET /health/ready``, ``GET /metadata``.
* Open Inference Protocol v2 (KServe / Triton / MLServer clients): ``GET /v2``,
  ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
  ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``. The model name is the bundle
  folder's name without ``.landsight``.

The bundle and its onnxruntime session are loaded once, in the app's lifespan. Decoding and
inference are blocking, so they run in the thread pool (plain ``def`` handlers, or
``run_in_threadpool`` where the body must be read first), never on the event loop. With
micro-batching on (the default) concurrent requests share forward passes through a
:class:`~landsight.serve.batching.MicroBatcher`.

Bad input answers 4xx with ``{"detail": ..., "error": ...}`` and the server keeps serving: 400 empty
body, 413 body / image / batch too large (images are checked from their header, before decoding,
against ``max_pixels`` and the decoding-memory budget ``max_decode_bytes``), 415 unsupported
``Content-Type``, 422 unreadable image (with the reader's reason) or invalid request, 404 unknown
model. Decoding is also bounded for the whole process: every request reserves its image's
estimated decoding memory in a :class:`~landsight.serve.budget.DecodeBudget` of
``max_decode_total_bytes`` before decoding, and answers 503 ``server_busy`` with a ``Retry-After``
header when no room frees up within ``decode_wait_s`` seconds.

Torch, timm and scikit-learn are never imported here: the service needs the bundle's ONNX graph
and onnxruntime only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from landsight import __version__
from landsight.errors import ImageReadError, ResourceLimitError
from landsight.serve.schemas import BatchItem, BatchResponse, Health, Metadata, PredictResponse
from landsight.serve.service import (
    ERROR_CODES,
    ERROR_RESPONSES,
    ApiError,
    ModelService,
    ServiceDep,
    SettingsDep,
    TopKQuery,
    model_name,
)
from landsight.serve.settings import BUNDLE_ENV, ServeSettings

__all__ = ["create_app", "create_app_from_env", "run"]

logger = logging.getLogger(__name__)

RAW_IMAGE_TYPES: tuple[str, ...] = (
    "image/png",
    "image/jpeg",
    "image/tiff",
    "image/gif",
    "image/bmp",
    "image/webp",
    "application/octet-stream",
)
"""Content types accepted as a raw ``POST /predict`` body (any other ``image/*`` is tried too)."""

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An image file: multipart field `file`, or the raw bytes with an image Content-Type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            **{ctype: _BINARY for ctype in RAW_IMAGE_TYPES},
        },
    }
}


# -- the body-size guard -------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Reject request bodies over ``max_body_bytes`` with 413, before and while reading them.

    A ``Content-Length`` over the limit is answered at once, without reading the body; otherwise the
    body is read chunk by chunk (chunked uploads too) and answered 413 as soon as it passes the
    limit. Bodies within the limit are handed to the app unchanged.

    Args:
        app: The ASGI app to guard.
        max_body_bytes: The limit in bytes.

    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        """Run the guard for one ASGI connection."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_error(send, 400, "bad_request", f"invalid Content-Length {value.decode()!r}")
                    return
                if length > limit:
                    await _send_error(send, 413, "payload_too_large", _too_large(length, limit))
                    return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _send_error(send, 413, "payload_too_large", _too_large(total, limit, at_least=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    return (
        f"request body of {'more than ' if at_least else ''}{size} bytes exceeds the limit of {limit} bytes "
        "(max_body_bytes); send a smaller file, fewer files per batch, or raise LANDSIGHT_SERVE_MAX_BODY_BYTES"
    )


async def _send_error(send: Callable[..., Any], status: int, error: str, detail: str) -> None:
    response = JSONResponse({"detail": detail, "error": error}, status_code=status)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict[str, Any]:  # pragma: no cover - a JSONResponse never reads
    return {"type": "http.disconnect"}


# -- the app -------------------------------------------------------------------------------------


def create_app(bundle_path: str | Path, settings: ServeSettings | None = None) -> FastAPI:
    """Build the scoring app for one bundle; the bundle loads when the app starts (lifespan).

    Args:
        bundle_path: Bundle folder or zip (``*.landsight``).
        settings: Limits and batching; default :meth:`ServeSettings.from_env` (environment or defaults).

    Returns:
        The FastAPI app; serve it with uvicorn, or use :func:`run`.

    Example:
        >>> import uvicorn  # doctest: +SKIP
        >>> uvicorn.run(create_app("eurosat.landsight"), port=8000)  # doctest: +SKIP

    """
    settings = settings if settings is not None else ServeSettings.from_env()
    bundle_path = Path(bundle_path)
    name = model_name(bundle_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await run_in_threadpool(ModelService.load, bundle_path, app.state.settings)
        app.state.service = service
        logger.info("landsight serving %r (%d classes) from %s", service.name, len(service.bundle.classes), bundle_path)
        try:
            yield
        finally:
            app.state.service = None
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="landsight scoring service",
        version=__version__,
        summary=f"Land-cover classification of image tiles with the landsight bundle {name!r}.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = None
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    _add_routes(app, name)
    return app


def create_app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: bundle from ``LANDSIGHT_SERVE_BUNDLE``, settings from env.

    Returns:
        The app of :func:`create_app`.

    Raises:
        LandsightValueError: ``LANDSIGHT_SERVE_BUNDLE`` is not set, or a setting is invalid.

    """
    from landsight.errors import LandsightValueError

    path = os.environ.get(BUNDLE_ENV)
    if not path:
        raise LandsightValueError(f"set {BUNDLE_ENV} to the bundle folder to serve, e.g. {BUNDLE_ENV}=model.landsight")
    return create_app(path, ServeSettings.from_env())


def _error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "error": error}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status_code, exc.error, exc.detail, exc.headers)

    @app.exception_handler(ImageReadError)
    async def image_error(request: Request, exc: ImageReadError) -> JSONResponse:
        if isinstance(exc, ResourceLimitError) or exc.reason.startswith("decompression bomb"):
            return _error_response(413, "image_too_large", str(exc))
        if exc.reason == "zero-byte file":
            return _error_response(400, "empty_body", str(exc))
        return _error_response(422, "unreadable_image", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return _error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = ERROR_CODES.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


def _add_routes(app: FastAPI, name: str) -> None:  # noqa: C901 - one closure per route keeps them together
    # -- landsight's own API --------------------------------------------------------------------

    @app.get("/health/live", response_model=Health, tags=["health"])
    def live() -> Health:
        """Liveness: the process answers HTTP."""
        return Health(status="alive")

    @app.get(
        "/health/ready",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "Model not loaded yet"}},
    )
    def ready(request: Request) -> Any:
        """Readiness: the model is loaded and warmed up."""
        service: ModelService | None = request.app.state.service
        if service is None or not service.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return Health(status="ready")

    @app.get("/metadata", response_model=Metadata, tags=["model"], responses={503: ERROR_RESPONSES[503]})
    def metadata(service: ServiceDep) -> Metadata:
        """Describe the loaded bundle: classes, backbone, head, metrics, schema version."""
        meta = service.bundle.meta
        return Metadata(
            model=service.name,
            task=meta.get("task", "classification"),
            schema_version=int(meta["schema_version"]),
            classes=service.bundle.classes,
            backbone=meta.get("backbone", {}),
            head=meta.get("head", {}),
            metrics=meta.get("metrics") or {},
            preprocessing=meta.get("preprocessing", {}),
            input={"dtype": "uint8", "layout": "NHWC", "shape": [-1, *service.input_size, service.channels]},
            created=meta.get("created"),
            landsight_version=__version__,
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        tags=["predict"],
        openapi_extra=_PREDICT_BODY,
        responses=ERROR_RESPONSES,
    )
    async def predict(request: Request, service: ServiceDep, settings: SettingsDep, top_k: TopKQuery = None) -> Any:
        """Classify one image: multipart field `file`, or the raw image bytes with an image Content-Type."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=16)
            try:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise ApiError(
                        422, "invalid_request", "multipart body lacks the file field 'file'; send -F file=@tile.png"
                    )
                data = await upload.read()
                filename = upload.filename or "file"
            finally:
                await form.close()
        else:
            data = await request.body()
            filename = "body"
            if data and not (ctype.startswith("image/") or ctype in RAW_IMAGE_TYPES):
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    f"Content-Type {ctype or '(none)'!r} is not supported; send an image with Content-Type "
                    f"{', '.join(RAW_IMAGE_TYPES)} or multipart/form-data with the field 'file'",
                )
        k = top_k or settings.top_k
        return await run_in_threadpool(_predict_one, service, data, filename, k)

    @app.post(
        "/predict/batch",
        response_model=BatchResponse,
        tags=["predict"],
        responses=ERROR_RESPONSES,
    )
    def predict_batch(
        files: Annotated[list[UploadFile], File(description="Image files, one part each.")],
        service: ServiceDep,
        settings: SettingsDep,
        top_k: TopKQuery = None,
    ) -> BatchResponse:
        """Classify several images (multipart field `files`); unreadable files get an `error`, not a 4xx.

        The files are decoded one after the other, each holding its estimate in the decoding
        budget while it decodes; a budget that stays full answers 503 for the whole request.
        """
        if len(files) > settings.max_batch_files:
            raise ApiError(
                413,
                "too_many_files",
                f"{len(files)} files in one batch exceeds max_batch_files={settings.max_batch_files}; "
                "split the request",
            )
        k = top_k or settings.top_k
        items: list[BatchItem] = []
        ok: list[tuple[int, np.ndarray, Any]] = []  # (index, network input, decoded RasterImage)
        for upload in files:
            filename = upload.filename or f"file{len(items)}"
            try:
                resized, image = service.decode(upload.file.read(), filename)
            except ImageReadError as exc:
                items.append(BatchItem(filename=filename, error=exc.reason))
                continue
            except ApiError as exc:
                if exc.status_code == 503:  # server busy: the whole request is retried, not one file
                    raise
                items.append(BatchItem(filename=filename, error=exc.detail))
                continue
            ok.append((len(items), resized, image))
            items.append(BatchItem(filename=filename))
        if ok:
            proba = service.predict_proba(np.stack([r for _, r, _ in ok]))
            for (i, _, image), p in zip(ok, proba, strict=True):
                items[i].prediction = service.prediction(items[i].filename, p, image, k)
        return BatchResponse(model=service.name, n_ok=len(ok), n_failed=len(items) - len(ok), items=items)

    from landsight.serve.v2 import add_v2_routes

    add_v2_routes(app, name)


def _predict_one(service: ModelService, data: bytes, filename: str, top_k: int) -> PredictResponse:
    resized, image = service.decode(data, filename)
    proba = service.predict_proba(resized[np.newaxis])[0]
    prediction = service.prediction(filename, proba, image, top_k)
    return PredictResponse(model=service.name, **prediction.model_dump())


# -- running it ----------------------------------------------------------------------------------


def run(
    bundle: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
    log_level: str = "info",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve a bundle over HTTP with uvicorn until interrupted.

    With ``workers > 1`` uvicorn starts that many processes, each loading the bundle; the bundle
    path and the settings reach them through ``LANDSIGHT_SERVE_*`` environment variables and the
    factory :func:`create_app_from_env`. Each process runs ``batch_workers`` parallel forward
    passes (default: CPU cores / ``threads``), not a share of the cores: keep-alive connections are
    not spread evenly over the processes, and one busy process must still be able to use every core.

    Args:
        bundle: Bundle folder or zip.
        host: Interface to bind (``"0.0.0.0"`` for all, e.g. in a container).
        port: TCP port.
        workers: uvicorn worker processes.
        settings: Limits and batching; default :meth:`ServeSettings.from_env`.
        log_level: uvicorn log level.
        announce: Called with the server's URL (``http://host:port``; ``localhost`` for a
            wildcard host) once the bundle is checked, just before uvicorn starts.

    Raises:
        BundleError: ``bundle`` is not a loadable bundle (checked before the server starts).
        LandsightValueError: ``workers < 1`` or an invalid port.

    """
    import uvicorn

    from landsight.classify.bundle import as_bundle
    from landsight.errors import LandsightValueError

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LandsightValueError(f"workers must be an integer >= 1; got {workers!r}")
    if not 0 <= port <= 65535:
        raise LandsightValueError(f"port must be in 0..65535; got {port!r}")
    as_bundle(bundle)  # fail fast with a clear message (wrong task included), before uvicorn starts
    settings = settings if settings is not None else ServeSettings.from_env()
    if announce is not None:
        shown = "localhost" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
        announce(f"http://{shown}:{port}")
    if workers == 1:
        uvicorn.run(create_app(bundle, settings), host=host, port=port, log_level=log_level)
        return
    os.environ.update(settings.to_env())
    os.environ[BUNDLE_ENV] = str(Path(bundle).resolve())
    uvicorn.run(
        "landsight.serve.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
