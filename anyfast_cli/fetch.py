"""The httpx shell that fetches `-a URL` attachments, before anything is sent to the API.

It takes the API's network policy (transport.py: proxies and NO_PROXY, the trust store,
timeouts) and --max-time (one deadline for every fetch of the command), and nothing that
identifies the user: no API key, no cookies, no netrc, no user:password@ in a URL. Redirects
are followed here, not by httpx, so each hop is checked: at most MAX_REDIRECTS, each to http or
https only, each with the proxy its own host calls for, and with a fresh client, so that nothing
one server sets travels to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urljoin, urlsplit

import httpx

from anyfast_cli.client import Deadline, build_http_client, net_failure
from anyfast_cli.errors import NetworkError, UsageError
from anyfast_cli.exchange import Attempts, declared_length, describe_network_failure, header_text
from anyfast_cli.reading import TooLarge
from anyfast_cli.request import USER_AGENT
from anyfast_cli.transport import network_policy, redact_userinfo

MAX_REDIRECTS = 5  # as the contract allows (curl's --max-redirs is often set as low)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
FETCH_SCHEMES = ("http", "https")
HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*"}  # and nothing else: no credential of any kind


def check_fetch_url(url: str, label: str) -> None:
    """A URL anyfast may fetch: http or https, with a host, and no user:password@ (which httpx
    would send as Basic credentials). UsageError naming `label` (the URL as given) otherwise."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises ValueError
    except ValueError:
        raise UsageError(f"-a {label}: not a URL anyfast can fetch") from None
    if parts.scheme not in FETCH_SCHEMES or not parts.hostname:
        raise UsageError(f"-a {label}: only http:// and https:// URLs are fetched")
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            f"-a {redact_userinfo(label)}: a URL with user:password@ is refused; anyfast sends no credentials"
        )


class Fetcher:
    """Fetches URLs for one command: every fetch inside one --max-time deadline (from the
    first fetch on; the request then keeps it), none retried. Errors name the URL as the user
    gave it."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        timeout: float | None,
        max_time: float | None,
        transport: httpx.BaseTransport | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._env = env
        self._timeout = timeout
        self._transport = transport
        self._log = log or (lambda message: None)
        # One Attempts for every fetch: its clock, started by the first, is the shared deadline.
        self._attempts = Attempts(retries=0, target="", max_time=max_time)

    @property
    def deadline(self) -> float | None:
        """The --max-time deadline the first fetch started (a monotonic reading); None before
        one, or without --max-time. The API request keeps it: one deadline covers both."""
        return self._attempts.deadline

    def fetch(self, url: str, limit: int) -> bytes:
        """The body of `url` (after at most MAX_REDIRECTS redirects), decoded, at most `limit`
        bytes (else TooLarge). UsageError for a status other than 2xx or a bad redirect;
        NetworkError when the server cannot be reached or --max-time runs out."""
        check_fetch_url(url, url)
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            location = self._get(current, url, limit)
            if isinstance(location, bytes):
                return location
            current = urljoin(current, location)
            if urlsplit(current).scheme not in FETCH_SCHEMES:
                raise UsageError(f"-a {url}: redirected to {current[:200]}; only http:// and https:// are followed")
            check_fetch_url(current, url)
        raise UsageError(f"-a {url}: more than {MAX_REDIRECTS} redirects")

    def _get(self, target: str, label: str, limit: int) -> bytes | str:
        """One GET: the body, or the Location a redirect points to."""
        policy = network_policy(target, self._env, self._timeout)
        deadline = Deadline()
        attempts = self._attempts
        try:
            connect, read = attempts.timeouts(policy.connect_timeout, policy.read_timeout)
            self._log(f"GET {target}" + (f" via proxy {redact_userinfo(policy.proxy)}" if policy.proxy else ""))
            with (
                build_http_client(policy, self._transport) as http,
                deadline.watch(attempts),
                http.stream(
                    "GET",
                    target,
                    headers=HEADERS,
                    timeout=httpx.Timeout(read, connect=connect),
                    extensions=deadline.options(attempts),
                ) as response,
            ):
                status, reason = response.status_code, header_text(response.reason_phrase)
                self._log(f"{status} {reason} from {policy.target}")
                if status in REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise UsageError(f"-a {label}: HTTP {status} {reason} without a Location to follow")
                    return header_text(location)
                if not 200 <= status < 300:
                    raise UsageError(f"-a {label}: HTTP {status} {reason}".rstrip())
                return _read_limited(response, limit)
        except httpx.TransportError as exc:
            if not attempts.leaves_time_for(0):  # the timeout that ended it was --max-time's
                raise self._out_of_time(label) from None
            failure = net_failure(exc, policy)
            detail = describe_network_failure(
                failure, policy.target, read_timeout=policy.read_timeout, proxy=policy.proxy_target
            )
            raise NetworkError(f"-a {label}: {detail}", code="network_error") from None
        except NetworkError as exc:
            if exc.code != "timeout":
                raise
            raise self._out_of_time(label) from None

    def _out_of_time(self, label: str) -> NetworkError:
        return NetworkError(
            f"-a {label}: fetching took longer than --max-time {self._attempts.max_time:g} s",
            code="timeout",
            hint="raise --max-time (or the config's max_time): it bounds the fetches and the request together",
        )


def _read_limited(response: httpx.Response, limit: int) -> bytes:
    """The body as httpx decodes it (a gzip bomb counts at its inflated size), refused past `limit`."""
    declared = declared_length(response.headers)
    if declared is not None and declared > limit and not response.headers.get("content-encoding"):
        raise TooLarge
    chunks, total = [], 0
    for data in response.iter_bytes():
        total += len(data)
        if total > limit:
            raise TooLarge
        chunks.append(data)
    return b"".join(chunks)
