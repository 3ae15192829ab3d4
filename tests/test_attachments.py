"""-a/--attach (contract §3 "Attachments"): typed by content (a table), text in fences that nothing
inside can close, the limits, stdin, and URLs fetched through the loopback gateway, a redirecting
server and a proxy, never with the key."""

from __future__ import annotations

import base64
import json
import random
import re

import pytest
from gateway import Drip, Gateway, Json, Sse, Stall, chunk, redirect, sse_events
from helpers import KEY, closed_port
from netfixtures import Proxy

import anyfast_cli.attachments as attachments
from anyfast_cli.attachments import fence_for, text_block
from anyfast_cli.sniff import sniff

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20)
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(20)


@pytest.mark.parametrize(
    "data, kind, mime",
    [
        (PNG, "image", "image/png"),
        (JPEG, "image", "image/jpeg"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(8), "image", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(8), "image", "image/webp"),
        (b"BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00", "image", "image/bmp"),
        (b"II*\x00\x08\x00\x00\x00", "image", "image/tiff"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00", "image", "image/heic"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "image", "image/avif"),
        (MP4, "video", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + bytes(8), "video", "video/webm"),
        (b"RIFF\x24\x00\x00\x00AVI LIST" + bytes(8), "video", "video/x-msvideo"),
        (b"plain ascii\n", "text", "text/plain"),
        ("naïve 日本語 ✓\n".encode(), "text", "text/plain"),
        (b"\xef\xbb\xbfwith a byte-order mark", "text", "text/plain"),
        (b"", "text", "text/plain"),  # an empty file is empty text
        (b"BMW and GIF89a are words", "text", "text/plain"),  # a signature at the start of text is text
        (b"GIF89a: the format, notes\n", "text", "text/plain"),
        (b"text with a NUL\x00 in it", "binary", "application/octet-stream"),
        (b"latin-1 caf\xe9", "binary", "application/octet-stream"),
        ("utf-16".encode("utf-16"), "binary", "application/octet-stream"),
        (b"%PDF-1.7\n\xe2\xe3\xcf\xd3\n", "binary", "application/octet-stream"),
        (b"PK\x03\x04\x14\x00\x00\x00", "binary", "application/octet-stream"),
        (b"\x7fELF\x02\x01\x01\x00", "binary", "application/octet-stream"),
    ],
)
def test_attachments_are_typed_by_content(data, kind, mime):
    found = sniff(data)
    assert (found.kind, found.mime) == (kind, mime)


@pytest.mark.parametrize(
    "text, fence",
    [
        ("no backticks", "```"),
        ("inline `code` and ``two``", "```"),
        ("```python\nx = 1\n```\n", "````"),
        ("````\n", "`````"),
        ("a ``````````` run", "````````````"),
        ("`" * 200, "`" * 201),
    ],
)
def test_the_fence_is_longer_than_any_backtick_run(text, fence):
    assert fence_for(text) == fence


def closes_early(block: str) -> bool:
    """Whether a line inside the block would close its fence (CommonMark: a line of at least as
    many backticks, up to 3 spaces of indent, nothing after but spaces)."""
    lines = block.split("\n")
    fence = lines[1]
    return any(re.fullmatch(r" {0,3}`{%d,}[ \t]*" % len(fence), line) for line in lines[2:-1])


def test_files_full_of_backticks_never_close_their_fence():
    rng = random.Random(19)
    for _ in range(300):
        text = "".join(rng.choice(["`", "``", "```", "````", "\n", " ", "x", "~~~"]) for _ in range(rng.randint(0, 60)))
        block = text_block("f.md", text)
        lines = block.split("\n")
        assert lines[0] == "f.md" and lines[-1] == lines[1] and set(lines[1]) == {"`"}
        assert not closes_early(block), repr(text)
        assert "\n".join(lines[2:-1]) == text.removesuffix("\n")  # the text itself, untouched


def test_a_label_is_one_line():
    assert text_block("evil\nname", "x").split("\n")[0] == "evil^Jname"


# --- complete -a ------------------------------------------------------------------------------


def sent(gateway) -> list:
    return gateway.requests[-1].body["messages"]


def test_text_image_and_video_in_the_order_given(run, gateway, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.md").write_text("# A\n```sh\nrm -rf /\n```\n")
    (tmp_path / "shot").write_bytes(PNG)  # no extension: typed by content
    (tmp_path / "clip.txt").write_bytes(MP4)  # a misleading one
    (tmp_path / "b.py").write_text("print('b')")
    result = run(
        "complete", "-a", "a.md", "-a", "shot", "-a", "clip.txt", "-a", "b.py", "--fps", "2", "--no-stream", "Review:"
    )
    assert result.exit_code == 0, result.stderr
    content = sent(gateway)[0]["content"]
    assert content[0] == {
        "type": "text",
        "text": "a.md\n````\n# A\n```sh\nrm -rf /\n```\n````\n\nb.py\n```\nprint('b')\n```\n\nReview:",
    }
    assert content[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }
    assert content[2]["type"] == "video_url" and content[2]["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert content[2]["video_url"]["fps"] == 2
    assert len(content) == 3


def test_stdin_as_an_attachment_is_labelled_stdin_and_is_not_the_prompt(run, gateway):
    result = run("complete", "-a", "-", "--no-stream", "Explain:", input="stack trace\n")
    assert result.exit_code == 0, result.stderr
    assert sent(gateway)[0]["content"] == "stdin\n```\nstack trace\n```\n\nExplain:"


@pytest.mark.parametrize(
    "args, problem",
    [
        (["-a", "bin.dat", "x"], "-a bin.dat: not UTF-8 text, an image or a video"),
        (["-a", "folder", "x"], "-a folder: a directory"),
        (["-a", "missing.txt", "x"], "-a missing.txt: cannot read it"),
        (["-a", "ftp://host/f", "x"], "only http:// and https://"),
        (["-a", "file:///etc/passwd", "x"], "only http:// and https://"),
        (["-a", "-", "-n", "x"], "-a - attaches standard input, and -n turns it off"),
        (["-a", "-", "-a", "-", "x"], "given twice"),
        (["-a", "-", "-"], "both read standard input"),
        (["-a", "https://user:secret@host/f", "x"], "user:password@ is refused"),
    ],
)
def test_what_cannot_be_attached_is_exit_2_naming_it(run, gateway, tmp_path, monkeypatch, args, problem):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "folder").mkdir()
    result = run("complete", *args, input="stdin text")
    assert result.exit_code == 2 and problem in result.stderr, result.stderr
    assert "secret" not in result.stderr and "internal error" not in result.stderr
    assert gateway.requests == []


def test_each_attachment_and_all_together_are_bounded(run, gateway, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(attachments, "TEXT_MAX_BYTES", 100)
    monkeypatch.setattr(attachments, "KIND_LIMITS", {**attachments.KIND_LIMITS, "text": (100, "a text")})
    monkeypatch.setattr(attachments, "ATTACHMENT_MAX_BYTES", 300)
    monkeypatch.setattr(attachments, "ATTACHMENTS_MAX_BYTES", 500)
    (tmp_path / "big.txt").write_text("x" * 101)
    (tmp_path / "huge.txt").write_text("x" * 301)
    for name in "abcdef":
        (tmp_path / name).write_text("y" * 90)
    result = run("complete", "-a", "big.txt", "x")
    assert result.exit_code == 2 and "-a big.txt: over the 100 bytes limit for a text attachment" in result.stderr
    result = run("complete", "-a", "huge.txt", "x")
    assert result.exit_code == 2 and "-a huge.txt: over the 300 bytes limit for an attachment" in result.stderr
    result = run("complete", *[arg for name in "abcdef" for arg in ("-a", name)], "x")
    assert result.exit_code == 2 and "-a f: the attachments together are over the 500 bytes limit" in result.stderr
    result = run("complete", "-a", "-", "x", input="z" * 400)
    assert result.exit_code == 2 and "standard input is over the 300 bytes limit" in result.stderr
    assert gateway.requests == []


def test_chat_attachments_join_the_message_holding_input_and_save_keeps_them(run, gateway, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "vars: {}\nmessages:\n  - user: 'Look: {input}'\n  - assistant: 'ok'\n  - user: last\n"
    )
    (tmp_path / "n.txt").write_text("notes")
    (tmp_path / "pic").write_bytes(PNG)
    saved = tmp_path / "saved.yaml"
    result = run("chat", "-f", "p.yaml", "-a", "n.txt", "-a", "pic", "--save", saved, "--no-stream", "this")
    assert result.exit_code == 0, result.stderr
    first = sent(gateway)[0]
    assert first["content"][0] == {"type": "text", "text": "n.txt\n```\nnotes\n```\n\nLook: this"}
    assert first["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert sent(gateway)[2] == {"role": "user", "content": "last"}
    import yaml

    again = yaml.safe_load(saved.read_text())["messages"][0]
    assert again == {"role": "user", "content": "n.txt\n```\nnotes\n```\n\nLook: this", "attach": ["pic"]}
    (tmp_path / "n.txt").write_text("changed")  # the text sent stays what is saved
    assert run("chat", "-f", saved, "--no-stream", "more").exit_code == 0
    assert sent(gateway)[0] == first  # the image read again from its reference


def test_dry_run_shows_the_attachments(run, gateway, tmp_path):
    (tmp_path / "t.txt").write_text("hello")
    result = run("complete", "-a", tmp_path / "t.txt", "--dry-run", "q")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["body"]["messages"][0]["content"] == f"{tmp_path / 't.txt'}\n```\nhello\n```\n\nq"


# --- URLs -------------------------------------------------------------------------------------


def text_reply(body: bytes, **headers) -> Json:
    return Json(raw=body, headers={"Content-Type": "text/plain", **headers})


def fetches(gateway) -> list:
    return [r for r in gateway.requests if r.method == "GET"]


def assert_no_credentials(requests) -> None:
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert not {"authorization", "cookie", "proxy-authorization"} & set(headers), headers
        assert KEY not in json.dumps(headers)


def test_a_url_is_fetched_before_the_request_and_never_with_the_key(run, gateway):
    url = gateway.url.replace("/v1", "/files/notes.md")
    gateway.script(text_reply(b"# Notes\n```\ncode\n```\n"))
    result = run("complete", "-a", url, "--no-stream", "Sum up")
    assert result.exit_code == 0, result.stderr
    get, post = gateway.requests
    assert (get.method, get.path, post.method) == ("GET", "/files/notes.md", "POST")
    assert_no_credentials([get])
    assert post.headers["authorization"] == f"Bearer {KEY}"  # the key goes to the API alone
    assert post.body["messages"][0]["content"] == f"{url}\n````\n# Notes\n```\ncode\n```\n````\n\nSum up"


def test_redirects_are_followed_five_times_to_http_only_with_nothing_carried(run, gateway):
    other = Gateway().start()  # another origin: a cookie or key must not travel there
    try:
        hops = [gateway.url.replace("/v1", f"/hop{i}") for i in range(6)]
        gateway.script(
            Json(raw=b"", status=302, headers={"Location": other.url.replace("/v1", "/there"), "Set-Cookie": "s=1"})
        )
        other.script(redirect(301, hops[1]))
        gateway.script(*[redirect(307, hops[i + 1]) for i in range(1, 4)], text_reply(b"arrived"))
        result = run("complete", "-a", hops[0], "--no-stream", "x")  # 5 redirects: 302, 301, 307 x3
        assert result.exit_code == 0, result.stderr
        assert sent(gateway)[0]["content"].startswith(f"{hops[0]}\n```\narrived")
        assert_no_credentials(fetches(gateway) + other.requests)
        assert len(fetches(gateway)) == 5 and len(other.requests) == 1
        gateway.reset()
        gateway.script(*[redirect(302, hops[i + 1]) for i in range(5)], redirect(302, hops[0]))
        result = run("complete", "-a", hops[0], "x")
        assert result.exit_code == 2 and f"-a {hops[0]}: more than 5 redirects" in result.stderr
        gateway.reset()
        gateway.script(redirect(302, "ftp://example.com/f"))
        result = run("complete", "-a", hops[0], "x")
        assert result.exit_code == 2 and "redirected to ftp://example.com/f" in result.stderr
        assert all(r.method == "GET" for r in gateway.requests)  # nothing was sent to the API
    finally:
        other.stop()


@pytest.mark.parametrize("status", [404, 403, 500, 204 + 100])
def test_a_status_other_than_2xx_is_exit_2_naming_url_and_status(run, gateway, status):
    url = gateway.url.replace("/v1", "/f")
    gateway.script(Json({"error": "no"}, status=status))
    result = run("complete", "-a", url, "--retries", "0", "x")
    assert result.exit_code == 2, result.stderr
    assert f"anyfast: error: -a {url}: HTTP {status}" in result.stderr
    assert [r.method for r in gateway.requests] == ["GET"]


def test_no_connection_is_exit_4_and_max_time_bounds_the_fetch(run, gateway):
    url = f"http://127.0.0.1:{closed_port()}/f"
    result = run("complete", "-a", url, "x")
    assert result.exit_code == 4 and f"-a {url}: cannot connect" in result.stderr
    gateway.script(Stall(5))
    result = run("complete", "-a", gateway.url.replace("/v1", "/slow"), "--max-time", "0.5", "x")
    assert result.exit_code == 4 and "fetching took longer than --max-time 0.5 s" in result.stderr
    assert [r.method for r in gateway.requests] == ["GET"]


def test_a_url_goes_through_the_proxy_the_api_would_use(run, gateway):
    proxy = Proxy().start()
    try:
        url = gateway.url.replace("/v1", "/via/proxy.txt")
        gateway.script(text_reply(b"proxied"))
        result = run("complete", "-a", url, "--no-stream", "x", HTTP_PROXY=proxy.url, NO_PROXY="")
        assert result.exit_code == 0, result.stderr
        assert [(p.method, p.target) for p in proxy.passed][0] == ("GET", url)
        assert_no_credentials(proxy.passed[:1])
        result = run("complete", "-a", url, "x", HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1")
        assert len(proxy.passed) == 2  # NO_PROXY: the fetch (and the API) went direct
    finally:
        proxy.stop()


def test_stdin_media_saved_as_a_data_uri_is_read_back_by_content(run, gateway, tmp_path):
    saved = tmp_path / "s.yaml"
    result = run("chat", "-a", "-", "--save", saved, "--no-stream", "what is it?", input=PNG)
    assert result.exit_code == 0, result.stderr
    import yaml

    ref = yaml.safe_load(saved.read_text())["messages"][0]["attach"][0]
    assert ref == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert run("chat", "-f", saved, "--no-stream", "and now?").exit_code == 0
    assert sent(gateway)[0]["content"][1] == {"type": "image_url", "image_url": {"url": ref}}
    bad = "data:text/plain;base64," + "A" * 5000 + "!"
    result = run("complete", "-a", bad, "x")
    assert result.exit_code == 2 and "-a data:text/plain;base64,…: not valid base64" in result.stderr


def test_one_max_time_covers_the_fetches_and_the_request(run, gateway):
    """§3: a URL is fetched inside the --max-time deadline, and the request keeps that deadline:
    a fetch of ~0.6 s and a request of ~0.7 s, each within 1 s alone, are past it together."""
    url = gateway.url.replace("/v1", "/slow.txt")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    answer = Sse(sse_events(chunk("he"), chunk("llo", finish="stop")), delay=0.25)
    gateway.script(Drip(b"abcdef", head=head, delay=0.1), answer)
    result = run("complete", "-a", url, "--max-time", "1", "x")
    assert result.exit_code == 4, result.stderr
    assert "fetching the attachments and the request took longer than --max-time 1 s" in result.stderr
    gateway.script(Drip(b"abcdef", head=head, delay=0.1), answer)
    result = run("complete", "-a", url, "--max-time", "5", "x")
    assert (result.exit_code, result.stdout) == (0, "hello\n"), result.stderr


def test_waiting_for_the_key_command_is_not_the_requests_time(run, gateway, tmp_path):
    """--max-time covers the fetches and the request, not a wait for api_key_command (a PIN)."""
    config = tmp_path / "config.yaml"
    config.write_text("profiles:\n  default:\n    api_key_command: sleep 1.2; echo sk-from-command-123\n")
    config.chmod(0o600)
    gateway.script(text_reply(b"notes"))
    url = gateway.url.replace("/v1", "/notes.txt")
    result = run("complete", "-a", url, "--max-time", "1", "x", key=None, ANYFAST_CONFIG=str(config))
    assert result.exit_code == 0, result.stderr
