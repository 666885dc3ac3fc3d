"""A torch Dataset of decoded, resized uint8 images with integer labels, for fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from landsight.data.preprocessing import Preprocessing
from landsight.data.readers import read_image


class ImageDataset(Dataset):
    """Images decoded and resized on access; labels as class indices.

    Unreadable images must be removed beforehand (``landsight.classify.finetune`` checks every image once
    and reports the bad ones), so a worker never fails mid-epoch.

    Args:
        paths: Image files, length N.
        targets: Class index per image, length N.
        preprocessing: Band choice and input size.

    Items: ``(image, target)``: ``(H, W, C)`` uint8 tensor and an int64 scalar.
    """

    def __init__(self, paths: Sequence[str], targets: Sequence[int], preprocessing: Preprocessing) -> None:
        self.paths, self.targets, self.preprocessing = list(paths), np.asarray(targets, np.int64), preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.paths[i], bands=self.preprocessing.bands).array
        array = self.preprocessing.resize(image)
        image_tensor = torch.from_numpy(np.array(array))  # a writable copy
        return image_tensor, torch.tensor(self.targets[i])
