"""A byte-counting semaphore: the scoring service's process-wide decoding-memory budget.

Each request reserves its image's estimated decoding memory
(:attr:`landsight.data.readers.ImageHeader.decode_bytes`) before decoding and gives it back after,
so the images decoded at the same time by one process never need more than ``total`` bytes
together, however many requests are in flight. A reservation that does not fit waits (up to a
timeout) for others to be released.

Pure Python: no FastAPI here, so the budget can be tested and reused on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from landsight.errors import LandsightValueError

__all__ = ["DecodeBudget"]


class DecodeBudget:
    """Share ``total`` bytes among threads: :meth:`acquire` blocks until the bytes fit.

    Args:
        total: The budget in bytes (>= 1).

    Raises:
        LandsightValueError: ``total`` is not a positive integer.

    Example:
        >>> budget = DecodeBudget(1000)
        >>> with budget.hold(600, timeout=0.0):
        ...     budget.in_use
        600
        >>> budget.acquire(600, timeout=0.0), budget.peak
        (True, 600)

    """

    def __init__(self, total: int) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise LandsightValueError(f"a decoding budget must be a positive number of bytes; got {total!r}")
        self._total = total
        self._in_use = 0
        self._peak = 0
        self._refused = 0
        self._cond = threading.Condition()

    @property
    def total(self) -> int:
        """The budget, in bytes."""
        return self._total

    @property
    def in_use(self) -> int:
        """Bytes reserved now (read-only)."""
        return self._in_use

    @property
    def peak(self) -> int:
        """Most bytes ever reserved at the same time (read-only; never above :attr:`total`)."""
        return self._peak

    @property
    def refused(self) -> int:
        """Reservations that timed out (read-only)."""
        return self._refused

    def acquire(self, nbytes: int, timeout: float) -> bool:
        """Reserve ``nbytes`` bytes, waiting up to ``timeout`` seconds for them to fit.

        Args:
            nbytes: Bytes to reserve (0 reserves nothing and returns True at once).
            timeout: Seconds to wait at most; 0 does not wait.

        Returns:
            True when reserved (call :meth:`release` with the same ``nbytes`` later); False when
            the bytes did not fit in time, or never can (``nbytes > total``).

        Raises:
            LandsightValueError: ``nbytes`` is negative.

        """
        if nbytes < 0:
            raise LandsightValueError(f"cannot reserve a negative number of bytes ({nbytes})")
        if nbytes == 0:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if nbytes <= self._total:
                while self._in_use + nbytes > self._total:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._in_use += nbytes
                    self._peak = max(self._peak, self._in_use)
                    return True
            self._refused += 1
            return False

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` bytes reserved by :meth:`acquire` and wake the waiting threads.

        Args:
            nbytes: The bytes reserved.

        """
        if nbytes <= 0:
            return
        with self._cond:
            self._in_use = max(0, self._in_use - nbytes)
            self._cond.notify_all()

    @contextmanager
    def hold(self, nbytes: int, timeout: float) -> Iterator[None]:
        """Reserve ``nbytes`` bytes for the ``with`` block, released however the block ends.

        Args:
            nbytes: Bytes to reserve.
            timeout: Seconds to wait at most for them to fit.

        Yields:
            None, once reserved.

        Raises:
            TimeoutError: The bytes did not fit within ``timeout`` (or exceed :attr:`total`).

        """
        if not self.acquire(nbytes, timeout):
            raise TimeoutError(
                f"{nbytes} bytes did not fit in the decoding budget of {self._total} bytes "
                f"({self._in_use} in use) within {timeout} s"
            )
        try:
            yield
        finally:
            self.release(nbytes)
