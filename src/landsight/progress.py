"""Rich progress bars with an images/s column, shared by every long-running loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True, unit: str = "images") -> Iterator[Any]:
    """Show a rich progress bar with a throughput column while the block runs.

    Args:
        total: Number of items expected.
        description: Text at the left of the bar.
        enabled: False gives a no-op bar (library use, tests).
        unit: Item name shown in the rate column (``"images/s"``).

    Yields:
        An object with ``advance(n)``.

    """
    if not enabled:
        yield _Silent()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    from rich.console import Console

    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total)
        yield _Bar(progress, task)


def _RateColumn(unit: str) -> Any:  # noqa: N802 - a column factory
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s", style="cyan")

    return RateColumn()
