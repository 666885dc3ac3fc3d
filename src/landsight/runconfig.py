"""Runs as files: ``--config run.yaml`` and ``--print-config`` for every verb of the command line.

A run configuration is a YAML mapping from a verb's option names (``--test-size`` is
``test_size`` or ``test-size``; arguments by their name, e.g. ``data``) to values. It is read by
Click's own defaults mechanism (``Context.default_map``), so:

* options given on the command line override the file;
* every value is converted and checked by the option's own type, and a wrong type is a usage
  error naming the option ("Invalid value for '--epochs': 'ten' is not a valid integer");
* a key that is no option of the verb is an error naming the key and the valid ones.

``landsight <verb> ... --print-config`` writes the effective configuration (file, flags and
defaults merged) as YAML to stdout and does nothing else. ``train``, ``finetune`` and
``segment train`` save it in the bundle (``config.yaml`` and the ``config`` entry of
``bundle.json``) and as an MLflow artifact, so ``landsight train --config BUNDLE/config.yaml``
reproduces the bundle.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import typer

from landsight.errors import LandsightValueError

__all__ = ["CONFIG_FILE", "configurable", "effective_config", "load_config", "record_config"]

CONFIG_FILE = "config.yaml"
_NOT_CONFIG = {"config", "print_config", "ctx"}
_current: ContextVar[dict[str, Any] | None] = ContextVar("landsight_run_config", default=None)


def _key(param: Any) -> str:
    """The config key of a Click parameter: its first long option name without dashes, else its name."""
    longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return longs[0][2:].replace("-", "_") if longs else str(param.name)


def load_config(path: str | Path, params: list[Any], command: str) -> dict[str, Any]:
    """Read a run configuration and map its keys to the verb's parameter names.

    Args:
        path: YAML file holding a mapping.
        params: The Click parameters of the verb.
        command: The verb, for messages (``"train"``).

    Returns:
        Parameter name -> value (for ``Context.default_map``).

    Raises:
        LandsightValueError: The file is not a YAML mapping, or a key is no option of the verb.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LandsightValueError(f"config {str(path)!r} cannot be read as YAML: {exc}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise LandsightValueError(f"config {str(path)!r} must hold a mapping of option: value, got {kind}")
    by_key = {_key(p): p.name for p in params if p.name not in _NOT_CONFIG}
    by_key.update({str(p.name): p.name for p in params if p.name not in _NOT_CONFIG})
    out: dict[str, Any] = {}
    for raw, value in data.items():
        key = str(raw).replace("-", "_")
        if key not in by_key:
            valid = sorted({_key(p) for p in params if p.name not in _NOT_CONFIG})
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise LandsightValueError(
                f"config {str(path)!r}: {raw!r} is not an option of `landsight {command}`{hint}. Valid keys: {valid}"
            )
        out[by_key[key]] = [str(v) for v in value] if isinstance(value, list) else value
    return out


def effective_config(ctx: typer.Context) -> dict[str, Any]:
    """The verb's effective options (file, flags and defaults merged), keyed as in a config file."""
    out: dict[str, Any] = {}
    for param in ctx.command.params:  # declaration order: the same file for the same run
        name = param.name
        if name in _NOT_CONFIG or name not in ctx.params:
            continue
        value = ctx.params[name]
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list | tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[_key(param)] = value
    return out


def _load(ctx: typer.Context, value: Path | None) -> Path | None:
    if value is not None:
        loaded = load_config(value, list(ctx.command.params), ctx.info_name or "")
        ctx.default_map = {**(ctx.default_map or {}), **loaded}
    return value


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", is_eager=True, callback=_load, help="YAML file of this verb's options; flags on the line win."
    ),
]
PrintConfigOpt = Annotated[
    bool, typer.Option("--print-config", help="Print the effective options as YAML (for --config) and stop.")
]


def configurable(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a Typer verb ``--config FILE`` and ``--print-config`` (see the module docstring).

    The verb's own signature is unchanged; the options are added as keyword-only parameters of
    the wrapper, which Typer reads from ``__signature__``.
    """
    sig = inspect.signature(func, eval_str=True)  # Typer reads the Annotated options off this signature
    kw = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("ctx", kw, annotation=typer.Context),
        inspect.Parameter("config", kw, default=None, annotation=ConfigOpt),
        inspect.Parameter("print_config", kw, default=False, annotation=PrintConfigOpt),
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, ctx: typer.Context, config: Path | None = None, print_config: bool = False,
                **kwargs: Any) -> Any:  # fmt: skip
        effective = effective_config(ctx)
        if print_config:
            import yaml

            typer.echo(yaml.safe_dump(effective, sort_keys=False), nl=False)
            return None
        token = _current.set(effective)
        try:
            return func(*args, **kwargs)
        finally:
            _current.reset(token)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def record_config(bundle: str | Path, *, run_id: str = "", tracking_uri: str | None = None) -> dict[str, Any] | None:
    """Save the running verb's effective configuration into a bundle it wrote, and its MLflow run.

    Writes ``BUNDLE/config.yaml`` and the ``config`` entry of ``bundle.json`` (atomically), and
    logs ``config.yaml`` as an artifact of ``run_id`` when given.

    Args:
        bundle: The bundle folder the verb wrote.
        run_id: The verb's MLflow run ("" = not tracked).
        tracking_uri: Its MLflow store.

    Returns:
        The configuration saved, or None outside a ``configurable`` verb.
    """
    import json

    import yaml

    from landsight.bundle import BUNDLE_FILE
    from landsight.outputs import atomic_path, write_json

    config = _current.get()
    if config is None:
        return None
    bundle = Path(bundle)
    with atomic_path(bundle / CONFIG_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    meta["config"] = config
    write_json(bundle / BUNDLE_FILE, meta)
    if run_id:
        from mlflow.tracking import MlflowClient

        from landsight.tracking import resolve_tracking_uri

        MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri)).log_artifact(run_id, str(bundle / CONFIG_FILE))
    return config
