"""What a batch tells the person watching: a progress bar on a terminal, a summary line at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Tally:
    total: int = 0  # records this run sends
    skipped: int = 0  # already answered in the output file (--resume)
    ok: int = 0
    failed: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def add(self, ok: bool, tokens: int) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.tokens += tokens


def render_summary(tally: Tally, elapsed: float, *, interrupted: bool = False) -> str:
    rate = tally.done / elapsed if elapsed > 0 else 0.0
    text = f"batch: {tally.ok:,} ok, {tally.failed:,} failed"
    if tally.done < tally.total:
        text += f", {tally.total - tally.done:,} not run" + (" (interrupted)" if interrupted else "")
    if tally.skipped:
        text += f", {tally.skipped:,} already answered"
    return text + f"; {tally.tokens:,} tokens, {elapsed:.1f} s, {rate:.1f} requests/s"


class ProgressBar:
    """A rich progress bar on stderr; a do-nothing stand-in when it is off."""

    def __init__(self, tally: Tally, err: TextIO, *, enabled: bool, color: bool) -> None:
        self._tally = tally
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(file=err, no_color=not color, highlight=False)
        self._progress = Progress(
            BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
            console=console, transient=False, refresh_per_second=5,
        )
        self._task = self._progress.add_task("batch", total=tally.total, detail="")
        self._progress.start()

    def update(self) -> None:
        if self._progress is None:
            return
        tally = self._tally
        elapsed = max(time.monotonic() - tally.started, 1e-9)
        detail = f"{tally.ok:,} ok {tally.failed:,} failed {tally.done / elapsed:.1f} req/s {tally.tokens:,} tok"
        self._progress.update(self._task, completed=tally.done, detail=detail)

    def close(self) -> None:
        if self._progress is not None:
            self.update()
            self._progress.stop()
