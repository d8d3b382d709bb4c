"""Progress display for archive jobs: a rich bar on stderr (one step per series)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["JobProgress", "rich_progress"]

JobProgress = Callable[[Mapping[str, int], int, str], None]
"""``progress(counts, total, message)``: called when the job starts and after every state
change; ``counts`` maps ledger states (done, skipped, failed, running, pending) to numbers."""


@contextlib.contextmanager
def rich_progress(enabled: bool = True, label: str = "archiving") -> Iterator[JobProgress | None]:
    """A rich progress bar on stderr; yields None when disabled or stderr is not a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("series"),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console) as bar:
        task: dict[str, Any] = {}

        def update(counts: Mapping[str, int], total: int, message: str) -> None:
            finished = counts.get("done", 0) + counts.get("skipped", 0) + counts.get("failed", 0)
            detail = (f"done {counts.get('done', 0)}, skipped {counts.get('skipped', 0)}, "
                      f"failed {counts.get('failed', 0)}, running {counts.get('running', 0)}")
            if "id" not in task:
                task["id"] = bar.add_task(label, total=total, detail=detail)
            bar.update(task["id"], completed=finished, total=total, detail=detail)
            if message.startswith(("retry", "failed", "skipped", "unreadable")):
                bar.console.print(message, markup=False, highlight=False)

        yield update
