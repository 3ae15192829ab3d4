"""The Typer app: flags -> option objects -> commands, and the one error boundary.

Only typer and the standard library are imported here at start-up; each command
imports what it needs when it runs, so `--help` and `--version` stay fast.
"""

import functools
import inspect
import os
import sys
from collections.abc import MutableMapping
from contextlib import contextmanager
from typing import Annotated, List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from anyfast_cli import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --- option groups shared by the commands -------------------------------------------------
# Each command names the groups it takes as parameters (`settings_flags`, `request`, `out`);
# `with_option_groups` replaces each with its flags, then packs the values back into one object.
# Each list names, in order, the fields of its dataclass (SettingFlags, RequestFlags, OutputFlags).
# They are not derived from the dataclasses, which would import their modules at start-up;
# tests/test_cli_definitions.py fails when the two drift apart.


def _option(name: str, annotation, default=None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


SETTING_OPTIONS = [
    _option(
        "api_key",
        Annotated[
            Optional[str],
            typer.Option("--api-key", metavar="KEY", help="API key (visible in `ps`: prefer ANYFAST_API_KEY)."),
        ],
    ),
    _option(
        "base_url",
        Annotated[
            Optional[str],
            typer.Option(
                "--base-url",
                metavar="URL",
                help="API base URL [env ANYFAST_BASE_URL; default https://www.anyfast.ai/v1].",
            ),
        ],
    ),
    _option(
        "model",
        Annotated[
            Optional[str],
            typer.Option(
                "-m",
                "--model",
                metavar="NAME",
                help="Model [env ANYFAST_MODEL; default doubao-seed-1-6-vision-250815].",
            ),
        ],
    ),
    _option(
        "profile",
        Annotated[
            Optional[str], typer.Option("--profile", metavar="NAME", help="Config profile [env ANYFAST_PROFILE].")
        ],
    ),
    _option(
        "config",
        Annotated[
            Optional[str],
            typer.Option(
                "--config",
                metavar="FILE",
                help="Config file [env ANYFAST_CONFIG; default $XDG_CONFIG_HOME/anyfast/config.yaml, else ~/.config/anyfast/config.yaml].",
            ),
        ],
    ),
    _option(
        "timeout",
        Annotated[
            Optional[float],
            typer.Option(
                "--timeout",
                metavar="SECONDS",
                help="Seconds to wait for the server to connect or send more [default 600; connect 10].",
            ),
        ],
    ),
    _option(
        "max_time",
        Annotated[
            Optional[float],
            typer.Option(
                "--max-time",
                metavar="SECONDS",
                help="Give up on a request (in batch: a record) after this long, every attempt and wait included; exit 4.",
            ),
        ],
    ),
    _option(
        "retries",
        Annotated[
            Optional[int],
            typer.Option(
                "--retries", metavar="N", help="Retries for 408/409/429/5xx and network failures [default 2; batch 5]."
            ),
        ],
    ),
    _option(
        "usage_log",
        Annotated[
            Optional[str],
            typer.Option(
                "--usage-log",
                metavar="FILE",
                help="Append one JSON line per request (model, tokens, cost; never text) [env ANYFAST_USAGE_LOG].",
            ),
        ],
    ),
    _option(
        "prices",
        Annotated[
            Optional[str],
            typer.Option(
                "--prices",
                metavar="FILE",
                help="Prices per million tokens by model or glob (YAML or JSON) [config prices].",
            ),
        ],
    ),
    _option(
        "budget",
        Annotated[
            Optional[float],
            typer.Option(
                "--budget",
                metavar="AMOUNT",
                help="Send nothing more once this run and the usage log have cost AMOUNT; exit 9 [config budget].",
            ),
        ],
    ),
    _option(
        "budget_tokens",
        Annotated[
            Optional[int],
            typer.Option(
                "--budget-tokens",
                metavar="N",
                help="Send nothing more once this run and the usage log have used N tokens; exit 9 [config budget_tokens].",
            ),
        ],
    ),
    _option(
        "cache",
        Annotated[
            Optional[str],
            typer.Option(
                "--cache",
                metavar="DIR",
                help="Keep complete answers in DIR and answer a repeated request from it, sending nothing [env ANYFAST_CACHE].",
            ),
        ],
    ),
    _option(
        "cache_mode",
        Annotated[
            Optional[str],
            typer.Option(
                "--cache-mode",
                metavar="rw|refresh|replay",
                help="rw: use a hit, store a miss; refresh: always ask, store; replay: hits only, no key, a miss is exit 10 [default rw; config cache_mode].",
            ),
        ],
    ),
    _option(
        "fallback",
        Annotated[
            Optional[List[str]],
            typer.Option(
                "--fallback",
                metavar="MODEL",
                help="When the model is not served, or 429/5xx/network failures outlast the retries, before any output: ask MODEL instead (repeatable, tried in order) [config fallback].",
            ),
        ],
    ),
]

REQUEST_OPTIONS = [
    _option("system", Annotated[Optional[str], typer.Option("-s", "--system", metavar="TEXT", help="System prompt.")]),
    _option(
        "max_tokens",
        Annotated[
            Optional[int],
            typer.Option("--max-tokens", metavar="N", help="Most tokens to generate (1..8192 for the default model)."),
        ],
    ),
    _option(
        "temperature",
        Annotated[
            Optional[float], typer.Option("-t", "--temperature", metavar="X", help="Sampling temperature, 0..2.")
        ],
    ),
    _option("top_p", Annotated[Optional[float], typer.Option("--top-p", metavar="X", help="Nucleus sampling, 0..1.")]),
    _option(
        "frequency_penalty",
        Annotated[Optional[float], typer.Option("--frequency-penalty", metavar="X", help="Frequency penalty, -2..2.")],
    ),
    _option(
        "presence_penalty",
        Annotated[Optional[float], typer.Option("--presence-penalty", metavar="X", help="Presence penalty, -2..2.")],
    ),
    _option(
        "stop",
        Annotated[Optional[List[str]], typer.Option("--stop", metavar="TEXT", help="Stop sequence (repeatable).")],
    ),
    _option(
        "params",
        Annotated[
            Optional[List[str]],
            typer.Option(
                "-p",
                "--param",
                metavar="KEY=VALUE",
                help="Any other body field, VALUE as JSON if it parses (repeatable).",
            ),
        ],
    ),
    _option(
        "images",
        Annotated[
            Optional[List[str]],
            typer.Option("-i", "--image", metavar="PATH|URL", help="Attach an image file or URL (repeatable)."),
        ],
    ),
    _option(
        "videos",
        Annotated[
            Optional[List[str]],
            typer.Option(
                "--video", metavar="PATH|URL", help="Attach a video file or URL, for Doubao models (repeatable)."
            ),
        ],
    ),
    _option(
        "fps",
        Annotated[Optional[float], typer.Option("--fps", metavar="N", help="Frames a second to sample from --video.")],
    ),
    _option(
        "tools",
        Annotated[
            Optional[str],
            typer.Option(
                "--tools",
                metavar="FILE",
                help="Declare tools: a JSON or YAML list of tool definitions. An answer that ends in tool calls prints one JSON line per call on stdout (its text on stderr) and exits 8.",
            ),
        ],
    ),
    _option(
        "tool_choice",
        Annotated[
            Optional[str],
            typer.Option(
                "--tool-choice", metavar="auto|none|required|NAME", help="Whether (or which declared function) to call."
            ),
        ],
    ),
]

OUTPUT_OPTIONS = [
    _option(
        "stream",
        Annotated[
            Optional[bool],
            typer.Option("--stream/--no-stream", help="Stream the answer [default: stream, except with --json]."),
        ],
    ),
    _option(
        "json",
        Annotated[bool, typer.Option("--json", help="Print the response object (JSONL chunks with --stream).")],
        False,
    ),
    _option(
        "reasoning", Annotated[bool, typer.Option("--reasoning", help="Show the model's reasoning on stderr.")], False
    ),
    _option("usage", Annotated[bool, typer.Option("--usage", help="Show token usage on stderr.")], False),
    _option(
        "verbose",
        Annotated[
            bool, typer.Option("-v", "--verbose", help="Show URL, status, request id, timings and retries on stderr.")
        ],
        False,
    ),
    _option(
        "dry_run",
        Annotated[bool, typer.Option("--dry-run", help="Print the request that would be sent; send nothing.")],
        False,
    ),
    _option(
        "markdown",
        Annotated[
            Optional[bool],
            typer.Option(
                "--markdown/--raw",
                help="Render the answer as Markdown even when stdout is no terminal (for less -R), or print it raw at a terminal [config markdown: auto|always|never; default: render at a terminal; never with NO_COLOR or TERM=dumb].",
            ),
        ],
    ),
    _option(
        "events",
        Annotated[
            bool,
            typer.Option(
                "--events",
                help="Write NDJSON events on stdout instead of the answer, for a program that supervises the run: start, reasoning, content, tool_call, retry, fallback, warning, and always one last result (`anyfast schema --events` prints their JSON Schema).",
            ),
        ],
        False,
    ),
]


SCHEMA_OPTIONS = [
    _option(
        "schema",
        Annotated[
            Optional[str],
            typer.Option(
                "--schema",
                metavar="SPEC",
                help="Ask for JSON valid for SPEC and check it: a field list 'name, year int', JSON Schema text, or @FILE (or a path with / or an extension); prints it as one line; exit 7 if invalid.",
            ),
        ],
    ),
    _option(
        "schema_multi",
        Annotated[
            Optional[str],
            typer.Option(
                "--schema-multi", metavar="SPEC", help='As --schema, for a list of such objects: {"items": [...]}.'
            ),
        ],
    ),
    _option(
        "schema_mode",
        Annotated[
            Optional[str],
            typer.Option(
                "--schema-mode",
                metavar="MODE",
                help="How to ask for JSON: auto (json_schema, then json_object, then prompt, on each 400), json_schema, json_object, prompt [config schema_mode].",
            ),
        ],
    ),
    _option(
        "repair",
        Annotated[
            Optional[int],
            typer.Option("--repair", metavar="N", help="Re-ask N times when the answer is not valid [default 1]."),
        ],
    ),
]


def _schema_flags(**values):
    """SchemaFlags, or None when no --schema option was given (schema.py then never loads)."""
    if all(value is None for value in values.values()):
        return None
    from anyfast_cli.schema import SchemaFlags

    return SchemaFlags(**values)


def _settings_flags(**values):
    from anyfast_cli.settings import SettingFlags

    return SettingFlags(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _request_flags(**values):
    from anyfast_cli.request import RequestFlags

    return RequestFlags(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if v is not None})


def _output_flags(**values):
    from anyfast_cli.commands.common import OutputFlags

    return OutputFlags(**values)


OPTION_GROUPS = {
    "settings_flags": (SETTING_OPTIONS, _settings_flags),
    "request": (REQUEST_OPTIONS, _request_flags),
    "out": (OUTPUT_OPTIONS, _output_flags),
    "schema_flags": (SCHEMA_OPTIONS, _schema_flags),
}


def with_option_groups(func):
    signature = inspect.signature(func, eval_str=True)
    parameters, groups = [], []
    for parameter in signature.parameters.values():
        if parameter.name in OPTION_GROUPS:
            options, build = OPTION_GROUPS[parameter.name]
            parameters += options
            groups.append((parameter.name, [o.name for o in options], build))
        else:
            parameters.append(parameter)

    @functools.wraps(func)
    def command(**values):
        for group, names, build in groups:
            values[group] = build(**{name: values.pop(name) for name in names})
        return func(**values)

    del command.__wrapped__  # Typer must see the expanded signature, not the original
    command.__signature__ = signature.replace(parameters=parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


# complete and chat: -n, and why it matters (the contract reads a stdin that is not a terminal).
NoStdin = Annotated[
    bool,
    typer.Option(
        "-n",
        "--no-stdin",
        help="Never read standard input. Without -n, a stdin that is not a terminal is read to its end before "
        "anything is sent: a pipe that never closes keeps the command waiting.",
    ),
]


# complete and chat: -a and -o.
Attach = Annotated[
    Optional[List[str]],
    typer.Option(
        "-a",
        "--attach",
        metavar="PATH|URL|-",
        help="Attach a file, an http(s) URL (fetched first) or stdin (-), typed by its content: text as a named "
        "block before the prompt, an image or video as a part; anything else is exit 2 (repeatable).",
    ),
]
Output = Annotated[
    Optional[str],
    typer.Option(
        "-o",
        "--output",
        metavar="FILE",
        help="Write what stdout would get to FILE, replacing it only on exit status 0 or 8; "
        "on any other status FILE is left as it was.",
    ),
]
# chat and batch: --var.
Variables = Annotated[
    Optional[List[str]],
    typer.Option(
        "--var",
        metavar="NAME=VALUE|NAME=@FILE",
        help="Set a prompt file's {NAME} to VALUE or FILE's text (repeatable); one no placeholder uses is exit 2.",
    ),
]


# --- the error boundary --------------------------------------------------------------------


def guarded(run):
    """Run a command: AnyfastError -> one `anyfast: error:` line and its exit code;
    a closed stdout -> 141 quietly; Ctrl-C -> 130; SIGTERM -> 143 and SIGHUP -> 129."""
    from anyfast_cli.errors import AnyfastError, ExitCode, Terminated
    from anyfast_cli.settings import debug_enabled
    from anyfast_cli.streams import Streams

    streams = Streams.from_sys()
    with ending_signals_interrupt():
        try:
            code = run(streams)
        except AnyfastError as exc:
            _report(exc.message, exc.hint, debug_enabled(streams.env), streams)
            code = exc.exit_code
        except BrokenPipeError:
            _silence_stdout()
            code = ExitCode.BROKEN_PIPE
        except KeyboardInterrupt as exc:
            code = exc.exit_code if isinstance(exc, Terminated) else ExitCode.INTERRUPTED
        except Exception as exc:  # a bug: still one line, the traceback only on request
            debug = debug_enabled(streams.env)
            _report(
                f"internal error: {type(exc).__name__}: {exc}",
                None if debug else "set ANYFAST_DEBUG=1 to see the traceback",
                debug,
                streams,
            )
            code = ExitCode.API
        streams.finish()
    raise typer.Exit(int(code))


# --- signals that end the program as Ctrl-C does ------------------------------------------------

ENDING_SIGNALS = ("SIGTERM", "SIGHUP")  # what timeout(1), CI cancellation and a closed terminal send


@contextmanager
def ending_signals_interrupt():
    """While a command runs, SIGTERM and SIGHUP raise Terminated, each time one comes (so a
    second one still ends a program that swallowed the first). A signal that was ignored when
    we started (`nohup` ignores SIGHUP) stays ignored. batch's event loop takes them over
    while it runs, to stop its workers at an await (commands/batch.py: until_signalled)."""
    import signal
    import threading

    from anyfast_cli.errors import Terminated

    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from there
        yield
        return

    def interrupt(signum, frame):
        raise Terminated(signum)

    previous = {}
    for name in ENDING_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _report(message: str, hint: Optional[str], debug: bool, streams=None) -> None:
    """The error line (and hint; with ANYFAST_DEBUG=1 the traceback first), through the
    streams' diagnostic writer: the key masked, control characters made visible."""
    from anyfast_cli.errors import render_error

    if streams is None:  # Click's usage errors, before any command ran
        from anyfast_cli.streams import Streams

        streams = Streams.from_sys()
    text = render_error(message, hint)
    if debug:
        import traceback

        text = traceback.format_exc() + text
    try:
        streams.note(text)
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test runner's buffer): nothing to silence


# --- exit statuses in --help ----------------------------------------------------------------


def render_exit_statuses() -> str:
    """`Exit status: 0 ok, 1 API error, …`: every ExitCode with its summary, for --help."""
    from anyfast_cli.errors import ExitCode

    return "Exit status: " + ", ".join(f"{int(code)} {code.summary}" for code in ExitCode) + "."


class ExitStatusEpilog:
    """A command whose epilog ends with `render_exit_statuses()`, rendered when the epilog is
    read (by --help or tools/gen_docs.py) rather than when the app is defined: start-up then
    does not import errors.py, which `--version` and most --help pages never need."""

    @property
    def epilog(self) -> str:
        return "\n\n".join(filter(None, [self._epilog_text, render_exit_statuses()]))

    @epilog.setter
    def epilog(self, text: Optional[str]) -> None:  # Click's __init__ sets it
        self._epilog_text = text


class ExitStatusCommand(ExitStatusEpilog, TyperCommand):
    """A command whose --help ends with the exit statuses, as batch's does."""


# The root's commands and groups by name, each a builder of its click object (_defer_building_commands).
DEFERRED_COMMANDS: dict = {}


class LazyCommands(MutableMapping):
    """A group's commands by name, each built only when it is asked for. Typer builds every
    command's click object when the app is called, reading each function's signature (~20 ms
    for all of anyfast's); a run needs only the one it runs, while `--help` and a mistyped
    name (click's suggestions) still see them all."""

    def __init__(self, builders: dict) -> None:
        self._builders = dict(builders)  # name -> () -> click command, in the order they were declared
        self._built: dict = {}

    def __getitem__(self, name: str):
        if name not in self._built:
            self._built[name] = self._builders[name]()  # KeyError: no such command
        return self._built[name]

    def __setitem__(self, name: str, command) -> None:
        self._built[name] = command
        self._builders.setdefault(name, lambda: command)

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)

    def __iter__(self):
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


class AnyfastGroup(ExitStatusEpilog, TyperGroup):
    """The root group. Its commands are built when asked for (LazyCommands); Click's own usage
    errors become one `anyfast: error:` line and exit 2."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands({**DEFERRED_COMMANDS, **self.commands})

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _refuse_undecodable_arguments(sys.argv[1:] if args is None else list(args))
        try:
            code = super().main(
                args=args, prog_name=prog_name or "anyfast", complete_var=complete_var, standalone_mode=False, **extra
            )
        except typer.Abort:
            from anyfast_cli.errors import ExitCode

            code = ExitCode.INTERRUPTED
        except Exception as exc:
            if not hasattr(exc, "format_message"):  # not a Click exception
                raise
            code = getattr(exc, "exit_code", 2)  # Click's usage errors carry 2, our ExitCode.USAGE
            if type(exc).__name__ == "NoArgsIsHelpError":  # `anyfast` alone: the help, as a usage error
                sys.stderr.write(exc.format_message() + "\n")
            else:
                context = getattr(exc, "ctx", None)
                where = context.command_path if context is not None else "anyfast"
                _report(exc.format_message(), f"see '{where} --help'", False)
        sys.exit(code or 0)


app = typer.Typer(
    cls=AnyfastGroup,
    name="anyfast",
    help="A Unix-style client for the AnyFast chat-completions gateway: answers on stdout, errors on stderr, exit codes that mean something.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)


def _show_version(value: bool) -> None:
    # Written here rather than through `guarded`, which would import the package's
    # modules (about 5 ms) just to print one line.
    if value:
        try:
            sys.stdout.write(f"anyfast {__version__}\n")
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(141) from None  # ExitCode.BROKEN_PIPE
        raise typer.Exit()


@app.callback(
    epilog="\b\nExamples:\n  echo 'Write a haiku about pipes' | anyfast complete\n  git diff | anyfast complete 'Write a commit message:'\n  anyfast chat -f talk.yaml --save talk.yaml 'And the next step?'"  # then the exit statuses (AnyfastGroup)
)
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """A Unix-style client for the AnyFast chat-completions gateway."""


COMPLETE_EXAMPLES = """\b
Examples:
  echo 'Write a haiku about pipes' | anyfast complete
  git diff | anyfast complete 'Write a commit message for this diff:'
  anyfast complete -i screenshot.png 'What is wrong on this page?'
  anyfast complete -a src/app.py -a https://example.com/spec.md 'Does the code follow the spec?'
  anyfast complete -o report.md -a build.log 'Summarise the errors:'   # report.md kept if it fails
  anyfast complete --json 'hi' | jq .usage
  while read -r q; do anyfast complete -n "$q"; done < questions.txt
  anyfast complete --tools tools.yaml 'Weather in Oslo?' | jq -r .function.arguments

\b
Tool calls: one JSON line per call on stdout ({"id","type","function":{"name","arguments"}}),
the text that came with them on stderr, exit 8.
Several choices (-p n=3): the first, then each other in index order after a line
'--- choice N ---' (streamed: the first live, the others when the answer ends).
"""


@app.command(context_settings=CONTEXT, epilog=COMPLETE_EXAMPLES)
@with_option_groups
def complete(
    prompt: Annotated[
        Optional[List[str]],
        typer.Argument(
            metavar="[PROMPT]...",
            help="The prompt; piped stdin follows it after a blank line; '-' is stdin alone.",
            show_default=False,
        ),
    ] = None,
    no_stdin: NoStdin = False,
    attach: Attach = None,
    output: Output = None,
    settings_flags=None,
    request=None,
    out=None,
    schema_flags=None,
) -> None:
    """One prompt, one answer on stdout."""

    def run(streams):
        from anyfast_cli.commands.complete import run_complete

        return run_complete(
            list(prompt or []),
            no_stdin=no_stdin,
            attach=list(attach or []),
            output=output,
            settings_flags=settings_flags,
            request=request,
            out=out,
            streams=streams,
            schema_flags=schema_flags,
        )

    guarded(run)


CHAT_EXAMPLES = """\b
Examples:
  anyfast chat -f talk.yaml 'Summarise our plan'
  anyfast chat -f talk.yaml --save talk.yaml 'And the next step?'
  printf '[{"user": "hi"}]' | anyfast chat -f -
  git diff | anyfast chat -f review --var lang=Go   # a prompt file, by name (anyfast prompts)
  anyfast chat                       # interactive, at a terminal
  anyfast chat -I -f talk.yaml --save talk.yaml   # a session seeded by a file

\b
In a session: /save FILE, /reset, /system TEXT, /help, /exit (or Ctrl-D);
Ctrl-C stops a reply, or leaves at an empty prompt; --save FILE saves after every reply.

\b
A conversation file is a list of messages, or a mapping:
  model: doubao-seed-1-6-251015      # optional
  system: You are terse.             # optional
  params: {temperature: 0.2}         # optional body fields
  messages:
    - user: What is on this picture?
      images: [photo.jpg]
    - assistant: A cat.
A prompt file also has vars: (defaults for its {name} placeholders; {input} is the prompt),
and may have description: and schema:. More in: anyfast prompts --help
"""


@app.command(context_settings=CONTEXT, epilog=CHAT_EXAMPLES)
@with_option_groups
def chat(
    prompt: Annotated[
        Optional[List[str]],
        typer.Argument(
            metavar="[PROMPT]...", help="Appended as a final user message (also from piped stdin).", show_default=False
        ),
    ] = None,
    messages_file: Annotated[
        Optional[str],
        typer.Option(
            "-f",
            "--messages",
            metavar="FILE|NAME",
            help="Conversation or prompt file, YAML or JSON ('-' for stdin); a NAME is looked up in the prompt "
            "directories (see anyfast prompts).",
        ),
    ] = None,
    save: Annotated[
        Optional[str],
        typer.Option("--save", metavar="FILE", help="Write the conversation with the reply to FILE (atomically)."),
    ] = None,
    no_stdin: NoStdin = False,
    interactive: Annotated[
        bool, typer.Option("-I", "--interactive", help="Start an interactive session, seeded by -f FILE if given.")
    ] = False,
    tool_results: Annotated[
        Optional[List[str]],
        typer.Option(
            "--tool-result",
            metavar="ID=TEXT|ID=@FILE",
            help="Answer the tool call ID (from the file's last reply) with TEXT or FILE's content (repeatable).",
        ),
    ] = None,
    variables: Variables = None,
    attach: Attach = None,
    output: Output = None,
    settings_flags=None,
    request=None,
    out=None,
    schema_flags=None,
) -> None:
    """A conversation: messages from a file, the reply appended and saved.
    At a terminal with no file and no prompt: an interactive session."""

    def run(streams):
        from anyfast_cli.commands.chat import run_chat

        return run_chat(
            list(prompt or []),
            messages_file=messages_file,
            save=save,
            no_stdin=no_stdin,
            interactive=interactive,
            tool_results=list(tool_results or []),
            variables=list(variables or []),
            attach=list(attach or []),
            output=output,
            settings_flags=settings_flags,
            request=request,
            out=out,
            streams=streams,
            schema_flags=schema_flags,
        )

    guarded(run)


BATCH_EXAMPLES = """\b
Examples:
  anyfast batch prompts.jsonl -o answers.jsonl -j 64 --rpm 3000 --resume
  cut -f2 questions.tsv | anyfast batch --lines > answers.jsonl
  anyfast batch reviews.jsonl --template 'Summarise: {text}' -o summaries.jsonl
  anyfast batch diffs.jsonl -f review --var lang=Go -o reviews.jsonl   # each record's fields fill it
  anyfast batch big.jsonl --shard 2/4 -o part2.jsonl      # the 2nd of 4 machines
  anyfast batch prompts.jsonl --dry-run > openai-batch-input.jsonl

\b
Input lines: "a prompt" | {"prompt": ..., "system"?: ...} | {"messages": [...]}
  | {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}};
  other body fields on a line (model, temperature, ...) override the flags for it.

After Ctrl-C, kill -9 or failed records, the same command with --resume runs the rest.
"""


@app.command(cls=ExitStatusCommand, context_settings=CONTEXT, epilog=BATCH_EXAMPLES)
@with_option_groups
def batch(
    input: Annotated[
        Optional[str],
        typer.Argument(metavar="[INPUT]", help="JSONL input file; stdin when omitted or '-'.", show_default=False),
    ] = None,
    output: Annotated[
        Optional[str], typer.Option("-o", "--output", metavar="FILE", help="Write results to FILE instead of stdout.")
    ] = None,
    lines: Annotated[bool, typer.Option("--lines", help="Read each line as a plain-text prompt.")] = False,
    template: Annotated[
        Optional[str],
        typer.Option(
            "--template",
            metavar="TEXT",
            help="Build each prompt from the record's fields: 'Summarise: {text}' ({text}: the whole line; {{ and }}: literal braces; nothing else in braces).",
        ),
    ] = None,
    messages_file: Annotated[
        Optional[str],
        typer.Option(
            "-f",
            "--messages",
            metavar="FILE|NAME",
            help="Render every record through this prompt file: an object's fields are its variables (its prompt "
            "is {input}); a JSON string or a --lines line is {input}.",
        ),
    ] = None,
    variables: Variables = None,
    ordered: Annotated[
        bool, typer.Option("--ordered", help="Write results in input order (default: as they complete).")
    ] = False,
    concurrency: Annotated[
        int, typer.Option("-j", "--concurrency", metavar="N", help="Requests in flight at once.")
    ] = 8,
    rpm: Annotated[
        Optional[float], typer.Option("--rpm", metavar="N", help="At most N requests a minute, spread evenly.")
    ] = None,
    tpm: Annotated[
        Optional[float], typer.Option("--tpm", metavar="N", help="At most about N tokens a minute (estimated).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep the answered records in -o FILE and run only the rest.")
    ] = False,
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard",
            metavar="K/N",
            help="Run only records whose index i has i mod N = K-1; 'auto' (or auto/N) takes K/N from CI parallel jobs, a Slurm array or a Kubernetes Indexed Job.",
        ),
    ] = None,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress bar (it shows only on a terminal anyway).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate, then print each request as an OpenAI Batch input line (with --resume: those it would still send). Never writes over a results file.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show each retry and its reason on stderr.")] = False,
    fail_on_tool_calls: Annotated[
        bool,
        typer.Option(
            "--fail-on-tool-calls",
            help="A record answered with tool calls is a failed record (error.code tool_calls); by default it is answered, its body holding them.",
        ),
    ] = False,
    settings_flags=None,
    request=None,
    schema_flags=None,
) -> None:
    """Many requests from JSONL, concurrently, resumably; one result line per record."""

    def run(streams):
        from anyfast_cli.commands.batch import BatchFlags, run_batch

        flags = BatchFlags(
            input=input,
            output=output,
            plain_lines=lines,
            template=template,
            messages_file=messages_file,
            variables=tuple(variables or ()),
            ordered=ordered,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            resume=resume,
            shard=shard,
            progress=not no_progress,
            dry_run=dry_run,
            verbose=verbose,
            fail_on_tool_calls=fail_on_tool_calls,
        )
        return run_batch(
            flags, settings_flags=settings_flags, request=request, streams=streams, schema_flags=schema_flags
        )

    guarded(run)


SCHEMA_EXAMPLES = """\b
Examples:
  anyfast schema 'title, year int, rating float, tags list: keywords'
  anyfast schema 'name, email' > contact.schema.json
  anyfast complete --schema @contact.schema.json 'Extract: ...' | jq -r .email
  anyfast schema --events > events.schema.json
"""


@app.command("schema", cls=ExitStatusCommand, context_settings=CONTEXT, epilog=SCHEMA_EXAMPLES)
def schema_command(
    spec: Annotated[
        Optional[str],
        typer.Argument(
            metavar="SPEC",
            help="A field list ('name, year int: the year'), JSON Schema text, or @FILE (JSON or YAML; a path with / or an extension works too).",
            show_default=False,
        ),
    ] = None,
    multi: Annotated[
        bool, typer.Option("--multi", help='The schema --schema-multi makes: {"items": [objects of SPEC]}.')
    ] = False,
    events: Annotated[
        bool, typer.Option("--events", help="Print the JSON Schema of --events lines instead (no SPEC).")
    ] = False,
) -> None:
    """Print the JSON Schema a --schema SPEC makes (types: str, int, float, bool, list of them),
    or with --events the one that --events lines follow."""

    def run(streams):
        from anyfast_cli.commands.schema_answer import run_schema

        return run_schema(spec, multi=multi, events=events, streams=streams)

    guarded(run)


USAGE_EXAMPLES = """\b
Examples:
  anyfast usage                                  # the configured usage log (--usage-log, ANYFAST_USAGE_LOG)
  anyfast usage ~/.local/state/anyfast/usage.jsonl --by day --since 7d
  anyfast usage ci-usage.jsonl --by model --json | jq '.[].cost'
"""


@app.command("usage", context_settings=CONTEXT, epilog=USAGE_EXAMPLES)
@with_option_groups
def usage_command(
    files: Annotated[
        Optional[List[str]],
        typer.Argument(
            metavar="[FILE]...", help="Usage logs to total [default: the configured usage log].", show_default=False
        ),
    ] = None,
    by: Annotated[
        Optional[str],
        typer.Option(
            "--by", metavar="model|day|command|profile", help="One row per model, UTC day, command or profile."
        ),
    ] = None,
    since: Annotated[
        Optional[str],
        typer.Option("--since", metavar="DURATION|DATE", help="Only requests since then: 7d, 12h, 30m, 2026-12-01."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as a JSON array.")] = False,
    settings_flags=None,
) -> None:
    """Total what the usage log says was spent: requests, tokens, cost (per currency)."""

    def run(streams):
        from anyfast_cli.commands.common import load_settings
        from anyfast_cli.commands.usage import run_usage

        log = None if files else load_settings(settings_flags, streams).usage_log
        return run_usage(files or [], by=by, since=since, as_json=as_json, log_setting=log, streams=streams)

    guarded(run)


MODELS_EXAMPLES = """\b
Examples:
  anyfast models
  anyfast models 'doubao-*'
  anyfast models --check doubao-seed-1-6-251015 --check glm-4-7-251222 || exit 1
"""


@app.command("models", context_settings=CONTEXT, epilog=MODELS_EXAMPLES)
@with_option_groups
def models_command(
    pattern: Annotated[
        Optional[str],
        typer.Argument(
            metavar="[PATTERN]",
            help="Only ids matching this glob ('doubao-*') or containing this text.",
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        Optional[List[str]],
        typer.Option(
            "--check", metavar="MODEL", help="Exit 1, naming each, unless every MODEL is served (repeatable)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the response object as received.")] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Show URL, status and request id on stderr.")
    ] = False,
    settings_flags=None,
) -> None:
    """List the models the gateway serves to this key (GET /models), one id per line."""

    def run(streams):
        from anyfast_cli.commands.common import OutputFlags, load_settings
        from anyfast_cli.commands.models import run_models

        settings = load_settings(settings_flags, streams)
        return run_models(
            pattern,
            check=check or [],
            as_json=as_json,
            settings=settings,
            out=OutputFlags(verbose=verbose),
            streams=streams,
        )

    guarded(run)


PromptsConfig = Annotated[
    Optional[str],
    typer.Option(
        "--config",
        metavar="FILE",
        help="The config file beside which prompts/ is searched [env ANYFAST_CONFIG; default "
        "$XDG_CONFIG_HOME/anyfast/config.yaml, else ~/.config/anyfast/config.yaml].",
    ),
]

PROMPTS_EXAMPLES = """\b
Examples:
  anyfast prompts
  anyfast prompts --json | jq -r '.[].path'
  anyfast prompts show review
  git diff | anyfast chat -f review --var lang=Go

\b
Prompt files are looked up, first found wins, as NAME.yaml, NAME.yml or NAME.json in each
directory of ANYFAST_PROMPTS_PATH (colon-separated), then ./.anyfast/prompts/, then prompts/
beside the config file. A prompt file is a conversation file (chat -f) with a vars: key:
  description: Review a diff
  vars: {lang: Python}              # defaults; --var lang=Go overrides
  schema: 'verdict, issues list'    # optional, as --schema
  messages:
    - system: You review {lang} code.
    - user: "Review this diff:\\n{input}"   # {input}: the prompt and stdin
"""


def command_group(name: str, help: str, epilog: str, **options) -> typer.Typer:
    """A group of subcommands under the root (`anyfast NAME ...`), written as the root's are."""
    group = typer.Typer(
        name=name,
        help=help,
        epilog=epilog,
        rich_markup_mode=None,
        context_settings=CONTEXT,
        **{"no_args_is_help": True, **options},
    )
    app.add_typer(group)
    return group


prompts_app = command_group(
    "prompts",
    "List the prompt files that -f NAME finds (NAME, then its description).",
    PROMPTS_EXAMPLES,
    invoke_without_command=True,
    no_args_is_help=False,
)


@prompts_app.callback(invoke_without_command=True)
def prompts_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of {name, path, description}.")] = False,
    config: PromptsConfig = None,
) -> None:
    """List the prompt files that -f NAME finds (NAME, then its description)."""
    if ctx.invoked_subcommand is not None:
        return

    def run(streams):
        from anyfast_cli.commands.prompts import run_prompts

        return run_prompts(config=config, as_json=as_json, streams=streams)

    guarded(run)


@prompts_app.command(
    "show",
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  anyfast prompts show review\n  anyfast prompts show review > my-review.yaml",
)
def prompts_show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A prompt's name (or a file).", show_default=False)],
    config: PromptsConfig = None,
) -> None:
    """Print the prompt file that -f NAME would read."""

    def run(streams):
        from anyfast_cli.commands.prompts import run_prompts_show

        return run_prompts_show(name, config=config, streams=streams)

    guarded(run)


config_app = command_group(
    "config",
    "Show which config file and settings are in force.",
    "\b\nExamples:\n  anyfast config path\n  anyfast config show\n  anyfast config show --profile local --json",
)


@config_app.command(
    "path",
    context_settings=CONTEXT,
    epilog='\b\nExamples:\n  anyfast config path\n  ${EDITOR:-vi} "$(anyfast config path)"',
)
@with_option_groups
def config_path(settings_flags=None) -> None:
    """Print the config file in use (it need not exist)."""

    def run(streams):
        from anyfast_cli.commands.config import run_config_path

        return run_config_path(settings_flags, streams)

    guarded(run)


@config_app.command(
    "show",
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  anyfast config show\n  anyfast config show --profile local --json | jq -r .model.value",
)
@with_option_groups
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print the settings as a JSON object.")] = False,
    settings_flags=None,
) -> None:
    """Print the effective settings and their sources (key redacted)."""

    def run(streams):
        from anyfast_cli.commands.config import run_config_show

        return run_config_show(settings_flags, as_json=as_json, streams=streams)

    guarded(run)


cache_app = command_group(
    "cache",
    "Look after a response cache (--cache DIR): its size, and removing old entries.",
    "\b\nExamples:\n  anyfast cache stats ~/.cache/anyfast\n  anyfast cache prune --older-than 30d",
)

CacheDir = Annotated[
    Optional[str],
    typer.Argument(
        metavar="[DIR]",
        help="The cache directory [default: the configured one: --cache, ANYFAST_CACHE, cache].",
        show_default=False,
    ),
]


@cache_app.command(
    "stats",
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  anyfast cache stats ~/.cache/anyfast\n  anyfast cache stats | awk '$1 == \"bytes\" {print $2}'",
)
@with_option_groups
def cache_stats(directory: CacheDir = None, settings_flags=None) -> None:
    """Print the entries, their bytes, and the oldest and newest entry's time (name<TAB>value lines)."""

    def run(streams):
        from anyfast_cli.commands.cache import cache_directory, run_cache_stats
        from anyfast_cli.commands.common import load_settings

        configured = None if directory else load_settings(settings_flags, streams).cache
        return run_cache_stats(cache_directory(directory, configured), streams=streams)

    guarded(run)


@cache_app.command(
    "prune",
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  anyfast cache prune ~/.cache/anyfast --older-than 30d\n  anyfast cache prune --older-than 12h",
)
@with_option_groups
def cache_prune(
    directory: CacheDir = None,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Remove the entries last written longer ago than this: 30d, 12h, 30m, 2w, 0s (all).",
        ),
    ] = ...,
    settings_flags=None,
) -> None:
    """Remove the entries older than DURATION (by modification time); print how many were removed."""

    def run(streams):
        from anyfast_cli.commands.cache import cache_directory, run_cache_prune
        from anyfast_cli.commands.common import load_settings

        configured = None if directory else load_settings(settings_flags, streams).cache
        return run_cache_prune(cache_directory(directory, configured), older_than=older_than, streams=streams)

    guarded(run)


def _defer_building_commands() -> None:
    """Take the root's commands and groups out of typer's eager build: each is built by
    AnyfastGroup's LazyCommands, with the same typer functions, when it is asked for."""
    options = {"pretty_exceptions_short": app.pretty_exceptions_short, "rich_markup_mode": app.rich_markup_mode}
    for info in app.registered_commands:
        name = info.name or typer.main.get_command_name(info.callback.__name__)
        DEFERRED_COMMANDS[name] = functools.partial(typer.main.get_command_from_info, info, **options)
    for info in app.registered_groups:
        name = typer.main.solve_typer_info_defaults(info).name
        DEFERRED_COMMANDS[name] = functools.partial(
            typer.main.get_group_from_info, info, suggest_commands=app.suggest_commands, **options
        )
    app.registered_commands, app.registered_groups = [], []


_defer_building_commands()


class _ClosedStdout:
    """Stands in for a closed stdout (`>&-`): the first write ends the program as a
    closed pipe does (141), instead of crashing on None."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "standard output is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def main() -> None:
    if sys.stderr is None:  # `2>&-`: errors have nowhere to go, but exit codes still tell
        sys.stderr = open(os.devnull, "w")
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    app()


def _refuse_undecodable_arguments(arguments: List[str]) -> None:
    """Python hands bytes that are not UTF-8 over as lone surrogates; no prompt, path or
    value may carry them further (exit 2 before anything is read or sent). The one check of
    arguments: every way in (the script, python -m, an in-process runner) passes
    AnyfastGroup.main, so the commands never meet such an argument."""
    for argument in arguments:
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            shown = argument.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            _report(f"an argument is not valid UTF-8: {shown[:80]}", "anyfast takes its arguments as UTF-8 text", False)
            sys.exit(2)  # ExitCode.USAGE
