"""`anyfast models [PATTERN]`: the model ids the gateway serves to this key, and
`--check MODEL` to know before a CI job starts that every model it needs is served."""

from __future__ import annotations

import difflib
from fnmatch import fnmatchcase

from anyfast_cli.commands.common import OutputFlags, open_client
from anyfast_cli.errors import ApiError, ExitCode, UsageError
from anyfast_cli.output import print_json, write_flushed
from anyfast_cli.prices import GLOB_CHARACTERS
from anyfast_cli.settings import Settings
from anyfast_cli.streams import Streams
from anyfast_cli.text import neutralise

HINTS = 3  # served names offered for a missing one


def model_ids(data) -> list[str]:
    """The ids of an OpenAI `GET /models` answer ({"data": [{"id": …}, …]}), sorted, each once."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ApiError('the server\'s model list is not {"data": [...]}', code="invalid_response")
    return sorted({entry["id"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str)})


def matching(ids: list[str], pattern: str | None) -> list[str]:
    """PATTERN as a glob when it has glob characters, else as a substring."""
    if not pattern:
        return ids
    if any(c in pattern for c in GLOB_CHARACTERS):
        return [i for i in ids if fnmatchcase(i, pattern)]
    return [i for i in ids if pattern in i]


def missing_models(wanted: list[str], ids: list[str]) -> list[ApiError]:
    """An error for each wanted model that is not served, with the closest served names as its hint."""
    served = set(ids)
    errors = []
    for model in dict.fromkeys(wanted):
        if model not in served:
            close = difflib.get_close_matches(model, ids, n=HINTS, cutoff=0.5)
            hint = f"served names close to it: {', '.join(close)}" if close else None
            errors.append(ApiError(f"model '{model}' is not served here", code="model_not_found", hint=hint))
    return errors


def run_models(
    pattern: str | None, *, check: list[str], as_json: bool, settings: Settings, out: OutputFlags, streams: Streams
) -> ExitCode:
    if check and (pattern or as_json):
        raise UsageError("--check takes model names alone (no PATTERN, no --json)")
    with open_client(settings, out, streams) as client:
        data = client.get_json("models")
    ids = model_ids(data)
    if check:
        problems = missing_models(list(check), ids)
        for problem in problems:
            streams.error(problem)
        return ExitCode.API if problems else ExitCode.OK
    if as_json:
        print_json(data, streams.stdout, terminal=streams.stdout_isatty, color=streams.stdout_color)
        return ExitCode.OK
    shown = matching(ids, pattern)
    if streams.stdout_isatty:
        shown = [neutralise(i) for i in shown]
    write_flushed(streams.stdout, "".join(f"{i}\n" for i in shown))
    return ExitCode.OK
