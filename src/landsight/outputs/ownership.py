"""Ownership: what landsight made, so that ``--overwrite`` replaces that and nothing else.

A folder landsight makes (a bundle, checkpoints, tiles, a demo or evaluation folder) holds a
manifest, :data:`MANIFEST`, listing its files (and, for folders filled while a run goes on, the
patterns of the names it will add). A file landsight writes into a folder it does not own is
listed, with its size and modification time, in that folder's :data:`FILES_MANIFEST`. A folder
is a bundle when its manifest says so: a bare ``bundle.json`` does not make one.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from landsight.outputs.atomic import TMP_PREFIX, atomic_path

#: Manifest of a folder landsight made: ``{"landsight": 1, "kind": ..., "files": [...], "patterns": [...]}``.
MANIFEST = ".landsight-manifest.json"
#: Files landsight wrote into a folder it does not own: ``{"files": {name: {"size", "mtime_ns"}}}``.
FILES_MANIFEST = ".landsight-files.json"

def _listed_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.name != MANIFEST and not p.name.startswith(TMP_PREFIX)
    )


def mark_folder(folder: str | Path, kind: str, *, patterns: Sequence[str] = ()) -> Path:
    """Write ``folder``'s manifest: landsight made this folder and every file now in it.

    Args:
        folder: A folder landsight has just written (a bundle, checkpoints, tiles...).
        kind: What it is (``"bundle"``, ``"checkpoints"``, ``"tiles"``, ``"demo"``, ``"evaluation"``).
        patterns: Glob patterns (of paths relative to ``folder``) of files landsight will add
            later, such as checkpoints written while training: they count as listed.

    Returns:
        The manifest's path.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps({"landsight": 1, "kind": kind, "files": _listed_files(folder),
                                   "patterns": list(patterns)}, indent=1))  # fmt: skip
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """``folder``'s manifest, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("files"), list) and isinstance(data.get("kind"), str)
    return data if ok else None


def owned_folder(folder: str | Path) -> str | None:
    """Why landsight may not replace ``folder``, or None when it made it and nothing was added since.

    Args:
        folder: An existing folder.

    Returns:
        None when ``folder`` holds a manifest that lists every file in it; otherwise one line
        naming the problem (no manifest, or one file the manifest does not list).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return f"{str(folder)!r} was not made by landsight (no {MANIFEST})"
    listed = set(manifest["files"])
    patterns = [str(p) for p in manifest.get("patterns") or []]
    for name in _listed_files(folder):
        if name not in listed and not any(fnmatch.fnmatch(name, p) for p in patterns):
            return f"{str(folder)!r} holds {name!r}, which landsight did not write"
    return None


def bundle_root(path: str | Path) -> Path | None:
    """The landsight bundle that ``path`` is, or lies inside, or None.

    A folder is a bundle when its manifest says so; a bare ``bundle.json`` does not make one.
    """
    path = Path(os.path.realpath(path))
    for folder in (path, *path.parents):
        manifest = read_manifest(folder) if folder.is_dir() else None
        if manifest is not None and manifest["kind"] == "bundle":
            return folder
    return None


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def mark_file(path: str | Path) -> None:
    """Record that landsight wrote ``path`` (in its folder's :data:`FILES_MANIFEST`, or its folder's manifest)."""
    path = Path(path)
    if not path.is_file():
        return
    folder = path.parent
    if read_manifest(folder) is not None:  # a folder landsight made: list the file there
        manifest = read_manifest(folder) or {}
        if path.name not in manifest["files"]:
            manifest["files"] = sorted([*manifest["files"], path.name])
            with atomic_path(folder / MANIFEST) as tmp:
                tmp.write_text(json.dumps(manifest, indent=1))
        return
    registry = folder / FILES_MANIFEST
    try:
        files = json.loads(registry.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        files = {}
    files = {k: v for k, v in files.items() if (folder / k).exists()}
    files[path.name] = _stat_key(path)
    with atomic_path(registry) as tmp:
        tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))


def owned_file(path: str | Path) -> bool:
    """Whether landsight wrote the file ``path`` and it is unchanged since (size and modification time)."""
    path = Path(path)
    folder = path.parent
    manifest = read_manifest(folder)
    if manifest is not None:
        return path.name in manifest["files"]
    try:
        entry = json.loads((folder / FILES_MANIFEST).read_text()).get("files", {}).get(path.name)
    except (OSError, ValueError, AttributeError):
        return False
    return entry == _stat_key(path)
