"""Answers written in Markdown, for the rendering tests and benchmarks. Every prose line holds
a marker (`M0001`) of its own, at its start, so a test can count where each line ended up; no
source line is wider than 60 columns, so at 80 and more nothing wraps but what rich wraps."""

from __future__ import annotations

import random


def mixed_answer(sections: int, *, cjk: bool = True) -> tuple[str, list[str], list[list[str]]]:
    """(answer, its markers, the code lines of each top-level fence): prose, nested and loose
    lists, a 10-line Python fence, a table and CJK per section, about 25 lines each."""
    lines: list[str] = []
    markers: list[str] = []
    fences: list[list[str]] = []
    count = 0

    def mark() -> str:
        nonlocal count
        count += 1
        markers.append(f"M{count:05d}")
        return markers[-1]

    for s in range(sections):
        lines += [f"## {mark()} Section {s}", ""]
        lines += [f"{mark()} is *prose* with **bold** and `code`,", f"{mark()} then [a link](https://example.com/{s})."]
        lines += ["", f"- {mark()} first item", f"- {mark()} second item", f"  - {mark()} nested item", ""]
        lines += [f"  {mark()} continues the second item", "", f"- {mark()} after a blank line", ""]
        code = [f"def section_{s}(values):", f'    """Sum for section {s}."""', "    total = 0"]
        code += ["    for value in values:", "        if value > 0:", "            total += value"]
        code += ["        else:", "            total -= 1", "    # a comment", "    return total"]
        fences.append(code)
        lines += ["```python", *code, "```", ""]
        lines += [f"| {mark()} | name | 名前 |", "|---|:---|---:|", f"| {mark()} | alpha | 一二三 |"]
        lines += [f"| {mark()} | beta | 四五 |", ""]
        if cjk:
            lines += [f"{mark()} 中文的段落，宽字符按单元格计算。", ""]
        lines += [f"{mark()} ends section {s}.", ""]
    return "\n".join(lines), markers, fences


def chunked(text: str, sizes) -> list[str]:
    """`text` cut into pieces of the given sizes, cycling through them (an int: all that size)."""
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    pieces, start, index = [], 0, 0
    while start < len(text):
        size = sizes[index % len(sizes)]
        pieces.append(text[start : start + size])
        start += size
        index += 1
    return pieces


def random_sizes(seed: int, count: int = 500, largest: int = 40) -> list[int]:
    generator = random.Random(seed)
    return [generator.randint(1, largest) for _ in range(count)]
