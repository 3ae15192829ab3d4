"""One request of complete or chat answered: checked against a --schema when there is one
(schema_answer.exchange_structured, whose modules load only then), else rendered as it comes."""

from __future__ import annotations

from anyfast_cli.commands.common import OutputFlags, exchange
from anyfast_cli.exchange import Reply
from anyfast_cli.settings import Settings
from anyfast_cli.streams import Streams


def answer(
    settings: Settings,
    messages: list[dict],
    fields: dict,
    out: OutputFlags,
    streams: Streams,
    *,
    schema: dict | None,
    schema_flags,
    command: str,
    keep_text: bool,
    deadline: float | None,
) -> Reply | None:
    """The reply (None for --dry-run). `keep_text`: the plain answer's text is kept (for --save);
    `deadline`: the --max-time deadline -a's URL fetches began, which the request keeps."""
    if schema is None:
        return exchange(
            settings, messages, fields, out, streams, keep_text=keep_text, command=command, deadline=deadline
        )
    from anyfast_cli.commands.schema_answer import exchange_structured

    return exchange_structured(
        settings, messages, fields, out, streams, schema=schema, flags=schema_flags, command=command, deadline=deadline
    )
