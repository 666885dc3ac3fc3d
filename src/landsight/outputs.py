"""Safe outputs: every file landsight writes is written atomically and never replaces a user's file.

* :func:`atomic_path` yields a temporary path in the destination's folder and renames it over the
  destination only when the block finishes without an exception, so a failed run leaves any
  existing file byte-for-byte as it was (``os.replace`` is atomic within one file system).
* :func:`check_output` refuses, before any work, an output that is one of the run's inputs, or
  an existing file without ``overwrite``.
* :func:`write_json` writes strict JSON (NaN and infinity become ``null``; numpy scalars and
  arrays, tuples, sets and paths are converted) atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError, OutputExistsError

__all__ = ["atomic_path", "check_output", "json_safe", "same_file", "write_json"]


@contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    Args:
        path: The destination file.
        suffix: Suffix of the temporary name (default: ``path``'s own, so writers that choose the
            format from the suffix, such as rasterio or matplotlib, still see it).

    Yields:
        The temporary path (``.<name>.tmp<suffix>`` in the same folder). On an exception it is
        deleted and ``path`` is left untouched.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix if suffix is None else suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists() and tmp.is_file():
            tmp.unlink()


def json_safe(value: Any) -> Any:
    """Return ``value`` with NaN / infinite floats as ``None`` and numpy / path types as plain JSON types."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as indented, strict JSON (see :func:`json_safe`), atomically.

    Args:
        path: Destination file.
        value: Any JSON-like value.

    Returns:
        ``path``.

    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(value), indent=2, allow_nan=False))
    return Path(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Return whether two paths name the same file (resolving links; False when either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output(
    out: str | Path,
    *,
    inputs: Iterable[str | Path] = (),
    overwrite: bool = False,
    what: str = "output",
) -> Path:
    """Validate an output path before any work is done.

    Args:
        out: The output file.
        inputs: The run's input files; ``out`` may not be one of them.
        overwrite: Allow replacing an existing ``out``.
        what: How to name ``out`` in errors (``"output raster"``...).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        LandsightValueError: ``out`` is one of ``inputs`` (it would destroy the input).
        OutputExistsError: ``out`` exists and ``overwrite`` is False.

    """
    out = Path(out)
    for src in inputs:
        if same_file(out, src):
            raise LandsightValueError(
                f"{what} {str(out)!r} is also an input of this run; writing it would destroy the input. "
                "Choose another output path."
            )
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{what} {str(out)!r} already exists; pass --overwrite to replace it")
    return out
