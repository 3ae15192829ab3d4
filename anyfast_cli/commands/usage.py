"""`anyfast usage [FILE...]`: what the usage log says was spent, totalled.

The log is streamed line by line, so memory stays flat however long it is; only one
row per group (and currency) is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.output import print_json, write_flushed
from anyfast_cli.prices import render_cost
from anyfast_cli.streams import Streams
from anyfast_cli.usagelog import number, read_lines

GROUPS = ("model", "day", "command", "profile")
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WARNINGS_SHOWN = 20  # unreadable lines named one by one; past these, a count


def duration_seconds(value: str) -> float | None:
    """The seconds in a duration (`7d`, `12h`, `30m`, `45s`, `2w`); None when it is not one."""
    match = DURATION.match(value)
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)] if match else None


def parse_since(value: str, now: datetime) -> datetime:
    """--since: a duration back from now (`7d`, `12h`, `30m`), a date (`2026-12-01`, UTC
    midnight) or an RFC 3339 time."""
    seconds = duration_seconds(value)
    if seconds is not None:
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:  # further back than a date can be
            raise UsageError(f"--since {value!r}: too far back") from None
    moment = parse_time(value.strip())
    if moment is None:
        raise UsageError(f"--since {value!r}: expected a duration such as 7d, 12h, 30m, or a date such as 2026-12-01")
    return moment


def parse_time(text) -> datetime | None:
    """An RFC 3339 time or a date, as an aware UTC datetime; None when it is neither."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+01:00 is before any UTC date
        return None


@dataclass
class Row:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    priced: bool = False  # some request in the row had a cost


class UsageTotals:
    """Rows keyed by (group value, currency): money is totalled per currency. Requests with no
    cost (no price) are kept apart (currency None) and join their group's row at the end, so a
    group is one row unless its prices were in several currencies."""

    def __init__(self, by: str | None, since: datetime | None = None) -> None:
        self.by = by
        self.since = since
        self.rows: dict[tuple, Row] = {}

    def add(self, line: dict) -> bool:
        """Count a line; False when it is not a usage line (no readable time where one is needed)."""
        moment = None
        if self.since is not None or self.by == "day":
            moment = parse_time(line.get("ts"))
            if moment is None:
                return False
            if self.since is not None and moment < self.since:
                return True
        if self.by == "day":
            group = moment.date().isoformat()
        elif self.by:
            group = line.get(self.by)
            group = group if isinstance(group, str) else "-"
        else:
            group = None
        cost = line.get("cost")
        priced = not isinstance(cost, bool) and isinstance(cost, (int, float))
        currency = (line.get("currency") if isinstance(line.get("currency"), str) else "") if priced else None
        row = self.rows.setdefault((group, currency), Row())
        row.requests += 1
        for name in TOKEN_COLUMNS:
            setattr(row, name, getattr(row, name) + int(number(line.get(name))))
        if priced:
            row.cost += number(cost)
            row.priced = True
        return True

    def table(self) -> list[dict]:
        """One object per row, sorted by group; with no rows at all, one row of zeros."""
        rows = dict(self.rows) or {(None, None): Row()}
        for (group, currency), unpriced in list(rows.items()):
            if currency is None:
                home = next((key for key in sorted(rows, key=str) if key[0] == group and key[1] is not None), None)
                if home is not None:
                    _merge(rows[home], unpriced)
                    del rows[(group, None)]
        result = []
        for (group, currency), row in sorted(rows.items(), key=lambda item: (str(item[0][0]), item[0][1] or "")):
            entry = {self.by: group} if self.by else {}
            entry.update(
                requests=row.requests,
                **{name: getattr(row, name) for name in TOKEN_COLUMNS},
                cost=row.cost if row.priced else None,
                currency=currency or None,
            )
            result.append(entry)
        return result


def _merge(row: Row, other: Row) -> None:
    """Add `other`'s requests and tokens (not its cost: it has none) into `row`."""
    row.requests += other.requests
    for name in TOKEN_COLUMNS:
        setattr(row, name, getattr(row, name) + getattr(other, name))


def render_rows(rows: list[dict], *, terminal: bool) -> str:
    """Tab-separated in a pipe (no header); aligned, with a header, at a terminal."""
    if not rows:
        return ""
    names = list(rows[0])
    cells = [[_cell(row[name], name) for name in names] for row in rows]
    if not terminal:
        return "".join("\t".join(line) + "\n" for line in cells)
    table = [[name.replace("_tokens", "") for name in names], *cells]
    widths = [max(len(line[i]) for line in table) for i in range(len(names))]
    numeric = [name != "currency" and name not in GROUPS for name in names]
    return "".join(
        "  ".join(
            (cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])) for i, cell in enumerate(line)
        ).rstrip()
        + "\n"
        for line in table
    )


def _cell(value, name: str) -> str:
    if value is None:
        return "-"
    if name == "cost":
        return render_cost(value)
    return str(value)


def run_usage(
    files: list[str], *, by: str | None, since: str | None, as_json: bool, log_setting: str | None, streams: Streams
) -> ExitCode:
    if by is not None and by not in GROUPS:
        raise UsageError(f"--by {by!r}: expected one of {', '.join(GROUPS)}")
    paths = files or ([log_setting] if log_setting else [])
    if not paths:
        raise UsageError(
            "no usage log to read", hint="name one (anyfast usage FILE), or set --usage-log / ANYFAST_USAGE_LOG"
        )
    totals = UsageTotals(by, parse_since(since, datetime.now(timezone.utc)) if since else None)
    for path in paths:
        skipped = 0
        try:
            for line_number, line in read_lines(path):
                if line is not None and totals.add(line):
                    continue
                skipped += 1
                if skipped <= WARNINGS_SHOWN:
                    streams.warn(f"{path}:{line_number}: not a usage line; skipped")
        except FileNotFoundError:
            raise UsageError(f"usage log {path} does not exist") from None
        except IsADirectoryError:
            raise UsageError(f"usage log {path} is a directory") from None
        except OSError as exc:
            raise UsageError(f"cannot read usage log {path}: {exc.strerror or exc}") from None
        if skipped > WARNINGS_SHOWN:
            streams.warn(f"{path}: {skipped - WARNINGS_SHOWN} more line(s) skipped that are not usage lines")
    rows = totals.table()
    if as_json:
        print_json(rows, streams.stdout, terminal=streams.stdout_isatty, color=streams.stdout_color)
    else:
        write_flushed(streams.stdout, render_rows(rows, terminal=streams.stdout_isatty))
    return ExitCode.OK
