"""Perceptual hashes of images, their near-duplicate pairs, and train / test leakage.

Each image is decoded with :func:`landsight.data.readers.read_image` (so every format landsight
reads works, the first three bands of multiband rasters) and hashed with ``imagehash``: pHash by
default (Zauner, "Implementation and benchmarking of perceptual image hash functions", 2010: the
low frequencies of the DCT of a 32 x 32 grey image, 64 bits). Two images are near-duplicates when
the Hamming distance of their hashes is at most ``threshold`` bits. Re-encoding a JPEG at another
quality or resizing an image changes a pHash by a few bits at most, while distinct images differ
by about 32 bits on average.

Duplicates across training and test data inflate accuracy: :func:`drop_cross_split_duplicates`
removes test images that near-duplicate a training image (``landsight train --dedup``). Grouping
and removing duplicates in folders (``landsight dedup``) is :mod:`landsight.results.dedup`,
built on the hashes and pairs of this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_THRESHOLD",
    "HASH_METHODS",
    "check_hash_args",
    "drop_cross_split_duplicates",
    "hash_images",
    "near_pairs",
]

#: Hash functions of ``imagehash`` by name.
HASH_METHODS = ("phash", "dhash", "ahash", "whash")
#: Default largest Hamming distance, in bits (of 64), of two near-duplicates.
DEFAULT_THRESHOLD = 4


def check_hash_args(method: str, threshold: int, hash_size: int) -> None:
    """Refuse an unknown hash ``method`` or a ``threshold`` outside ``[0, hash_size ** 2)`` bits."""
    if method not in HASH_METHODS:
        raise LandsightValueError(f"hash method must be one of {HASH_METHODS}, got {method!r}")
    if not isinstance(threshold, int | np.integer) or not 0 <= threshold < hash_size * hash_size:
        raise LandsightValueError(
            f"threshold must be an integer number of bits in [0, {hash_size * hash_size}), got {threshold!r}"
        )


def hash_images(
    paths: Sequence[str | Path],
    *,
    method: str = "phash",
    hash_size: int = 8,
    num_workers: int = 2,
    progress: bool = True,
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Compute a perceptual hash of each image.

    Args:
        paths: Image files.
        method: ``"phash"`` (default), ``"dhash"``, ``"ahash"`` or ``"whash"`` (imagehash).
        hash_size: Hash side; the hash has ``hash_size ** 2`` bits (8 -> 64 bits).
        num_workers: Decoding threads.
        progress: Show a progress bar.

    Returns:
        ``(paths, bits, skipped)``: the readable paths, their hashes as a bool array of shape
        ``(n_images, hash_size ** 2)``, and ``(path, reason)`` for unreadable images (never
        fatal).

    Raises:
        LandsightValueError: Unknown ``method``.

    """
    from concurrent.futures import ThreadPoolExecutor

    import imagehash
    from PIL import Image

    from landsight.data.readers import read_image
    from landsight.errors import LandsightError
    from landsight.progress import progress_bar

    check_hash_args(method, 0, hash_size)
    func = getattr(imagehash, method)

    def one(path: str) -> np.ndarray | str:
        try:
            array = read_image(path).array
            img = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array[..., :3])
            return np.asarray(func(img, hash_size=hash_size).hash, dtype=bool).ravel()
        except (LandsightError, OSError) as exc:
            return getattr(exc, "reason", str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad image is reported, never fatal
            return f"cannot hash image: {type(exc).__name__}: {exc}"

    ok_paths: list[str] = []
    rows: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    str_paths = [str(p) for p in paths]
    with progress_bar(len(str_paths), "hash", enabled=progress) as bar, ThreadPoolExecutor(num_workers) as pool:
        for path, h in zip(str_paths, pool.map(one, str_paths), strict=True):
            if isinstance(h, str):
                skipped.append((path, h))
            else:
                ok_paths.append(path)
                rows.append(h)
            bar.advance()
    bits = np.stack(rows) if rows else np.zeros((0, hash_size * hash_size), dtype=bool)
    return ok_paths, bits, skipped


def near_pairs(bits: np.ndarray, threshold: int, block: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with Hamming distance <= threshold, blockwise (memory O(block * n))."""
    packed = np.packbits(bits, axis=1)
    pad = -packed.shape[1] % 8
    packed = np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view(np.uint64)  # (n, n_words)
    n = len(packed)
    ii, jj, dd = [], [], []
    for start in range(0, n, block):
        a = packed[start : start + block]
        dist = np.bitwise_count(a[:, None, :] ^ packed[None, :, :]).sum(axis=2, dtype=np.int32)
        i, j = np.nonzero(dist <= threshold)
        i = i + start
        keep = i < j
        ii.append(i[keep])
        jj.append(j[keep])
        dd.append(dist[i[keep] - start, j[keep]])
    if not ii:
        return np.empty(0, int), np.empty(0, int), np.empty(0, np.int32)
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(dd)


def drop_cross_split_duplicates(
    catalog: pd.DataFrame,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    method: str = "phash",
    num_workers: int = 2,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop test images that near-duplicate a training image (before evaluation).

    Args:
        catalog: Catalog with ``path`` and ``split`` (``"train"`` / ``"test"``) columns, as
            built in :func:`landsight.classify.train.train`.
        threshold: Hamming-distance threshold in bits.
        method: imagehash function name.
        num_workers: Decoding threads.
        progress: Show a progress bar.

    Returns:
        ``(kept, dropped)``: the catalog without the duplicated test rows, and the dropped rows
        with a column ``duplicate_of``: the nearest training image, within ``threshold`` bits
        (a test image near only other test images stays).

    Raises:
        LandsightValueError: Bad ``method`` or ``threshold``.

    """
    check_hash_args(method, threshold, 8)
    ok, bits, _ = hash_images(list(catalog["path"]), method=method, hash_size=8, num_workers=num_workers,
                              progress=progress)  # fmt: skip
    split_of = dict(zip(catalog["path"].astype(str), catalog["split"], strict=True))
    is_train = np.array([split_of[p] == "train" for p in ok], dtype=bool)
    i, j, d = near_pairs(bits, threshold)
    best: dict[str, tuple[int, str]] = {}  # test path -> (distance, nearest training path)
    for a, b, dist in zip(i, j, d, strict=True):
        if is_train[a] == is_train[b]:
            continue
        test_path, train_path = (ok[b], ok[a]) if is_train[a] else (ok[a], ok[b])
        if split_of[test_path] == "test" and (test_path not in best or int(dist) < best[test_path][0]):
            best[test_path] = (int(dist), train_path)
    duplicate_of = {p: train for p, (_, train) in best.items()}
    is_bad = catalog["path"].astype(str).isin(duplicate_of.keys())
    dropped = catalog[is_bad].assign(duplicate_of=lambda d: d["path"].astype(str).map(duplicate_of))
    return catalog[~is_bad].reset_index(drop=True), dropped.reset_index(drop=True)
