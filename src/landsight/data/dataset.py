"""Torch Datasets of training samples as dicts (``{"image": ..., "label": ...}``), for fine-tuning.

Samples are dicts of tensors, as torchgeo's are: torch's default collate stacks them into the
batch dicts a :class:`~landsight.models.task.TaskModule` takes (``"image"``: the model input,
``"label"``: class indices).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from landsight.data.preprocessing import Preprocessing
from landsight.data.readers import read_image
from landsight.errors import LandsightValueError


class ImageDataset(Dataset):
    """Images decoded and resized on access; labels as class indices.

    Unreadable images must be removed beforehand (``landsight.classify.finetune`` checks every image once
    and reports the bad ones), so a worker never fails mid-epoch.

    Args:
        paths: Image files, length N.
        targets: Class index per image, length N.
        preprocessing: Band choice and input size.

    Items: ``{"image": (H, W, C) uint8 tensor, "label": int64 scalar tensor}`` (collated:
    ``(N, H, W, C)`` uint8 and ``(N,)`` int64).
    """

    def __init__(self, paths: Sequence[str], targets: Sequence[int], preprocessing: Preprocessing) -> None:
        self.paths, self.targets, self.preprocessing = list(paths), np.asarray(targets, np.int64), preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = read_image(self.paths[i], bands=self.preprocessing.bands).array
        array = self.preprocessing.resize(image)
        image_tensor = torch.from_numpy(np.array(array))  # a writable copy
        return {"image": image_tensor, "label": torch.tensor(self.targets[i])}


class TensorDictDataset(Dataset):
    """Named tensors sharing their first axis; item ``i`` is ``{name: tensor[i]}``.

    The dict counterpart of ``torch.utils.data.TensorDataset``, for samples already in memory
    (cached features or cached trunk outputs with their labels).

    Args:
        **tensors: Tensors of equal length N along the first axis, e.g. ``image=`` float
            ``(N, D)`` features and ``label=`` int64 ``(N,)`` class indices.

    Items: ``{name: tensor[i]}`` (collated: ``{name: tensor[batch indices]}``).

    Raises:
        LandsightValueError: No tensors, or tensors of different lengths.
    """

    def __init__(self, **tensors: torch.Tensor) -> None:
        lengths = {name: int(t.shape[0]) for name, t in tensors.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise LandsightValueError(f"TensorDictDataset needs tensors of one length, got {lengths!r}")
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: t[i] for name, t in self.tensors.items()}
