"""Where landsight keeps derived files: exported ONNX backbones, cached features, extracted zips."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under the landsight cache.

    The root is ``$LANDSIGHT_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/landsight`` or
    ``~/.cache/landsight``.

    Args:
        *parts: Sub-folder names under the root.

    Returns:
        The folder path; it exists on return.

    """
    root = os.environ.get("LANDSIGHT_CACHE_DIR")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "landsight") if xdg else str(Path.home() / ".cache" / "landsight")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
