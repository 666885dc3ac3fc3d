"""Micro-batching: concurrent requests' images share one onnxruntime forward pass.

Request threads call :meth:`MicroBatcher.predict` (or :meth:`MicroBatcher.submit`); a worker
thread takes the first queued request, then keeps collecting until ``max_batch_size`` images are
gathered or ``max_wait_ms`` has passed, runs ``predict_proba`` once on the stacked images and
hands each request its rows back through a :class:`concurrent.futures.Future`. Whatever queues
up while a forward pass runs goes into the next one, so batches grow with load by themselves.

``workers`` worker threads may run forward passes at the same time. On CPUs, small graphs such as
EfficientNet-Lite scale better across cores as parallel single-threaded forward passes than as
one forward pass over all cores (onnxruntime releases the GIL while it runs), so the service
runs one worker per core with one onnxruntime thread each by default.

Pure Python and NumPy: no FastAPI here, so the batcher can be tested and reused on its own.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from landsight.errors import LandsightValueError

__all__ = ["BatcherStats", "MicroBatcher"]

logger = logging.getLogger(__name__)

_STOP = object()


@dataclass
class BatcherStats:
    """Counters of a :class:`MicroBatcher` (read them for monitoring or tests).

    Attributes:
        batches: Forward passes run.
        images: Images predicted.
        max_batch: Largest forward pass, in images.

    """

    batches: int = 0
    images: int = 0
    max_batch: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, n: int) -> None:
        """Count one forward pass of ``n`` images."""
        with self._lock:
            self.batches += 1
            self.images += n
            self.max_batch = max(self.max_batch, n)

    @property
    def mean_batch(self) -> float:
        """Mean images per forward pass (0.0 before the first)."""
        return self.images / self.batches if self.batches else 0.0


@dataclass
class _Job:
    images: np.ndarray
    future: Future[np.ndarray]


class MicroBatcher:
    """Collect images from concurrent callers into batched ``predict`` calls on one worker thread.

    Args:
        predict: Batch function, e.g. :meth:`landsight.bundle.Bundle.predict_proba`: takes
            ``(N, H, W, C)`` uint8 and returns ``(N, n_classes)`` float32.
        max_batch_size: Most images per call of ``predict``. A single request larger than this is
            run on its own, never split.
        max_wait_ms: Milliseconds to wait for more requests after the first one of a batch;
            0 takes only those already queued.
        workers: Worker threads, i.e. forward passes that may run at the same time.

    Raises:
        LandsightValueError: ``max_batch_size < 1``, ``max_wait_ms < 0`` or ``workers < 1``.

    Example:
        >>> batcher = MicroBatcher(bundle.predict_proba, max_batch_size=32, max_wait_ms=2)  # doctest: +SKIP
        >>> with batcher:  # doctest: +SKIP
        ...     proba = batcher.predict(images)  # (N, n_classes) float32

    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        workers: int = 1,
    ) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise LandsightValueError(f"max_batch_size must be an integer >= 1; got {max_batch_size!r}")
        if not max_wait_ms >= 0:
            raise LandsightValueError(f"max_wait_ms must be a number >= 0; got {max_wait_ms!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise LandsightValueError(f"workers must be an integer >= 1; got {workers!r}")
        self.predict_fn = predict
        self.max_batch_size = max_batch_size
        self.max_wait_ms = float(max_wait_ms)
        self.workers = workers
        self.stats = BatcherStats()
        self._queue: queue.Queue[object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MicroBatcher:
        """Start the worker threads (idempotent); returns ``self``."""
        if not self._threads:
            self._closed = False
            self._threads = [
                threading.Thread(target=self._run, name=f"landsight-microbatcher-{i}", daemon=True)
                for i in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()
        return self

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued work, then stop the worker threads.

        Args:
            timeout: Seconds to wait for each worker to finish.

        """
        if not self._threads:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def __enter__(self) -> MicroBatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether the worker threads are alive."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    # -- callers ---------------------------------------------------------------------------------

    def submit(self, images: np.ndarray) -> Future[np.ndarray]:
        """Queue images for the next forward pass.

        Args:
            images: ``(N, H, W, C)`` uint8, N >= 1, already resized to the network input size.

        Returns:
            A future resolving to ``(N, n_classes)`` float32, or to the exception ``predict`` raised.

        Raises:
            RuntimeError: The batcher is not running.

        """
        if self._closed or not self._threads:
            raise RuntimeError("the micro-batcher is not running; call start() first")
        future: Future[np.ndarray] = Future()
        self._queue.put(_Job(images, future))
        return future

    def predict(self, images: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """Predict images through the shared forward pass and wait for the result.

        Args:
            images: ``(N, H, W, C)`` uint8, already resized to the network input size.
            timeout: Seconds to wait; None waits as long as it takes.

        Returns:
            ``(N, n_classes)`` float32, in the order of ``images``.

        Raises:
            RuntimeError: The batcher is not running.
            TimeoutError: No result within ``timeout``.

        """
        return self.submit(images).result(timeout)

    # -- worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        carry: _Job | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                self._drain(None)
                return
            assert isinstance(first, _Job)  # noqa: S101 - internal invariant, not user input
            jobs = [first]
            count = len(first.images)
            deadline = time.monotonic() + self.max_wait_ms / 1000.0
            stop = False
            while count < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, _Job)  # noqa: S101
                if count + len(item.images) > self.max_batch_size:
                    carry = item  # would overflow: first in the next batch
                    break
                jobs.append(item)
                count += len(item.images)
            self._run_batch(jobs)
            if stop:
                self._drain(carry)
                return

    def _drain(self, carry: _Job | None) -> None:
        """Run what is still queued, one request at a time, before a worker stops."""
        if carry is not None:
            self._run_batch([carry])
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                self._run_batch([job])
            else:
                self._queue.put(job)  # another worker's stop signal
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            stacked = jobs[0].images if len(jobs) == 1 else np.concatenate([j.images for j in jobs], axis=0)
            proba = self.predict_fn(stacked)
        except BaseException as exc:  # noqa: BLE001 - every caller must hear about the failure
            logger.exception("micro-batch forward pass of %d request(s) failed", len(jobs))
            for job in jobs:
                job.future.set_exception(exc)
            return
        self.stats.record(len(stacked))
        start = 0
        for job in jobs:
            n = len(job.images)
            job.future.set_result(proba[start : start + n])
            start += n
