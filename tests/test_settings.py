"""Settings precedence (flags > env > profile > default), keys, profiles and the config file."""

from __future__ import annotations

import os
import shlex
import sys

import pytest

from anyfast_cli.commands.common import resolve_api_key
from anyfast_cli.errors import AuthError, ExitCode, UsageError
from anyfast_cli.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    KeySource,
    SettingFlags,
    color_allowed,
    config_holds_key,
    config_path,
    debug_enabled,
    parse_config,
    resolve_settings,
)

CONFIG = {
    "profile": "default",
    "profiles": {
        "default": {
            "model": "profile-model",
            "base_url": "http://profile/v1",
            "temperature": 0.3,
            "timeout": 30,
            "retries": 4,
        },
        "local": {"model": "qwen2.5", "base_url": "http://127.0.0.1:8000/v1/", "api_key": "sk-local"},
    },
}


def resolve(flags=SettingFlags(), env=None, config=None, **kwargs):
    return resolve_settings(flags, env or {}, config if config is not None else CONFIG, path="cfg.yaml", **kwargs)


# (flag, file model, env, profile config, expected value, expected origin)
MODEL_CASES = [
    ("flag-m", "file-m", "env-m", CONFIG, "flag-m", "flag"),
    (None, "file-m", "env-m", CONFIG, "file-m", "file"),
    (None, None, "env-m", CONFIG, "env-m", "environment"),
    (None, None, "", CONFIG, "profile-model", "profile"),  # an empty variable is unset
    (None, None, None, CONFIG, "profile-model", "profile"),
    (None, None, None, {}, DEFAULT_MODEL, "default"),
    ("flag-m", None, None, {}, "flag-m", "flag"),
]


@pytest.mark.parametrize("flag, file_model, env_model, config, expected, origin", MODEL_CASES)
def test_model_precedence(flag, file_model, env_model, config, expected, origin):
    env = {} if env_model is None else {"ANYFAST_MODEL": env_model}
    settings = resolve(SettingFlags(model=flag), env, config, file_model=file_model)
    assert settings.model == expected
    assert settings.origins["model"] == origin


@pytest.mark.parametrize(
    "flag, env_url, config, expected",
    [
        ("http://flag/v1", "http://env/v1", CONFIG, "http://flag/v1"),
        (None, "http://env/v1/", CONFIG, "http://env/v1"),  # trailing slash dropped
        (None, None, CONFIG, "http://profile/v1"),
        (None, None, {}, DEFAULT_BASE_URL),
    ],
)
def test_base_url_precedence(flag, env_url, config, expected):
    env = {"ANYFAST_BASE_URL": env_url} if env_url else {}
    assert resolve(SettingFlags(base_url=flag), env, config).base_url == expected


def test_timeout_and_retries_from_flag_profile_default():
    assert (resolve().timeout, resolve().retries) == (30.0, 4)
    assert (resolve(SettingFlags(timeout=5, retries=0)).timeout, resolve(SettingFlags(retries=0)).retries) == (5.0, 0)
    empty = resolve(config={})
    assert (empty.timeout, empty.retries) == (None, 2)
    assert resolve(config={}, default_retries=5).retries == 5


@pytest.mark.parametrize(
    "profile, words",
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retries": True}, "retries"),
    ],
)
def test_bad_timeout_or_retries_in_profile(profile, words):
    with pytest.raises(UsageError) as raised:
        resolve(config={"profiles": {"default": profile}})
    assert words in raised.value.message


def test_profile_keys_that_are_not_settings_become_body_defaults():
    assert resolve().body_defaults == {"temperature": 0.3}
    assert resolve(SettingFlags(profile="local")).body_defaults == {}


@pytest.mark.parametrize(
    "flag, env_profile, config, expected",
    [
        ("local", "default", CONFIG, "local"),
        (None, "local", CONFIG, "local"),
        (None, None, {**CONFIG, "profile": "local"}, "local"),
        (None, None, {"profiles": CONFIG["profiles"]}, "default"),
        (None, "", CONFIG, "default"),
    ],
)
def test_profile_choice(flag, env_profile, config, expected):
    env = {} if env_profile is None else {"ANYFAST_PROFILE": env_profile}
    settings = resolve(SettingFlags(profile=flag), env, config)
    assert settings.profile == expected
    assert settings.model == config["profiles"][expected]["model"]


@pytest.mark.parametrize(
    "flags, env",
    [(SettingFlags(profile="nope"), {}), (SettingFlags(), {"ANYFAST_PROFILE": "nope"}), (SettingFlags(), None)],
)
def test_a_named_profile_that_is_missing_is_an_error(flags, env):
    config = {**CONFIG, "profile": "nope"} if env is None else CONFIG
    with pytest.raises(UsageError) as raised:
        resolve(flags, env or {}, config)
    assert raised.value.exit_code == ExitCode.USAGE
    assert "no profile 'nope' in cfg.yaml" in raised.value.message
    assert "default, local" in raised.value.message


def test_no_config_and_no_profile_named_is_fine():
    settings = resolve(config={})
    assert (settings.model, settings.base_url, settings.key, settings.body_defaults) == (
        DEFAULT_MODEL,
        DEFAULT_BASE_URL,
        None,
        {},
    )


# --- the API key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, env, profile, expected",
    [
        ("sk-flag", {"ANYFAST_API_KEY": "sk-env"}, {"api_key": "sk-profile"}, KeySource("value", "sk-flag", "flag")),
        (None, {"ANYFAST_API_KEY": "sk-env"}, {"api_key": "sk-profile"}, KeySource("value", "sk-env", "environment")),
        (None, {"ANYFAST_API_KEY": ""}, {"api_key": "sk-profile"}, KeySource("value", "sk-profile", "profile")),
        (None, {}, {"api_key_env": "MY_KEY", "api_key_command": "x"}, KeySource("env", "MY_KEY", "profile")),
        (None, {}, {"api_key_command": "pass show anyfast"}, KeySource("command", "pass show anyfast", "profile")),
        (None, {}, {}, None),
    ],
)
def test_key_source_precedence(flag, env, profile, expected):
    settings = resolve(SettingFlags(api_key=flag), env, {"profiles": {"default": profile}})
    assert settings.key == expected
    assert not set(profile) & set(settings.body_defaults)  # key settings never go into the body


def test_resolve_api_key_value_and_env():
    assert resolve_api_key(KeySource("value", "sk-1", "flag"), {}) == "sk-1"
    assert resolve_api_key(KeySource("env", "MY_KEY", "profile"), {"MY_KEY": "sk-2"}) == "sk-2"


def python_command(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_resolve_api_key_command():
    command = python_command("print('sk-from-command'); print('second line ignored')")
    assert resolve_api_key(KeySource("command", command, "profile"), {}) == "sk-from-command"


@pytest.mark.parametrize(
    "source, env, words",
    [
        (None, {}, "no API key"),
        (KeySource("env", "MY_KEY", "profile"), {}, "MY_KEY"),
        # its stderr is the user's (it reaches the terminal: tests/test_hostile_input.py); the error gives the status
        (
            KeySource("command", python_command("import sys; sys.stderr.write('locked\\n'); sys.exit(1)"), "profile"),
            {},
            "exit status 1",
        ),
        (KeySource("command", python_command("pass"), "profile"), {}, "gave no key"),
    ],
)
def test_resolve_api_key_failures_are_auth_errors(source, env, words):
    with pytest.raises(AuthError) as raised:
        resolve_api_key(source, env)
    assert raised.value.exit_code == ExitCode.AUTH == 3
    assert words in raised.value.message


# --- the config file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, env, expected, named",
    [
        ("/a/c.yaml", {"ANYFAST_CONFIG": "/b/c.yaml"}, "/a/c.yaml", True),
        (None, {"ANYFAST_CONFIG": "/b/c.yaml"}, "/b/c.yaml", True),
        (None, {"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/anyfast/config.yaml", False),
        (None, {"HOME": "/home/u"}, "/home/u/.config/anyfast/config.yaml", False),
        (None, {"XDG_CONFIG_HOME": "", "HOME": "/home/u"}, "/home/u/.config/anyfast/config.yaml", False),
    ],
)
def test_config_path(flag, env, expected, named):
    path, origin = config_path(flag, env)
    assert path == os.path.normpath(expected)
    assert (origin != "default") is named


def test_parse_config():
    text = "profile: local\nprofiles:\n  local:\n    model: qwen2.5\n    temperature: 0.3\n"
    assert parse_config(text, "c.yaml") == {
        "profile": "local",
        "profiles": {"local": {"model": "qwen2.5", "temperature": 0.3}},
    }
    assert parse_config("", "c.yaml") == {}
    assert parse_config("# only a comment\n", "c.yaml") == {}


@pytest.mark.parametrize(
    "text, words",
    [
        ("profiles:\n  default:\n    model: [unclosed\n  other: {}\n", "c.yaml:4: invalid YAML"),
        ("profiles:\n\tdefault: {}\n", "c.yaml:2: invalid YAML"),
        ("profile: x\n  bad: : y\n", "c.yaml:2: invalid YAML"),
        ("- a list\n", "must be a mapping"),
        ("profiles: [a, b]\n", "'profiles' must map"),
        ("profiles:\n  default: just-a-string\n", "'profiles' must map"),
        ("profile: [x]\n", "'profile' must be a profile name"),
    ],
)
def test_broken_config_names_file_and_line(text, words):
    with pytest.raises(UsageError) as raised:
        parse_config(text, "c.yaml")
    assert raised.value.exit_code == ExitCode.USAGE
    assert raised.value.message.startswith("c.yaml")
    assert words in raised.value.message


@pytest.mark.parametrize(
    "config, holds",
    [
        (CONFIG, True),
        ({"profiles": {"a": {"api_key_env": "X"}, "b": {"api_key_command": "pass"}}}, False),
        ({"profiles": {"a": {"model": "m"}}}, False),
        ({}, False),
    ],
)
def test_config_holds_key(config, holds):
    assert config_holds_key(config) is holds


@pytest.mark.parametrize(
    "env, debug",
    [({}, False), ({"ANYFAST_DEBUG": ""}, False), ({"ANYFAST_DEBUG": "0"}, False), ({"ANYFAST_DEBUG": "1"}, True)],
)
def test_debug_enabled(env, debug):
    assert debug_enabled(env) is debug


@pytest.mark.parametrize(
    "env, allowed",
    [
        ({}, True),
        ({"TERM": "xterm"}, True),
        ({"NO_COLOR": ""}, True),
        ({"NO_COLOR": "1"}, False),
        ({"TERM": "dumb"}, False),
    ],
)
def test_color_allowed(env, allowed):
    assert color_allowed(env) is allowed
