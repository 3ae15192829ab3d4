"""Which adaptive-rate design? Each candidate against each server-side limiter, on fake time.

The same simulated runner (tests/ratelimit_sim.py) drives every candidate; only the policy
differs. Candidates are the real `RateController` with its decrease/increase swapped:

- today:    what batch did before issue 9: a 429's Retry-After pauses the whole batch, and every
            429 retry uses up --retries (5). No rate control.
- none:     per-record Retry-After only, no rate control (what a latency-gradient controller such
            as Gradient2 or Envoy's adaptive concurrency amounts to here: a limiter answers 429 at
            once, so latency never rises and they never back off).
- aimd-0.5: TCP Reno on the rate: halve on a 429, add a fixed share of the last limit per second.
- aimd-0.9: the same, cutting by 10% (Netflix concurrency-limits' AIMDLimit backoff ratio).
- cubic:    CUBIC on the rate: cut to 0.7, grow back on C(t-K)^3 + W_max, plateau near W_max.
- sre-2, sre-1.1: Google SRE client-side throttling: send at most K x the rate that got through
            over the last 2 s once 429s appear.
- measured: the chosen one (anyfast_cli/batch/limiter.py): cut to 0.9 x what got through, probe up
            additively.

Run: python tests/benchmarks/sim_ratelimit.py [--seeds 3] [--only measured,cubic]
Prints, per limiter and candidate: % of the limit used, % of requests answered 429, failed records.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gateway_limits import FixedWindow, TokenBucket  # noqa: E402
from ratelimit_sim import AlwaysAllow, simulate  # noqa: E402

from anyfast_cli.batch.limiter import RateController  # noqa: E402


class Today(RateController):
    """Before issue 9: Retry-After pauses everything; no rate."""

    def next_start(self, now):
        return max(now, self.hold_until)

    def on_send(self, now):
        pass

    def on_answer(self, now, sent, headers=None):
        pass

    def on_rate_limited(self, now, sent, retry_after, headers=None):
        if retry_after is not None:
            self.hold_until = max(self.hold_until, now + retry_after)
            return now + retry_after
        return now + 0.5 * (1 - 0.25 * self._rng.random())  # retry.py's first backoff


class NoControl(RateController):
    def _cut(self, now):
        self._epoch = now

    def _hold(self, now, until, why):
        pass


class Aimd(RateController):
    beta = 0.5

    def _cut(self, now):
        current = self._current(now)
        self._limit, self._cut_at = current, now
        self._set(max(self.beta * current, 0.01), "429")
        self._epoch = now

    def _grow(self, now):  # additive: 5% of the rate that was too much, per second
        if now - self._paced_at <= 1.0:
            self._set(self.rate + 0.05 * self._limit * (now - self._cut_at), None)
        self._cut_at = now


class Aimd09(Aimd):
    beta = 0.9


class Cubic(RateController):
    beta, c = 0.7, 0.4  # TCP's constants; C is taken relative to W_max so it is scale-free

    def _cut(self, now):
        current = self._current(now)
        self._limit = current
        self._cut_at = now
        self._set(max(self.beta * current, 0.01), "429")
        self._epoch = now

    def _grow(self, now):
        if now - self._paced_at > 1.0:
            return
        w_max = self._limit
        k = ((w_max * (1 - self.beta)) / (self.c * w_max)) ** (1 / 3)
        t = now - self._cut_at
        self.rate = max(self.rate, w_max + self.c * w_max * (t - k) ** 3)


class Sre(RateController):
    """Send at most K x accepted over a trailing window once limited; unlimited again when no 429 for the window."""

    k = 2.0
    window = 2.0

    def __init__(self, **kw):
        super().__init__(**kw)
        self._accepts = []
        self._limited_at = float("-inf")

    def on_answer(self, now, sent, headers=None):
        self._accepts.append(now)
        super().on_answer(now, sent, headers)

    def _accepted(self, now):
        self._accepts = [t for t in self._accepts if t > now - self.window]
        return len(self._accepts) / self.window

    def _cut(self, now):
        self._limited_at = now
        self._epoch = now
        self._set(max(self.k * self._accepted(now), 1.0), "429")

    def _grow(self, now):
        if now - self._limited_at > self.window:
            self.rate = max(self.rate, self.k * self._accepted(now))


class Sre11(Sre):
    k = 1.1


CANDIDATES = {
    "today": Today,
    "none": NoControl,
    "aimd-0.5": Aimd,
    "aimd-0.9": Aimd09,
    "cubic": Cubic,
    "sre-2": Sre,
    "sre-1.1": Sre11,
    "measured": RateController,
}

LIMITERS = {
    "bucket, Retry-After s": lambda: TokenBucket(200, 20, retry="seconds"),
    "bucket, retry-after-ms": lambda: TokenBucket(200, 20, retry="ms"),
    "bucket, no header": lambda: TokenBucket(200, 20, retry="none"),
    "bucket, x-ratelimit": lambda: TokenBucket(200, 20, retry="none", ratelimit_headers=True),
    "window 1 s, Retry-After s": lambda: FixedWindow(200, 1.0, retry="seconds"),
    "window 1 s, retry-after-ms": lambda: FixedWindow(200, 1.0, retry="ms"),
    "window 1 s, no header": lambda: FixedWindow(200, 1.0, retry="none"),
    "window 1 s, x-ratelimit": lambda: FixedWindow(200, 1.0, retry="seconds", ratelimit_headers=True),
}
QUOTAS = {  # 600 a minute: 2,000 records need four windows (the run starts 40 s into the first one)
    "minute quota, Retry-After s": lambda: FixedWindow(600, 60.0, retry="seconds"),
    "minute quota, no header": lambda: FixedWindow(600, 60.0, retry="none"),
    "minute quota, x-ratelimit": lambda: FixedWindow(600, 60.0, retry="none", ratelimit_headers=True),
}
QUOTA_IDEAL = 140.0 + 0.1  # the fourth window opens 140 s after the start; then one answer's latency


def run(candidate, make_server, *, seeds, concurrency, clients=1, records=2000, start_options=None, **options):
    rows = []
    for seed in range(seeds):

        def make(rng):
            return candidate(rng=rng, **(start_options or {}))

        extra = {"max_429_attempts": 5} if candidate is Today else {}
        result = simulate(
            make_server(),
            records=records,
            concurrency=concurrency,
            clients=clients,
            seed=seed,
            make_controller=make,
            stagger=0.2 if clients > 1 else 0.0,
            **extra,
            **options,
        )
        share = [c.ok / max(c.last_answer - c.first_send, 1e-9) for c in result.clients]
        rows.append((result.used, result.refused_share, result.failed, result.elapsed, min(share) / max(share)))
    return [statistics.median(column) for column in zip(*rows)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    parser.add_argument("--limiters", default="")
    parser.add_argument("--initial-rate", type=float, default=None, help="ramp: start at this rate (0: no ramp) ...")
    parser.add_argument("--doubling", type=float, default=0.1, help="... doubling every this many seconds")
    args = parser.parse_args()
    names = args.only.split(",")
    start = {"initial_rate": args.initial_rate, "doubling": args.doubling} if args.initial_rate is not None else {}
    limiters = {k: v for k, v in LIMITERS.items() if not args.limiters or any(s in k for s in args.limiters.split(","))}
    print(
        "used = records/s over the run as % of the limiter's rate; 429 = % of requests answered 429; "
        "fair = slower shard's records/s / faster's; median of",
        args.seeds,
        "seeds",
    )
    for label, make_server in limiters.items():
        print(f"\n{label}")
        print(
            f"  {'candidate':<10} "
            + "  ".join(f"{h:^30}" for h in ("-j 8", "-j 64", "-j 200", "2 shards -j 64 (fair)"))
        )
        for name in names:
            cells = []
            for concurrency, clients in ((8, 1), (64, 1), (200, 1), (64, 2)):
                used, refused, failed, elapsed, fair = run(
                    CANDIDATES[name],
                    make_server,
                    seeds=args.seeds,
                    concurrency=concurrency,
                    clients=clients,
                    start_options=start,
                )
                cell = f"{used:5.0%} {refused:5.1%} {failed:4.0f}f {elapsed:5.1f}s"
                if clients > 1:
                    cell += f" {fair:4.2f}"
                cells.append(f"{cell:<30}")
            print(f"  {name:<10} " + "  ".join(cells), flush=True)
    print("\nper-minute quota of 600, 2,000 records: ideal elapsed / elapsed, % answered 429, failed")
    for label, make_server in QUOTAS.items():
        if args.limiters and not any(s in label for s in args.limiters.split(",")):
            continue
        print(f"  {label}")
        for name in names:
            cells = []
            for concurrency, clients in ((8, 1), (64, 1), (200, 1), (64, 2)):
                used, refused, failed, elapsed, fair = run(
                    CANDIDATES[name],
                    make_server,
                    seeds=1,
                    concurrency=concurrency,
                    clients=clients,
                    start_options=start,
                )
                cells.append(f"{QUOTA_IDEAL / elapsed:5.0%} {refused:5.1%} {failed:4.0f}f".ljust(30))
            print(f"    {name:<10} " + "  ".join(cells), flush=True)
    print("\nno server limit (bench_batch.py's case: 200 ms per answer): elapsed / ideal")
    for name in names:
        cells = []
        for concurrency in (50, 200):
            used, refused, failed, elapsed, _ = run(
                CANDIDATES[name], AlwaysAllow, seeds=1, concurrency=concurrency, start_options=start, latency=0.2
            )
            cells.append(f"-j {concurrency}: {2000 / concurrency * 0.2 / elapsed:5.1%}")
        print(f"  {name:<10} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
