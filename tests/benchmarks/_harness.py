"""Shared timing helpers for the bench_*.py scripts (plain scripts, not pytest tests).

Every figure is a ratio against a floor measured in the same run: each round runs
"ours" and the floor once, alternating which goes first, and the report gives the
median of the rounds. Peak RSS is measured in separate runs under /usr/bin/time:
a child's ru_maxrss from os.wait4 keeps the high-water mark of the forking parent
(Linux carries it across exec), which here holds a 10 MB stream body.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(BENCH_DIR))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PYTHON = os.path.join(VENV_BIN, "python")
ANYFAST = os.path.join(VENV_BIN, "anyfast")
TIME = "/usr/bin/time"

sys.path.insert(0, os.path.join(ROOT, "tests"))  # for gateway.py


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system of the child alone: steadier than wall time on a busy machine
    returncode: int
    stderr: bytes = b""  # anyfast's summary line, for bench_batch.py


@dataclass
class Series:
    name: str
    argv: list
    stdin: bytes | None = None
    runs: list = field(default_factory=list)
    rss_kib: list = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def cpu_median(self) -> float:
        return statistics.median(r.cpu_seconds for r in self.runs)

    @property
    def best(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.rss_kib) / 1024 if self.rss_kib else float("nan")


def clean_env(**extra: str) -> dict:
    """The caller's environment without ANYFAST_* settings, with a config home that has no config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYFAST_") and k not in ("NO_COLOR", "FORCE_COLOR")}
    env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="anyfast-bench-")
    # As a user runs it: bytecode cached (this session's shell sets PYTHONDONTWRITEBYTECODE=1,
    # which recompiles anyfast_cli on every run) and stdout block-buffered in a pipe.
    for name in (
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PYTHONPROFILEIMPORTTIME",
        "PYTHONDEVMODE",
        "PYTHONTRACEMALLOC",
    ):
        env.pop(name, None)
    env.update(extra)
    return env


def run_once(argv: list, env: dict, stdin: bytes | None = None, stdout=subprocess.DEVNULL) -> Run:
    """Run one child to completion: wall seconds, its own CPU seconds and exit status."""
    stdin_fd = subprocess.PIPE if stdin is not None else subprocess.DEVNULL
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=stdin_fd, stdout=stdout, stderr=subprocess.PIPE, env=env)
    if stdin is not None:
        process.stdin.write(stdin)
        process.stdin.close()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from reaping it again
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{argv!r} exited {process.returncode}: {stderr.decode(errors='replace')[-2000:]}")
    return Run(elapsed, usage.ru_utime + usage.ru_stime, process.returncode, stderr)


def interleave(pairs: list, env: dict, rounds: int, warmup: int = 2, before_each=None) -> None:
    """Run every (ours, floor) pair `rounds` times, alternating which of the two goes first;
    then measure each one's peak RSS."""
    for index in range(warmup + rounds):
        for ours, floor in pairs:
            order = (ours, floor) if index % 2 == 0 else (floor, ours)
            for series in order:
                if before_each:
                    before_each(series)
                run = run_once(series.argv, env, series.stdin)
                if index >= warmup:
                    series.runs.append(run)
    unique = list({id(s): s for pair in pairs for s in pair}.values())
    measure_rss(unique, env, before_each=before_each)


def measure_rss(series_list: list, env: dict, runs: int = 3, before_each=None) -> None:
    """Peak RSS of each series' process, from /usr/bin/time (a small C parent), `runs` times."""
    if not os.path.exists(TIME):
        return
    for _ in range(runs):
        for series in series_list:
            if before_each:
                before_each(series)
            with tempfile.NamedTemporaryFile("r") as out:
                run_once([TIME, "-f", "%M", "-o", out.name, *series.argv], env, series.stdin)
                series.rss_kib.append(int(out.read().split()[-1]))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def report(title: str, rows: list) -> list:
    """rows: (ours Series, floor Series, target ratio). Prints a table; returns [(label, ratio, met)]."""
    print(f"\n{title}")
    print(
        f"{'measure':<40} {'ours (median)':>14} {'floor (median)':>15} {'ratio':>6} {'target':>7}  met  | best ours/floor, per-round ratio, CPU ratio, peak RSS ours/floor"
    )
    results = []
    for ours, floor, target in rows:
        ratio = ours.median / floor.median
        per_round = statistics.median(o.seconds / f.seconds for o, f in zip(ours.runs, floor.runs))
        met = ratio <= target
        print(
            f"{ours.name:<40} {ms(ours.median):>14} {ms(floor.median):>15} {ratio:5.2f}x {target:5.2f}x  {'yes' if met else 'NO ':<3}"
            f"  | {ms(ours.best).strip()} / {ms(floor.best).strip()}, {per_round:.2f}x, {ours.cpu_median / floor.cpu_median:.2f}x,"
            f" {ours.peak_rss_mib:.1f} / {floor.peak_rss_mib:.1f} MiB"
        )
        print(f"{'  floor: ' + floor.name}")
        results.append((ours.name, ratio, met))
    print(
        f"(n={len(rows[0][0].runs)} rounds, interleaved; load average {os.getloadavg()[0]:.2f} at the end; 2-core machine, other work may run)"
    )
    return results


def parse_args(default_rounds: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=default_rounds, help="measured rounds (after 2 warm-up rounds)")
    return parser.parse_args()


# --- batch benchmarks: the gateway in its own process, the input, the summary line ---------------

SUMMARY = re.compile(rb"anyfast: batch: ([\d,]+) ok, ([\d,]+) failed.*?, ([\d.]+) s, ([\d.]+) requests/s")

# tests/gateway.py in a child process, so it shares no GIL with anything measured. It keeps no
# received requests (a 200,000-record run would hold them all). Each line on its stdin asks what
# it did since the last ask: "answered refused span cpu" (answers written other than 429s, 429s,
# seconds from the first request's arrival to the last answer written, its CPU seconds). A line
# "kind retry headers rate burst" also puts a fresh limiter (tests/gateway_limits.py) in front of
# its answers for the next run.
LAUNCHER = r"""import sys, time
sys.path.insert(0, sys.argv[2])
from gateway import Gateway

class Span:
    first = last = None
    written = refused = 0

class Forget(list):  # keeps no requests; notes when the first one arrived
    def append(self, request):
        if Span.first is None:
            Span.first = request.at

class Counting:  # a limiter that counts its refusals
    def __init__(self, limiter):
        self.limiter = limiter
    def gate(self, now):
        result = self.limiter.gate(now)
        Span.refused += result[0] is not None
        return result

gateway = Gateway()
gateway.latency = float(sys.argv[1])
gateway.requests = Forget()
respond = gateway._respond

async def timed(request, writer):
    keep_alive = await respond(request, writer)
    Span.last = time.monotonic()
    Span.written += 1
    return keep_alive

gateway._respond = timed
gateway.start()
print(gateway.url, flush=True)
cpu = time.process_time()
for line in sys.stdin:
    print(Span.written - Span.refused, Span.refused, (Span.last or 0.0) - (Span.first or 0.0), time.process_time() - cpu, flush=True)
    Span.first = Span.last = None
    Span.written = Span.refused = 0
    cpu = time.process_time()
    if line.split():
        from gateway_limits import make_limiter
        kind, retry, headers, rate, burst = line.split()
        gateway.limiter = Counting(make_limiter(kind, float(rate), burst=int(burst), retry=retry, ratelimit_headers=headers == "1"))
"""


@dataclass(frozen=True)
class GatewaySpan:
    answered: int  # answers written, 429s not counted
    refused: int  # 429s from the limiter
    seconds: float  # first request's arrival -> last answer written
    cpu_seconds: float


class GatewayProcess:
    """The loopback gateway in its own process, each answer after `latency` seconds."""

    def __init__(self, latency: float) -> None:
        python = PYTHON if os.path.exists(PYTHON) else sys.executable
        self.process = subprocess.Popen(
            [python, "-c", LAUNCHER, str(latency), os.path.join(ROOT, "tests")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.process.stdout.readline().strip()

    def span(self, limiter: str = "") -> GatewaySpan:
        """What the gateway did since the last call; `limiter` ("kind retry headers rate burst")
        installs a fresh limiter for the next run."""
        self.process.stdin.write(limiter + "\n")
        self.process.stdin.flush()
        answered, refused, seconds, cpu = self.process.stdout.readline().split()
        return GatewaySpan(int(answered), int(refused), float(seconds), float(cpu))

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(10)


def write_records(path: str, count: int) -> str:
    """`count` batch records {"id": "q<i>", "prompt": "question <i>"}."""
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n")
    return path


def summary(stderr: bytes) -> tuple[int, int, float]:
    """(ok, failed, run-phase seconds) from anyfast's summary line."""
    match = SUMMARY.search(stderr)
    if match is None:
        raise SystemExit(f"no summary line in: {stderr.decode(errors='replace')[-500:]}")
    return int(match[1].replace(b",", b"")), int(match[2].replace(b",", b"")), float(match[3])
