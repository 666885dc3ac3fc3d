"""Where the command line writes: results on stdout in a chosen format, everything else on stderr.

* Results (tables, final paths) go to **stdout**, through :func:`emit` in one of
  :data:`TABLE_FORMATS`: ``table`` (a rich table; on a terminal it fits the window, in a pipe or
  a file its width comes from the content, so no cell is ever cut), ``csv``, ``tsv`` or ``json``.
* Progress bars (:mod:`landsight.progress`), notes and warnings go to **stderr**
  (:func:`err`), so ``landsight runs --format json | jq`` sees JSON only.
* Exit codes (:data:`EXIT_CODES`): 0 success, 1 a bug (with a traceback), 2 a user error (one
  line), 3 partial success: the verb finished but some inputs were skipped (listed on stderr).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from landsight.errors import LandsightValueError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

__all__ = [
    "EXIT_CODES",
    "EXIT_PARTIAL",
    "TABLE_FORMATS",
    "emit",
    "emit_quantization",
    "err",
    "note_skipped",
    "out",
    "parse_ints",
    "skipped_count",
]

TABLE_FORMATS = ("table", "csv", "tsv", "json")

EXIT_OK, EXIT_BUG, EXIT_USER_ERROR, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_BUG: "a bug in landsight (a traceback is printed; please report it)",
    EXIT_USER_ERROR: "a user error: bad option, missing or invalid input (one line on stderr)",
    EXIT_PARTIAL: "partial success: the work is done but some inputs were skipped (listed on stderr)",
}

_UNLIMITED = 1_000_000
_state = {"skipped": 0}


def out() -> Console:
    """A console on stdout: the terminal's width on a terminal, the content's width otherwise."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(file=sys.stdout, width=_UNLIMITED, no_color=True, highlight=False, soft_wrap=True)


def err() -> Console:
    """A console on stderr for notes, warnings and errors (never mixed into results)."""
    from rich.console import Console

    if sys.stderr.isatty():
        return Console(stderr=True, highlight=False)
    return Console(stderr=True, width=_UNLIMITED, no_color=True, highlight=False, soft_wrap=True)


def parse_ints(value: str | None, option: str) -> tuple[int, ...] | None:
    """Parse a comma-separated list of integers such as ``--bands 1,2,3``.

    Args:
        value: The option's text, or ``None`` / ``""`` for "not given".
        option: The option's name, for the message.

    Returns:
        The integers, or ``None`` when not given.

    Raises:
        LandsightValueError: An item is not an integer.
    """
    if not value:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise LandsightValueError(f"{option} must be comma-separated integers such as 1,2,3; got {value!r}") from None


def note_skipped(skipped: Sequence[Any], *, where: object | None = None, what: str = "input") -> None:
    """List skipped inputs on stderr (the first 10) and remember them for exit code 3.

    Args:
        skipped: ``(path, reason)`` pairs.
        where: The file that lists them all (``skipped.csv``), if any.
        what: What was skipped (``"image"``, ``"raster"``).
    """
    if not skipped:
        return
    _state["skipped"] += len(skipped)
    console = err()
    listed = f" (listed in {where})" if where else ""
    console.print(f"[yellow]skipped {len(skipped)} unreadable {what}(s)[/yellow]{listed}")
    for path, reason in list(skipped)[:10]:
        console.print(f"  [yellow]{path}[/yellow]: {reason}")


def skipped_count() -> int:
    """Inputs reported by :func:`note_skipped` since the process started (0 = exit code 0)."""
    return _state["skipped"]


def _cell(value: Any, formatter: Callable[[Any], str] | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return formatter(value) if formatter is not None else str(value)


def emit(
    frame: pd.DataFrame,
    fmt: str = "table",
    *,
    title: str | None = None,
    caption: str | None = None,
    columns: Sequence[str] | None = None,
    display: Mapping[str, Callable[[Any], str]] | None = None,
    json_value: Any = None,
) -> None:
    """Write a result table to stdout.

    Args:
        frame: The rows; every column is written in ``csv`` / ``tsv`` / ``json``.
        fmt: One of :data:`TABLE_FORMATS`.
        title: Title of the rich table (``table`` only).
        caption: Caption under the rich table (``table`` only).
        columns: Columns to write, in order (default: all).
        display: Column -> function formatting a cell for the rich table (``table`` only;
            other formats write raw values).
        json_value: What ``json`` writes instead of the rows (e.g. a whole metrics dict).

    Raises:
        LandsightValueError: Unknown ``fmt``, or a name in ``columns`` that is not a column.
    """
    from landsight.outputs import json_safe

    if fmt not in TABLE_FORMATS:
        raise LandsightValueError(f"--format must be one of {list(TABLE_FORMATS)}, got {fmt!r}")
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise LandsightValueError(f"--columns {missing!r} not in the table; choose from {list(frame.columns)}")
        frame = frame[list(columns)]
    if fmt == "json":
        value = json_value if json_value is not None else frame.to_dict(orient="records")
        sys.stdout.write(json.dumps(json_safe(value), indent=2, default=str) + "\n")
    elif fmt in ("csv", "tsv"):
        frame.to_csv(sys.stdout, sep="," if fmt == "csv" else "\t", index=False)
    else:
        from rich.table import Table

        table = Table(title=title, caption=caption)
        display = display or {}
        for col in frame.columns:
            numeric = frame[col].dtype.kind in "iuf"
            table.add_column(str(col), justify="right" if numeric else "left")
        for row in frame.itertuples(index=False):
            table.add_row(*(_cell(v, display.get(str(c))) for c, v in zip(frame.columns, row, strict=True)))
        out().print(table)


def emit_quantization(result: Any, fmt: str = "table") -> None:
    """Write a :class:`landsight.quantize.QuantizeResult` as a one-row table (``quantize`` verbs)."""
    import pandas as pd

    frame = pd.DataFrame([{"precision": result.precision, "metric": result.metric, "fp32": result.fp32,
                           "quantized": result.quantized, "drop_points": result.drop, "n_test": result.n_test}])
    two = "{:.2f}".format
    emit(frame, fmt, title="quantization", display={"fp32": two, "quantized": two, "drop_points": two})
    err().print(f"bundle: [bold]{result.bundle_path}[/bold] ({result.seconds:.0f} s)")
