"""The Lightning module of image-classification fine-tuning: cross-entropy and error %."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from landsight.models.task import TaskModule


class ClassificationModule(TaskModule):
    """:class:`~landsight.models.task.TaskModule` for classification; logs loss and error %.

    Batches are ``{"image": x, "label": y}``: ``x`` is the model's input, first axis N (the
    resized uint8 ``(N, H, W, C)`` images; for cached-feature ``last`` training float32
    ``(N, D)`` features; for a cached trunk float16 ``(N, V, ...)`` rotated views), ``y`` int64
    ``(N,)`` class indices. Logs ``{stage}_loss`` (mean cross-entropy) and ``{stage}_error``
    (% misclassified).

    Args:
        model: The network, ``x`` -> ``(N, K)`` float logits. For cached-feature ``last``
            training this is the final layer alone.
        backbone_params: Backbone parameters that learn (empty for ``last``).
        head_params: Final-layer parameters.
        augment: Applied to each training batch's ``"image"`` on the device (same shape in and
            out, e.g. :class:`landsight.data.augment.AerialAugment` or
            :func:`landsight.models.trunk.random_view`), or ``None``.
        **kwargs: Keyword arguments of :class:`~landsight.models.task.TaskModule` (optimiser,
            learning rate and schedule, ``batchnorm``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        backbone_params: Sequence[nn.Parameter],
        head_params: Sequence[nn.Parameter],
        *,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, backbone_params, head_params, **kwargs)
        self.augment = augment
        self.loss_fn = nn.CrossEntropyLoss()

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """Cross-entropy and error % of a batch, the training images augmented first.

        Args:
            batch: ``"image"`` (the model input, N first) and ``"label"`` int64 ``(N,)``.
            stage: ``"train"`` (augmented), ``"val"`` or ``"test"``.

        Returns:
            ``{"loss": scalar float, "error": scalar float in %}``.
        """
        x, y = batch["image"], batch["label"]
        if stage == "train" and self.augment is not None:
            x = self.augment(x)
        logits = self(x)
        loss = self.loss_fn(logits, y)
        error = (logits.argmax(1) != y).float().mean() * 100
        return {"loss": loss, "error": error}
