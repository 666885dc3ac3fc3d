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
reproduces the bundle. The saved file holds the effective recipe: values a preset or a default
resolved (``tta: rot4``, not ``null``) are written as resolved.

A configuration replays a recipe, never a permission: ``overwrite`` and ``resume`` are neither
printed nor saved, and a file that holds them has them ignored with a warning. Only the command
line grants them (see the Safety section of the README).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    from landsight.outputs import Output

__all__ = ["CONFIG_FILE", "configurable", "effective_config", "load_config", "record_config"]

CONFIG_FILE = "config.yaml"
_NOT_CONFIG = {"config", "print_config", "ctx"}
#: Options only the command line may set: a config file replays a recipe, not a permission.
PERMISSIONS = ("overwrite", "resume")
#: Largest config file read, in bytes (1 MiB): a run recipe is a few hundred bytes.
MAX_CONFIG_BYTES = 1024 * 1024
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
        LandsightValueError: The file is not a YAML mapping, is over :data:`MAX_CONFIG_BYTES`
            bytes, uses YAML aliases (``&anchor`` / ``*alias``: refused, as nested aliases expand
            exponentially, a "billion laughs"), or a key is no option of the verb.
    """
    import yaml

    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise LandsightValueError(
                f"config {str(path)!r} is over {MAX_CONFIG_BYTES} bytes, which landsight refuses; a run config "
                "holds a few option: value lines"
            )
        data = yaml.load(raw, Loader=_no_alias_loader()) or {}  # noqa: S506 - a SafeLoader, aliases refused
    except _AliasFoundError:
        raise LandsightValueError(
            f"config {str(path)!r} uses YAML aliases (&/*), which landsight refuses; write the values out in full"
        ) from None
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
        if key in PERMISSIONS:
            from landsight.console import err

            err().print(f"[yellow]warning:[/yellow] config {str(path)!r}: {raw!r} ignored; only the command line "
                        f"grants --{key}")  # fmt: skip
            continue
        if key not in by_key:
            valid = sorted({_key(p) for p in params if p.name not in _NOT_CONFIG})
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise LandsightValueError(
                f"config {str(path)!r}: {raw!r} is not an option of `landsight {command}`{hint}. Valid keys: {valid}"
            )
        out[by_key[key]] = [str(v) for v in value] if isinstance(value, list) else value
    return out


class _AliasFoundError(Exception):
    """A YAML alias (``*name``) met while composing a config."""


@functools.cache
def _no_alias_loader() -> type:
    """A ``yaml.SafeLoader`` subclass that raises :class:`_AliasFoundError` at the first alias, before expanding it."""
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise _AliasFoundError
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


def effective_config(ctx: typer.Context) -> dict[str, Any]:
    """The verb's effective options (file, flags and defaults merged), keyed as in a config file."""
    out: dict[str, Any] = {}
    for param in ctx.command.params:  # declaration order: the same file for the same run
        name = param.name
        if name in _NOT_CONFIG or name in PERMISSIONS or name not in ctx.params:
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


def configurable(
    func: Callable[..., Any] | None = None,
    *,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, tuple[str, str]] | None = None,
    derived: Callable[[dict[str, Any]], list[Output]] | None = None,
    resumable: Callable[[dict[str, Any]], Iterable[str]] | None = None,
) -> Any:
    """Give a Typer verb ``--config FILE``, ``--print-config`` and its output plan.

    Every verb declares its inputs and its outputs here; before the verb's body runs, one check
    (:func:`landsight.outputs.check_plan`) decides what it may write and what it may replace, and
    after it succeeds its outputs are marked as landsight's own (:func:`landsight.outputs.commit_plan`).
    The verb's own signature is unchanged; the options are added as keyword-only parameters of
    the wrapper, which Typer reads from ``__signature__``.

    Args:
        func: The verb (when used as ``@configurable`` without arguments).
        inputs: Parameter name -> option spelling (``{"data": "DATA", "test": "--test"}``) of every
            parameter that names local files the verb reads.
        outputs: Parameter name -> (option spelling, kind) of every parameter that names an
            output; kind is ``"file"`` or a folder kind (:data:`landsight.outputs.OutputKind`).
        derived: Outputs implied by the options (``OUT.checkpoints/``, ``OUT-int8.landsight``):
            parameter values -> extra :class:`~landsight.outputs.Output` entries.
        resumable: Parameter values -> output parameter names that this run continues rather
            than replaces (``predict --out``; ``--resume``).

    Returns:
        The wrapped verb, or a decorator when called with keyword arguments only.
    """
    if func is None:
        return functools.partial(configurable, inputs=inputs, outputs=outputs, derived=derived, resumable=resumable)
    plan_inputs = {**(inputs or {}), "config": "--config"}
    plan_outputs = dict(outputs or {})
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
        from landsight.outputs import OutputPlan, check_plan, commit_plan

        values = {**kwargs, "config": config}
        plan = OutputPlan.from_options(
            ctx.command_path.partition(" ")[2] or ctx.info_name or "", values, inputs=plan_inputs,
            outputs=plan_outputs, overwrite=bool(kwargs.get("overwrite")),
            resumable=resumable(values) if resumable else (),
        )  # fmt: skip
        if derived is not None:
            plan.outputs.extend(derived(values))
        check_plan(plan)
        token = _current.set(effective)
        try:
            result = func(*args, **kwargs)
        finally:
            _current.reset(token)
        commit_plan(plan)
        return result

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    wrapper.__landsight_plan__ = {"inputs": plan_inputs, "outputs": plan_outputs}  # type: ignore[attr-defined]
    return wrapper


def record_config(
    bundle: str | Path, *, run_id: str = "", tracking_uri: str | None = None, resolved: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Save the running verb's effective configuration into a bundle it wrote, and its MLflow run.

    Writes ``BUNDLE/config.yaml`` and the ``config`` entry of ``bundle.json`` (atomically), and
    logs ``config.yaml`` as an artifact of ``run_id`` when given.

    Args:
        bundle: The bundle folder the verb wrote.
        run_id: The verb's MLflow run ("" = not tracked).
        tracking_uri: Its MLflow store.
        resolved: Effective values of options the verb resolved from a preset or a default
            (config key -> value); they replace the given ``None`` in the saved file.

    Returns:
        The configuration saved, or None outside a ``configurable`` verb.
    """
    import json

    import yaml

    from landsight.bundle import BUNDLE_FILE
    from landsight.outputs import atomic_path, mark_file, write_json

    config = _current.get()
    if config is None:
        return None
    config = {**config, **(resolved or {})}
    bundle = Path(bundle)
    with atomic_path(bundle / CONFIG_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    mark_file(bundle / CONFIG_FILE)
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    meta["config"] = config
    write_json(bundle / BUNDLE_FILE, meta)
    if run_id:
        from mlflow.tracking import MlflowClient

        from landsight.tracking import resolve_tracking_uri

        MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri)).log_artifact(run_id, str(bundle / CONFIG_FILE))
    return config
