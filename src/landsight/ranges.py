"""The valid range of every count and size a user can give, checked the same way by the CLI and the API.

One table, :data:`RANGES`. The command line reads it into Typer's ``min`` / ``max``
(:func:`option_range`), so ``--batch-size 0`` is a usage error before anything runs; the Python
API calls :func:`check_ranges` at its boundary, with the same bounds and the same message shape
as scikit-learn's parameter validation ("batch_size must be an int in [1, inf), got -5").
"""

from __future__ import annotations

import math
from typing import Any

from landsight.errors import LandsightValueError

__all__ = ["RANGES", "check_ranges", "option_range"]

#: Parameter -> (smallest, largest) valid integer; None = unbounded.
RANGES: dict[str, tuple[int | None, int | None]] = {
    "batch_size": (1, None),
    "epochs": (1, None),
    "num_workers": (0, None),
    "devices": (1, None),
    "num_nodes": (1, None),
    "window_size": (32, None),
    "chip_size": (32, None),
    "chips_per_epoch": (1, None),
    "val_chips": (1, None),
    "size": (1, None),
    "n_calibration": (1, None),
    "trials": (1, None),
    "cv": (2, None),
    "n_estimators": (1, None),
    "workers": (1, None),
    "port": (0, 65535),
    "n_wrong": (0, None),
    "threshold": (0, 64),
    "dedup_threshold": (0, 64),
}


def option_range(name: str) -> dict[str, int]:
    """``min`` / ``max`` keyword arguments of ``typer.Option`` for parameter ``name``."""
    low, high = RANGES[name]
    return {k: v for k, v in (("min", low), ("max", high)) if v is not None}


def check_ranges(**values: Any) -> None:
    """Refuse a count or size outside its range in :data:`RANGES` (None values are skipped).

    Args:
        **values: Parameter name -> value, e.g. ``check_ranges(batch_size=32, num_workers=2)``.

    Raises:
        LandsightValueError: A value is not an integer in its range; the message names the
            parameter, the range and the value.
        KeyError: A name that :data:`RANGES` does not hold (a programming error).
    """
    for name, value in values.items():
        if value is None:
            continue
        low, high = RANGES[name]
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            span = f"[{-math.inf if low is None else low}, {math.inf if high is None else high}]"
            raise LandsightValueError(f"{name} must be an int in {span.replace('inf]', 'inf)')}, got {value!r}")
