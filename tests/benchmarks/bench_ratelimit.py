"""`anyfast batch` against a server-side rate limit it is not told about (issue 9).

The loopback gateway (tests/gateway.py) runs in its own process with a limiter from
tests/gateway_limits.py in front of its answers: a token bucket (200/s, burst 20) or a fixed
one-second window (200 a second), whose 429s carry `Retry-After` in whole seconds, or
`retry-after-ms`, or no header at all (`--headers` adds x-ratelimit-* to every answer).
Each answer takes 100 ms. 2,000 records, no --rpm, at -j 8, -j 64 and -j 200, and two shards
at once (--shard 1/2 and 2/2, each -j 64) sharing the one limit.

Printed per run:
- used: records answered / the gateway's span (first request arrived -> last answer written),
  as a share of the limiter's rate; for -j 8 also of what 8 in flight can do (80/s);
- 429: share of the requests the gateway answered 429;
- failed records (from anyfast's summary lines) and the exit status(es);
- the run phase from the summary line, and the whole-process wall time.
Targets (issue 9): at -j 64 and -j 200 every record answered once, none failed, exit 0; used >= 90%;
429 <= 5%; two shards >= 85% together, none failed; -j 8 no slower than before.

Run: python tests/benchmarks/bench_ratelimit.py [--kinds bucket,window] [--retry seconds,ms,none]
     [--runs j8,j64,j200,shards] [--headers] [--records 2000] [--timeout 300]
A run that is still going after --timeout seconds is stopped and shown as such.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from _harness import ANYFAST, SUMMARY, GatewayProcess, clean_env, write_records

ANYFAST_BIN = ANYFAST if os.path.exists(ANYFAST) else os.path.join(os.path.dirname(sys.executable), "anyfast")
LATENCY = 0.1
RATE = 200.0
BURST = 20
RUNS = {"j8": [8], "j64": [64], "j200": [200], "shards": [64, 64]}  # -j of each process run at once


def limiter(kind: str, retry: str, headers: bool) -> str:
    """The gateway's limiter for the next run, as GatewayProcess.span takes it."""
    return f"{kind} {retry} {int(headers)} {RATE} {BURST}"


def run_batch(source: str, out_dir: str, concurrencies: list, env: dict, timeout: float) -> dict:
    """Start one `anyfast batch` per entry of `concurrencies` at once (shards when more than one)."""
    count = len(concurrencies)
    processes = []
    started = time.perf_counter()
    for index, concurrency in enumerate(concurrencies):
        out = os.path.join(out_dir, f"out{index}.jsonl")
        argv = [ANYFAST_BIN, "batch", source, "-j", str(concurrency), "-o", out, "--no-progress"]
        if count > 1:
            argv += ["--shard", f"{index + 1}/{count}"]
        processes.append(
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        )
    codes, stderrs, timed_out = [], [], False
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=max(1.0, started + timeout - time.perf_counter()))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGTERM)
            _, stderr = process.communicate()
        codes.append(process.returncode)
        stderrs.append(stderr)
    wall = time.perf_counter() - started
    ok = failed = 0
    phases = []
    for stderr in stderrs:
        match = SUMMARY.search(stderr)
        if match:
            ok += int(match[1].replace(b",", b""))
            failed += int(match[2].replace(b",", b""))
            phases.append(float(match[3]))
    written = errors = 0
    for index in range(count):
        path = os.path.join(out_dir, f"out{index}.jsonl")
        if os.path.exists(path):
            with open(path, "rb") as handle:
                lines = [json.loads(line) for line in handle]
            written += len(lines)
            errors += sum(1 for line in lines if line.get("error"))
            os.unlink(path)
    return {
        "codes": codes,
        "ok": ok,
        "failed": failed,
        "phase": max(phases) if phases else float("nan"),
        "wall": wall,
        "written": written,
        "errors": errors,
        "timed_out": timed_out,
        "tail": b"".join(s[-300:] for s in stderrs).decode(errors="replace"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default="bucket,window", help="bucket, window, minute (a per-minute quota: slow)")
    parser.add_argument("--retry", default="seconds,ms,none", help="how 429s say when: seconds, ms, none")
    parser.add_argument("--runs", default="j8,j64,j200,shards")
    parser.add_argument("--headers", action="store_true", help="x-ratelimit-* headers on every answer")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is stopped")
    args = parser.parse_args()
    env = clean_env(ANYFAST_API_KEY="x")
    gateway = GatewayProcess(LATENCY)
    env["ANYFAST_BASE_URL"] = gateway.url
    met = True
    print(
        f"{args.records:,} records, {LATENCY * 1000:.0f} ms per answer, limiter {RATE:.0f}/s"
        f" (bucket burst {BURST}), no --rpm; gateway in its own process; anyfast = {ANYFAST_BIN}"
    )
    print(
        f"{'limiter':<24} {'run':<16} {'used':>6} {'429':>6} {'failed':>7} {'exit':>6}  {'run phase':>9} {'wall':>7}  "
        f"{'200s':>6} {'429s':>6}  target met"
    )
    with tempfile.TemporaryDirectory(prefix="anyfast-bench-ratelimit-") as tmp:
        source = write_records(os.path.join(tmp, "requests.jsonl"), args.records)
        for kind in args.kinds.split(","):
            for retry in args.retry.split(","):
                label = f"{kind}, {'Retry-After s' if retry == 'seconds' else 'retry-after-ms' if retry == 'ms' else 'no header'}"
                label += " +x-rl" if args.headers else ""
                gateway.span(limiter(kind, retry, args.headers))  # a fresh limiter for the first run
                for name in args.runs.split(","):
                    concurrencies = RUNS[name]
                    result = run_batch(source, tmp, concurrencies, env, args.timeout)
                    seen = gateway.span(limiter(kind, retry, args.headers))
                    answered, refused, span = seen.answered, seen.refused, seen.seconds
                    rate = RATE
                    used = answered / span / rate if span > 0 else 0.0
                    refused_share = refused / (answered + refused) if answered + refused else 0.0
                    ceiling = min(rate, sum(concurrencies) / LATENCY)
                    codes = "/".join(str(c) for c in result["codes"])
                    if result["timed_out"]:
                        codes += " (stopped)"
                    if name == "j8":
                        target, ok = f"{answered / span / ceiling if span else 0:.0%} of 8 in flight", None
                    elif name == "shards":
                        ok = used >= 0.85 and result["failed"] == 0 and set(result["codes"]) == {0}
                        target = ">= 85%, none failed"
                    else:
                        ok = used >= 0.90 and refused_share <= 0.05 and result["failed"] == 0 and result["codes"] == [0]
                        target = ">= 90%, <= 5% 429"
                    if ok is not None:
                        met &= ok
                    print(
                        f"{label:<24} {name + ' -j ' + '+'.join(map(str, concurrencies)):<16} {used:6.0%} {refused_share:6.1%} "
                        f"{result['failed']:7,} {codes:>6}  {result['phase']:8.2f}s {result['wall']:6.2f}s  "
                        f"{answered:6,} {refused:6,}  {target}{'' if ok is None else ': yes' if ok else ': NO'}",
                        flush=True,
                    )
                    if result["written"] != args.records or (result["ok"] + result["failed"]) != args.records:
                        print(
                            f"    note: {result['written']:,} lines written ({result['errors']:,} with an error), "
                            f"summary {result['ok']:,} ok + {result['failed']:,} failed; {result['tail'].strip()[-200:]}"
                        )
    gateway.stop()
    print(f"(load average {os.getloadavg()[0]:.2f} at the end; 2-core machine, other work may run)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
