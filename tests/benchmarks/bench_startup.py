"""Start-up cost: `anyfast --version` and `anyfast complete --help` against `python -c "import typer"`.

Targets: --version <= 1.3x the floor; complete --help <= 1.6x.
Run: .venv/bin/python tests/benchmarks/bench_startup.py [--rounds 15]
"""

from __future__ import annotations

import sys

from _harness import ANYFAST, PYTHON, Series, clean_env, interleave, parse_args, report


def main() -> int:
    args = parse_args(default_rounds=15)
    env = clean_env()
    pairs = [
        (
            Series("anyfast --version", [ANYFAST, "--version"]),
            Series('python -c "import typer"', [PYTHON, "-c", "import typer"]),
        ),
        (
            Series("anyfast complete --help", [ANYFAST, "complete", "--help"]),
            Series('python -c "import typer"', [PYTHON, "-c", "import typer"]),
        ),
    ]
    interleave(pairs, env, args.rounds)
    results = report("start-up", [(pairs[0][0], pairs[0][1], 1.3), (pairs[1][0], pairs[1][1], 1.6)])
    return 0 if all(met for _, _, met in results) else 1


if __name__ == "__main__":
    sys.exit(main())
