"""The output plan of a command: one check, before any work, of what it may write and replace.

Every verb declares its inputs and its outputs (:func:`landsight.runconfig.configurable`);
:func:`check_plan` applies the rules, :func:`commit_plan` marks the outputs as landsight's own
when the verb succeeds, and :func:`staged_folder` writes a folder output whole (group commit).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from landsight.errors import LandsightValueError, OutputExistsError
from landsight.outputs.atomic import remove_stale_tmp, tmp_name
from landsight.outputs.ownership import bundle_root, mark_file, mark_folder, owned_file, owned_folder, read_manifest

#: ``"file"``, or the kind of folder landsight makes there (written in its manifest).
OutputKind = Literal["file", "bundle", "checkpoints", "tiles", "demo", "evaluation", "destination"]


@dataclass(frozen=True)
class Output:
    """One output a verb may write.

    Attributes:
        path: Where.
        option: The option that names it, as the user typed it (``"--out"``).
        kind: ``"file"``, or the kind of folder landsight makes there: ``"bundle"`` (a model
            bundle), ``"checkpoints"``, ``"tiles"``, ``"demo"``, ``"evaluation"``. An existing
            folder is replaced only by an output of its own kind. ``"destination"``: a folder
            that files are moved into (``dedup --move-to``); it may exist, nothing in it is replaced.
        resumable: An existing output is continued, not replaced (predictions tables,
            checkpoints with ``--resume``): it need not be replaced with ``--overwrite``; the verb
            checks that landsight wrote it.
    """

    path: Path
    option: str
    kind: OutputKind = "file"
    resumable: bool = False


@dataclass
class OutputPlan:
    """What a command reads and writes, checked before any work by :func:`check_plan`.

    Attributes:
        verb: The command (``"segment predict"``), for messages.
        inputs: ``(option, path)`` of every input that is a local path; globs already expanded.
        outputs: Every output the command may write.
        overwrite: ``--overwrite`` was given.
    """

    verb: str
    inputs: list[tuple[str, Path]] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    overwrite: bool = False

    @classmethod
    def from_options(
        cls,
        verb: str,
        values: Mapping[str, Any],
        *,
        inputs: Mapping[str, str],
        outputs: Mapping[str, tuple[str, OutputKind]],
        overwrite: bool = False,
        resumable: Iterable[str] = (),
    ) -> OutputPlan:
        """Build a plan from a command's option values.

        Args:
            verb: The command.
            values: Parameter name -> value as parsed.
            inputs: Input parameter name -> option spelling. A value may be a path, a folder, a
                glob (expanded here), a list of them, or a URL (left out: not a local file).
            outputs: Output parameter name -> (option spelling, kind).
            overwrite: ``--overwrite`` was given.
            resumable: Output parameters whose existing file is continued rather than replaced.

        Returns:
            The plan (outputs whose value is None are left out).
        """
        plan = cls(verb=verb, overwrite=overwrite)
        for name, option in inputs.items():
            value = values.get(name)
            for item in value if isinstance(value, list | tuple) else [value]:
                if item is None or not str(item) or "://" in str(item):
                    continue
                text = str(item)
                matches = glob.glob(text) if glob.has_magic(text) else [text]
                plan.inputs.extend((option, Path(m)) for m in matches[:100_000] if os.path.lexists(m))
        for name, (option, kind) in outputs.items():
            value = values.get(name)
            if value is None or "://" in str(value):
                continue
            plan.outputs.append(Output(Path(value), option, kind, resumable=name in set(resumable)))
        return plan


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_plan(plan: OutputPlan) -> None:
    """Decide, before any work, whether a command may write its outputs.

    The rules:

    1. No output is an input, inside an input, or a folder holding an input (symlinks resolved).
    2. No output lies inside a landsight bundle, unless the command writes that bundle.
    3. An existing output is replaced only with ``--overwrite``, and only when landsight made it
       (a folder with a manifest listing every file in it; a file listed, unchanged, in its
       folder's :data:`FILES_MANIFEST`). Resumable outputs are left to the command's own check.
    4. Two outputs of one command are never the same path.

    Stale temporary files of killed runs (:data:`TMP_PREFIX`) are removed from every output's folder.

    Args:
        plan: The command's plan.

    Raises:
        LandsightValueError: Rule 1, 2 or 4 (refused even with ``--overwrite``).
        OutputExistsError: Rule 3.
    """
    inputs = [(option, _real(path)) for option, path in plan.inputs]
    written_bundles = [_real(o.path) for o in plan.outputs if o.kind == "bundle"]
    seen: dict[Path, str] = {}
    for out in plan.outputs:
        real = _real(out.path)
        label = f"{out.option} {str(out.path)!r}"
        if real in seen:
            raise LandsightValueError(f"{label} is also {seen[real]}; give each output its own path")
        seen[real] = out.option
        for option, src in inputs:
            if _within(real, src):
                where = "is" if real == src else "lies inside"
                raise LandsightValueError(
                    f"{label} {where} the input {option} {str(src)!r}; writing it would change your input. "
                    "Choose an output outside every input."
                )
            if _within(src, real):
                raise LandsightValueError(
                    f"{label} would hold the input {option} {str(src)!r}; choose an output that contains no input"
                )
        root = bundle_root(real.parent)
        if root is not None and root not in written_bundles:
            raise LandsightValueError(
                f"{label} lies inside the bundle {str(root)!r}; landsight never writes into a bundle it is not "
                "making. Choose an output outside it."
            )
        remove_stale_tmp(real.parent)
        if out.kind == "destination" and os.path.lexists(real) and not real.is_dir():
            raise OutputExistsError(f"{label} is a file; give a folder to move files into")
        if not os.path.lexists(real) or out.kind == "destination" or (out.resumable and not plan.overwrite):
            continue
        if real.is_dir() and not real.is_symlink() and out.kind != "file" and not any(real.iterdir()):
            continue  # an empty folder holds nothing to lose
        if not plan.overwrite:
            raise OutputExistsError(f"{label} already exists; pass --overwrite to replace it")
        if real.is_dir() and not real.is_symlink():
            if out.kind == "file":
                raise OutputExistsError(f"{label} is a folder; {plan.verb} writes a file there. Choose another path.")
            problem = owned_folder(real)
            kind = (read_manifest(real) or {}).get("kind")
            if problem is None and kind != out.kind:
                problem = f"{str(real)!r} is a landsight {kind} folder, not a {out.kind} folder"
            if problem is not None:
                raise OutputExistsError(f"{label}: {problem}; --overwrite replaces only what landsight made")
        elif out.kind != "file":
            raise OutputExistsError(f"{label} is a file; {plan.verb} writes a folder there. Choose another path.")
        elif not owned_file(real):
            raise OutputExistsError(
                f"{label} was not written by landsight (or changed since); --overwrite replaces only what "
                "landsight made. Move it away or choose another path."
            )


def commit_plan(plan: OutputPlan) -> None:
    """Mark a finished command's outputs as landsight's own (see :func:`mark_folder`, :func:`mark_file`).

    Args:
        plan: The plan of the command that has just succeeded.
    """
    for out in plan.outputs:
        if out.path.is_dir() and out.kind != "file":
            earlier = read_manifest(out.path) or {}  # keep the patterns of a folder filled over time (checkpoints)
            mark_folder(out.path, out.kind, patterns=earlier.get("patterns") or ())
        elif out.path.is_file():
            mark_file(out.path)


@contextmanager
def staged_folder(out: str | Path, kind: str, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a folder landsight makes into a staging folder; put it in place of ``out`` whole at the end.

    Group commit: when the block succeeds, the previous folder (if any) is replaced whole, so no
    file of it survives beside the new ones; on an exception (or a signal handled as one) ``out``
    is left as it was. The new folder gets its manifest (:func:`mark_folder`) before the swap.

    Args:
        out: The folder.
        kind: Its kind, written in the manifest (``"bundle"``, ``"tiles"``, ...).
        overwrite: Allow replacing an existing folder of that kind that landsight made.

    Yields:
        The staging folder (a :data:`TMP_PREFIX` name next to ``out``).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False, or it is not a ``kind``
            folder that landsight made (checked by :func:`check_plan` before anything is written).
    """
    out = Path(out)
    check_plan(OutputPlan(kind, outputs=[Output(out, str(out), kind)], overwrite=overwrite))  # type: ignore[arg-type]
    staging = tmp_name(out, "staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        mark_folder(staging, kind)
        old = tmp_name(out, "old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
