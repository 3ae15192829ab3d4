"""--events: an answer as `reasoning`, `content` and `tool_call` events (§3 "Events").

AnswerEvents stands where the text printer (output.TextPrinter) stands, with its methods
(feed_chunk, end_lines, end_choices), and collects the answer into the same Reply. It is
made only under --events, so the plain printing path pays nothing for it.

The key is masked across deltas: a model that echoes the key streams it a few characters per
chunk, so no one event line holds it for stdout's writer to mask. Each streamed text (one
choice's content or reasoning) keeps back the end that may be the start of the key until the
next delta settles it, as the writer does within one stream; the deltas still join to the
masked text.
"""

from __future__ import annotations

from anyfast_cli.exchange import Reply, choice_index
from anyfast_cli.text import fix_surrogates


class AnswerEvents:
    def __init__(self, reply: Reply, emit, redactor) -> None:
        self.reply = reply
        self._emit = emit  # EventLines.emit
        self._redactor = redactor
        self._held: dict = {}  # (event, choice) -> the end of its text that may begin the key

    def feed_chunk(self, chunk: dict) -> None:
        """A stream chunk or a whole response: choice 0 through the Reply (which mends split
        surrogate pairs), every other choice as it came."""
        reasoning, content = self.reply.absorb(chunk)
        self._text("reasoning", 0, reasoning)
        self._text("content", 0, content)
        choices = chunk.get("choices")
        if type(choices) is not list or not choices:
            return
        if len(choices) == 1 and isinstance(choices[0], dict) and choice_index(choices[0]) == 0:
            return  # nearly every chunk: choice 0 alone, told above
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            index = choice_index(choice, position if "message" in choice else 0)
            if index == 0:
                continue
            part = choice.get("delta") or choice.get("message") or {}
            if isinstance(part, dict):
                for field, event in (("reasoning_content", "reasoning"), ("content", "content")):
                    value = part.get(field)
                    if isinstance(value, str):
                        self._text(event, index, fix_surrogates(value))

    def _text(self, event: str, choice: int, text: str | None) -> None:
        if not text:
            return
        if self._redactor:
            text, self._held[event, choice] = self._redactor.split_tail(
                self._redactor.mask(self._held.pop((event, choice), "") + text)
            )
            if not text:
                return
        self._delta(event, choice, text)

    def _delta(self, event: str, choice: int, text: str) -> None:
        self._emit(event, delta=text, choice=choice)

    def end_lines(self, *, complete: bool = True) -> None:
        """The answer stopped: a surrogate half still held is U+FFFD; held ends go out."""
        reasoning, content = self.reply.end()
        self._text("reasoning", 0, reasoning)
        self._text("content", 0, content)
        for (event, choice), text in sorted(self._held.items()):
            if text:  # it was not the key after all
                self._delta(event, choice, text)
        self._held.clear()

    def end_choices(self) -> None:
        """A complete answer: each choice's tool calls, whole, in choice order."""
        for index in sorted(self.reply.tool_calls):
            for call in self.reply.calls(index):  # masked by the Reply, as --save keeps them
                self._emit("tool_call", choice=index, call=call)
