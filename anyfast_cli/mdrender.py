"""Units of an answer (mdblocks.Unit) turned into terminal text: prose blocks through rich's
Markdown (markdown-it-py), code lines through pygments. The one module that loads them,
imported only when an answer is rendered, so the raw path never pays for it.

Every rendered line ends with an SGR reset and carries no trailing blanks; code is its exact
text with colours added: no border, margin, padding, line numbers or hard wrap, so code copied
from the screen is the code that was sent.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

from markdown_it import MarkdownIt
from pygments import lex
from pygments.formatters import TerminalFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound
from rich.console import Console
from rich.markdown import CodeBlock, Heading, Markdown
from rich.text import Text

from anyfast_cli.mdblocks import BLANK, BLOCK, CODE, FENCE_CLOSE, FENCE_OPEN, Unit

RESET = "\x1b[0m"
DIM = "\x1b[2m"
_SGR = re.compile(r"\x1b\[[0-9;]*m")
_TRAILING_BLANKS = re.compile(r"(?:[ \t]|\x1b\[[0-9;]*m)+$")
_FORMATTER = TerminalFormatter()  # the terminal's own palette: readable on dark and light backgrounds
_PARSER = MarkdownIt().enable("strikethrough").enable("table")  # built once, not per block


def _lexer(language: str):
    """The pygments lexer for a fence's language, or None (shown uncoloured)."""
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False, stripall=False, tabsize=0)
    except (ClassNotFound, ValueError, TypeError):
        return None


class CodeLines:
    """Code lines highlighted one at a time, with the lexer of their fence's language."""

    def __init__(self) -> None:
        self._lexers: dict[str, object] = {}

    def highlight(self, line: str, language: str) -> str:
        language = language.lower()
        if language not in self._lexers:
            self._lexers[language] = _lexer(language) if language else None
        lexer = self._lexers[language]
        if lexer is None or not line.strip():
            return line
        coloured = _format(lex(line, lexer))
        if _SGR.sub("", coloured) != line:  # a lexer that changed the text: the text wins
            return line
        return coloured


def _format(tokens) -> str:
    out = io.StringIO()
    _FORMATTER.format(tokens, out)
    return out.getvalue()


class _CopyableCode(CodeBlock):
    """A code block inside a prose block (a fence in a list item, indented code): its lines
    highlighted as top-level code is, without rich's padding; folded, never cut, at the edge."""

    code_lines = CodeLines()

    def __rich_console__(self, console, options):
        code = str(self.text).rstrip("\n")
        language = self.lexer_name if self.lexer_name != "text" else ""
        for line in code.split("\n"):
            text = Text.from_ansi(self.code_lines.highlight(line, language), no_wrap=False, overflow="fold")
            text.end = "\n"
            yield text


class _LeftHeading(Heading):
    """Headings at the left margin, as the answer wrote them, without their # markers."""

    def __rich_console__(self, console, options):
        text = self.text.copy()
        text.justify = "left"
        yield text


class AnswerMarkdown(Markdown):
    elements = {**Markdown.elements, "fence": _CopyableCode, "code_block": _CopyableCode, "heading_open": _LeftHeading}

    def __init__(self, markup: str) -> None:
        # Markdown.__init__'s attributes, set here: it would build a parser per block (2 ms each).
        self.markup = markup
        self.parsed = _PARSER.parse(markup)
        self.code_theme = "monokai"
        self.justify = None
        self.style = "none"
        self.hyperlinks = False  # a link shows its URL, as text that can be copied
        self.inline_code_lexer = None
        self.inline_code_theme = "monokai"


class UnitRenderer:
    """Renders units for a terminal `width` columns wide (prose is wrapped to it; code never is)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._console = Console(
            file=io.StringIO(),
            force_terminal=True,
            highlight=False,
            markup=False,
            emoji=False,
            legacy_windows=False,
            _environ=dict(env),  # the colour depth the terminal announces (TERM, COLORTERM)
        )
        self._code = _CopyableCode.code_lines

    def render(self, unit: Unit, width: int) -> str:
        """The unit's text for the terminal, every line ended by a newline."""
        if unit.kind == BLANK:
            return "\n"
        if unit.kind in (FENCE_OPEN, FENCE_CLOSE):
            return f"{DIM}{unit.lines[0]}{RESET}\n"
        if unit.kind == CODE:
            line = self._code.highlight(unit.lines[0], unit.language)
            return f"{line}{RESET}\n" if "\x1b" in line else f"{line}\n"
        assert unit.kind == BLOCK, unit.kind
        return self._prose("\n".join(unit.lines), width)

    def _prose(self, text: str, width: int) -> str:
        console = self._console
        console.width = max(width, 10)
        with console.capture() as capture:
            console.print(AnswerMarkdown(text))
        lines = capture.get().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        lines = [_TRAILING_BLANKS.sub("", line) for line in lines]
        while lines and not lines[0]:  # rich's margins; the source's blank lines are units of their own
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        return "".join(f"{line}{RESET}\n" if "\x1b" in line else f"{line}\n" for line in lines)
