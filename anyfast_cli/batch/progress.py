"""What a batch tells the person watching: a progress bar on a terminal, a summary line at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

from anyfast_cli.meter import RunTotals


@dataclass
class Tally:
    total: int = 0  # records this run sends
    skipped: int = 0  # already answered in the output file (--resume)
    ok: int = 0
    failed: int = 0
    rate_limited: int = 0  # of the failed: on 429, the limit letting nothing through for long
    cached: int = 0  # of the ok: answered from the cache (--cache), nothing sent
    not_in_cache: int = 0  # of the failed: --cache-mode replay had no answer for them
    started: float = field(default_factory=time.monotonic)
    spent: RunTotals = field(default_factory=RunTotals)  # every request's result, added up by the meter

    @property
    def tokens(self) -> int:
        return self.spent.tokens

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def add(self, ok: bool, rate_limited: bool = False) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
            self.rate_limited += rate_limited


def render_summary(
    tally: Tally, elapsed: float, *, interrupted: bool = False, rate: float | None = None, answered_429: int = 0
) -> str:
    done_rate = tally.done / elapsed if elapsed > 0 else 0.0
    text = f"batch: {tally.ok:,} ok"
    if tally.cached:
        text += f" ({tally.cached:,} from the cache)"
    text += f", {tally.failed:,} failed"
    if tally.not_in_cache:
        text += f" ({tally.not_in_cache:,} not in the cache)"
    if tally.done < tally.total:
        text += f", {tally.total - tally.done:,} not run" + (" (interrupted)" if interrupted else "")
    if tally.skipped:
        text += f", {tally.skipped:,} already answered"
    seconds = f"{elapsed:.2f}" if elapsed < 10 else f"{elapsed:.1f}"
    text += f"; {tally.tokens:,} tokens"
    spend = tally.spent.describe_spend()
    if spend:
        text += f", cost {spend}"
    if len(tally.spent.models) > 1:  # several models answered (--fallback, or records naming their own)
        text += " (" + ", ".join(f"{model} {count:,}" for model, count in tally.spent.models.most_common()) + ")"
    text += f", {seconds} s, {done_rate:.1f} requests/s"
    if answered_429:  # the server's limit was met: the rate achieved under it, and what it cost
        settled = f"settled at {rate:.1f} requests/s, " if rate else ""
        text += f"; rate limit: {settled}{answered_429:,} requests answered 429"
    return text


RATE_AFTER = 1.0  # seconds before a rate is shown: one early answer says nothing about speed


def render_progress(tally: Tally, now: float) -> str:
    elapsed = now - tally.started
    rate = f"{tally.done / elapsed:.1f} req/s" if elapsed >= RATE_AFTER else "- req/s"
    return f"{tally.done:,}/{tally.total:,} done, {tally.ok:,} ok, {tally.failed:,} failed, {rate}, {tally.tokens:,} tokens"


class ProgressBar:
    """Progress on stderr when it is a terminal: a rich bar where colour is allowed,
    else one plain line redrawn with a carriage return (NO_COLOR and TERM=dumb
    forbid escape sequences, the bar's cursor controls included)."""

    PLAIN_INTERVAL = 0.2  # seconds between redraws of the plain line

    def __init__(self, tally: Tally, err: TextIO, *, enabled: bool, color: bool) -> None:
        self._tally = tally
        self._err = err
        self._enabled = enabled
        self._progress = None
        self._plain_width = 0
        self._plain_drawn = 0.0
        if not enabled or not color:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=Console(file=err, highlight=False),
            transient=False,
            refresh_per_second=5,
        )
        self._task = self._progress.add_task("batch", total=tally.total, detail="")
        self._progress.start()

    def update(self, *, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if self._progress is not None:
            detail = render_progress(self._tally, now).split(" done, ", 1)[1]
            self._progress.update(self._task, completed=self._tally.done, detail=detail)
        elif force or now - self._plain_drawn >= self.PLAIN_INTERVAL:
            line = render_progress(self._tally, now)
            self._err.write("\r" + line.ljust(self._plain_width))
            self._err.flush()
            self._plain_width, self._plain_drawn = len(line), now

    def close(self) -> None:
        if not self._enabled:
            return
        self.update(force=True)
        if self._progress is not None:
            self._progress.stop()
        else:
            self._err.write("\n")
            self._err.flush()
