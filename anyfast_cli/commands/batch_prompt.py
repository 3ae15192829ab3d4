"""`batch -f FILE|NAME`: the prompt file every record is rendered through, read and checked
once, before the input is (batch/jobs.py renders each record)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from anyfast_cli.batch.jobs import PromptFileJob
from anyfast_cli.commands.attach import attachment_reader
from anyfast_cli.commands.conversation import (
    file_schema,
    message_media,
    read_conversation_text,
    read_var_file,
    set_system,
    tool_fields,
)
from anyfast_cli.errors import UsageError
from anyfast_cli.inputs import Conversation
from anyfast_cli.prompt_lookup import resolve_prompt_ref
from anyfast_cli.settings import SettingFlags, Settings, prompt_dirs
from anyfast_cli.streams import Streams
from anyfast_cli.templating import prompt_file_values


@dataclass
class BatchPromptFile:
    path: str
    conversation: Conversation
    text: str

    @property
    def model(self) -> str | None:
        return self.conversation.model

    @property
    def params(self) -> dict:
        """The file's body fields: defaults under each record's own (and under the flags)."""
        return {**self.conversation.params, **tool_fields(self.conversation)}


def read_batch_prompt_file(ref: str, *, input_path: str | None, settings_flags: SettingFlags, streams: Streams):
    path = resolve_prompt_ref(ref, prompt_dirs(settings_flags.config, streams.env))
    if path == "-" and input_path in (None, "-"):
        raise UsageError("-f - and the input both read standard input; give the input as a file")
    conversation, text = read_conversation_text(path, streams)
    return BatchPromptFile(path, conversation, text)


def prompt_file_job(
    prompt_file: BatchPromptFile, variables, *, system: str | None, settings: Settings, streams: Streams
) -> PromptFileJob:
    """The file as every record will use it: --system applied, its placeholders checked against
    --var (one that none uses is exit 2), its attachments read once."""
    conversation = prompt_file.conversation
    if system is not None:
        set_system(conversation, system)
    template, defaults = prompt_file_values(conversation, prompt_file.path, prompt_file.text, variables, read_var_file)
    reader = attachment_reader(settings, streams)
    media = tuple(message_media(message, reader) for message in conversation.messages)
    return PromptFileJob(conversation, template, defaults, media)


def prompt_file_schema(prompt_file: BatchPromptFile) -> dict | None:
    spec = prompt_file.conversation.schema
    return None if spec is None else file_schema(spec, prompt_file.path)


def refuse_output_as_prompt_file(output: str | None, prompt_file: BatchPromptFile | None) -> None:
    """-o naming the -f file would empty the prompt file every record is rendered through."""
    if output is None or prompt_file is None or prompt_file.path == "-":
        return
    try:
        same = os.path.samefile(output, prompt_file.path)
    except OSError:
        return  # -o not there yet: it cannot be the prompt file
    if same:
        raise UsageError(f"the output file {output} is the prompt file -f reads; writing it would destroy it")
