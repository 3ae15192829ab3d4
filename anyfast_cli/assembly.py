"""A streamed answer assembled into the shape of a whole (non-streamed) response, and a
whole response replayed as a stream: how one cache entry serves both ways of asking.

Pure: chunk objects in, a response object out, and back.
"""

from __future__ import annotations

from anyfast_cli.exchange import MAX_CHOICES, Choice, ToolCalls, choice_index, whole_as_chunk

# A chunk's own fields, which the whole response has in its own form (or not at all).
CHUNK_ONLY = ("choices", "usage", "object")


class StreamAssembler:
    """Stream chunks in, as they are shown; `response()` the whole response a non-streamed
    request would have had: every choice's text, reasoning, tool calls and finish_reason,
    the usage, and the first chunk's other fields (id, created, model, ...)."""

    def __init__(self) -> None:
        self._top: dict | None = None
        self._choices: dict[int, Choice] = {}
        self._calls: dict[int, ToolCalls] = {}
        self._usage = None
        self.overflowed = False  # more choices than any answer holds: not worth keeping

    def add(self, chunk: dict) -> None:
        if self._top is None:
            self._top = {name: value for name, value in chunk.items() if name not in CHUNK_ONLY}
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice_index(choice)
            if index not in self._choices:
                if len(self._choices) >= MAX_CHOICES:
                    self.overflowed = True
                    continue
                self._choices[index] = Choice(index)
            part = choice.get("delta") or choice.get("message") or {}
            self._choices[index].absorb(choice, part)
            calls = part.get("tool_calls")
            if calls:
                whole = "message" in choice and "delta" not in choice
                self._calls.setdefault(index, ToolCalls()).absorb(calls, whole=whole)

    def response(self) -> dict | None:
        """The whole response; None when nothing was assembled (or too much)."""
        if self._top is None or not self._choices or self.overflowed:
            return None
        choices = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            message: dict = {"role": "assistant", "content": choice.content if choice.content_parts else None}
            if choice.reasoning_parts:
                message["reasoning_content"] = choice.reasoning
            calls = self._calls.get(index)
            if calls is not None and calls.calls:
                message["tool_calls"] = calls.shaped()
            choices.append({"index": index, "message": message, "finish_reason": choice.finish_reason})
        whole = {**self._top, "object": "chat.completion", "choices": choices}
        if self._usage:
            whole["usage"] = self._usage
        return whole


def replay_chunks(response: dict) -> list[dict]:
    """A whole response as the chunks of a stream whose deltas join to it: one chunk holding
    every choice's whole message as its delta, its finish_reason and the usage."""
    chunk = whole_as_chunk(response)
    chunk["object"] = "chat.completion.chunk"
    return [chunk]
