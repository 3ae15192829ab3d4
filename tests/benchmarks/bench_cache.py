"""The response cache (issue 17): what a hit costs.

1. batch: 20,000 records that are all hits (`--cache DIR`, filled beforehand) against the same
   batch sent to a zero-latency loopback gateway without a cache (-j 64 for both). Target: the
   hits at least 3x faster, whole process, wall time (CPU time and the summary's run phase shown too).
2. complete: a hit (`anyfast complete --cache DIR hi`) against `anyfast complete --dry-run hi`
   (which also sends nothing). Target: at most 20 ms more, on the medians.

Rounds are interleaved, the order alternating (_harness.interleave). The gateway is
tests/gateway.py in a thread of this process (it keeps no requests). Run:
.venv/bin/python tests/benchmarks/bench_cache.py [--rounds 3] [--complete-rounds 20] [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

from _harness import ANYFAST, Series, clean_env, interleave, ms, run_once
from gateway import Gateway

SUMMARY = re.compile(rb"anyfast: batch: ([\d,]+) ok.*?, ([\d.]+) s, ")


class Forget(list):
    def append(self, request) -> None:  # keep no requests: 20,000 of them per round add up
        pass


def write_records(path: str, count: int) -> str:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n")
    return path


def run_phase(run) -> float:
    match = SUMMARY.search(run.stderr)
    assert match, run.stderr[-500:]
    return float(match.group(2))


def bench_batch(env: dict, work: str, records: int, rounds: int) -> bool:
    source = write_records(os.path.join(work, "in.jsonl"), records)
    cache = os.path.join(work, "cache")
    out = os.path.join(work, "out.jsonl")
    common = [ANYFAST, "batch", source, "-o", out, "-j", "64", "--no-progress"]
    fill = run_once([*common, "--cache", cache], env)  # every record sent once, and stored
    assert b"0 failed" in fill.stderr, fill.stderr
    ours = Series(f"batch, {records:,} hits (--cache)", [*common, "--cache", cache])
    floor = Series(f"batch, {records:,} sent, zero-latency loopback", common)
    checked = run_once(ours.argv, env)
    assert f"{records:,} ok ({records:,} from the cache)".encode() in checked.stderr, checked.stderr
    interleave([(ours, floor)], env, rounds, warmup=1)
    speedup = floor.median / ours.median
    print(f"\n{records:,} records, -j 64, whole process (median of {rounds} rounds, interleaved)")
    for series in (ours, floor):
        phases = statistics.median(run_phase(r) for r in series.runs)
        print(
            f"  {series.name:<44} {ms(series.median)} wall, {ms(series.cpu_median)} CPU, run phase {phases:.2f} s,"
            f" peak RSS {series.peak_rss_mib:.1f} MiB"
        )
    met = speedup >= 3
    print(
        f"  hits are {speedup:.1f}x faster (CPU {floor.cpu_median / ours.cpu_median:.1f}x); target >= 3x: {'yes' if met else 'NO'}"
    )
    return met


def bench_complete(env: dict, work: str, rounds: int) -> bool:
    cache = os.path.join(work, "complete-cache")
    filled = subprocess.run([ANYFAST, "complete", "--cache", cache, "hi"], env=env, capture_output=True, check=True)
    assert filled.stdout == b"echo: hi\n", filled
    no_key = {k: v for k, v in env.items() if k != "ANYFAST_API_KEY"}  # neither needs one
    ours = Series("anyfast complete --cache DIR hi (a hit)", [ANYFAST, "complete", "--cache", cache, "hi"])
    floor = Series("anyfast complete --dry-run hi", [ANYFAST, "complete", "--dry-run", "hi"])
    assert subprocess.run(ours.argv, env=no_key, capture_output=True, check=True).stdout == b"echo: hi\n"
    interleave([(ours, floor)], no_key, rounds)
    extra = ours.median - floor.median
    per_round = statistics.median(o.seconds - f.seconds for o, f in zip(ours.runs, floor.runs))
    met = extra <= 0.020
    print(f"\ncomplete, a hit against --dry-run (median of {rounds} rounds, interleaved)")
    for series in (ours, floor):
        print(
            f"  {series.name:<44} {ms(series.median)} wall (best {ms(series.best).strip()}), {ms(series.cpu_median)} CPU"
        )
    print(
        f"  a hit costs {extra * 1000:+.1f} ms (per round {per_round * 1000:+.1f} ms); target <= +20 ms: {'yes' if met else 'NO'}"
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="batch rounds (after 1 warm-up round)")
    parser.add_argument("--complete-rounds", type=int, default=20, help="complete rounds (after 2 warm-up rounds)")
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    gateway = Gateway()
    gateway.requests = Forget()
    gateway.start()
    env = clean_env(ANYFAST_API_KEY="sk-bench-0123456789", ANYFAST_BASE_URL=gateway.url)
    with tempfile.TemporaryDirectory(prefix="anyfast-bench-cache-") as work:
        batch_met = bench_batch(env, work, args.records, args.rounds)
        complete_met = bench_complete(env, work, args.complete_rounds)
    print(f"(load average {os.getloadavg()[0]:.2f} at the end; 2-core machine, other work may run)")
    gateway.stop()
    return 0 if batch_met and complete_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
