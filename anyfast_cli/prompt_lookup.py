"""Prompt files by name: `-f NAME` found in the prompt directories, and the listing of
`anyfast prompts`. The directories, in order, come from settings.prompt_dirs.

Lookup and listing agree by construction: both take, for a name, the first of NAME.yaml,
NAME.yml, NAME.json in the first directory that has one, so the listing shows each name once,
with the file `-f NAME` would use. A listing names a directory it cannot read, or a file it
cannot use, and goes on; that file's name is not listed (`-f NAME` would fail on it too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from anyfast_cli.errors import UsageError
from anyfast_cli.inputs import parse_conversation
from anyfast_cli.reading import read_document
from anyfast_cli.templating import compile_template

PROMPT_EXTENSIONS = (".yaml", ".yml", ".json")


def is_prompt_name(ref: str) -> bool:
    """Whether `-f ref` may name a prompt file: no `/`, no extension, not `-`."""
    return ref not in ("", "-", ".", "..") and "/" not in ref and not os.path.splitext(ref)[1]


def resolve_prompt_ref(ref: str, dirs: list[str]) -> str:
    """The file `-f ref` reads: `ref` itself when it is `-`, a path, or a file in the current
    directory; else NAME.yaml, NAME.yml or NAME.json from the first prompt directory holding one."""
    if not is_prompt_name(ref) or (os.path.exists(ref) and not os.path.isdir(ref)):
        return ref
    for path in _candidates(ref, dirs):
        if os.path.isfile(path):
            return path
    raise UsageError(
        f"no file {ref} here, and no prompt file {ref} (.yaml, .yml or .json) in {', '.join(dirs)}",
        hint="anyfast prompts lists the prompt files found",
    )


def _candidates(name: str, dirs: list[str]) -> Iterator[str]:
    for directory in dirs:
        for extension in PROMPT_EXTENSIONS:
            yield os.path.join(directory, name + extension)


@dataclass(frozen=True)
class PromptEntry:
    name: str
    path: str
    description: str | None


@dataclass
class Listing:
    entries: list[PromptEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each: what was skipped, and why


def list_prompts(dirs: list[str]) -> Listing:
    """Every prompt name found, each with the file `-f NAME` would use and its description."""
    listing = Listing()
    taken: set[str] = set()
    for directory in dirs:
        for name, path in _prompt_files(directory, listing):
            if name in taken:
                continue
            taken.add(name)
            try:
                description = describe(path)
            except UsageError as exc:
                listing.problems.append(f"skipped prompt {name}: {exc.message}")
                continue
            listing.entries.append(PromptEntry(name, path, description))
    return listing


def _prompt_files(directory: str, listing: Listing) -> Iterator[tuple[str, str]]:
    """(name, path) for each prompt file of `directory`, by name, each name once (the first of
    its extensions in PROMPT_EXTENSIONS order). A directory that is not there is no problem."""
    try:
        files = set(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        listing.problems.append(f"cannot read the prompt directory {directory}: {exc.strerror or exc}")
        return
    names = sorted({os.path.splitext(f)[0] for f in files if os.path.splitext(f)[1] in PROMPT_EXTENSIONS})
    for name in names:
        if not is_prompt_name(name):
            continue
        for extension in PROMPT_EXTENSIONS:
            path = os.path.join(directory, name + extension)
            if name + extension in files and os.path.isfile(path):
                yield name, path
                break


def describe(path: str) -> str | None:
    """A prompt file's description on one line; UsageError when the file cannot be used."""
    try:
        text, _ = read_document(path, "a prompt file")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    conversation = parse_conversation(text, path)
    if conversation.is_template:
        compile_template(conversation, path, text)  # a placeholder error makes the file unusable
    return " ".join(conversation.description.split()) if conversation.description else None
