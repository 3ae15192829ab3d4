"""Markdown at a terminal (issue 20): `anyfast complete` rendering on a pseudo-terminal against
`--raw` on the same pty, the answer a 2,500-line mixed Markdown text (prose, lists, tables,
10-line Python fences, CJK) streamed in 50,000 chunks.

Reports, side by side: time to the first visible byte (spawn to the first answer byte on the
pty; median of --rounds); the child's CPU (user + sys, os.wait4) at 80 and 200 columns (target
<= 4x --raw); linearity (1x, 2x, 4x the answer at 80 columns: CPU should grow about 1, 2, 4);
and the lines duplicated or missing in the scrollback of a terminal emulator (pyte) the bytes
are replayed into (target 0).
Run: .venv/bin/python tests/benchmarks/bench_markdown.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import pexpect
from _harness import ANYFAST, clean_env
from gateway import Gateway, Sse, chunk

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from markdown_answers import chunked, mixed_answer  # noqa: E402
from terminal_replay import Terminal, rows_with  # noqa: E402

CHUNKS = 50_000


def reply_for(text: str, chunks: int) -> Sse:
    size = max(1, -(-len(text) // chunks))
    events = [chunk(piece) for piece in chunked(text, size)] + [chunk(finish="stop")]
    body = b"".join(b"data: " + __import__("json").dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return Sse([body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)])


def run_once(gateway, reply, env, args, columns, lines, first_byte=False):
    """(seconds to the first answer byte, CPU seconds of the child, what it wrote)."""
    gateway.script(reply)
    start = time.perf_counter()
    child = pexpect.spawn(ANYFAST, args, env=env, encoding="utf-8", dimensions=(lines, columns), timeout=120)
    first = child.read_nonblocking(1, timeout=60)
    first_at = time.perf_counter() - start
    pieces = [first]
    while True:
        try:
            pieces.append(child.read_nonblocking(1 << 16, timeout=60))
        except pexpect.EOF:
            break
    _, status, usage = os.wait4(child.pid, 0)
    child.ptyproc.terminated = True
    assert os.waitstatus_to_exitcode(status) == 0
    return first_at, usage.ru_utime + usage.ru_stime, "".join(pieces)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    gateway = Gateway().start()
    env = clean_env(ANYFAST_API_KEY="x", ANYFAST_BASE_URL=gateway.url, TERM="xterm-256color")
    text, markers, _ = mixed_answer(72)  # about 2,500 lines
    reply = reply_for(text, CHUNKS)
    print(f"answer: {text.count(chr(10)) + 1} lines, {len(text)} characters, {CHUNKS} chunks; {options.rounds} rounds")
    ok = True

    # First visible byte: a short answer, so the figure is start-up plus the first chunk.
    short = reply_for("## Hello\n\nA short **answer**.\n", 20)
    firsts = {"--raw": [], "rendered": []}
    for _ in range(options.rounds * 2):
        for name, extra in (("--raw", ["--raw"]), ("rendered", [])):
            firsts[name].append(run_once(gateway, short, env, ["complete", "-n", *extra, "go"], 80, 24)[0])
    raw_first, md_first = (statistics.median(firsts[n]) * 1000 for n in ("--raw", "rendered"))
    print(
        f"first visible byte: --raw {raw_first:.1f} ms, rendered {md_first:.1f} ms (+{md_first - raw_first:.1f} ms; target +10)"
    )
    ok &= md_first - raw_first <= 10

    for columns, lines in ((80, 24), (200, 50)):
        cpu = {"--raw": [], "rendered": []}
        for _ in range(options.rounds):
            for name, extra in (("--raw", ["--raw"]), ("rendered", [])):
                _, seconds, output = run_once(gateway, reply, env, ["complete", "-n", *extra, "go"], columns, lines)
                cpu[name].append(seconds)
        raw_cpu, md_cpu = statistics.median(cpu["--raw"]), statistics.median(cpu["rendered"])
        rows = Terminal(columns, lines).feed(output).rows()
        counts = [rows_with(rows, marker) for marker in markers]
        wrong = sum(1 for count in counts if count != 1)
        print(
            f"{columns}x{lines}: CPU --raw {raw_cpu:.2f} s, rendered {md_cpu:.2f} s = {md_cpu / raw_cpu:.2f}x "
            f"(target <= 4x); {len(output) / 1e3:.0f} kB written; markers duplicated or missing in scrollback: {wrong}"
        )
        ok &= md_cpu <= 4 * raw_cpu and wrong == 0

    base = None
    for factor in (1, 2, 4):
        text_n, _, _ = mixed_answer(36 * factor)
        reply_n = reply_for(text_n, CHUNKS * factor // 2)
        seconds = statistics.median(
            run_once(gateway, reply_n, env, ["complete", "-n", "go"], 80, 24)[1]
            for _ in range(max(1, options.rounds // 2))
        )
        raw = statistics.median(
            run_once(gateway, reply_n, env, ["complete", "-n", "--raw", "go"], 80, 24)[1]
            for _ in range(max(1, options.rounds // 2))
        )
        base = base or (seconds - raw)
        print(
            f"linearity {factor}x ({text_n.count(chr(10)) + 1} lines): rendered CPU {seconds:.2f} s, --raw {raw:.2f} s, "
            f"rendering's share {seconds - raw:.2f} s = {(seconds - raw) / base:.2f}x the 1x share"
        )
    gateway.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
