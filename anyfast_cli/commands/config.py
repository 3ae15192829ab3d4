"""`anyfast config path` and `anyfast config show`: which settings are in force, and why."""

from __future__ import annotations

import os

from anyfast_cli.commands.common import load_settings
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.output import print_json, write_flushed
from anyfast_cli.settings import CONNECT_TIMEOUT, READ_TIMEOUT, SettingFlags, config_path
from anyfast_cli.streams import Streams


def run_config_path(settings_flags: SettingFlags, streams: Streams) -> ExitCode:
    path, origin = config_path(settings_flags.config, streams.env)
    if origin != "default" and not os.path.exists(path):
        raise UsageError(f"config file {path} does not exist")
    write_flushed(streams.stdout, path + "\n")
    if not os.path.exists(path):
        streams.warn(f"{path} does not exist (that is fine: built-in defaults apply)")
    return ExitCode.OK


def run_config_show(settings_flags: SettingFlags, *, as_json: bool, streams: Streams) -> ExitCode:
    settings = load_settings(settings_flags, streams)
    rows = describe_settings(settings, exists=os.path.exists(settings.config_path))
    if as_json:
        print_json(
            {name: {"value": value, "source": source} for name, value, source in rows},
            streams.stdout,
            terminal=streams.stdout_isatty,
            color=streams.stdout_color,
        )
        return ExitCode.OK
    shown = [(name, "-" if value is None else str(value), source) for name, value, source in rows]
    name_width = max(len(name) for name, _, _ in shown)
    value_width = max(len(value) for _, value, _ in shown)
    write_flushed(streams.stdout, "".join(f"{n:<{name_width}}  {v:<{value_width}}  ({s})\n" for n, v, s in shown))
    return ExitCode.OK


def describe_settings(settings, *, exists: bool) -> list[tuple[str, object, str]]:
    """(name, value, where it came from) for each setting; the API key is never shown."""
    origins = settings.origins
    key = settings.key
    if key is None:
        key_row = ("api_key", None, "not set")
    else:
        how = {"value": "", "env": f" via ${key.value}", "command": " via api_key_command"}[key.kind]
        key_row = ("api_key", "***", f"{key.origin}{how}")
    rows = [
        ("config", settings.config_path, origins["config"] + ("" if exists else ", not found")),
        ("profile", settings.profile, origins["profile"]),
        ("model", settings.model, origins["model"]),
        ("base_url", settings.base_url, origins["base_url"]),
        key_row,
        (
            "timeout",
            settings.timeout or READ_TIMEOUT,
            origins["timeout"] if settings.timeout else f"default; connect {CONNECT_TIMEOUT:g} s",
        ),
        ("max_time", settings.max_time, origins.get("max_time") or "default; no bound on the whole request"),
        ("retries", settings.retries, origins["retries"]),
        ("cache", settings.cache, origins.get("cache") or "default; no cache"),
        ("cache_mode", settings.cache_mode, origins.get("cache_mode") or "default"),
        ("markdown", settings.markdown, origins["markdown"]),
    ]
    rows += [(name, value, "profile") for name, value in settings.body_defaults.items()]
    return rows
