"""The cache around one exchange (complete, chat, the interactive session): a hit answers
before any transport, a miss is sent and, when complete, stored.

CachedClient has ApiClient's send(), stream() and last_result, so the code that renders an
answer does not know where it came from. The real client (`api`) is opened only when a
request must really be sent: a hit, and every request of a replay, needs no API key, runs no
`api_key_command`, opens no connection and waits on nothing. A hit is metered as a request
like any other (the usage log's line, with `cache: hit`), but a budget never stops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from anyfast_cli.assembly import StreamAssembler, replay_chunks
from anyfast_cli.cache import ResponseCache, cache_key, not_in_cache
from anyfast_cli.meter import Meter
from anyfast_cli.prices import NO_PRICES
from anyfast_cli.request import encode_body
from anyfast_cli.result import RequestContext, RequestResult, Trace, build_result, rfc3339

UNMETERED = RequestContext("", "", NO_PRICES)


class CachedClient:
    def __init__(
        self,
        cache: ResponseCache,
        base_url: str,
        connect: Callable[[], object],
        *,
        meter: Meter | None = None,
        log: Callable[[str], None] | None = None,
        mask: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.base_url = base_url
        self._connect = connect  # -> an ApiClient whose requests are noted as cache misses
        self.meter = meter
        self._log = log or (lambda message: None)
        self._mask = mask
        self._clock = clock
        self._api = None
        self._hit_result: RequestResult | None = None  # of the latest request, when it was a hit

    def __enter__(self) -> CachedClient:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._api is not None:
            self._api.__exit__(*exc_info)

    @property
    def api(self):
        """The client that sends; the key is resolved when it is first needed."""
        if self._api is None:
            self._api = self._connect()
        return self._api

    @property
    def last_result(self) -> RequestResult | None:
        if self._hit_result is not None:
            return self._hit_result
        return self._api.last_result if self._api is not None else None

    # --- one request ---------------------------------------------------------------------------

    def send(self, body: dict) -> dict:
        key = cache_key(self.base_url, body)
        hit = self.recall(body, key=key)
        if hit is not None:
            return hit
        data = self.send_uncached(body)
        self.keep(body, data, key=key)
        return data

    def stream(self, body: dict) -> Iterator[dict]:
        key = cache_key(self.base_url, body)
        hit = self.recall(body, key=key)
        if hit is not None:
            yield from replay_chunks(hit)
            return
        self._hit_result = None
        whole = StreamAssembler()
        for chunk in self.api.stream(body):
            whole.add(chunk)
            yield chunk
        # Reached only when the stream ended well: a cut or abandoned answer is never stored.
        response = whole.response()
        if response is not None:
            self.keep(body, response, key=key)

    def send_uncached(self, body: dict) -> dict:
        """Send `body` whatever the cache holds (--schema's repairs and step-downs: the command
        looks up and stores its answer by its first request, with recall and keep)."""
        self._hit_result = None
        return self.api.send(body)

    # --- the cache's side ----------------------------------------------------------------------

    def recall(
        self,
        body: dict,
        *,
        key: str | None = None,
        accept: Callable[[dict], bool] | None = None,
        prompt: dict | None = None,
    ) -> dict | None:
        """The cached answer to `body` (its hit metered and, with -v, told), or None. `accept`
        may refuse a hit, which is then a miss. In replay a miss is NotInCacheError (exit 10),
        naming the model and the prompt of `prompt` (a body without what anyfast added), else of `body`."""
        started = time.monotonic()
        key = key or cache_key(self.base_url, body)
        hit = self.cache.lookup(key)
        if hit is not None and accept is not None and not accept(hit.response):
            hit = None
        if hit is None:
            if self.cache.replay:
                raise not_in_cache(prompt or body, self.cache.directory)
            # Said now, not once stored: a streamed answer is stored before its last line has ended.
            self._log(
                f"cache {'refresh' if self.cache.mode == 'refresh' else 'miss'}: a complete answer will be stored "
                f"in {self.cache.entry_path(key)}"
            )
            return None
        self._log(f"cache hit: {hit.path} (stored {rfc3339(hit.stored)}); nothing sent")
        context = self.meter.context if self.meter is not None else UNMETERED
        self._hit_result = hit_result(context, body, hit.response, started=started, now=self._clock())
        if self.meter is not None:
            self.meter.record(self._hit_result)  # recorded, never checked against a budget
        return hit.response

    def keep(self, body: dict, response: dict, *, key: str | None = None) -> None:
        """Store a complete answer to `body` (the cache's mode permitting)."""
        self.cache.store(key or cache_key(self.base_url, body), response, mask=self._mask)


def hit_result(
    context: RequestContext, body: dict, response: dict, *, started: float, now: float, custom_id: str | None = None
) -> RequestResult:
    """The result of a request the cache answered (build_result makes it cost nothing): for the
    usage log, which notes it with `cache: hit`, and --usage. `started` is a monotonic reading."""
    trace = Trace(str(body.get("model")), started, encode_body(body), custom_id=custom_id, cache="hit")
    trace.note_answer(response)  # its finish_reason and tool calls
    return build_result(context, trace, ended=time.monotonic(), now=now, attempts=1)
