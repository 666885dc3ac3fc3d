"""Settings of the scoring service: limits, top-k and micro-batching, overridable by environment.

Every field can be set in Python (``ServeSettings(max_batch_size=16)``), on the ``landsight serve``
command line, or through an environment variable ``LANDSIGHT_SERVE_<FIELD>`` (upper case), which is
how the settings reach uvicorn worker processes when ``workers > 1``::

    LANDSIGHT_SERVE_MAX_BODY_BYTES=8388608 LANDSIGHT_SERVE_BATCHING=false landsight serve model.landsight

This module imports pydantic only, never FastAPI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from landsight.errors import LandsightValueError

ENV_PREFIX = "LANDSIGHT_SERVE_"
"""Prefix of the environment variables read by :meth:`ServeSettings.from_env`."""

BUNDLE_ENV = "LANDSIGHT_SERVE_BUNDLE"
"""Environment variable holding the bundle path for :func:`landsight.serve.app.create_app_from_env`."""


class ServeSettings(BaseModel):
    """Limits and batching of the HTTP scoring service.

    Attributes:
        max_body_bytes: Largest request body in bytes (413 above it). Checked on ``Content-Length``
            before reading and enforced again while the body streams in.
        max_pixels: Largest image, in pixels (height x width), read from the image header before
            decoding (413 above it: decompression-bomb guard).
        max_decode_bytes: Largest estimated memory, in bytes, to decode one image (413 above it),
            read from the image header before decoding, for every format (TIFFs of any sample type
            through rasterio's header, other formats through Pillow's): about twice height x width
            x bands x bytes per sample, plus 3 bytes per pixel, plus 17 more for samples that are
            not 8-bit (see :attr:`landsight.data.readers.ImageHeader.decode_bytes`). The default,
            512 MiB, admits a 40-megapixel 8-bit RGB image or a 4000 x 4000 single-band uint16
            raster, and refuses a 4000 x 4000 float64 one. Requests decode in parallel threads;
            ``max_decode_total_bytes`` bounds them together.
        max_decode_total_bytes: Process-wide decoding budget, in bytes: the estimated decoding
            memory of all the images one process decodes at the same time (every route: the
            image of ``/predict``, each file of ``/predict/batch`` in turn, v2 ``BYTES`` images
            and ``UINT8`` tensors). Each request reserves its image's estimate (the same as
            ``max_decode_bytes`` checks) before decoding and gives it back after; a request that
            does not fit waits up to ``decode_wait_s`` for others to finish, then answers 503
            (``"error": "server_busy"``) with a ``Retry-After`` header, and the server keeps
            serving. An image whose estimate alone is over this budget answers 413. The default,
            1 GiB, lets two images at the ``max_decode_bytes`` default decode at once (many more
            small ones). With ``workers > 1`` every uvicorn process has its own budget.
        decode_wait_s: Seconds a request waits for room in ``max_decode_total_bytes`` before
            answering 503 (default 5; 0 does not wait). ``Retry-After`` says the same, rounded up
            to whole seconds (at least 1).
        max_batch_files: Most files in one ``POST /predict/batch`` request (413 above it).
        top_k: Classes listed in ``top_k`` of a prediction by default (``?top_k=`` overrides it).
        batching: Collect concurrent requests into one forward pass (micro-batching).
        max_batch_size: Most images in one micro-batch forward pass.
        max_wait_ms: How long, in milliseconds, the micro-batcher waits for more images after the
            first one arrives; 0 takes only what is already queued (what arrived during the
            previous forward pass).
        threads: onnxruntime intra-op threads per forward pass. 1 (the default) suits CPUs: parallel
            single-threaded forward passes (``batch_workers``) use the cores better than one
            multi-threaded pass; raise it for lower latency at low load.
        batch_workers: Forward passes run at the same time per process (micro-batcher worker
            threads); None = the usable CPU cores divided by ``threads``.
        device: onnxruntime device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    max_decode_bytes: int = Field(512 * 1024 * 1024, ge=1)
    max_decode_total_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    decode_wait_s: float = Field(5.0, ge=0.0, le=300.0)
    max_batch_files: int = Field(64, ge=1)
    top_k: int = Field(5, ge=1)
    batching: bool = True
    max_batch_size: int = Field(8, ge=1)
    max_wait_ms: float = Field(1.0, ge=0.0)
    threads: int = Field(1, ge=1)
    batch_workers: int | None = Field(None, ge=1)
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Build settings from ``LANDSIGHT_SERVE_<FIELD>`` environment variables.

        Args:
            environ: Mapping to read instead of ``os.environ``.
            **overrides: Field values that win over the environment.

        Returns:
            The validated settings.

        Raises:
            LandsightValueError: A variable or override has an invalid value; the message names it.

        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = None if raw.lower() == "none" else raw
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}" for e in exc.errors()
            )
            raise LandsightValueError(
                f"invalid serve settings ({problems}); set them as ServeSettings fields, "
                f"{ENV_PREFIX}<FIELD> variables or `landsight serve` options"
            ) from None

    def to_env(self) -> dict[str, str]:
        """Environment variables that recreate these settings in another process (uvicorn workers).

        Returns:
            ``{"LANDSIGHT_SERVE_<FIELD>": value}`` for every field.

        """
        return {ENV_PREFIX + name.upper(): str(value) for name, value in self.model_dump().items()}
