"""What complete and chat share: settings with their I/O, the API key, body fields,
and one request-and-render exchange."""

from __future__ import annotations

import functools
import os
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass

from anyfast_cli.errors import AuthError, UsageError
from anyfast_cli.exchange import Reply
from anyfast_cli.inputs import parse_param
from anyfast_cli.meter import Meter
from anyfast_cli.output import (
    ChunkLines,
    TextPrinter,
    print_json,
    print_usage,
    wants_markdown,
)
from anyfast_cli.reading import read_document, read_text_file
from anyfast_cli.request import RequestFlags, build_body, check_fields, describe_request, flag_fields
from anyfast_cli.result import RequestContext
from anyfast_cli.settings import (
    KeySource,
    SettingFlags,
    Settings,
    columns_from_env,
    config_holds_key,
    config_path,
    parse_config,
    profile_label,
    resolve_settings,
    untrusted_command_problem,
)
from anyfast_cli.streams import Streams


@dataclass(frozen=True)
class OutputFlags:
    stream: bool | None = None  # None: stream text, but not --json
    json: bool = False
    reasoning: bool = False
    usage: bool = False
    verbose: bool = False
    dry_run: bool = False
    markdown: bool | None = None  # --markdown / --raw; None: the config's `markdown` decides
    events: bool = False  # --events: NDJSON events on stdout instead of the answer

    @property
    def streaming(self) -> bool:
        return self.stream if self.stream is not None else not self.json


def check_output_flags(out: OutputFlags, output: str | None = None) -> None:
    """Combinations that cannot both have stdout: exit 2 before anything is read or sent."""
    if out.events:
        for given, flag in ((out.json, "--json"), (out.dry_run, "--dry-run"), (output is not None, "-o")):
            if given:
                raise UsageError(f"--events and {flag} cannot be used together: both want stdout")


def observed_command(run):
    """complete and chat: --events checked against the other flags, and the run observed
    (`observed`) however it ends."""

    @functools.wraps(run)
    def command(*args, out: OutputFlags, streams: Streams, output: str | None = None, **kwargs):
        check_output_flags(out, output)
        with observed(out, streams):
            return run(*args, out=out, streams=streams, output=output, **kwargs)

    return command


@contextmanager
def observed(out: OutputFlags, streams: Streams):
    """The command's run, told by its observer (events.py): -v details with --verbose, and with
    --events JSON lines on stdout that end, however the command ends (a failure, Ctrl-C,
    SIGTERM), with exactly one `result` event."""
    observer = streams.observer
    observer.verbose = out.verbose
    if out.events:
        from anyfast_cli.events import EventLines

        observer.lines = EventLines(streams.stdout)
    try:
        yield observer
    except BaseException as exc:
        try:
            observer.finish(exc)
        except (OSError, ValueError):
            pass  # stdout is closed: the status alone can tell
        raise
    observer.finish(None)


def read_config(flags: SettingFlags, streams: Streams) -> tuple[dict, str]:
    """The parsed config file and its path; a missing default file is an empty config."""
    path, origin = config_path(flags.config, streams.env)
    try:
        text, info = read_document(path, "a config file")  # bounded: ANYFAST_CONFIG=/dev/zero is refused
    except FileNotFoundError:
        if origin != "default":  # a file the user named must exist
            raise UsageError(f"config file {path} does not exist") from None
        return {}, path
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    config = parse_config(text, path)
    # Refused (exit 2, as any config that cannot be used): whoever can change this file can run
    # commands as the user. Not 3: no key was looked at, and the fix is the file's mode or owner.
    user = os.geteuid()
    problem = untrusted_command_problem(config, info.st_mode, info.st_uid, user)
    if problem:
        fix = (
            f"chmod go-w {path}"
            if info.st_uid in (user, 0)
            else f"copy it to a file of your own, or chown {user} {path}"
        )
        raise UsageError(
            f"{path} holds api_key_command, and {problem}; refusing to run it",
            hint=f"{fix} (ssh refuses such files too)",
        )
    if config_holds_key(config) and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        streams.warn(f"{path} holds an API key and others can read it; run: chmod 600 {path}")
    return config, path


def load_settings(
    flags: SettingFlags, streams: Streams, *, default_retries: int = 2, file_model: str | None = None
) -> Settings:
    config, path = read_config(flags, streams)
    return resolve_settings(
        flags,
        streams.env,
        config,
        path=path,
        default_retries=default_retries,
        file_model=file_model,
        prices_file=read_prices(flags.prices) if flags.prices else None,
    )


def read_prices(path: str) -> tuple:
    """--prices FILE: its data (YAML or JSON) and its name, for errors."""
    from anyfast_cli.inputs import load_structured

    return load_structured(read_text_file(path, "a prices file", "--prices: "), path), path


def resolve_api_key(source: KeySource | None, env) -> str:
    """The key itself; runs `api_key_command` only now, when a request is about to be sent."""
    hint = "set ANYFAST_API_KEY, or api_key / api_key_env / api_key_command in the config"
    if source is None:
        raise AuthError("no API key", hint=hint)
    if source.kind == "value":
        return source.value
    if source.kind == "env":
        if not env.get(source.value):
            raise AuthError(f"no API key: the config's api_key_env names {source.value}, which is not set", hint=hint)
        return env[source.value]
    from anyfast_cli.keycommand import KeyCommandFailed, run_key_command  # subprocess loads only for it

    try:
        output, status = run_key_command(source.value)  # its stderr (a prompt, an error) is the user's
        text = output.decode("utf-8")
    except KeyCommandFailed as exc:
        raise AuthError(f"api_key_command {exc.reason}", hint=hint) from None
    except UnicodeDecodeError:
        raise AuthError(
            "api_key_command printed bytes that are not UTF-8 text; it should print the key", hint=hint
        ) from None
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if status != 0 or not key:
        detail = (
            (f"killed by signal {-status}" if status < 0 else f"exit status {status}")
            if status
            else "it printed nothing"
        )
        raise AuthError(f"api_key_command gave no key ({detail}; its own messages, if any, are above)", hint=hint)
    return key


def body_fields(settings: Settings, request: RequestFlags, file_params: dict | None = None) -> dict:
    """Body fields by rank: profile < conversation file < -p < dedicated flags; ranges checked."""
    try:
        check_fields(settings.body_defaults, settings.model)
    except UsageError as exc:
        exc.message = f"{profile_label(settings.profile, settings.config_path)}: {exc.message}"
        raise
    params = dict(parse_param(p) for p in request.params)
    fields = {**settings.body_defaults, **(file_params or {}), **flag_fields(request, params)}
    if request.tools is not None:
        fields["tools"] = read_tools(request.tools)
    if request.tool_choice is not None:
        fields["tool_choice"] = tool_choice_value(request.tool_choice, fields.get("tools"))
    check_fields(fields, settings.model)
    return fields


TOOL_CHOICES = ("auto", "none", "required")


def read_tools(path: str) -> list[dict]:
    """--tools FILE: a JSON or YAML list of OpenAI tool definitions (or a mapping with `tools`)."""
    from anyfast_cli.documents import load_structured

    return check_tools(load_structured(read_text_file(path, "a tools file"), path), path)


def check_tools(data, source: str) -> list[dict]:
    """Tool definitions as the API takes them; a bare function ({name, parameters}) is wrapped."""
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise UsageError(f"{source}: expected a list of tool definitions")
    tools = []
    for number, tool in enumerate(data, 1):
        if isinstance(tool, dict) and "type" not in tool and isinstance(tool.get("name"), str):
            tool = {"type": "function", "function": tool}
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or (
            tool.get("type") == "function"
            and not (isinstance(function, dict) and isinstance(function.get("name"), str))
        ):
            raise UsageError(
                f"{source}: tool {number} is not a tool definition like {{type: function, function: {{name: …}}}}"
            )
        tools.append(tool)
    return tools


def tool_names(tools) -> list[str]:
    return [t["function"]["name"] for t in tools or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]


def tool_choice_value(choice, tools) -> str | dict:
    """--tool-choice: auto, none, required, or the name of a declared function."""
    if isinstance(choice, dict):
        return choice
    if not tools:
        raise UsageError("--tool-choice needs tools: give --tools FILE (or tools: in the conversation file)")
    if choice in TOOL_CHOICES:
        return choice
    names = tool_names(tools)
    if choice not in names:
        raise UsageError(
            f"--tool-choice {choice!r}: expected auto, none, required or a declared function ({', '.join(names)})"
        )
    return {"type": "function", "function": {"name": choice}}


def exchange(
    settings: Settings,
    messages: list[dict],
    fields: dict,
    out: OutputFlags,
    streams: Streams,
    *,
    keep_text: bool = True,
    command: str = "complete",
    deadline: float | None = None,
) -> Reply | None:
    """Send one request and render its answer; None for --dry-run. The reply keeps its text
    only with `keep_text` (for --save): otherwise memory does not grow with a streamed answer.
    `deadline`: the --max-time deadline already running (URL attachments were fetched under it)."""
    body = build_body(settings.model, messages, fields, stream=out.streaming, include_usage=asks_usage(settings, out))
    if out.dry_run:
        print_request(settings, body, streams)
        return None
    with open_client(settings, out, streams, command=command, deadline=deadline) as client:
        return render_answer(
            client, body, out, streams, Reply(keep_text=keep_text), markdown=answers_in_markdown(settings, out, streams)
        )


def answers_in_markdown(settings: Settings, out: OutputFlags, streams: Streams) -> bool:
    """Decided once per command: text output rendered as Markdown (never --json, --events, or into -o FILE)."""
    return (
        not out.json
        and not out.events
        and not streams.stdout_is_file
        and wants_markdown(out.markdown, settings.markdown, stdout_isatty=streams.stdout_isatty, env=streams.env)
    )


def print_request(settings: Settings, body: dict, streams: Streams) -> None:
    """--dry-run: the request that would be sent (the key redacted), on stdout."""
    print_json(
        describe_request(settings.base_url, body),
        streams.stdout,
        terminal=streams.stdout_isatty,
        color=streams.stdout_color,
    )


def asks_usage(settings: Settings, out: OutputFlags) -> bool:
    """Whether a streamed request asks the server for usage: for --usage, --events' result, a usage
    log or a budget."""
    return out.usage or out.events or bool(settings.usage_log) or bool(settings.budget)


def open_meter(settings: Settings, streams: Streams, command: str, models=()) -> Meter:
    """The command's meter, before anything is sent: a usage log that cannot be written, or a
    money budget with a model that has no price (the fallback models' included), is exit 2 now."""
    meter = Meter(
        RequestContext(command, settings.profile, settings.prices),
        log_path=settings.usage_log,
        limits=settings.budget,
        warn=streams.warn,
    )
    meter.check_models([settings.model, *models, *settings.fallback])
    return meter


@contextmanager
def open_client(
    settings: Settings, out: OutputFlags, streams: Streams, *, command: str | None = None, deadline: float | None = None
):
    """A client for these settings. With a `command`, its requests are metered (usage log,
    budget) and, with a cache configured, answered from it when they can be (cached.py);
    without one (`anyfast models`), neither. The key is resolved once, only when a request
    must really be sent, and masked in everything written from then on. Retries, fallbacks
    and -v details are told to the streams' observer (prose, and --events). `deadline`: the
    --max-time deadline already running, which the first request keeps (ApiClient)."""
    observer = streams.observer
    observer.verbose = out.verbose
    if command:
        observer.open(RequestContext(command, settings.profile, settings.prices), settings.model)
    meter = open_meter(settings, streams, command) if command else None
    key_origin = settings.key.origin if settings.key is not None else "nowhere (none set)"
    observer.detail(
        f"settings: profile {settings.profile}, model from {settings.origins.get('model')}, key from {key_origin}"
        + (f", fallback {', '.join(settings.fallback)}" if settings.fallback else "")
    )

    def connect(cache: str | None = None):
        waited = time.monotonic()
        api_key = resolve_api_key(settings.key, streams.env)
        waited = time.monotonic() - waited  # waiting for api_key_command (a PIN, say) is not the request's time
        streams.hide(api_key)
        from anyfast_cli.client import ApiClient  # httpx loads only when something is sent

        return ApiClient(
            base_url=settings.base_url,
            api_key=api_key,
            timeout=settings.timeout,
            retries=settings.retries,
            max_time=settings.max_time,
            env=streams.env,
            meter=meter,
            cache=cache,
            observer=observer,
            fallback=settings.fallback,
            deadline=deadline + waited if deadline is not None else None,
        )

    try:
        if settings.cache is not None and command:
            from anyfast_cli.cache import ResponseCache
            from anyfast_cli.cached import CachedClient

            cache = ResponseCache.open(settings.cache, settings.cache_mode, warn=streams.warn)
            client = CachedClient(
                cache,
                settings.base_url,
                lambda: connect(cache="miss"),
                meter=meter,
                observer=observer,
                mask=streams.redactor.mask,
            )
        else:
            client = connect()
        with client:
            yield client
    finally:
        if meter is not None:
            meter.close()


def show_whole(data: dict, printer: TextPrinter, out: OutputFlags, streams: Streams) -> None:
    """A whole answer: its text (or tool calls, their text on stderr) and every other choice,
    or with --json the object as received."""
    printer.feed_chunk(data)
    printer.end_lines()
    printer.end_choices()
    if out.json:
        print_json(data, streams.stdout, terminal=streams.stdout_isatty, color=streams.stdout_color)


def answer_printer(
    reply: Reply, out: OutputFlags, streams: Streams, *, hold: bool, markdown: bool = False
) -> TextPrinter:
    if out.events:  # the answer as events; Markdown never applies to them
        from anyfast_cli.answer_events import AnswerEvents

        return AnswerEvents(reply, streams.observer.lines.emit, streams.redactor)
    opener = None
    if markdown and not out.json:
        from anyfast_cli.markdown import writer_opener  # only when rendering: the raw path never loads it

        opener = writer_opener(
            streams.stdout,
            terminal=streams.stdout_isatty,
            env=streams.env,
            mask=streams.redactor.mask,
            columns=columns_from_env(streams.env),
        )
    return TextPrinter(
        streams.stdout,
        streams.stderr,
        reply,
        show_reasoning=out.reasoning,
        dim=streams.stderr_color,
        echo=not out.json,
        out_terminal=streams.stdout_isatty,
        err_terminal=streams.stderr_isatty,
        hold=hold,
        markdown=opener,
    )


def render_answer(
    client, body: dict, out: OutputFlags, streams: Streams, reply: Reply | None = None, *, markdown: bool = False
) -> Reply:
    """Send `body` and render the answer, collecting it into `reply`, which keeps what
    arrived even when the stream is cut or interrupted; with `markdown`, its text rendered."""
    reply = reply if reply is not None else Reply()
    reply.mask = streams.redactor.mask  # the text kept for --save, should the answer echo the key
    # A whole answer is known at once; a streamed one is held only when tools were declared, as it
    # may end in tool calls, and then its text belongs on stderr (printed when the answer ends).
    hold = not out.streaming or bool(body.get("tools"))
    # With --json the objects are the output: the printer only collects the text (and shows reasoning).
    printer = answer_printer(reply, out, streams, hold=hold, markdown=markdown)
    if out.streaming:
        lines = ChunkLines(streams.stdout, streams.redactor, terminal=streams.stdout_isatty) if out.json else None
        try:
            for chunk in client.stream(body):
                printer.feed_chunk(chunk)
                if lines:
                    lines.feed(chunk)
        except BrokenPipeError:
            raise
        except BaseException:
            if lines:
                lines.finish()
            printer.end_lines(complete=False)  # keep what was printed, and end its line
            raise
        if lines:
            lines.finish()
        printer.end_lines()
        printer.end_choices()
        if reply.finish_reason is None:  # new-api ends a stream cut upstream with [DONE], hiding the cut
            streams.warn("the stream ended without a finish_reason; the answer may be incomplete")
    else:
        show_whole(client.send(body), printer, out, streams)
    if reply.cut_at_limit and not out.json:  # --json shows finish_reason itself
        streams.warn("the answer stopped at the token limit (finish_reason: length); raise --max-tokens for more")
    if out.usage:
        print_usage(reply.usage, streams.note, client.last_result)
    return reply
