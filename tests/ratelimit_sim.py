"""Batches against a server-side rate limiter, simulated on fake time (discrete events).

One `Sim` holds the clock and the event queue; each `Client` is one `anyfast batch`
process as the runner drives it: `concurrency` workers take records, wait at one FIFO
gate for the start time that `Pacer` (the --rpm/--tpm ceiling) and the adaptive
`RateController` allow, send, and report each answer back:

    200 -> controller.on_answer(now, sent, headers)
    429 -> controller.on_rate_limited(now, sent, retry_after, headers) -> retry time, or None: the record fails

Servers are the fakes of tests/gateway_limits.py, asked at each request's arrival. Several
clients may share one server (shards, or two jobs on one key). Nothing really waits: a
2,000-record run takes a fraction of a second, so tests and the design study
(tests/benchmarks/sim_ratelimit.py) run many.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from anyfast_cli.batch.limiter import Pacer, RateController
from anyfast_cli.retry import parse_retry_after


class _Parked:
    proc = None


class Sim:
    def __init__(self, seed: int = 0, start: float = 1000.0) -> None:
        self.now = start
        self.rng = random.Random(seed)
        self._heap: list = []
        self._order = itertools.count()

    def spawn(self, proc, delay: float = 0.0) -> None:
        self._at(self.now + delay, proc)

    def wake(self, parked: _Parked) -> None:
        self._at(self.now, parked.proc)

    def _at(self, when: float, proc) -> None:
        heapq.heappush(self._heap, (when, next(self._order), proc))

    def run(self, until: float = float("inf")) -> None:
        while self._heap and self._heap[0][0] <= until:
            when, _, proc = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            try:
                command = next(proc)
            except StopIteration:
                continue
            if isinstance(command, _Parked):
                command.proc = proc
            else:
                self._at(self.now + max(0.0, command), proc)


class AlwaysAllow:
    """No server limit at all (the latency-bound case)."""

    rate = float("inf")

    def admit(self, now: float):
        from gateway_limits import Verdict

        return Verdict(True)


@dataclass
class Client:
    sim: Sim
    server: object
    records: int
    concurrency: int
    controller: object = None  # a RateController, or anything with its methods
    pacer: Pacer = field(default_factory=Pacer)
    latency: float = 0.1  # seconds until a 200 answer
    refusal_latency: float = 0.001  # a 429 comes back at once
    one_way: float = 0.0003  # send -> the server's limiter sees it
    timer_slop: float = 0.0005  # a sleep wakes up to this much late (asyncio on a busy machine)
    max_429_attempts: int | None = None  # "today": every 429 retry used up --retries

    def __post_init__(self) -> None:
        if self.controller is None:
            self.controller = RateController(rng=random.Random(self.sim.rng.random()))
        self._todo = deque(range(self.records))
        self._gate_busy = False
        self._queue: deque = deque()
        self.ok = 0
        self.failed = 0
        self.refused = 0
        self.sends: list[tuple[float, int]] = []  # (time, record)
        self.not_before: list[tuple[int, float, float]] = []  # (record, 429 answered at, retry-after)
        self.first_send: float | None = None
        self.last_answer: float | None = None
        self.rates: list[tuple[float, float | None]] = []

    def start(self, delay: float = 0.0) -> None:
        for _ in range(self.concurrency):
            self.sim.spawn(self._worker(), delay)

    def _gate(self):
        """Limiter.acquire, on fake time: one waiter at a time asks when it may go."""
        sim = self.sim
        if self._gate_busy or self._queue:
            parked = _Parked()
            self._queue.append(parked)
            yield parked
        self._gate_busy = True
        while True:
            now = sim.now
            start = max(self.pacer.earliest(now), self.controller.next_start(now))
            if start <= now:
                break
            yield start - now + sim.rng.uniform(0, self.timer_slop)
        self.pacer.reserve(now)
        self.controller.on_send(now)
        self._gate_busy = False
        if self._queue:
            sim.wake(self._queue.popleft())

    def _worker(self):
        sim = self.sim
        while self._todo:
            record = self._todo.popleft()
            attempts = 0
            while True:
                yield from self._gate()
                sent = sim.now
                if self.first_send is None:
                    self.first_send = sent
                self.sends.append((sent, record))
                verdict = self.server.admit(sent + self.one_way)
                headers = {k.lower(): v for k, v in verdict.headers.items()}
                if verdict.allowed:
                    yield self.latency + sim.rng.uniform(0, self.timer_slop)
                    self.controller.on_answer(sim.now, sent, headers)
                    self.ok += 1
                    break
                self.refused += 1
                yield self.refusal_latency
                retry_after = parse_retry_after(headers, 0.0)
                retry_at = self.controller.on_rate_limited(sim.now, sent, retry_after, headers)
                attempts += 1
                if retry_at is None or (self.max_429_attempts is not None and attempts > self.max_429_attempts):
                    self.failed += 1
                    break
                if retry_after is not None:
                    self.not_before.append((record, sim.now, retry_after))
                yield max(0.0, retry_at - sim.now)
            self.last_answer = sim.now
            self.rates.append((sim.now, self.controller.rate))

    @property
    def requests(self) -> int:
        return len(self.sends)


@dataclass
class Result:
    clients: list
    server: object
    rate: float  # the server's rate: requests per second it lets through in the long run

    @property
    def ok(self) -> int:
        return sum(c.ok for c in self.clients)

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.clients)

    @property
    def refused(self) -> int:
        return sum(c.refused for c in self.clients)

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.clients)

    @property
    def elapsed(self) -> float:
        first = min(c.first_send for c in self.clients if c.first_send is not None)
        return max(c.last_answer for c in self.clients if c.last_answer is not None) - first

    @property
    def used(self) -> float:
        """Records answered per second over the whole run, as a share of the server's rate."""
        return self.ok / self.elapsed / self.rate

    @property
    def refused_share(self) -> float:
        return self.refused / self.requests if self.requests else 0.0

    def line(self) -> str:
        return (
            f"{self.used:6.1%} of the limit, {self.refused_share:5.1%} answered 429, {self.failed} failed, "
            f"{self.elapsed:6.2f} s, {self.requests} requests"
        )


def simulate(
    server,
    *,
    records: int = 2000,
    concurrency: int = 64,
    clients: int = 1,
    seed: int = 0,
    make_controller=None,
    stagger: float = 0.0,
    until: float = 3600.0,
    **client_options,
) -> Result:
    """Run `clients` batches of `records` each (shards: split `records` between them) against one server."""
    sim = Sim(seed)
    shares = [records // clients + (1 if i < records % clients else 0) for i in range(clients)]
    made = []
    for index, share in enumerate(shares):
        controller = make_controller(random.Random(seed * 1000 + index)) if make_controller else None
        client = Client(sim, server, share, concurrency, controller, **client_options)
        client.start(delay=index * stagger)
        made.append(client)
    sim.run(until=sim.now + until)
    rate = getattr(server, "rate", float("inf"))
    return Result(made, server, rate)
