"""Classification bundles: ``task = "classification"`` in the bundle format of :mod:`landsight.bundle`.

``bundle.json`` holds ``classes``, ``preprocessing`` (band choice, input size, interpolation,
normalisation), ``backbone`` (name, weights and their digest), ``head`` (kind and parameters:
a scikit-learn head on frozen features, or ``finetune`` with its retraining depth), ``metrics``
(held-out accuracy, balanced accuracy, macro F1, n) and ``data`` (sources, fingerprint, counts).

``model.onnx`` input ``image`` is **uint8** ``(N, H, W, C)``: the image after band selection and
resizing to ``preprocessing.input_size``, *before* normalisation (the graph casts, scales and
normalises). Output ``probabilities``: float32 ``(N, n_classes)`` in ``classes`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.data.preprocessing import Preprocessing
from landsight.errors import BundleError
from landsight.predictions import HEADLINE_METRICS, prediction_columns, prediction_rows
from landsight.runtime import OnnxBundleModel

if TYPE_CHECKING:
    import pandas as pd

    from landsight.models.backbones import Backbone

TASK = "classification"


def model_io() -> dict[str, Any]:
    """The ``model`` entry of a classification ``bundle.json``."""
    return {
        "file": "model.onnx",
        "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "normalized": False},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", "n_classes"]},
    }


def classifier_meta(
    *,
    classes: Sequence[str],
    backbone: Backbone,
    head: dict[str, Any],
    metrics: dict[str, Any],
    data: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Assemble the ``bundle.json`` entries of a classifier (frozen-feature head or fine-tuned).

    Args:
        classes: Class names, in probability order.
        backbone: The backbone; its preprocessing and description are recorded.
        head: ``kind`` and parameters of the head.
        metrics: Held-out metrics (:func:`landsight.classify.evaluate.compute_metrics` output, or
            empty); only :data:`~landsight.predictions.HEADLINE_METRICS` are kept here.
        data: Training-data description (sources, counts, fingerprint).
        **extra: More entries (``training``, ``training_seconds``...).

    Returns:
        The metadata to pass to :func:`landsight.bundle.write_bundle`.

    """
    return {
        "task": TASK,
        "model": model_io(),
        "classes": list(classes),
        "preprocessing": backbone.preprocessing.to_dict(),
        "backbone": backbone.describe(),
        "head": head,
        "metrics": {k: metrics[k] for k in HEADLINE_METRICS if k in metrics},
        "data": data,
        **extra,
    }


_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def _is_number(value: Any, *, positive: bool = False, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return False
    return bool(np.isfinite(value)) and (value > 0 if positive else True)


def check_preprocessing(pre: Any, where: str) -> None:
    """Check the ``preprocessing`` entry of a classification ``bundle.json`` before it is used.

    Args:
        pre: The entry as read from the JSON.
        where: Names the file in messages (``"bundle '.../bundle.json'"``).

    Raises:
        BundleError: It is not an object; ``input_size`` is not two positive integers;
            ``interpolation`` is unknown; ``bands`` is not a list of positive integers; ``mean``
            or ``std`` is not a list of numbers with one value per band (3 without ``bands``),
            or a ``std`` is not positive. The message names the entry.
    """
    if not isinstance(pre, dict):
        raise BundleError(f"{where}: 'preprocessing' must be an object, got {pre!r}")
    size = pre.get("input_size")
    if not isinstance(size, list | tuple) or len(size) != 2 or not all(_is_number(v, positive=True, integer=True)
                                                                      for v in size):  # fmt: skip
        raise BundleError(
            f"{where}: 'preprocessing.input_size' must be [height, width], two positive integers; got {size!r}"
        )
    if pre.get("interpolation") not in _INTERPOLATIONS:
        raise BundleError(
            f"{where}: 'preprocessing.interpolation' must be one of {list(_INTERPOLATIONS)}; "
            f"got {pre.get('interpolation')!r}"
        )
    bands = pre.get("bands")
    if bands is not None and (
        not isinstance(bands, list | tuple)
        or not bands
        or not all(_is_number(b, positive=True, integer=True) for b in bands)
    ):
        raise BundleError(
            f"{where}: 'preprocessing.bands' must be null (RGB) or a list of 1-based band numbers; got {bands!r}"
        )
    n_bands = len(bands) if bands is not None else 3
    for key in ("mean", "std"):
        values = pre.get(key)
        if not isinstance(values, list | tuple) or not all(_is_number(v, positive=key == "std") for v in values):
            rule = "positive numbers" if key == "std" else "numbers"
            raise BundleError(f"{where}: 'preprocessing.{key}' must be a list of {rule}; got {values!r}")
        if len(values) != n_bands:
            raise BundleError(
                f"{where}: 'preprocessing.{key}' has {len(values)} values but the model reads {n_bands} bands "
                f"('preprocessing.bands' is {bands!r}); give one value per band"
            )


class Bundle(OnnxBundleModel):
    """A loaded classification bundle; create it with :func:`landsight.load_bundle`.

    Attributes:
        path: The bundle folder.
        meta: ``bundle.json`` as a dict.
        classes: Class names, the columns of the probabilities.
        preprocessing: Band choice, input size and normalisation.

    """

    def __init__(self, path: Path, meta: dict[str, Any], device: str = "auto") -> None:
        super().__init__(path, meta, device)
        classes = meta["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise BundleError(f"bundle {str(path)!r}: 'classes' must be a non-empty list of names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise BundleError(f"bundle {str(path)!r}: 'classes' has duplicate names: {classes!r}")
        self.classes: list[str] = list(classes)
        check_preprocessing(meta["preprocessing"], f"bundle {str(path / 'bundle.json')!r}")
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        if not isinstance(meta.get("backbone"), dict) or "name" not in meta["backbone"]:
            raise BundleError(f"bundle {str(path)!r}: 'backbone' must be an object with a 'name'")

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, classes={self.classes!r}, backbone={self.meta['backbone']['name']!r})"

    def validate(self, input_shape: Sequence[int | str], output_shape: Sequence[int | str]) -> None:
        """Check the metadata against the graph's input and output shapes.

        Args:
            input_shape: ``(N, H, W, C)`` of ``model.onnx``'s input (ints where static).
            output_shape: ``(N, n_classes)`` of its output.

        Raises:
            BundleError: The class count differs from the output width, or the input size /
                band count differs from the graph's input.

        """
        where = f"bundle {str(self.path)!r}"
        if len(output_shape) != 2 or (isinstance(output_shape[1], int) and output_shape[1] != len(self.classes)):
            raise BundleError(
                f"{where} lists {len(self.classes)} classes but model.onnx outputs shape {list(output_shape)!r}; "
                "bundle.json was edited or belongs to another model"
            )
        if len(input_shape) != 4:
            raise BundleError(f"{where}: model.onnx input has shape {list(input_shape)!r}; expected (N, H, W, C)")
        h, w = self.preprocessing.input_size
        bands = len(self.preprocessing.bands) if self.preprocessing.bands else 3
        for axis, want, name in ((1, h, "height"), (2, w, "width"), (3, bands, "band count")):
            got = input_shape[axis]
            if isinstance(got, int) and got != want:
                raise BundleError(
                    f"{where}: preprocessing gives input {name} {want} but model.onnx expects {got}; "
                    "bundle.json was edited or belongs to another model"
                )

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of resized images.

        Args:
            images: ``(N, H, W, C)`` uint8, already resized to ``preprocessing.input_size``
                (see :meth:`landsight.data.preprocessing.Preprocessing.resize`).

        Returns:
            ``(N, n_classes)`` float32, rows sum to 1.

        """
        return np.asarray(self.model(np.ascontiguousarray(images, dtype=np.uint8)), dtype=np.float32)

    def predict(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int = 32,
        num_workers: int = 2,
        progress: bool = False,
        max_decode_bytes: int | None = None,
    ) -> pd.DataFrame:
        """Predict image files; unreadable files give a row with ``error`` set.

        Args:
            paths: Image files.
            batch_size: Images per forward pass.
            num_workers: Decoding threads.
            progress: Show a rich progress bar.
            max_decode_bytes: An image whose estimated decoding memory, read from its header, is
                over this many bytes is not decoded and gets an ``error`` row; None: no byte limit.

        Returns:
            One row per path, in input order, with the columns of a predictions table
            (:func:`landsight.predictions.prediction_columns`).

        """
        import pandas as pd

        from landsight.data.loader import iter_batches
        from landsight.progress import progress_bar

        rows: list[dict[str, Any]] = []
        str_paths = [str(p) for p in paths]
        with progress_bar(len(str_paths), "predict", enabled=progress) as bar:
            for batch in iter_batches(
                str_paths, self.preprocessing, batch_size=batch_size, num_workers=num_workers,
                max_decode_bytes=max_decode_bytes,
            ):  # fmt: skip
                idx, stack = batch.stack()
                proba = self.predict_proba(stack) if stack is not None else np.empty((0, len(self.classes)))
                rows.extend(prediction_rows(batch.items, idx, proba, self.classes))
                bar.advance(len(batch.items))
        return pd.DataFrame(rows, columns=prediction_columns(self.classes))


def as_bundle(bundle: str | Path | Bundle, *, device: str = "auto") -> Bundle:
    """Return ``bundle`` if already loaded, else load and validate it as a classification bundle.

    Raises:
        BundleError: Not a valid bundle, or a bundle of another task (named, with the verb to use).
    """
    if isinstance(bundle, Bundle):
        return bundle
    from landsight.bundle import load_bundle

    return load_bundle(bundle, device=device, task=TASK)
