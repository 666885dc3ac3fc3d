"""A training recipe, bound once: the test-time augmentation vocabulary, presets, and run parameters.

Three things every task's training shares, each defined here and nowhere else:

* :data:`TTA_MODES`: the views averaged at prediction time, one vocabulary for every task.
  Classification bundles take ``none | rot4``; segmentation bundles ``none | d4``. Each task
  declares the modes it supports, and :func:`check_tta` is the one validator.
* :data:`PRESETS` and :func:`resolve_preset`: named bundles of option values (``--fast``),
  resolved in one place into the effective values that are printed, tracked and saved.
* :func:`run_params`: the parameters of a training run, read off the API function's own signature
  (as scikit-learn's ``get_params`` reads ``__init__``), so no hand-kept copy of the argument list
  can drift from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from landsight.errors import LandsightValueError

__all__ = ["PRESETS", "TTA_MODES", "check_tta", "resolve_preset", "run_params"]

#: Test-time augmentation modes: name -> what is averaged (the number of views is the cost factor).
TTA_MODES: dict[str, str] = {
    "none": "one view",
    "rot4": "the four 90-degree rotations (4 views)",
    "d4": "the eight flips and 90-degree rotations of the dihedral group D4 (8 views)",
}

#: Named presets: preset -> option values it sets when the user left them unset.
PRESETS: dict[str, dict[str, Any]] = {
    # one view and a fixed C: 4x less featurization than the default, no cross-validation
    "fast": {"tta": "none", "C": 1.0},
}


def check_tta(tta: str | bool, supported: Sequence[str], *, task: str = "") -> str:
    """Validate a test-time augmentation mode against the modes a task supports.

    Args:
        tta: A mode of :data:`TTA_MODES`. ``True`` / ``False`` (the segmentation API's former
            flag, and saved configs that hold it) mean the task's richest mode / ``"none"``.
        supported: The modes the task supports, e.g. ``("none", "rot4")``.
        task: The task's name, for the message.

    Returns:
        The mode, as a name of :data:`TTA_MODES`.

    Raises:
        LandsightValueError: ``tta`` is not a supported mode; the message lists the valid ones.
    """
    if isinstance(tta, bool):
        return supported[-1] if tta else "none"
    mode = str(tta).lower()
    if mode in ("true", "false"):  # a YAML config written when the option was a flag
        return supported[-1] if mode == "true" else "none"
    if mode not in supported:
        where = f" for {task}" if task else ""
        raise LandsightValueError(
            f"tta must be one of {list(supported)}{where}, got {tta!r} "
            f"({'; '.join(f'{m}: {TTA_MODES[m]}' for m in supported)})"
        )
    return mode


def resolve_preset(name: str | None, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The effective values of a recipe's options: given values win, then the preset, then the defaults.

    Args:
        name: A key of :data:`PRESETS`, or None for no preset.
        values: The options as the user gave them; None means "not given".
        defaults: The recipe's default for every option in ``values``.

    Returns:
        Option -> effective value, with no None left for an option that has a default.

    Raises:
        LandsightValueError: Unknown preset.
    """
    if name is not None and name not in PRESETS:
        raise LandsightValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    preset = PRESETS[name] if name is not None else {}
    return {k: v if v is not None else preset.get(k, defaults.get(k)) for k, v in values.items()}


def _plain(value: Any) -> Any:
    """A run parameter as MLflow records it: paths as text, tuples as lists, nested values kept."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return "dict"
    return value


def run_params(
    func: Callable[..., Any],
    arguments: Mapping[str, Any],
    *,
    exclude: Sequence[str] = (),
    **derived: Any,
) -> dict[str, Any]:
    """The parameters of a run, taken from the signature of the API function that runs it.

    Call it inside the function with ``locals()`` before any local variable shadows an argument:
    every parameter of ``func``'s signature is recorded under its own name, so a new argument is
    tracked without anyone listing it again.

    Args:
        func: The public API function (``landsight.train``, ``landsight.finetune``, ...).
        arguments: Its arguments by name (``locals()`` at the top of the function).
        exclude: Parameters that are not part of the recipe (``progress``, ``track``, ``overwrite``,
            ``tracking_uri``, ``device``: how a run is executed, not what it computes).
        **derived: Extra or replacement values (effective values resolved from defaults, e.g.
            ``lr=0.001`` when ``lr=None`` was given).

    Returns:
        Parameter name -> JSON-able value, in signature order, then the derived extras.
    """
    names = [n for n in inspect.signature(func).parameters if n not in exclude]
    out = {n: _plain(arguments[n]) for n in names if n in arguments}
    out.update({k: _plain(v) for k, v in derived.items()})
    return out


#: Arguments of every training API that say how a run executes, not what it computes.
EXECUTION_ARGS: tuple[str, ...] = (
    "progress", "track", "tracking_uri", "overwrite", "resume", "device", "cache", "num_workers", "batch_size",
    "class_names",
)  # fmt: skip
