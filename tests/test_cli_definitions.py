"""What cli.py declares agrees with what the rest of the package defines.

- The option groups are written twice: Typer parameters in cli.py, and the dataclasses
  SettingFlags, RequestFlags and OutputFlags, which cli.py may not import at start-up.
- The exit statuses are written once, in ExitCode (errors.py), and rendered into `--help`, the
  man page and README.md: a new member must show up in each of them.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from helpers import load_gen_docs
from typer.testing import CliRunner

from anyfast_cli import cli, errors
from anyfast_cli.errors import ExitCode

gen_docs = load_gen_docs(reuse=True)


# --- option groups ---------------------------------------------------------------------------


def built_from_defaults(group: str):
    """The group's flags built from its options' defaults, and their dataclass. A group that
    builds None when none of its options is given (schema_flags: schema.py then never loads)
    names its dataclass when one is."""
    options, build = cli.OPTION_GROUPS[group]
    flags = build(**{option.name: option.default for option in options})
    if flags is None:
        return None, type(build(**{option.name: "x" for option in options}))
    return flags, type(flags)


@pytest.mark.parametrize("group", sorted(cli.OPTION_GROUPS))
def test_option_group_has_the_fields_of_its_dataclass(group):
    """Name for name, in order; and the options' defaults build the dataclass's defaults
    (or None, where every default is None: nothing was given)."""
    options, _ = cli.OPTION_GROUPS[group]
    flags, flags_class = built_from_defaults(group)
    assert [option.name for option in options] == [field.name for field in dataclasses.fields(flags_class)], (
        f"cli.py's options for {group!r} and {flags_class.__name__} have drifted apart"
    )
    if flags is None:
        assert all(value is None for value in dataclasses.astuple(flags_class()))
    else:
        assert flags == flags_class()


def test_option_groups_cover_their_dataclasses():
    built = {built_from_defaults(group)[1].__name__ for group in cli.OPTION_GROUPS}
    assert built == {"SettingFlags", "RequestFlags", "OutputFlags", "SchemaFlags"}


# --- exit statuses -------------------------------------------------------------------------


def test_every_exit_code_has_a_summary_and_a_description():
    for code in ExitCode:
        assert code.summary.strip() and "," not in code.summary, code  # a comma would split the --help list
        assert code.description.strip().endswith("."), code


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli.app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # as one line: Click wraps the epilog to the terminal


def _man_exit_status() -> str:
    return "\n".join(gen_docs._man_exit_status())


def _readme_exit_status() -> str:
    return gen_docs.render_exit_status_table()


def _renderings() -> dict[str, str]:
    """Every place that shows the exit statuses, rendered now."""
    return {
        "anyfast --help": _help(),
        "anyfast batch --help": _help("batch"),
        "man page": _man_exit_status(),
        "README.md": _readme_exit_status(),
    }


def _expected(code, where: str) -> str:
    if where.endswith("--help"):
        return f"{int(code)} {code.summary}"
    if where == "man page":
        return f"\\fB{int(code)}\\fR\n{gen_docs.roff(code.description)}"
    return f"| {int(code)} | {gen_docs._markdown_cell(code.description)} |"


def test_every_exit_status_is_rendered_everywhere():
    for where, text in _renderings().items():
        missing = [code.name for code in ExitCode if _expected(code, where) not in text]
        assert not missing, f"{where} does not show {missing}"


class _Code(int):
    """A member that ExitCode does not have yet, with the attributes its members have."""

    def __new__(cls, value: int, summary: str, description: str):
        code = super().__new__(cls, value)
        code.name, code.summary, code.description = f"CODE_{value}", summary, description
        return code


def test_a_new_exit_code_shows_up_in_every_rendering(monkeypatch):
    """Every rendering reads ExitCode when it renders, so adding a member is all it takes."""
    new = [
        _Code(7, "no match", "The answer does not match --schema."),
        _Code(8, "tool calls", "The model asks for tool calls."),
    ]
    monkeypatch.setattr(errors, "ExitCode", sorted([*ExitCode, *new]))
    for where, text in _renderings().items():
        for code in new:
            assert _expected(code, where) in text, f"{where} does not show a new exit code {int(code)}"


def test_the_readme_table_survives_a_pipe_in_a_description(monkeypatch):
    monkeypatch.setattr(errors, "ExitCode", [_Code(9, "piped", "As in a | b.")])
    assert _readme_exit_status().splitlines()[-1] == "| 9 | As in a \\| b. |"


def test_start_up_does_not_import_errors():
    """The exit statuses join the epilogs when --help is read, not when the app is built."""
    code = "import sys, typer.main, anyfast_cli.cli as c; typer.main.get_command(c.app); print(sorted(m for m in sys.modules if m.startswith('anyfast_cli')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['anyfast_cli', 'anyfast_cli.cli']"


# --- building only the command that runs ------------------------------------------------------


def test_lazy_commands_build_each_once_when_asked_for_and_list_them_all():
    built = []
    commands = cli.LazyCommands({"a": lambda: built.append("a") or "A", "b": lambda: built.append("b") or "B"})
    assert list(commands) == ["a", "b"] and len(commands) == 2 and built == []
    assert commands.get("b") == "B" and commands["b"] == "B" and built == ["b"]
    assert commands.get("nothing") is None and "nothing" not in commands
    commands["c"] = "C"  # click's add_command
    assert list(commands) == ["a", "b", "c"] and commands["c"] == "C" and built == ["b"]


def test_a_run_builds_only_the_command_it_runs(monkeypatch):
    built = []
    for name, build in list(cli.DEFERRED_COMMANDS.items()):
        monkeypatch.setitem(cli.DEFERRED_COMMANDS, name, lambda name=name, build=build: built.append(name) or build())
    runner = CliRunner()
    assert runner.invoke(cli.app, ["--version"]).exit_code == 0 and built == []
    assert runner.invoke(cli.app, ["complete", "--help"]).exit_code == 0 and built == ["complete"]
    assert runner.invoke(cli.app, ["cache", "stats", "--help"]).exit_code == 0 and built == ["complete", "cache"]
    listing = runner.invoke(cli.app, ["--help"])  # the help lists every command, so builds each
    assert listing.exit_code == 0 and set(built) == set(cli.DEFERRED_COMMANDS)
    assert all(f"  {name} " in listing.output for name in cli.DEFERRED_COMMANDS)
