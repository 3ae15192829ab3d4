"""The one network policy both transports take: httpx (complete, chat) and aiohttp (batch).

Proxies come from the environment and are chosen for the endpoint here, then handed to
each request, so neither library reads the environment itself (aiohttp's `trust_env`
would also read ~/.netrc, whose Basic auth then clashes with the Bearer key). One trust
store; redirects are never followed (an API client must not re-send a prompt, or a key,
to another origin); the same timeouts and header-size limit on both paths.

Pure apart from building an SSL context; neither HTTP library is imported here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from anyfast_cli.errors import UsageError
from anyfast_cli.settings import CA_ENV_NAMES, ENV_CA_DIR, proxy_env_names, timeouts
from anyfast_cli.text import parse_whole

# The largest response head either path accepts. httpx's HTTP/1.1 parser (h11, as httpcore
# sets it up) refuses a head past 100 KiB; aiohttp is given the same bound per line and field.
MAX_HEADER_BYTES = 100 * 1024

SUPPORTED_PROXY_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class NetworkPolicy:
    url: str  # the endpoint every request goes to
    proxy: str | None  # the proxy's URL for that endpoint, or None to connect directly
    ssl_context: ssl.SSLContext | None  # None for a plain http:// endpoint
    connect_timeout: float
    read_timeout: float  # silence allowed between two reads
    max_header_bytes: int = MAX_HEADER_BYTES
    follow_redirects: bool = False
    target: str = field(init=False)  # host:port, as errors name the server (read for every request)
    proxy_target: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", host_port(self.url))
        object.__setattr__(self, "proxy_target", host_port(self.proxy) if self.proxy else None)


def network_policy(url: str, env: Mapping[str, str], timeout: float | None) -> NetworkPolicy:
    connect, read = timeouts(timeout)
    secure = urlsplit(url).scheme == "https"
    return NetworkPolicy(
        url=url,
        proxy=proxy_for(url, env),
        ssl_context=build_ssl_context(env) if secure else None,
        connect_timeout=connect,
        read_timeout=read,
    )


def host_port(url: str) -> str:
    parts = urlsplit(url)
    port = _port(parts)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(parts: SplitResult) -> int:
    """The URL's port, or its scheme's default."""
    return parts.port or (443 if parts.scheme == "https" else 80)


# --- proxies ---------------------------------------------------------------------------------


def proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy for `url` from *_PROXY and NO_PROXY (the lowercase name wins, as in curl);
    None when there is none or the host is exempt. A SOCKS proxy is refused: neither
    transport speaks it without an extra package."""
    parts = urlsplit(url)
    for name in proxy_env_names(parts.scheme):
        value = (env.get(name) or "").strip()
        if not value:
            continue
        if bypasses_proxy(parts.hostname or "", _port(parts), _no_proxy(env)):
            return None
        return _checked_proxy(name, value)
    return None


def _no_proxy(env: Mapping[str, str]) -> str:
    for name in proxy_env_names("no"):
        if (env.get(name) or "").strip():  # an empty one counts as unset, as in curl
            return env[name]
    return ""


def _checked_proxy(name: str, value: str) -> str:
    proxy = value if "://" in value else f"http://{value}"
    problem = UsageError(f"{name} is not a proxy URL anyfast can use", hint="give it as http://HOST:PORT")
    try:
        parts = urlsplit(proxy)
        _ = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        raise problem from None
    shown = redact_userinfo(proxy)
    if parts.scheme.lower().startswith("socks"):
        raise UsageError(
            f"SOCKS proxies are not supported: {name}={shown}", hint="use an HTTP proxy, or add the host to NO_PROXY"
        )
    if parts.scheme.lower() not in SUPPORTED_PROXY_SCHEMES or not parts.hostname:
        raise UsageError(f"{name}={shown} is not a proxy URL anyfast can use", hint="give it as http://HOST:PORT")
    return proxy


def bypasses_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts host[:port]: `*`, a host or domain (with or without a
    leading dot, matching its subdomains), an IP address or CIDR range, each optionally :port."""
    host = host.lower().strip("[]")
    for entry in no_proxy.replace(",", " ").split():
        entry = entry.lower()
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        name = name.lstrip("*").lstrip(".").strip("[]")
        if not name:
            continue
        if host == name or host.endswith("." + name) or _in_network(host, name):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080
        address, _, rest = entry[1:].partition("]")
        return address, parse_whole(rest[1:])
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, parse_whole(port)
    return entry, None


def _in_network(host: str, entry: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def redact_userinfo(url: str) -> str:
    """A URL with any password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}").geturl()


# --- certificates ----------------------------------------------------------------------------


def build_ssl_context(env: Mapping[str, str]) -> ssl.SSLContext:
    """The CAs a user named (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, SSL_CERT_DIR; all that are
    set count), else the system trust store, as pip does, through truststore."""
    named = [(name, env[name]) for name in CA_ENV_NAMES if env.get(name)]
    if not named:
        import truststore  # only when something is sent over TLS

        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names
    for name, path in named:
        readable = os.path.isdir(path) if name == ENV_CA_DIR else os.path.isfile(path) and os.access(path, os.R_OK)
        if not readable:
            raise UsageError(f"{name} names {path}, which cannot be read")
        try:
            if name == ENV_CA_DIR:
                context.load_verify_locations(capath=path)
            else:
                context.load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise UsageError(f"{name} names {path}, which holds no usable certificate: {ssl_words(exc)}") from None
    return context


def ssl_words(exc: Exception) -> str:
    """OpenSSL's words for a failure, without where in Python's source it was raised
    ("[X509] PEM lib (_ssl.c:4154)" -> "X509: PEM lib")."""
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return re.sub(r"^\[([^]]*)\]\s*", r"\1: ", text)
