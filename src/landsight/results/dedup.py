"""Near-duplicate images within and across folders: find them, plan and apply their removal.

Images are hashed and paired by :mod:`landsight.data.duplicates` (pHash by default: two images
are near-duplicates when their hashes differ by at most ``threshold`` bits); groups are the
connected components of that relation. :func:`find_duplicates` groups the images of one or more
sources (``landsight dedup train/ test/``); dropping test images that near-duplicate a training
image before evaluation (``landsight train --dedup``) is
:func:`~landsight.data.duplicates.drop_cross_split_duplicates`, re-exported here.

Nothing is deleted or moved by :func:`find_duplicates`; :func:`plan_removal` lists what would go
and :func:`apply_removal` acts on that list only.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from landsight.data.duplicates import (
    DEFAULT_THRESHOLD,
    HASH_METHODS,
    check_hash_args,
    drop_cross_split_duplicates,
    hash_images,
    near_pairs,
)
from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HASH_METHODS",
    "DedupResult",
    "apply_removal",
    "drop_cross_split_duplicates",
    "find_duplicates",
    "hash_images",
    "plan_removal",
]


@dataclass
class DedupResult:
    """Near-duplicate groups found by :func:`find_duplicates`.

    Attributes:
        groups: One row per image that has at least one near-duplicate: ``group`` (int id),
            ``path``, ``split`` (the source it came from), ``hash`` (hex) and ``distance``
            (bits from the group's first member), sorted by group, then source (in the order
            the sources were given), then path.
        n_images: Images hashed.
        skipped: ``(path, reason)`` of images that could not be read.
        threshold: The Hamming-distance threshold used (bits).
        method: The hash function used.

    """

    groups: pd.DataFrame
    n_images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    threshold: int = DEFAULT_THRESHOLD
    method: str = "phash"

    @property
    def n_groups(self) -> int:
        """Number of near-duplicate groups."""
        return int(self.groups["group"].nunique()) if len(self.groups) else 0

    @property
    def cross_split_groups(self) -> pd.DataFrame:
        """The rows of groups whose members come from more than one split."""
        if not len(self.groups):
            return self.groups
        n_splits = self.groups.groupby("group")["split"].transform("nunique")
        return self.groups[n_splits > 1]


def find_duplicates(
    sources: str | Path | Sequence[str | Path],
    *,
    threshold: int = DEFAULT_THRESHOLD,
    method: str = "phash",
    hash_size: int = 8,
    num_workers: int = 2,
    progress: bool = True,
) -> DedupResult:
    """Group near-duplicate images within and across folders (or any image sources).

    Args:
        sources: One source or several (e.g. ``["train/", "test/"]``): folders (recursive),
            globs, list files or single images (see :func:`landsight.data.listing.list_images`).
            Each source is a "split", named by its path, so duplicates across splits show.
        threshold: Largest Hamming distance, in bits, of two near-duplicates (default 4 of 64).
        method: imagehash function: ``"phash"`` (default), ``"dhash"``, ``"ahash"``, ``"whash"``.
        hash_size: Hash side (8 -> 64-bit hashes).
        num_workers: Decoding threads.
        progress: Show a progress bar.

    Returns:
        A :class:`DedupResult`. Nothing is changed on disk.

    Raises:
        LandsightValueError: Bad ``method`` or ``threshold``.
        DataNotFoundError: A source holds no images.

    """
    from landsight.data.listing import list_images

    check_hash_args(method, threshold, hash_size)
    items = [sources] if isinstance(sources, str | Path) else list(sources)
    paths: list[str] = []
    splits: list[str] = []
    for src in items:
        found = list_images(src)
        paths += found
        splits += [str(src)] * len(found)
    return _group(paths, splits, threshold=threshold, method=method, hash_size=hash_size,
                  num_workers=num_workers, progress=progress)  # fmt: skip


def _group(
    paths: Sequence[str],
    splits: Sequence[str],
    *,
    threshold: int,
    method: str,
    hash_size: int,
    num_workers: int,
    progress: bool,
) -> DedupResult:
    import pandas as pd
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    split_of = dict(zip(paths, splits, strict=True))
    ok, bits, skipped = hash_images(paths, method=method, hash_size=hash_size, num_workers=num_workers,
                                    progress=progress)  # fmt: skip
    i, j, _ = near_pairs(bits, threshold)
    columns = ["group", "path", "split", "hash", "distance"]
    if not len(i):
        return DedupResult(pd.DataFrame(columns=columns), len(ok), skipped, threshold, method)
    n = len(ok)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    members = np.unique(np.concatenate([i, j]))
    rank = {sp: k for k, sp in enumerate(dict.fromkeys(splits))}  # sources in the order given
    frame = pd.DataFrame({"component": label[members], "path": [ok[m] for m in members], "idx": members})
    frame["rank"] = [rank[split_of[p]] for p in frame["path"]]
    frame = frame.sort_values(["component", "rank", "path"])
    first = frame.groupby("component")["idx"].transform("first").to_numpy()
    idx = frame["idx"].to_numpy()
    frame["distance"] = (bits[idx] != bits[first]).sum(axis=1)
    frame["hash"] = [np.packbits(bits[k]).tobytes().hex() for k in idx]
    frame["split"] = [split_of[p] for p in frame["path"]]
    order = {c: g for g, c in enumerate(dict.fromkeys(frame["component"]))}
    frame["group"] = frame["component"].map(order)
    return DedupResult(frame[columns].reset_index(drop=True), n, skipped, threshold, method)


def _hamming(a: str, b: str) -> int:
    """Bits that differ between two hex-encoded hashes."""
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


def plan_removal(result: DedupResult, *, keep_split: str | None = None) -> pd.DataFrame:
    """List the images to remove so that each one is a near-duplicate of an image kept.

    Groups are connected components, so a chain A ~ B ~ C can hold images further apart than
    the threshold. Within each group the first member (first source given, then first path; or
    the first member in ``keep_split`` when the group has one there) is kept and the members
    within ``result.threshold`` bits of it are removed; members further away are planned the
    same way among themselves (greedy leader clustering), so no image is removed unless it is
    within the threshold of the image kept in its place.

    Args:
        result: From :func:`find_duplicates`.
        keep_split: Prefer keeping images of this split (as named in ``result.groups``).

    Returns:
        Rows of ``result.groups`` to remove, with ``kept`` (the path kept instead) and
        ``distance`` now the bits between the removed image and ``kept``.

    """
    import pandas as pd

    groups = result.groups
    if not len(groups):
        return groups.assign(kept=[])
    rows = []
    for _, g in groups.groupby("group", sort=True):
        if keep_split is not None:
            g = pd.concat([g[g["split"] == keep_split], g[g["split"] != keep_split]])
        left = list(g.itertuples(index=False))
        while left:
            leader, near, far = left[0], [], []
            for row in left[1:]:
                d = _hamming(row.hash, leader.hash)
                (near if d <= result.threshold else far).append(row._replace(distance=d))
            rows += [{**r._asdict(), "kept": leader.path} for r in near]
            left = far
    return pd.DataFrame(rows, columns=[*groups.columns, "kept"])


def apply_removal(plan: pd.DataFrame, *, move_to: str | Path | None = None) -> list[str]:
    """Delete (or move) exactly the images listed by :func:`plan_removal`.

    Args:
        plan: Rows with a ``path`` column, as returned by :func:`plan_removal` (list it to the
            user first; the CLI prints it before acting).
        move_to: Folder to move the images into (keeping their path below the common parent
            of the plan, so names cannot collide); None deletes them.

    Returns:
        The paths deleted or moved.

    Raises:
        LandsightValueError: ``move_to`` is an existing file, or a file there would be
            overwritten (checked before anything moves).

    """
    import os

    paths = [str(p) for p in plan["path"]] if len(plan) else []
    if not paths:
        return []
    if move_to is not None:
        dest = Path(move_to)
        if dest.exists() and not dest.is_dir():
            raise LandsightValueError(f"move_to {str(dest)!r} is a file; give a folder")
        root = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))
        targets = [dest / Path(p).resolve().relative_to(root) for p in paths]
        taken = [str(t) for t in targets if t.exists()]
        if taken:
            raise LandsightValueError(
                f"move_to would overwrite {len(taken)} existing file(s), e.g. {taken[0]!r}; nothing was moved: "
                "give an empty folder"
            )
        for p, target in zip(paths, targets, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, target)
    else:
        for p in paths:
            Path(p).unlink(missing_ok=True)
    return paths
