"""The model bundle: the one deployable artifact of a trained classifier.

A bundle is a folder ``NAME.landsight/`` (or a zip of it) holding:

* ``bundle.json``: schema version, task, classes, preprocessing, backbone, head, metrics,
  training-data fingerprint, package versions, creation time;
* ``model.onnx``: the whole inference graph, backbone and head. Input ``image``: **uint8**
  ``(N, H, W, C)``, the image after band selection and resizing to ``preprocessing.input_size``,
  *before* normalisation (the graph casts, scales and normalises). Output ``probabilities``:
  float32 ``(N, n_classes)`` in ``classes`` order;
* ``metrics.json``, ``confusion_matrix.{json,png}``, ``skipped.csv`` from training.

Loading reads JSON and ONNX only: nothing is unpickled, and torch is not needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landsight.errors import BundleError
from landsight.models.backbones import Preprocessing

if TYPE_CHECKING:
    import onnx
    import pandas as pd

    from landsight.runtime import OnnxModel

SCHEMA_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
PROBABILITY_PREFIX = "prob_"


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a bundle (for reproducibility)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("landsight", "torch", "timm", "torchvision", "scikit-learn", "skl2onnx", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def write_bundle(out: str | Path, *, model: onnx.ModelProto | None, meta: dict[str, Any]) -> Path:
    """Write ``model.onnx`` and ``bundle.json`` into the bundle folder ``out``.

    Args:
        out: Bundle folder (created; conventionally named ``*.landsight``).
        model: Image -> probabilities graph, or ``None`` when ``out/model.onnx`` is already written.
        meta: Bundle metadata; ``schema_version``, ``task``, ``created`` and
            ``package_versions`` are filled in.

    Returns:
        The bundle folder.

    """
    import onnx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if model is not None:
        onnx.save(model, str(out / MODEL_FILE))
    elif not (out / MODEL_FILE).is_file():
        raise BundleError(f"{str(out / MODEL_FILE)!r} is missing and no model was given")
    full = {
        "schema_version": SCHEMA_VERSION,
        "task": "classification",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "package_versions": package_versions(),
        "model": {
            "file": MODEL_FILE,
            "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "normalized": False},
            "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", "n_classes"]},
        },
        **meta,
    }
    tmp = out / f".{BUNDLE_FILE}.tmp"
    tmp.write_text(json.dumps(full, indent=2, default=_json_default))
    os.replace(tmp, out / BUNDLE_FILE)
    return out


def write_skipped(out: str | Path, skipped: Sequence[tuple[str, str]]) -> Path:
    """Write ``skipped.csv`` (columns ``path``, ``reason``) listing the unreadable images of a run."""
    import csv

    path = Path(out) / "skipped.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(skipped)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Bundle:
    """A loaded model bundle (see the module docstring for the format).

    Use :func:`load_bundle` to create one.

    Attributes:
        path: The bundle folder.
        meta: ``bundle.json`` as a dict.
        classes: Class names, the columns of the probabilities.
        preprocessing: Band choice, input size and normalisation.

    """

    def __init__(self, path: Path, meta: dict[str, Any], device: str = "auto") -> None:
        self.path = path
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.device = device
        self._model: OnnxModel | None = None

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, classes={self.classes!r}, backbone={self.meta['backbone']['name']!r})"

    @property
    def model(self) -> OnnxModel:
        """The onnxruntime session over ``model.onnx`` (created on first use)."""
        if self._model is None:
            from landsight.runtime import OnnxModel

            self._model = OnnxModel(self.path / MODEL_FILE, device=self.device)
        return self._model

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of resized images.

        Args:
            images: ``(N, H, W, C)`` uint8, already resized to ``preprocessing.input_size``
                (see :meth:`landsight.models.backbones.Preprocessing.resize`).

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
    ) -> pd.DataFrame:
        """Predict image files; unreadable files give a row with ``error`` set.

        Args:
            paths: Image files.
            batch_size: Images per forward pass.
            num_workers: Decoding threads.
            progress: Show a rich progress bar.

        Returns:
            One row per path, in input order, with columns ``path``, ``predicted`` (class name,
            empty on error), ``confidence`` (its probability), ``prob_<class>`` per class,
            ``error`` (empty when fine), ``minx``, ``miny``, ``maxx``, ``maxy`` (bounds in CRS
            units, NaN when not georeferenced) and ``crs``.

        """
        import pandas as pd

        from landsight.data.loader import iter_batches
        from landsight.progress import progress_bar

        rows: list[dict[str, Any]] = []
        str_paths = [str(p) for p in paths]
        with progress_bar(len(str_paths), "predict", enabled=progress) as bar:
            for batch in iter_batches(str_paths, self.preprocessing, batch_size=batch_size, num_workers=num_workers):
                idx, stack = batch.stack()
                proba = self.predict_proba(stack) if stack is not None else np.empty((0, len(self.classes)))
                rows.extend(prediction_rows(batch.items, idx, proba, self.classes))
                bar.advance(len(batch.items))
        return pd.DataFrame(rows, columns=prediction_columns(self.classes))


def prediction_columns(classes: Sequence[str]) -> list[str]:
    """Return the columns of a prediction table, in order.

    Args:
        classes: Class names in the bundle's order.

    Returns:
        ``path``, ``predicted``, ``confidence``, ``prob_<class>`` per class, ``error``,
        ``minx``, ``miny``, ``maxx``, ``maxy``, ``crs``.

    """
    columns = ["path", "predicted", "confidence", *(f"{PROBABILITY_PREFIX}{c}" for c in classes)]
    return columns + ["error", "minx", "miny", "maxx", "maxy", "crs"]


def prediction_rows(
    items: Sequence[Any], idx: Sequence[int], proba: np.ndarray, classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Build prediction rows (see :meth:`Bundle.predict`) for one batch of loaded images.

    Shared by the local engine and ``landsight.spark`` so both write identical rows.

    Args:
        items: :class:`landsight.data.loader.LoadedImage` of the batch, in input order.
        idx: Positions in ``items`` of the decoded images (from ``ImageBatch.stack``).
        proba: ``(len(idx), n_classes)`` float32 probabilities of those images.
        classes: Class names, the columns of ``proba``.

    Returns:
        One dict per item, keyed by :func:`prediction_columns`.

    """
    by_item = dict(zip(idx, proba, strict=True))
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        row: dict[str, Any] = {"path": item.path}
        p = by_item.get(i)
        k = int(np.argmax(p)) if p is not None else -1
        row["predicted"] = classes[k] if p is not None else ""
        row["confidence"] = float(p[k]) if p is not None else float("nan")
        for c, name in enumerate(classes):
            row[f"{PROBABILITY_PREFIX}{name}"] = float(p[c]) if p is not None else float("nan")
        row["error"] = item.error
        b = item.bounds or (float("nan"),) * 4
        row.update(minx=b[0], miny=b[1], maxx=b[2], maxy=b[3], crs=item.crs or "")
        rows.append(row)
    return rows


def load_bundle(path: str | Path, *, device: str = "auto") -> Any:
    """Open a model bundle folder (or a ``.zip`` of one) without unpickling anything.

    Args:
        path: The ``*.landsight`` folder, or a zip archive containing it.
        device: onnxruntime device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        The :class:`Bundle`, or a :class:`landsight.segment.bundle.SegmentationBundle` for
        ``task = "segmentation"``.

    Raises:
        BundleError: Not a bundle, a file missing, or an unsupported schema version.

    """
    path = Path(path)
    if path.is_file() and path.suffix == ".zip":
        from landsight.cache import cache_dir, file_digest
        from landsight.data.catalog import safe_extract

        root = safe_extract(path, cache_dir("bundles", file_digest(path)[:16]))
        found = sorted(p.parent for p in root.rglob(BUNDLE_FILE))
        if not found:
            raise BundleError(f"zip {str(path)!r} holds no {BUNDLE_FILE}")
        path = found[0]
    if not path.is_dir():
        raise BundleError(f"bundle {str(path)!r} does not exist or is not a folder; train one with `landsight train`")
    for name in (BUNDLE_FILE, MODEL_FILE):
        if not (path / name).is_file():
            raise BundleError(f"bundle {str(path)!r} lacks {name!r}; it is incomplete or not a landsight bundle")
    try:
        meta = json.loads((path / BUNDLE_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{str(path / BUNDLE_FILE)!r} is not valid JSON: {exc}") from exc
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {str(path)!r} has schema_version {version!r}; this landsight reads {SCHEMA_VERSION}. "
            "Upgrade landsight or re-train the bundle."
        )
    if meta.get("task") == "segmentation":
        from landsight.segment.bundle import SegmentationBundle

        return SegmentationBundle(path, meta, device=device)
    if meta.get("task") != "classification":
        raise BundleError(
            f"bundle {str(path)!r} is a {meta.get('task')!r} bundle; expected 'classification' or 'segmentation'"
        )
    return Bundle(path, meta, device=device)
