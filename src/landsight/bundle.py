"""The model bundle format: the one deployable artifact of every landsight task.

A bundle is a folder ``NAME.landsight/`` (or a zip of it) holding:

* ``bundle.json``: schema version, ``task`` (``"classification"`` or ``"segmentation"``), the
  task's own entries (classes, preprocessing, backbone, head, metrics... see
  :mod:`landsight.classify.bundle` and :mod:`landsight.segment.bundle`), training-data
  fingerprint, package versions, creation time;
* ``model.onnx``: the whole inference graph (input ``image``, output ``probabilities``);
* reports from training: ``metrics.json``, ``confusion_matrix.{json,png}``, ``skipped.csv``...

This module holds the format only: names, :func:`write_bundle`, :func:`load_bundle` (which
validates the metadata against the graph and dispatches on ``task``) and
:func:`staged_bundle` (a bundle is replaced whole, never merged with an older one). Loading
reads JSON and ONNX only: nothing is unpickled, and torch is not needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

from landsight.errors import BundleError, OutputExistsError
from landsight.outputs import (
    atomic_path,
    mark_file,
    mark_folder,
    owned_folder,
    read_manifest,
    staged_folder,
    write_json,
)

__all__ = [
    "BUNDLE_FILE",
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "SKIPPED_FILE",
    "TASKS",
    "WEIGHTS_FILE",
    "graph_io",
    "is_bundle",
    "load_bundle",
    "package_versions",
    "staged_bundle",
    "write_bundle",
    "write_skipped",
]

SCHEMA_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
SKIPPED_FILE = "skipped.csv"

#: task -> "module:class" of its loaded-bundle class (imported only when such a bundle is loaded).
TASKS = {
    "classification": "landsight.classify.bundle:Bundle",
    "segmentation": "landsight.segment.bundle:SegmentationBundle",
}

#: The verb that uses each task's bundles, for errors when a bundle is given to the wrong verb.
TASK_VERBS = {"classification": "landsight predict / evaluate / serve", "segmentation": "landsight segment predict"}


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


def is_bundle(path: str | Path) -> bool:
    """Return whether ``path`` is a bundle landsight made: a folder whose manifest says so.

    A bare ``bundle.json`` does not make a folder a bundle (see :mod:`landsight.outputs`).
    """
    manifest = read_manifest(path) if Path(path).is_dir() else None
    return manifest is not None and manifest["kind"] == "bundle" and (Path(path) / BUNDLE_FILE).is_file()


@contextmanager
def staged_bundle(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a bundle into a staging folder and put it in place of ``out`` only when complete.

    A training run writes every file of the new bundle under the yielded folder. When the block
    succeeds the old bundle (if any) is replaced whole, so no stale file of it survives
    (``metrics.json``, ``weights.safetensors``...); when it fails, ``out`` is left as it was.

    Args:
        out: The bundle folder.
        overwrite: Allow replacing an existing bundle.

    Yields:
        The staging folder (a :data:`landsight.outputs.TMP_PREFIX` name next to ``out``). The
        bundle's manifest is written into it before the swap.

    Raises:
        OutputExistsError: ``out`` is a bundle and ``overwrite`` is False, or ``out`` is a file
            or a non-empty folder that is not a landsight bundle (never replaced).

    """
    out = Path(out)
    check_bundle_out(out, overwrite=overwrite)
    with staged_folder(out, "bundle", overwrite=overwrite) as staging:
        yield staging

def check_bundle_out(out: str | Path, *, overwrite: bool = False) -> Path:
    """Check, before training, that a bundle may be written to ``out``.

    Args:
        out: The bundle folder to write.
        overwrite: Allow replacing an existing bundle.

    Returns:
        ``out`` as a path.

    Raises:
        OutputExistsError: ``out`` is a bundle and ``overwrite`` is False, or ``out`` is a file
            or a non-empty folder that is not a landsight bundle.

    """
    out = Path(out)
    if out.is_file():
        raise OutputExistsError(f"bundle output {str(out)!r} is a file; choose a folder name such as 'model.landsight'")
    if out.is_dir() and any(out.iterdir()):
        if not is_bundle(out):
            raise OutputExistsError(
                f"bundle output {str(out)!r} is a non-empty folder that is not a landsight bundle; "
                "choose a new folder name (it is never replaced)"
            )
        if not overwrite:
            raise OutputExistsError(f"bundle {str(out)!r} already exists; pass --overwrite to replace it whole")
        problem = owned_folder(out)
        if problem is not None:
            raise OutputExistsError(f"bundle output {problem}; --overwrite replaces only what landsight made")
    return out


def write_bundle(out: str | Path, *, model: Any | None, meta: dict[str, Any]) -> Path:
    """Write ``model.onnx`` and ``bundle.json`` into the bundle folder ``out``.

    Args:
        out: Bundle folder (created; conventionally named ``*.landsight``).
        model: ``onnx.ModelProto`` of the inference graph, or ``None`` when ``out/model.onnx`` is
            already written.
        meta: Bundle metadata; must hold ``task`` and the ``model`` input/output description.
            ``schema_version``, ``created`` and ``package_versions`` are filled in.

    Returns:
        The bundle folder.

    Raises:
        BundleError: No model given and none written, or ``meta`` lacks ``task``.

    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if meta.get("task") not in TASKS:
        raise BundleError(f"bundle metadata task must be one of {sorted(TASKS)}, got {meta.get('task')!r}")
    if model is not None:
        import onnx

        with atomic_path(out / MODEL_FILE) as tmp:
            onnx.save(model, str(tmp))
    elif not (out / MODEL_FILE).is_file():
        raise BundleError(f"{str(out / MODEL_FILE)!r} is missing and no model was given")
    full = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "package_versions": package_versions(),
        **meta,
    }
    write_json(out / BUNDLE_FILE, full)
    mark_folder(out, "bundle")
    return out


def write_skipped(out: str | Path, skipped: Sequence[tuple[str, str]]) -> Path:
    """Write ``skipped.csv`` (columns ``path``, ``reason``) listing the unreadable inputs of a run."""
    import csv

    path = Path(out) / SKIPPED_FILE
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(skipped)
    mark_file(path)
    return path


def graph_io(model_path: str | Path) -> tuple[list[int | str], list[int | str]]:
    """Read the input and output shapes of an ONNX graph without running it.

    Args:
        model_path: The ``model.onnx`` file.

    Returns:
        ``(input_shape, output_shape)`` of the first input and output: an int per static
        dimension, the symbolic name (or ``"?"``) per dynamic one.

    Raises:
        BundleError: The file is not a readable ONNX graph.

    """
    import onnx

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as exc:  # protobuf raises its own DecodeError
        raise BundleError(f"{str(model_path)!r} is not a readable ONNX graph: {exc}") from exc

    def shape(value: Any) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in
                value.type.tensor_type.shape.dim]  # fmt: skip

    if not graph.input or not graph.output:
        raise BundleError(f"{str(model_path)!r} has no input or no output")
    return shape(graph.input[0]), shape(graph.output[0])


def _open_folder(path: Path) -> Path:
    if path.is_file() and path.suffix == ".zip":
        from landsight.cache import cache_dir, file_digest
        from landsight.data.archive import safe_extract

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
    return path


def load_bundle(path: str | Path, *, device: str = "auto", task: str | None = None) -> Any:
    """Open and validate a model bundle folder (or a ``.zip`` of one) without unpickling anything.

    The metadata is checked against the graph before anything is predicted: required entries,
    the class count against the graph's output width, the input size and bands against the
    graph's input (see each task's bundle class).

    Args:
        path: The ``*.landsight`` folder, or a zip archive containing it.
        device: onnxruntime device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        task: The task the caller needs (``"classification"`` or ``"segmentation"``); ``None``
            accepts either.

    Returns:
        A :class:`landsight.classify.bundle.Bundle` for ``task = "classification"``, a
        :class:`landsight.segment.bundle.SegmentationBundle` for ``"segmentation"``.

    Raises:
        BundleError: Not a bundle, a file missing, invalid metadata, metadata that does not
            match the graph, an unsupported schema version, or a bundle of another task than
            ``task``.

    """
    path = _open_folder(Path(path))
    try:
        meta = json.loads((path / BUNDLE_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{str(path / BUNDLE_FILE)!r} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"{str(path / BUNDLE_FILE)!r} must hold a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {str(path)!r} has schema_version {version!r}; this landsight reads {SCHEMA_VERSION}. "
            "Upgrade landsight or re-train the bundle."
        )
    kind = meta.get("task")
    if kind not in TASKS:
        raise BundleError(f"bundle {str(path)!r} has task {kind!r}; expected one of {sorted(TASKS)}")
    if task is not None and kind != task:
        verbs = TASK_VERBS.get(kind, f"the {kind} verbs")
        raise BundleError(f"{str(path)!r} is a {kind} bundle; use {verbs} with it")
    module, name = TASKS[kind].split(":")
    cls = getattr(import_module(module), name)
    try:
        bundle = cls(path, meta, device=device)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"bundle {str(path / BUNDLE_FILE)!r} has a missing or invalid entry: {exc!r}") from exc
    bundle.validate(*graph_io(path / MODEL_FILE))
    return bundle
