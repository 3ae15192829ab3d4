"""`anyfast prompts`: the prompt files `-f NAME` finds, and `anyfast prompts show NAME`."""

from __future__ import annotations

import json

from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.output import write_flushed
from anyfast_cli.prompt_lookup import PromptEntry, list_prompts, resolve_prompt_ref
from anyfast_cli.reading import read_text_file
from anyfast_cli.settings import prompt_dirs
from anyfast_cli.streams import Streams
from anyfast_cli.text import neutralise


def run_prompts(*, config: str | None, as_json: bool, streams: Streams) -> ExitCode:
    """One line per name: NAME<TAB>description in a pipe (for cut and sort), aligned columns at a
    terminal, or with --json an array of {name, path, description}. What cannot be read is named
    on stderr and skipped."""
    dirs = prompt_dirs(config, streams.env)
    listing = list_prompts(dirs)
    for problem in listing.problems:
        streams.warn(problem)
    if as_json:
        rows = [{"name": e.name, "path": e.path, "description": e.description} for e in listing.entries]
        write_flushed(streams.stdout, json.dumps(rows, ensure_ascii=False) + "\n")
    elif listing.entries:
        write_flushed(streams.stdout, render_listing(listing.entries, terminal=streams.stdout_isatty))
    elif streams.stderr_isatty:
        streams.say(f"no prompt files in {', '.join(dirs)}")
    return ExitCode.OK


def render_listing(entries: list[PromptEntry], *, terminal: bool) -> str:
    if not terminal:
        return "".join(f"{e.name}\t{e.description or ''}\n" for e in entries)
    width = max(len(e.name) for e in entries)
    # A file's text is not ours: at a terminal its control characters are made visible.
    return "".join(neutralise(f"{e.name:<{width}}  {e.description or ''}".rstrip()) + "\n" for e in entries)


def run_prompts_show(name: str, *, config: str | None, streams: Streams) -> ExitCode:
    """The file `-f NAME` would read, as it is."""
    path = resolve_prompt_ref(name, prompt_dirs(config, streams.env))
    if path == "-":
        raise UsageError("anyfast prompts show takes a prompt's name or file, not '-'")
    text = read_text_file(path, "a prompt file")
    write_flushed(streams.stdout, neutralise(text) if streams.stdout_isatty else text)
    return ExitCode.OK
