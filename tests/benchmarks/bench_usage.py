"""Issue 16's figures: what the usage log costs, and what reading it back costs.

1. One-shot `complete --no-stream` with `--usage-log FILE` against the same command without
   it (the floor), interleaved: target "nothing measurable", i.e. within the noise (≤ 1.03x).
2. `anyfast usage` on a 1,000,000-line log (a day of a busy pipeline): wall time and peak RSS,
   against `wc -l` on the same file (the floor for reading it at all) and a bare Python loop
   that json.loads every line (the floor for parsing it). Memory must stay flat: the same
   peak RSS on 10,000 lines and on 1,000,000.

The batch figure (the log's cost per record at zero latency) is in bench_batch.py.
Run: .venv/bin/python tests/benchmarks/bench_usage.py [--rounds 10] [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile

from _harness import ANYFAST, PYTHON, Series, clean_env, interleave, measure_rss, ms, report, run_once
from gateway import Gateway

PARSE_FLOOR = """
import json, sys
n = 0
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = json.loads(raw)
        n += line["total_tokens"] or 0
print(n)
"""


def write_log(path: str, lines: int) -> None:
    rng = random.Random(1)
    models = ["doubao-seed-1-6-251015", "glm-4-7-251222", "doubao-seed-1-6-vision-250815"]
    with open(path, "w") as out:
        for i in range(lines):
            prompt, completion = rng.randint(10, 4000), rng.randint(1, 2000)
            out.write(
                json.dumps(
                    {
                        "ts": f"2026-12-{1 + i % 7:02d}T{i % 24:02d}:00:00.000Z",
                        "command": "batch",
                        "profile": "default",
                        "model": models[i % 3],
                        "request_id": f"req-{i}",
                        "status": "ok",
                        "exit": 0,
                        "attempts": 1,
                        "latency_ms": 812,
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "reasoning_tokens": None,
                        "cached_tokens": None,
                        "cost": (prompt * 0.8 + completion * 2) / 1e6,
                        "currency": "USD",
                        "cache": None,
                        "custom_id": str(i),
                        "body_sha256": "0" * 64,
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()

    gateway = Gateway().start()
    work = tempfile.mkdtemp(prefix="anyfast-bench-usage-")
    env = clean_env(ANYFAST_API_KEY="sk-bench", ANYFAST_BASE_URL=gateway.url)
    log = os.path.join(work, "usage.jsonl")
    plain = Series("complete --no-stream", [ANYFAST, "complete", "--no-stream", "-n", "hi"])
    logged = Series("complete --no-stream --usage-log", [*plain.argv, "--usage-log", log])
    interleave([(logged, plain)], env, args.rounds)
    report(
        "1. one-shot complete, with and without the usage log (target: within noise, <= 1.03x)", [(logged, plain, 1.03)]
    )

    print(f"\n2. anyfast usage on a log of {args.lines:,} lines (and of 10,000, for flat memory)")
    big, small = os.path.join(work, "big.jsonl"), os.path.join(work, "small.jsonl")
    write_log(big, args.lines)
    write_log(small, 10_000)
    floor_script = os.path.join(work, "parse.py")
    with open(floor_script, "w") as out:
        out.write(PARSE_FLOOR)
    n = f"{args.lines:,}"
    rows = [
        Series(f"anyfast usage ({n})", [ANYFAST, "usage", big]),
        Series(f"anyfast usage --by day ({n})", [ANYFAST, "usage", big, "--by", "day"]),
        Series(f"python json.loads loop ({n})", [PYTHON, floor_script, big]),
        Series(f"wc -l ({n})", ["wc", "-l", big]),
        Series("anyfast usage (10k)", [ANYFAST, "usage", small]),
    ]
    for series in rows:
        for _ in range(3):
            series.runs.append(run_once(series.argv, env))
    measure_rss(rows, env)
    size = os.path.getsize(big) / 1024 / 1024
    print(f"log: {size:.0f} MiB")
    for series in rows:
        print(
            f"{series.name:<40} wall {ms(series.median)}  cpu {ms(series.cpu_median)}  peak RSS {series.peak_rss_mib:6.1f} MiB"
        )
    print(f"(median of 3; load average {os.getloadavg()[0]:.2f}; 2-core machine, other work may run)")
    gateway.stop()


if __name__ == "__main__":
    main()
