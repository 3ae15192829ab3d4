"""Peak memory, and time, against a hostile gateway (issue 10, class 2).

Each case runs `anyfast` under /usr/bin/time -f %M (peak RSS; see _harness.py for why not
os.wait4) against tests/gateway.py's Hostile modes, with stdout to /dev/null, and checks
that it ends as it must: exit 1 (complete) or 6 (batch: the record fails, the run goes on)
with one `too large` error. Targets (issue 10):

  endless stream, text and --json --stream ............. peak RSS < 200 MiB
  gzip bomb (1 GiB inflated), any mode; 500 MB batch answer  peak RSS < 400 MiB

Also shown, without a target: an endless whole (non-streamed) body, a 500 MB answer to
complete, and one 64 MB SSE line. The limits that stop them (exchange.py, sse.py):
a whole answer 32 MiB, a streamed answer 256 MiB, one SSE event 16 MiB, all decoded.

Last, SSE line assembly on its own, in this process: one line of 64 MB and one of 200 MB fed
to the decoder in 64 KiB pieces with no limit. Before issue 10 the buffer was joined at
every feed (quadratic: 37 s and 506 s); now each line is joined once (linear).

The gateway runs in a thread of this process and streams its bodies without holding them.
Run: .venv/bin/python tests/benchmarks/bench_hostile.py [--runs 3] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from _harness import PYTHON, ROOT, TIME, clean_env
from gateway import MIB, Gateway, Hostile
from gateway import _bomb as gzip_bomb

GIB = 1024 * MIB
# The checkout's code: `-m` from the checkout puts it first on sys.path. (_harness.ANYFAST, the
# venv's console script, imports whatever copy of anyfast_cli was installed into the venv.)
ANYFAST = [PYTHON, "-m", "anyfast_cli"]


@dataclass
class Case:
    name: str
    argv: list
    reply: Hostile
    status: int  # the exit status it must end with
    target_mib: float | None  # peak RSS target, None: shown only
    stdin: bytes | None = None
    rss_kib: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    error: str = ""


def cases() -> list[Case]:
    complete = ["complete", "-n", "hi"]
    batch = ["batch", "--retries", "0", "--no-progress"]
    one_record = b'"hi"\n'
    return [
        Case("endless stream, text", complete, Hostile("endless"), 1, 200),
        Case("endless stream, --json --stream", complete + ["--json", "--stream"], Hostile("endless"), 1, 200),
        Case("endless body, --json (whole)", complete + ["--json"], Hostile("endless"), 1, None),
        Case("gzip bomb 1 GiB, text (stream)", complete, Hostile("gzip_bomb", size=GIB), 1, 400),
        Case(
            "gzip bomb 1 GiB, --json --stream",
            complete + ["--json", "--stream"],
            Hostile("gzip_bomb", size=GIB),
            1,
            400,
        ),
        Case("gzip bomb 1 GiB, --json (whole)", complete + ["--json"], Hostile("gzip_bomb", size=GIB), 1, 400),
        Case("gzip bomb 1 GiB, batch", batch, Hostile("gzip_bomb", size=GIB), 6, 400, one_record),
        Case(
            "500 MB answer, batch (Content-Length)", batch, Hostile("big_answer", size=500 * 10**6), 6, 400, one_record
        ),
        Case(
            "500 MB answer, batch (chunked)",
            batch,
            Hostile("big_answer", size=500 * 10**6, sized=False),
            6,
            400,
            one_record,
        ),
        Case(
            "500 MB answer, complete --json (chunked)",
            complete + ["--json"],
            Hostile("big_answer", size=500 * 10**6, sized=False),
            1,
            None,
        ),
        Case("64 MB SSE line, text", complete, Hostile("giant_line", size=64 * MIB), 1, None),
    ]


def run_case(case: Case, gateway: Gateway, env: dict) -> None:
    gateway.script(case.reply)
    batch = case.argv[0] == "batch"  # its one result line is small: read it for the record's error
    with tempfile.NamedTemporaryFile("r") as out:
        started = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", out.name, *ANYFAST, *case.argv],
            env=env,
            input=case.stdin,
            cwd=ROOT,
            stdout=subprocess.PIPE if batch else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
            check=False,
        )
        case.seconds.append(time.perf_counter() - started)
        case.rss_kib.append(int(out.read().split()[-1]))
    gateway.settle(0.05, 2)
    stderr = done.stderr.decode("utf-8", "replace")
    if batch:
        case.error = "line: " + json.loads(done.stdout)["error"]["message"]
    else:
        case.error = stderr.splitlines()[0] if stderr else ""
    if done.returncode != case.status or "larger than" not in case.error:
        raise SystemExit(
            f"{case.name}: exited {done.returncode} (must be {case.status} with a size error):\n{case.error}\n{stderr[-2000:]}"
        )


def line_assembly(size: int, piece: int = 64 * 1024) -> float:
    """Seconds to decode one SSE line of `size` bytes fed in `piece`-byte feeds (no limit)."""
    sys.path.insert(0, ROOT)  # the checkout's, not a copy installed in the venv
    from anyfast_cli.sse import SSEDecoder

    decoder = SSEDecoder(max_event_bytes=size * 2)
    block = b"a" * piece
    started = time.perf_counter()
    decoder.feed(b'data: {"x":"')
    for _ in range(size // piece):
        decoder.feed(block)
    [event] = decoder.feed(b'"}\n\n')
    elapsed = time.perf_counter() - started
    assert len(event) > size
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="runs of each case (the peak RSS shown is the largest)")
    parser.add_argument("--only", default="", help="comma-separated words: run the cases whose name holds one")
    args = parser.parse_args()
    if not os.path.exists(TIME):
        raise SystemExit(f"{TIME} is needed to measure peak RSS")

    selected = [c for c in cases() if not args.only or any(w in c.name for w in args.only.split(","))]
    gateway = Gateway().start()
    env = clean_env(ANYFAST_API_KEY="sk-bench-0123456789abcdef", ANYFAST_BASE_URL=gateway.url)
    print("building the gzip bombs ...", flush=True)
    for case in selected:
        if case.reply.mode == "gzip_bomb":  # compressed once here (cached), not while a run is timed
            streamed = case.argv[0] == "complete" and ("--stream" in case.argv or "--json" not in case.argv)
            gzip_bomb(streamed, case.reply.size)
    for _ in range(args.runs):
        for case in selected:
            run_case(case, gateway, env)
    gateway.stop()

    print(f"\n{'case':<44} {'peak RSS':>9} {'target':>8}  met  {'wall s':>7}  error")
    met_all = True
    for case in selected:
        peak = max(case.rss_kib) / 1024
        met = case.target_mib is None or peak < case.target_mib
        met_all &= met
        target = f"< {case.target_mib:.0f}" if case.target_mib else "-"
        print(
            f"{case.name:<44} {peak:6.1f} MiB {target:>8}  {' - ' if case.target_mib is None else 'yes' if met else 'NO '}"
            f"  {min(case.seconds):7.2f}  {case.error[:90]}"
        )
    print(
        f"(max of {args.runs} runs; wall time is the best run, gateway in this process; load average {os.getloadavg()[0]:.2f})"
    )

    if not args.only or "line" in args.only:
        print("\nSSE line assembly in the decoder alone (64 KiB feeds, no limit):")
        for size in (64 * MIB, 200 * MIB):
            print(f"  one {size // MIB} MiB line: {line_assembly(size):.2f} s")
    return 0 if met_all else 1


if __name__ == "__main__":
    sys.exit(main())
