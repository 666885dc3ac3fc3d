"""Atomic writes and temporary names: a failed or killed run leaves every existing file as it was.

* :func:`atomic_path` yields a temporary path in the destination's folder and renames it over the
  destination only when the block finishes without an exception, so a failed run leaves any
  existing file byte-for-byte as it was (``os.replace`` is atomic within one file system).
* Temporary names start with :data:`TMP_PREFIX` and carry the writer's process id, so a later
  run recognises and removes the ones a killed run left (:func:`remove_stale_tmp`).
* :func:`write_json` writes strict JSON (NaN and infinity become ``null``; numpy scalars and
  arrays, tuples, sets and paths are converted) atomically.
* :func:`check_output` refuses an output that is one of the run's inputs, or an existing file
  without ``overwrite`` (the single-file check of the Python API; commands use
  :func:`landsight.outputs.plan.check_plan`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError, OutputExistsError

#: Prefix of every temporary name landsight writes; followed by the writer's process id.
TMP_PREFIX = ".landsight-tmp-"

def tmp_name(path: str | Path, tag: str = "tmp") -> Path:
    """A temporary sibling of ``path``: ``.landsight-tmp-<pid>-<tag>-<name>``, recognisable by later runs.

    The suffix of ``path`` is kept, so writers that choose the format from it (rasterio,
    matplotlib, pandas) still see it.
    """
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{tag}-{path.name}")


def scratch_dir(tag: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder in ``$TMPDIR`` named ``.landsight-tmp-<pid>-<tag>-*``; a later run removes it if left."""
    return tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-{tag}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders a killed landsight run left in ``folder``.

    Only names with :data:`TMP_PREFIX` whose process id is not a running process are removed.

    Args:
        folder: A folder landsight is about to write into.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.glob(f"{TMP_PREFIX}*"):
        pid_text = entry.name[len(TMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    Args:
        path: The destination file.
        suffix: Suffix of the temporary name (default: ``path``'s own, so writers that choose the
            format from the suffix, such as rasterio or matplotlib, still see it).

    Yields:
        The temporary path (:func:`tmp_name`, in the same folder). On an exception, a signal
        handled as one, it is deleted and ``path`` is left untouched.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    if suffix is not None:
        tmp = tmp.with_suffix(suffix)
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
