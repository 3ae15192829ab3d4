"""One non-streamed request end to end: `echo hi | anyfast complete --no-stream` against a
bare httpx script doing the same POST and printing the content. Target <= 1.3x.

The gateway is tests/gateway.py, in a thread of this process, on 127.0.0.1.
Two floors: `httpx.post(...)` as anyone would write it (it builds an SSL context even
for http://), and a leaner `httpx.Client(verify=False)` like ours; the target is judged
against the first, the second is shown for honesty.
Run: .venv/bin/python tests/benchmarks/bench_complete.py [--rounds 15]
"""

from __future__ import annotations

import subprocess
import sys

from _harness import ANYFAST, PYTHON, Series, clean_env, interleave, parse_args, report
from gateway import Gateway

FLOOR_POST = r"""import os, sys, httpx
prompt = sys.stdin.read().rstrip("\n")
response = httpx.post(
    os.environ["ANYFAST_BASE_URL"] + "/chat/completions",
    json={"model": "doubao-seed-1-6-vision-250815", "messages": [{"role": "user", "content": prompt}]},
    headers={"Authorization": "Bearer " + os.environ["ANYFAST_API_KEY"]},
    timeout=600,
)
response.raise_for_status()
print(response.json()["choices"][0]["message"]["content"])
"""

FLOOR_CLIENT = FLOOR_POST.replace("response = httpx.post(", "response = httpx.Client(verify=False).post(")


def main() -> int:
    args = parse_args(default_rounds=15)
    gateway = Gateway().start()
    env = clean_env(ANYFAST_API_KEY="x", ANYFAST_BASE_URL=gateway.url)

    ours = [ANYFAST, "complete", "--no-stream"]
    for argv in (ours, [PYTHON, "-c", FLOOR_POST], [PYTHON, "-c", FLOOR_CLIENT]):  # same answer from each
        out = subprocess.run(argv, input=b"hi\n", env=env, capture_output=True, check=True).stdout
        assert out == b"echo: hi\n", (argv[:3], out)

    pairs = [
        (
            Series("echo hi | anyfast complete --no-stream", ours, b"hi\n"),
            Series("bare httpx.post script", [PYTHON, "-c", FLOOR_POST], b"hi\n"),
        ),
        (
            Series("echo hi | anyfast complete --no-stream", ours, b"hi\n"),
            Series("bare httpx.Client(verify=False)", [PYTHON, "-c", FLOOR_CLIENT], b"hi\n"),
        ),
    ]
    interleave(pairs, env, args.rounds)
    results = report(
        "one request, --no-stream, loopback gateway", [(pairs[0][0], pairs[0][1], 1.3), (pairs[1][0], pairs[1][1], 1.3)]
    )
    gateway.stop()
    return 0 if results[0][2] else 1


if __name__ == "__main__":
    sys.exit(main())
