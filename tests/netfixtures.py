"""Network fixtures for the parity suite: a throwaway CA and server certificate made
with the `openssl` CLI, and a small loopback forward proxy (absolute-form HTTP and
CONNECT tunnels) that records what passed through it.

    pki = make_pki(tmp_dir)                       # CA, server cert for IP:127.0.0.1, hashed CA dir
    tls = Gateway(ssl_context=pki.server_context()).start()    # gateway.py: HTTPS on loopback
    proxy = Proxy(auth=("user", "secret")).start()              # auth optional
    proxy.url, proxy.url_with("user", "secret"), proxy.passed, proxy.reset(), proxy.stop()
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

# --- certificates -----------------------------------------------------------------------------

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = placeholder

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass
class Pki:
    """Files of a throwaway PKI. `ca_pem` signed `cert`; `ca_dir` holds only that CA,
    hashed for SSL_CERT_DIR. `other_ca_pem`/`other_ca_dir`: an unrelated CA (trusts nothing
    here), for "the CA is in the file but not the dir" and the reverse. `empty_dir` is an
    empty directory."""

    root: Path
    ca_pem: Path
    ca_key: Path
    ca_dir: Path
    cert: Path
    key: Path
    other_ca_pem: Path
    other_ca_dir: Path
    empty_dir: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this CA (to check the fixture itself)."""
        return ssl.create_default_context(cafile=str(self.ca_pem))


def _openssl(*args, cwd: Path) -> None:
    done = subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, capture_output=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {done.stderr.decode(errors='replace')}")


def _make_ca(root: Path, name: str, common_name: str) -> tuple[Path, Path]:
    pem, key = root / f"{name}.pem", root / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca_ext",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key.name,
        "-out",
        pem.name,
        "-days",
        "3",
        "-subj",
        f"/CN={common_name}",
        cwd=root,
    )
    return pem, key


def _hashed_dir(directory: Path, *pems: Path) -> Path:
    directory.mkdir()
    for pem in pems:
        shutil.copy(pem, directory / pem.name)
    _openssl("rehash", directory, cwd=directory)
    return directory


def make_pki(root: Path) -> Pki:
    """Make a CA and a server certificate for 127.0.0.1 / localhost in `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "openssl.cnf").write_text(_CONFIG)
    ca_pem, ca_key = _make_ca(root, "ca", "anyfast test CA")
    other_pem, _ = _make_ca(root, "other-ca", "anyfast unrelated CA")
    _openssl(
        "req",
        "-new",
        "-config",
        "openssl.cnf",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=root,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        ca_pem.name,
        "-CAkey",
        ca_key.name,
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "3",
        "-extfile",
        "openssl.cnf",
        "-extensions",
        "server_ext",
        cwd=root,
    )
    empty = root / "empty-dir"
    empty.mkdir()
    return Pki(
        root=root,
        ca_pem=ca_pem,
        ca_key=ca_key,
        ca_dir=_hashed_dir(root / "ca-dir", ca_pem),
        cert=root / "server.pem",
        key=root / "server.key",
        other_ca_pem=other_pem,
        other_ca_dir=_hashed_dir(root / "other-ca-dir", other_pem),
        empty_dir=empty,
    )


# --- a forward proxy ----------------------------------------------------------------------------


@dataclass
class Passed:
    """One request the proxy received: `method` POST/GET/... (absolute-form) or CONNECT;
    `target` the absolute URL, or host:port for CONNECT; `allowed` False when it was
    answered 407 (missing or wrong credentials) or 400 (not absolute-form)."""

    method: str
    target: str
    headers: dict = field(default_factory=dict)  # lower-case names
    proxy_authorization: str | None = None
    allowed: bool = True


HEAD_LIMIT = 1 << 20  # a proxy in front of a 200 KiB header must still pass it on


class Proxy:
    """A loopback HTTP forward proxy (an asyncio loop in a thread, port 0).

    Absolute-form requests (`POST http://host:port/path HTTP/1.1`) are forwarded to the
    target, one upstream connection per request, the response relayed as it arrives
    (Content-Length, chunked or until close; a cut upstream cuts the client).
    CONNECT opens a tunnel. With `auth=(user, password)` every request must carry
    `Proxy-Authorization: Basic …` for them, else 407."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.passed: list[Passed] = []
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    # lifecycle
    def start(self) -> "Proxy":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
        return self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close():
            self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def reset(self) -> None:
        self.passed.clear()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        return len(self.passed)

    def expected_authorization(self) -> str | None:
        if self.auth is None:
            return None
        return "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()

    # serving
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                request_line, headers, raw_headers = head
                method, target, _version = request_line.decode("latin-1").split(" ", 2)
                authorization = headers.get("proxy-authorization")
                passed = Passed(method, target, dict(headers), authorization)
                self.passed.append(passed)
                body = await _read_request_body(reader, headers)
                if self.auth is not None and authorization != self.expected_authorization():
                    passed.allowed = False
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="test proxy"\r\n'
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    return
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                if not await self._forward(passed, method, target, raw_headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _tunnel(self, target: str, reader, writer) -> None:
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    sink.write_eof()
                except (OSError, RuntimeError):
                    pass

        tasks = [asyncio.ensure_future(pipe(reader, up_writer)), asyncio.ensure_future(pipe(up_reader, writer))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.ALL_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            up_writer.close()

    async def _forward(self, passed: Passed, method: str, target: str, raw_headers: list, body: bytes, writer) -> bool:
        """Relay one absolute-form request; True when the client connection may be reused."""
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            passed.allowed = False
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return False
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        try:
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80, limit=HEAD_LIMIT)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return False
        try:
            lines = [f"{method} {path} HTTP/1.1".encode("latin-1")]
            lines += [line for name, line in raw_headers if name not in ("proxy-authorization", "proxy-connection")]
            up_writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            await up_writer.drain()
            return await _relay_response(up_reader, writer, method)
        finally:
            up_writer.transport.abort()


async def _read_head(reader) -> tuple[bytes, dict, list] | None:
    """The start line, headers (lower-case name -> value) and the raw header lines."""
    line = await reader.readline()
    if not line:
        return None
    headers, raw = {}, []
    while True:
        header = await reader.readline()
        if not header:
            raise asyncio.IncompleteReadError(b"", None)
        if header in (b"\r\n", b"\n"):
            break
        name, _, value = header.decode("latin-1").partition(":")
        name = name.strip().lower()
        headers[name] = value.strip()
        raw.append((name, header.rstrip(b"\r\n")))
    return line.rstrip(b"\r\n"), headers, raw


async def _read_request_body(reader, headers: dict) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        async for piece in _chunks(reader):
            out += piece
        # re-framed with a length for the upstream
        headers["content-length"] = str(len(out))
        return bytes(out)
    return await reader.readexactly(int(headers.get("content-length", "0") or 0))


async def _chunks(reader):
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise asyncio.IncompleteReadError(b"", None)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def _relay_response(up_reader, writer, method: str) -> bool:
    """Copy one response from upstream to the client as it arrives. A cut upstream
    cuts the client (abort). True when the client connection may be reused."""
    try:
        head = await _read_head(up_reader)
    except ConnectionError:  # upstream reset before answering: so does the proxy
        writer.transport.abort()
        return False
    except asyncio.IncompleteReadError:
        head = None
    if head is None:  # upstream closed before answering: so does the proxy
        writer.close()
        return False
    status_line, headers, raw = head
    writer.write(status_line + b"\r\n" + b"".join(line + b"\r\n" for _, line in raw) + b"\r\n")
    status = int(status_line.split(b" ")[1])
    try:
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await up_reader.readline()
                if not size_line:
                    raise asyncio.IncompleteReadError(b"", None)
                writer.write(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:
                        trailer = await up_reader.readline()
                        writer.write(trailer)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                writer.write(await up_reader.readexactly(size + 2))
                await writer.drain()
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining:
                data = await up_reader.read(min(remaining, 65536))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                writer.write(data)
                await writer.drain()
                remaining -= len(data)
        else:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            await writer.drain()
            return False  # the body ended with the connection
        await writer.drain()
    except asyncio.IncompleteReadError:  # upstream closed mid-body: pass on what came, then close
        await writer.drain()
        writer.close()
        return False
    except ConnectionError:  # upstream reset mid-body: reset the client too
        writer.transport.abort()
        return False
    return headers.get("connection", "").lower() != "close"
