"""Held-out test data for training: ``--test`` must not be the training data.

:func:`check_test_source` refuses ``train DATA --test DATA`` before any work;
:func:`drop_shared_test_paths` leaves out of the test split the images that are also training
images (same resolved path: they cannot be in both splits), and :func:`warn_same_content` names
test images whose bytes equal a training image's (content sha256, known after featurizing). Each
finding is one line on stderr (``warning: ...``) or one :class:`~landsight.errors.LandsightValueError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landsight.errors import LandsightValueError

__all__ = ["check_test_source", "drop_shared_test_paths", "warn", "warn_same_content"]


def _same_source(a: str | Path, b: str | Path) -> bool:
    """Tell whether two data sources name the same folder, file or URL (links and ``..`` resolved)."""
    if "://" in str(a) or "://" in str(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        return pa.resolve() == pb.resolve() or pa.samefile(pb)
    except OSError:
        return False


def check_test_source(data: str | Path, test: str | Path | None) -> None:
    """Refuse separate test data that is the training data itself.

    Args:
        data: The training data (``DATA``).
        test: The separate test data (``--test``), or None.

    Raises:
        LandsightValueError: ``test`` names the same folder, file or URL as ``data``.
    """
    if test is not None and _same_source(data, test):
        raise LandsightValueError(
            f"--test is the same data as DATA ({str(data)!r}); give held-out images or leave --test out to split DATA"
        )


def drop_shared_test_paths(catalog: Any) -> tuple[Any, list[str]]:
    """Drop the test rows whose file is also a training row (same resolved path).

    An image cannot be both trained on and tested on: its test row would only overstate the
    accuracy (and one path in two splits is ambiguous).

    Args:
        catalog: A training catalog with a ``split`` column (:func:`landsight.data.splitting.training_catalog`).

    Returns:
        The catalog without those rows (``attrs`` kept), and their paths.

    Raises:
        LandsightValueError: Every test image is a training image (``--test`` lies inside ``DATA``).
    """
    is_test = catalog["split"] == "test"
    if not is_test.any():
        return catalog, []
    fitted = {os.path.realpath(p) for p in catalog.loc[~is_test, "path"]}
    shared = np.array([os.path.realpath(p) in fitted for p in catalog["path"]], dtype=bool) & is_test.to_numpy()
    if not shared.any():
        return catalog, []
    if shared.sum() == is_test.sum():
        raise LandsightValueError(
            f"every --test image is also in DATA ({int(shared.sum())}, e.g. {catalog.loc[shared, 'path'].iloc[0]!r}); "
            "give held-out images or leave --test out to split DATA"
        )
    kept = catalog[~shared].reset_index(drop=True)
    kept.attrs = dict(catalog.attrs)
    return kept, list(catalog.loc[shared, "path"])


def warn_same_content(catalog: Any, paths: Sequence[str], shas: Sequence[str], *, dedup: bool) -> None:
    """Warn, on one line, about test images whose bytes equal a training image's (content sha256)."""
    split = dict(zip(catalog["path"], catalog["split"], strict=True))
    fitted: dict[str, str] = {}
    for path, sha in zip(paths, shas, strict=True):
        if split.get(path) not in (None, "test"):
            fitted.setdefault(sha, path)
    tested = [(p, s) for p, s in zip(paths, shas, strict=True) if split.get(p) == "test"]
    same = [(p, fitted[s]) for p, s in tested if s in fitted]
    if same:
        fix = "they are dropped by --dedup" if dedup else "pass --dedup to drop them"
        warn(
            f"{len(same)} of {len(tested)} --test images have the same content as images in DATA (e.g. "
            f"{same[0][0]!r} = {same[0][1]!r}); their accuracy is not held-out accuracy: {fix}"
        )


def warn(message: str) -> None:
    """Print ``warning: <message>`` on one line of stderr (:func:`landsight.console.err`)."""
    from rich.markup import escape

    from landsight.console import err

    err().print(f"[yellow]warning:[/yellow] {escape(message)}")
