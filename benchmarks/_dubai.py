"""A chip-classification set cut from the Dubai segmentation tiles (a land-use set nobody tuned on).

The Dubai aerial set (``../shared/data/dubai_aerial``, 54 RGB JPEGs with per-pixel labels) is a
segmentation set; no third land-use *classification* set can be installed from the package
registries here (the torchgeo / tfds loaders download from the internet). So each image is cut
into non-overlapping 96 x 96 chips, and a chip keeps the label of its majority class when at least
90 % of its pixels are labelled and at least 80 % carry that class; other chips are dropped.
Classes with fewer than 40 such chips (Road: 1) are dropped, and at most 150 chips per class are
kept (a seeded random choice), which gives 4 classes: Water 150, Land 150, Vegetation 150,
Building 64. Chips of one image are spatially correlated and a random split puts neighbours on
both sides, so absolute accuracies are optimistic; the comparison between methods on the same
splits is what the benchmarks use it for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Label codes of ``labels/*.png`` (see ``../shared/data/README.md``).
DUBAI_CLASSES = {1: "Water", 2: "Vegetation", 4: "Land", 5: "Building", 6: "Road"}

CHIP = 96
MIN_LABELLED = 0.9
MIN_PURITY = 0.8
MIN_CHIPS = 40
MAX_CHIPS = 150


def dubai_chips(root: Path, dest: Path) -> Path:
    """Write the Dubai chip set as class folders of PNG chips under ``dest`` (idempotent).

    Args:
        root: The ``dubai_aerial`` folder (``tile_<t>/{images,labels}/``).
        dest: Output folder; reused as is when it already holds chips.

    Returns:
        ``dest``, a folder of class folders that :func:`landsight.data.catalog.build_catalog` reads.
    """
    from PIL import Image

    if dest.exists() and any(dest.rglob("*.png")):
        return dest
    chips: dict[int, list[np.ndarray]] = {}
    for label_path in sorted(root.glob("tile_*/labels/*.png")):
        image_path = label_path.parent.parent / "images" / f"{label_path.stem}.jpg"
        mask = np.asarray(Image.open(label_path))
        image = np.asarray(Image.open(image_path).convert("RGB"))
        h, w = mask.shape[:2]
        for y in range(0, h - CHIP + 1, CHIP):
            for x in range(0, w - CHIP + 1, CHIP):
                codes = mask[y : y + CHIP, x : x + CHIP].ravel()
                labelled = codes[codes > 0]
                if len(labelled) < MIN_LABELLED * len(codes):
                    continue
                values, counts = np.unique(labelled, return_counts=True)
                if counts.max() >= MIN_PURITY * len(codes):
                    chips.setdefault(int(values[counts.argmax()]), []).append(image[y : y + CHIP, x : x + CHIP])
    rng = np.random.default_rng(0)
    for code, found in sorted(chips.items()):
        if len(found) < MIN_CHIPS:
            continue
        keep = sorted(rng.choice(len(found), size=min(MAX_CHIPS, len(found)), replace=False))
        folder = dest / DUBAI_CLASSES[code]
        folder.mkdir(parents=True, exist_ok=True)
        for i in keep:
            Image.fromarray(found[i]).save(folder / f"{DUBAI_CLASSES[code]}_{i:04d}.png")
    return dest
