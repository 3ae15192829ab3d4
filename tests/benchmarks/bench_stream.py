"""A 50,000-chunk SSE stream to /dev/null: `anyfast complete` against a bare httpx loop over
the same stream (iter_lines, json.loads each data line, write and flush each delta, as a
streaming CLI must). Target <= 1.25x (issue 15). Also reports each process's peak RSS.
The key is as long as a real one, so that anyfast pays for masking it, as a user's run does.

The body is built once and served by tests/gateway.py (in a thread of this process)
in 1 MiB HTTP chunks, so the server is not the bottleneck.
Run: .venv/bin/python tests/benchmarks/bench_stream.py [--rounds 9] [--chunks 50000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _harness import ANYFAST, PYTHON, Series, clean_env, interleave, report
from gateway import Gateway, Sse, chunk

PIECE = 1 << 20

FLOOR = r"""import json, os, sys, httpx
body = {"model": "doubao-seed-1-6-vision-250815", "messages": [{"role": "user", "content": "hi"}], "stream": True}
headers = {"Authorization": "Bearer " + os.environ["ANYFAST_API_KEY"]}
with httpx.stream("POST", os.environ["ANYFAST_BASE_URL"] + "/chat/completions", json=body, headers=headers, timeout=600) as response:
    response.raise_for_status()
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        delta = json.loads(data)["choices"][0]["delta"].get("content")
        if delta:
            sys.stdout.write(delta)
            sys.stdout.flush()
sys.stdout.write("\n")
"""


def build_stream(chunks: int) -> tuple[Sse, bytes]:
    """The SSE reply in large pieces, and the text a client should print for it."""
    events, text = [], []
    for i in range(chunks):
        delta = f"w{i % 1000} "
        text.append(delta)
        events.append({**chunk(delta), "created": 1700000000, "model": "doubao-seed-1-6-vision-250815"})
    events.append({**chunk(finish="stop"), "created": 1700000000, "model": "doubao-seed-1-6-vision-250815"})
    body = (
        b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events)
        + b"data: [DONE]\n\n"
    )
    pieces = [body[i : i + PIECE] for i in range(0, len(body), PIECE)]
    return Sse(pieces), ("".join(text) + "\n").encode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--chunks", type=int, default=50_000)
    args = parser.parse_args()

    reply, expected = build_stream(args.chunks)
    print(
        f"stream: {args.chunks} chunks, {sum(map(len, reply.pieces)) / 1e6:.1f} MB body, {len(reply.pieces)} HTTP chunks"
    )
    gateway = Gateway().start()
    env = clean_env(ANYFAST_API_KEY="sk-bench-" + "0123456789abcdef" * 2, ANYFAST_BASE_URL=gateway.url)
    ours = [ANYFAST, "complete", "-n", "hi"]
    floor = [PYTHON, "-c", FLOOR]

    for argv in (ours, floor):  # both print exactly the streamed text
        gateway.script(reply)
        out = subprocess.run(argv, env=env, capture_output=True, check=True).stdout
        assert out == expected, (argv[:3], len(out), len(expected))

    pair = (Series(f"anyfast complete ({args.chunks} chunks)", ours), Series("bare httpx iter_lines loop", floor))
    interleave([pair], env, args.rounds, warmup=1, before_each=lambda series: gateway.script(reply))
    results = report("streamed answer to /dev/null, loopback gateway", [(pair[0], pair[1], 1.25)])
    print(
        f"peak RSS: anyfast {pair[0].peak_rss_mib:.1f} MiB, floor {pair[1].peak_rss_mib:.1f} MiB (max of 3 runs under /usr/bin/time)"
    )
    gateway.stop()
    return 0 if results[0][2] else 1


if __name__ == "__main__":
    sys.exit(main())
