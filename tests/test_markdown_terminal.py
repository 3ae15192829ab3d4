"""Markdown at a real terminal, end to end: `anyfast` on a pseudo-terminal (pexpect), the bytes it
wrote replayed into a terminal emulator (pyte) and read back as scrollback and screen rows."""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pexpect
import pytest
import wcwidth
from gateway import Sse, chunk, sse_events
from helpers import pty_end
from markdown_answers import chunked, mixed_answer
from terminal_replay import Terminal, rows_with

TIMEOUT = 60
RENDERER_MODULES = ("rich", "markdown_it", "pygments", "anyfast_cli.mdrender")
TERMINAL_QUERIES_AND_MODES = ("\x1b[6n", "\x1b[?25l", "\x1b[?1049h", "\x1b[?1047h", "\x1b[?47h")


@pytest.fixture
def term_env(proc_env):
    return {**proc_env, "TERM": "xterm-256color"}


def streamed(text: str, size: int = 7, delay: float = 0.0) -> Sse:
    pieces = [chunk(piece) for piece in chunked(text, size)]
    return Sse(sse_events(*pieces, chunk(finish="stop")), delay=delay)


def spawn(env, *args, columns=80, lines=24) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "anyfast_cli", *args],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(lines, columns),
    )
    child.delaybeforesend = None
    return child


def read_all(child: pexpect.spawn) -> str:
    """Everything the child writes until it ends (reading as it goes, so it never blocks)."""
    pieces = []
    while True:
        try:
            pieces.append(child.read_nonblocking(1 << 16, timeout=TIMEOUT))
        except pexpect.EOF:
            break
    pty_end(child)
    return "".join(pieces)


def shown_so_far(child: pexpect.spawn) -> str:
    """All the child wrote up to now that pexpect has read: up to the match, the match, and what
    was read past it (pexpect keeps that in its buffer; read_nonblocking would not return it)."""
    text = child.before + child.after + child.buffer
    child.buffer = ""
    return text


def check_every_line_once_and_code_exact(rows, markers, fences):
    assert [rows_with(rows, marker) for marker in markers] == [1] * len(markers)
    positions = [next(i for i, row in enumerate(rows) if marker in row) for marker in markers]
    assert positions == sorted(positions)
    start = 0
    for code in fences:
        start = rows.index("```python", start)
        assert rows[start + 1 : start + 1 + len(code)] == code  # copied from the screen, it is the source
        start += len(code) + 2


def test_a_2000_line_answer_shows_every_line_once_in_order_at_80x24_and_200x50(gateway, term_env):
    text, markers, fences = mixed_answer(80)
    assert text.count("\n") >= 2000
    sizes = [(80, 24), (200, 50)]
    gateway.script(*[streamed(text, size=40) for _ in sizes])
    children = [spawn(term_env, "complete", "-n", "go", columns=c, lines=l) for c, l in sizes]
    with ThreadPoolExecutor(len(children)) as pool:  # both at once: each terminal read as it is written
        outputs = list(pool.map(read_all, children))
    for child, output, (columns, lines) in zip(children, outputs, sizes):
        assert child.exitstatus == 0
        rows = Terminal(columns, lines).feed(output).rows()
        check_every_line_once_and_code_exact(rows, markers, fences)
        assert not [row for row in rows if row.startswith(("- ", "|---", "## ")) or "**" in row]  # all rendered
        assert not any(sequence in output for sequence in TERMINAL_QUERIES_AND_MODES)


def test_cjk_table_columns_line_up_by_cells_and_an_open_fence_ends_as_code(gateway, term_env):
    text = "| 名前 | n |\n|---|---:|\n| 一二三四 | 1 |\n| ab | 22 |\n\n中文 **粗体** 文字\n\n```python\nx = '中文'\nprint(x)"
    gateway.script(streamed(text, size=3))
    child = spawn(term_env, "complete", "-n", "go")
    output = read_all(child)
    assert child.exitstatus == 0
    terminal = Terminal(80, 24).feed(output)
    rows = terminal.rows()
    table = [row for row in rows if "1" in row or "22" in row or "名前" in row]
    assert len({wcwidth.wcswidth(row) for row in table}) == 1, table  # right-aligned column: equal widths
    assert "中文 粗体 文字" in rows
    assert rows[-3:] == ["```python", "x = '中文'", "print(x)"]
    assert terminal.screen.cursor.attrs == Terminal(1, 1).screen.cursor.attrs  # colours reset at the end


def test_a_resize_mid_stream_leaves_no_duplicate_and_no_gap(gateway, term_env):
    text, markers, _ = mixed_answer(6)
    head, tail = text[:900], text[900:]
    gateway.script(
        Sse(
            sse_events(
                *[chunk(p) for p in chunked(head, 9)], *[chunk(p) for p in chunked(tail, 9)], chunk(finish="stop")
            ),
            delay=0.002,
        )
    )
    child = spawn(term_env, "complete", "-n", "go")
    terminal = Terminal(80, 24)
    child.expect_exact(markers[3])
    terminal.feed(shown_so_far(child))
    child.setwinsize(24, 44)
    terminal.resize(44, 24)
    terminal.feed(read_all(child))
    assert child.exitstatus == 0
    rows = terminal.rows()
    assert [rows_with(rows, marker) for marker in markers] == [1] * len(markers)


@pytest.mark.parametrize("send, status", [("intr", 130), (signal.SIGHUP, 129)], ids=["ctrl-c", "sighup"])
def test_interrupted_mid_answer_resets_colours_keeps_the_cursor_and_exits(gateway, term_env, send, status):
    text = "**Intro** line\n\n```python\n" + "".join(f"x{i} = {i}\n" for i in range(400))
    gateway.script(streamed(text, size=6, delay=0.01))
    child = spawn(term_env, "complete", "-n", "go")
    child.expect_exact("x3 = 3")
    seen = shown_so_far(child)
    if send == "intr":
        child.sendintr()
    else:
        child.kill(send)
    output = seen + read_all(child)
    assert child.exitstatus == status
    assert "Traceback" not in output
    assert not any(sequence in output for sequence in TERMINAL_QUERIES_AND_MODES)
    terminal = Terminal(80, 24).feed(output)
    assert terminal.screen.cursor.attrs == Terminal(1, 1).screen.cursor.attrs
    cursor_row = "".join(terminal.screen.buffer[terminal.screen.cursor.y][x].data for x in range(80))
    assert cursor_row.replace("^C", "").strip() == ""  # the line was ended (the tty may echo ^C on the next)
    assert "Intro line" in terminal.rows()


RAW_TEXT = "# T\n\n**bold** `x` \x1b[31m\n\n```\ncode\n```"


@pytest.mark.parametrize("extra_env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
@pytest.mark.parametrize("flag", [[], ["--markdown"]])
def test_no_color_and_dumb_terminals_get_no_escape_at_all(gateway, term_env, extra_env, flag):
    gateway.script(streamed(RAW_TEXT))
    child = spawn({**term_env, **extra_env}, "complete", "-n", *flag, "go")
    output = read_all(child)
    assert child.exitstatus == 0
    assert "\x1b" not in output
    assert output == "# T\r\n\r\n**bold** `x` ^[[31m\r\n\r\n```\r\ncode\r\n```\r\n"


def test_raw_at_a_terminal_is_the_text_as_before(gateway, term_env):
    gateway.script(streamed(RAW_TEXT))
    child = spawn(term_env, "complete", "-n", "--raw", "go")
    output = read_all(child)
    assert output == "# T\r\n\r\n**bold** `x` ^[[31m\r\n\r\n```\r\ncode\r\n```\r\n"


def test_the_session_renders_replies(gateway, term_env):
    gateway.script(streamed("Here is **bold** and a [link](https://example.com).\n"))
    child = spawn(term_env, "chat")
    child.expect_exact("> ")
    child.sendline("hi")
    child.expect_exact("> ")
    seen = child.before
    child.sendeof()
    pty_end(child)
    assert child.exitstatus == 0
    assert "Here is bold and a link (https://example.com)." in Terminal(80, 24).feed(seen).rows()


def renderer_modules_loaded(env, *args, terminal: bool) -> list[str]:
    """Runs anyfast in a Python that reports, at exit, which renderer modules were imported."""
    probe = (
        "import atexit, sys\n"
        f"atexit.register(lambda: sys.stderr.write('LOADED=' + repr(sorted(m for m in sys.modules if m.split('.')[0] in {RENDERER_MODULES!r} or m in {RENDERER_MODULES!r})) + '\\n'))\n"
        f"sys.argv = ['anyfast', *{list(args)!r}]\n"
        "from anyfast_cli.cli import main\n"
        "main()\n"
    )
    if terminal:
        child = pexpect.spawn(sys.executable, ["-c", probe], env=env, encoding="utf-8", timeout=TIMEOUT)
        output = read_all(child)
    else:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=TIMEOUT)
        output = done.stderr
    return eval(output.split("LOADED=")[1].splitlines()[0])  # noqa: S307 - our own repr of a list of names


def test_the_raw_path_never_loads_the_renderer(gateway, term_env):
    assert renderer_modules_loaded(term_env, "complete", "-n", "hi", terminal=False) == []
    assert renderer_modules_loaded(term_env, "complete", "-n", "--raw", "hi", terminal=True) == []
    assert "anyfast_cli.mdrender" in renderer_modules_loaded(term_env, "complete", "-n", "hi", terminal=True)
