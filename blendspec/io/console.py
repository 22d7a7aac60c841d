"""The terminal, shared by every command: rich consoles that never wrap (carets must line up), the
progress bars long work shows, and what a bar needs to know its total before the work starts.

A bar is drawn only on a terminal: piped, redirected or in CI, stderr gets nothing but the
messages, so logs stay clean (and ``--quiet`` hides the bar and the notes on a terminal too).
The library never imports this module or rich: long-running functions take an optional progress
callback, and the commands turn those calls into the bars made here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn, Task, TaskID


def stderr_console(*, quiet: bool = False) -> Console:
    """Where notes, progress and errors go. ``quiet``: a console that prints nothing (for the
    notes and bars of ``--quiet``; errors are printed through a console of their own)."""
    return Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def shows_progress(console: Console) -> bool:
    """Whether a bar on `console` would be drawn: a terminal, and not ``--quiet``."""
    return console.is_terminal and not console.quiet


def progress_bar(console: Console) -> Progress:
    """A bar per task: what, how far of how many (``?`` while the total is unknown), the rate in
    the task's unit (its ``unit`` field, ``requests`` unless given), the time spent and the time
    left. Hidden when stderr is not a terminal or the console is quiet; gone once the work ends."""
    # rich.progress is imported here, not above: the spec commands never show a bar.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _rate_column(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not shows_progress(console),
    )


@functools.cache
def _rate_column_class() -> type[ProgressColumn]:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """``1,234 requests/s``: rich's speed estimate (a moving window), in the task's unit."""

        def render(self, task: Task) -> Text:
            unit = task.fields.get("unit", "requests")
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text(f"- {unit}/s", style="progress.data.speed")
            figure = f"{speed:,.0f}" if speed >= 100 else f"{speed:.3g}"
            return Text(f"{figure} {unit}/s", style="progress.data.speed")

    return RateColumn


def _rate_column() -> ProgressColumn:
    return _rate_column_class()()


def advancer(bar: Progress, task: TaskID) -> Callable[[int], None]:
    """The library's ``progress(n)`` callback (``n`` more done; negative when work starts over)."""
    return lambda n: bar.advance(task, n)


# --------------------------------------------------------------------------------------------
# Totals known before the work starts
# --------------------------------------------------------------------------------------------


def dump_requests(path: Path, limit: int | None = None) -> int | None:
    """How many requests blending `path` will report, for the bar's total, or None when that
    cannot be known cheaply (JSON Lines, a file that does not read).

    A shard folder that `blend simulate` wrote says so in its manifest (when the folder holds
    exactly the shards it lists). A Parquet dump is counted from its ``request_id`` column alone,
    row group by row group, as runs of equal ids — what the reader calls a request — so the
    embeddings are never read: tens of milliseconds for a dump of gigabytes. `limit` caps it,
    as it caps the run. Errors are the run's to report, with their place: here they only mean
    no total.
    """
    try:
        counted = _manifest_requests(path)
        if counted is None:
            counted = _count_requests(path)
    except Exception:  # any doubt means no total; the run reports the problem itself
        counted = None
    if counted is None:
        return limit
    return counted if limit is None else min(limit, counted)


def _manifest_requests(path: Path) -> int | None:
    from blendspec.io.dump import dump_files
    from blendspec.sim.shards import SHARD_MANIFEST  # standard library only

    if not path.is_dir() or not (path / SHARD_MANIFEST).is_file():
        return None
    manifest = json.loads((path / SHARD_MANIFEST).read_text(encoding="utf-8"))
    files = [f.relative_to(path).as_posix() for f in dump_files(path)]  # not the manifest
    if sorted(files) != sorted(manifest.get("files", ())):
        return None  # files added or removed since: the manifest does not describe the dump
    requests = manifest.get("requests")
    return requests if isinstance(requests, int) and requests >= 0 else None


def _count_requests(path: Path) -> int | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from blendspec.io.dump import dump_files

    files = dump_files(path)
    if any(f.suffix != ".parquet" for f in files):
        return None
    count = 0
    last: object = None
    for file in files:
        parquet = pq.ParquetFile(file)
        for group in range(parquet.metadata.num_row_groups):
            ids = parquet.read_row_group(group, columns=["request_id"]).column(0)
            if len(ids) == 0:
                continue
            ids = ids.combine_chunks()
            if pa.types.is_dictionary(ids.type):
                ids = ids.dictionary_decode()
            changes = pc.sum(pc.not_equal(ids[1:], ids[:-1])).as_py() or 0
            count += changes + (ids[0].as_py() != last)
            last = ids[-1].as_py()
    return count
