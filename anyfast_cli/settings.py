"""Settings: flags > environment > config profile > built-in default (§2).

Pure: callers pass the environment mapping and the config file's text in (only when
HOME is unset does config_path ask the OS for the home directory). This is the one
module that knows environment variable names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from anyfast_cli.documents import load_yaml
from anyfast_cli.errors import UsageError, one_line
from anyfast_cli.prices import NO_PRICES, PriceTable, non_negative, parse_prices
from anyfast_cli.structured import text_problem
from anyfast_cli.text import parse_whole

DEFAULT_BASE_URL = "https://www.anyfast.ai/v1"
DEFAULT_MODEL = "doubao-seed-1-6-vision-250815"
DEFAULT_PROFILE = "default"
CONNECT_TIMEOUT = 10.0  # seconds: a gateway that does not accept a connection in this long is down
READ_TIMEOUT = 600.0  # seconds: long answers from reasoning models take minutes
MAX_TIMEOUT = 1e6  # seconds (11 days): more is "forever", which socket timeouts cannot express

ENV_API_KEY = "ANYFAST_API_KEY"
ENV_BASE_URL = "ANYFAST_BASE_URL"
ENV_MODEL = "ANYFAST_MODEL"
ENV_PROFILE = "ANYFAST_PROFILE"
ENV_CONFIG = "ANYFAST_CONFIG"
ENV_DEBUG = "ANYFAST_DEBUG"
ENV_USAGE_LOG = "ANYFAST_USAGE_LOG"
ENV_CACHE = "ANYFAST_CACHE"
ENV_PROMPTS_PATH = "ANYFAST_PROMPTS_PATH"

# Where `-f NAME` looks for prompt files, after ANYFAST_PROMPTS_PATH: a project's own folder
# (relative to the current directory), then the user's, beside the config file.
PROJECT_PROMPTS_DIR = os.path.join(".anyfast", "prompts")
CONFIG_PROMPTS_DIR = "prompts"

ENV_COLUMNS = "COLUMNS"  # the width to render Markdown at when stdout is no terminal (as rich and less read it)

# Other programs' variables that anyfast reads.
ENV_NO_COLOR = "NO_COLOR"  # no-color.org
ENV_TERM = "TERM"
ENV_XDG_CONFIG_HOME = "XDG_CONFIG_HOME"
ENV_HOME = "HOME"

# The network's own variables, as curl, pip and requests read them (transport.py applies them).
ENV_CA_FILE = "SSL_CERT_FILE"
ENV_CA_BUNDLE = "REQUESTS_CA_BUNDLE"
ENV_CA_DIR = "SSL_CERT_DIR"
CA_ENV_NAMES = (ENV_CA_FILE, ENV_CA_BUNDLE, ENV_CA_DIR)


# `batch --shard auto`: where each scheduler says which of N parallel jobs this one is.
# (name, index variable, count variable, whether the index counts from 1)
SHARD_SCHEDULERS = (
    ("GitLab CI", "CI_NODE_INDEX", "CI_NODE_TOTAL", True),
    ("CircleCI", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", False),
    ("Buildkite", "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", False),
)
# A Slurm array task: its index, then the array's lowest and highest index, step and size.
SLURM_ARRAY_VARS = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
)
K8S_INDEX_VAR = "JOB_COMPLETION_INDEX"  # Kubernetes Indexed Jobs export no count: --shard auto/N


PROXY_SCHEMES = ("https", "http", "no")  # each scheme's proxy variables, and NO_PROXY's


def proxy_env_names(scheme: str) -> tuple[str, ...]:
    """Where the proxy for `scheme` ("http", "https", or "no" for NO_PROXY) is looked up,
    in order: the lowercase name wins, as in curl; ALL_PROXY serves every scheme."""
    names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
    return names if scheme == "no" else names + ("all_proxy", "ALL_PROXY")


# Profile keys that configure anyfast itself; every other profile key is a request body default.
SETTING_KEYS = (
    "model",
    "base_url",
    "api_key",
    "api_key_env",
    "api_key_command",
    "timeout",
    "max_time",
    "retries",
    "schema_mode",
    "usage_log",
    "prices",
    "budget",
    "budget_tokens",
    "cache",
    "cache_mode",
    "markdown",
)
# --cache-mode: rw uses a hit and stores a miss; refresh never uses, always stores; replay: hits only.
CACHE_MODES = ("rw", "refresh", "replay")
DEFAULT_CACHE_MODE = "rw"
MARKDOWN_MODES = ("auto", "always", "never")  # config `markdown`: render answers at a terminal, always, never


@dataclass(frozen=True)
class SettingFlags:
    """The settings a user gave as flags; None means not given."""

    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None
    profile: str | None = None
    config: str | None = None
    timeout: float | None = None
    max_time: float | None = None
    retries: int | None = None
    usage_log: str | None = None
    prices: str | None = None  # --prices FILE; its data reaches resolve_settings as `prices_file`
    budget: float | None = None
    budget_tokens: int | None = None
    cache: str | None = None  # --cache DIR
    cache_mode: str | None = None


@dataclass(frozen=True)
class BudgetLimits:
    """--budget (money, in the prices' currency) and --budget-tokens; None: no cap."""

    money: float | None = None
    tokens: int | None = None

    def __bool__(self) -> bool:
        return self.money is not None or self.tokens is not None


@dataclass(frozen=True)
class KeySource:
    """Where the API key comes from; the key itself is fetched only when a request is sent."""

    kind: str  # "value", "env" (an environment variable named by the config) or "command"
    value: str
    origin: str  # "flag", "environment" or "profile", for `-v` and `config show`


@dataclass(frozen=True)
class Settings:
    base_url: str
    model: str
    timeout: float | None
    retries: int
    key: KeySource | None
    body_defaults: dict = field(default_factory=dict)
    profile: str = DEFAULT_PROFILE
    config_path: str = ""
    origins: dict = field(default_factory=dict)  # setting name -> flag/environment/file/profile/default
    max_time: float | None = None  # seconds for the whole request, every attempt included (None: no bound)
    schema_mode: str | None = None  # --schema's response_format mode from the profile (None: auto)
    usage_log: str | None = None
    prices: PriceTable = NO_PRICES
    budget: BudgetLimits = BudgetLimits()
    cache: str | None = None  # the response cache's directory (None: no cache)
    cache_mode: str = DEFAULT_CACHE_MODE
    markdown: str = "auto"  # one of MARKDOWN_MODES


def config_path(flag: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The config file to read, and where its name came from: "flag" or "environment"
    (the user named it, so it must exist) or "default"."""
    if flag:
        return flag, "flag"
    if env.get(ENV_CONFIG):
        return env[ENV_CONFIG], "environment"
    base = env.get(ENV_XDG_CONFIG_HOME) or os.path.join(env.get(ENV_HOME) or os.path.expanduser("~"), ".config")
    return os.path.join(base, "anyfast", "config.yaml"), "default"


def prompt_dirs(config_flag: str | None, env: Mapping[str, str]) -> list[str]:
    """The directories `-f NAME` searches, in order: each of ANYFAST_PROMPTS_PATH (colon-separated,
    empty entries skipped, as PATH's), ./.anyfast/prompts, then prompts/ beside the config file."""
    listed = [entry for entry in (env.get(ENV_PROMPTS_PATH) or "").split(os.pathsep) if entry]
    config_file, _ = config_path(config_flag, env)
    return [*listed, PROJECT_PROMPTS_DIR, os.path.join(os.path.dirname(config_file), CONFIG_PROMPTS_DIR)]


def parse_config(text: str, path: str) -> dict:
    """The config file's mapping, checked for shape; errors name the file and line."""
    data = load_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config must be a mapping of keys, not {type(data).__name__}")
    unknown = sorted(set(data) - {"profile", "profiles", "prices"}, key=str)
    if unknown:
        raise UsageError(
            f"{path}: unknown top-level key(s) {', '.join(map(str, unknown))}",
            hint="settings go inside a profile: profiles: {default: {model: …}}",
        )
    profiles = data.get("profiles", {}) or {}
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise UsageError(f"{path}: 'profiles' must map profile names to mappings of settings")
    for name, profile in profiles.items():
        # `--profile 1` is the text "1": a profile YAML reads as the number 1 could never be chosen.
        if not isinstance(name, str):
            raise UsageError(f"{path}: the profile name {name!r} must be text; write it in quotes: '{name}':")
        wrong = next((key for key in profile if not isinstance(key, str)), None)
        if wrong is not None:
            raise UsageError(f"{path}: profile '{name}': the key {wrong!r} must be a setting or body field name (text)")
    if "profile" in data and not isinstance(data["profile"], str):
        raise UsageError(f"{path}: 'profile' must be a profile name")
    return data


def profile_label(name: str, path: str) -> str:
    """How an error names a config profile: "profile 'work' in ~/.config/anyfast/config.yaml"."""
    return f"profile '{name}' in {path}"


def untrusted_command_problem(config: Mapping, mode: int, owner: int, user: int) -> str | None:
    """Why a config that holds api_key_command must not be used, or None: as ssh refuses its
    config files, one that another user owns (root excepted) or that group or others may write."""
    if not any("api_key_command" in profile for profile in (config.get("profiles") or {}).values()):
        return None
    if owner not in (user, 0):
        return f"it belongs to another user (uid {owner})"
    if mode & 0o022:  # S_IWGRP | S_IWOTH
        return f"{'others' if mode & 0o002 else 'its group'} can write to it (mode {mode & 0o777:03o})"
    return None


def config_holds_key(config: Mapping) -> bool:
    """Whether the config stores a key itself (worth a warning if others can read it)."""
    return any("api_key" in profile for profile in (config.get("profiles") or {}).values())


def resolve_settings(
    flags: SettingFlags,
    env: Mapping[str, str],
    config: Mapping,
    *,
    path: str = "",
    default_retries: int = 2,
    file_model: str | None = None,
    prices_file: tuple | None = None,
) -> Settings:
    """Combine flags, environment, the chosen profile and defaults into Settings."""
    profile_name, profile_origin, profile = _choose_profile(flags, env, config, path)
    origins: dict[str, str] = {"config": config_path(flags.config, env)[1], "profile": profile_origin}

    def pick(name: str, flag_value, env_name: str | None, default, between=None):
        candidates = [("flag", flag_value)]
        if between is not None:
            candidates.append(between)
        if env_name:
            candidates.append(("environment", env.get(env_name) or None))
        candidates += [("profile", profile.get(name)), ("default", default)]
        for origin, value in candidates:
            if value is not None:
                origins[name] = origin
                return value
        return None

    def checked(name: str, check, value):
        """A bad value from the config names the profile and file it came from."""
        try:
            return check(value)
        except UsageError as exc:
            if origins.get(name) == "profile":
                exc.message = f"{profile_label(profile_name, path)}: {exc.message}"
            raise

    model = checked(
        "model", _model_name, pick("model", flags.model, ENV_MODEL, DEFAULT_MODEL, between=("file", file_model))
    )
    base_url = checked("base_url", _http_url, pick("base_url", flags.base_url, ENV_BASE_URL, DEFAULT_BASE_URL))
    timeout = checked("timeout", _positive_number, pick("timeout", flags.timeout, None, None))
    max_time = checked("max_time", _max_time, pick("max_time", flags.max_time, None, None))
    retries = checked("retries", _retry_count, pick("retries", flags.retries, None, default_retries))
    schema_mode = checked("schema_mode", _schema_mode, pick("schema_mode", None, None, None))
    usage_log = checked("usage_log", _file_name, pick("usage_log", flags.usage_log, ENV_USAGE_LOG, None))
    budget = BudgetLimits(
        checked("budget", _budget, pick("budget", flags.budget, None, None)),
        checked("budget_tokens", _budget_tokens, pick("budget_tokens", flags.budget_tokens, None, None)),
    )
    cache = checked("cache", _cache_dir, pick("cache", flags.cache, ENV_CACHE, None))
    cache_mode = checked("cache_mode", _cache_mode, pick("cache_mode", flags.cache_mode, None, None))
    if cache_mode is not None and cache is None:
        raise UsageError(
            f"--cache-mode {cache_mode} (cache_mode, from the {origins['cache_mode']}) needs a cache directory",
            hint=f"give --cache DIR, set {ENV_CACHE}, or cache: in the profile",
        )
    markdown = checked("markdown", _markdown_mode, pick("markdown", None, None, "auto"))
    prices = _prices(prices_file, profile, config, profile_label(profile_name, path), path)
    body_defaults = {k: v for k, v in profile.items() if k not in SETTING_KEYS}
    return Settings(
        base_url=base_url.rstrip("/"),
        model=model,
        timeout=timeout,
        retries=retries,
        max_time=max_time,
        schema_mode=schema_mode,
        usage_log=usage_log,
        prices=prices,
        budget=budget,
        cache=cache,
        cache_mode=cache_mode or DEFAULT_CACHE_MODE,
        markdown=markdown,
        key=_key_source(flags, env, profile),
        body_defaults=body_defaults,
        profile=profile_name,
        config_path=path,
        origins=origins,
    )


def _choose_profile(flags: SettingFlags, env: Mapping[str, str], config: Mapping, path: str) -> tuple[str, str, dict]:
    """The profile's name, where that name came from, and its settings."""
    profiles = config.get("profiles") or {}
    name, origin = next(
        (value, origin)
        for origin, value in (
            ("flag", flags.profile),
            ("environment", env.get(ENV_PROFILE)),
            ("config", config.get("profile")),
            ("default", DEFAULT_PROFILE),
        )
        if value
    )
    if name not in profiles:
        if origin != "default":
            known = ", ".join(sorted(profiles)) or "none"
            raise UsageError(f"no profile '{name}' in {path or 'the config'} (profiles: {known})")
        return name, origin, {}
    return name, origin, dict(profiles[name])


def _key_source(flags: SettingFlags, env: Mapping[str, str], profile: Mapping) -> KeySource | None:
    if flags.api_key:
        return KeySource("value", flags.api_key, "flag")
    if env.get(ENV_API_KEY):
        return KeySource("value", env[ENV_API_KEY], "environment")
    if profile.get("api_key"):
        return KeySource("value", str(profile["api_key"]), "profile")
    if profile.get("api_key_env"):
        return KeySource("env", str(profile["api_key_env"]), "profile")
    if profile.get("api_key_command"):
        return KeySource("command", str(profile["api_key_command"]), "profile")
    return None


def _model_name(value) -> str:
    if not isinstance(value, str) or not value.strip() or text_problem(value):
        raise UsageError(f"the model must be a name like {DEFAULT_MODEL}, got {value!r}")
    return value.strip()


def _http_url(value) -> str:
    """A base URL must be http(s) with a host: anything else is a usage error, not a network one."""
    from urllib.parse import urlsplit

    url = value.strip() if isinstance(value, str) else ""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and url.isprintable() and " " not in url
        _ = parts.port  # raises ValueError for a malformed port
        if valid:  # a name no DNS can hold (a label past 63 characters, a bad xn--, bytes not UTF-8) raises
            parts.hostname.encode("idna").decode("idna")
    except ValueError:  # UnicodeError included
        valid = False
    if not valid:
        raise UsageError(f"the base URL must look like https://host/v1, got {_without_userinfo(value)!r}")
    if parts.username is not None or parts.password is not None:
        # The client would send Basic auth instead of the key, and print the password in -v.
        raise UsageError(
            "the base URL must not carry user:password@; the API key is the only credential sent",
            hint="set the key with ANYFAST_API_KEY or the config's api_key",
        )
    return url


def _without_userinfo(value) -> str:
    """A base URL as errors show it: any user:password@ is not repeated."""
    if not isinstance(value, str) or "@" not in value:
        return value
    scheme, sep, rest = value.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}{sep}***@{authority.rpartition('@')[2]}{slash}{path}" if sep else "***"


def _positive_number(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 < number <= MAX_TIMEOUT:
        raise UsageError(f"timeout must be a number of seconds from 0 to {MAX_TIMEOUT:g}, got {value!r}")
    return number


def _schema_mode(value) -> str | None:
    """The config key schema_mode: auto, json_schema, json_object or prompt."""
    if value is None:
        return None
    from anyfast_cli.schema import check_mode

    return check_mode(value if isinstance(value, str) else repr(value), "schema_mode")


def _prices(prices_file: tuple | None, profile: Mapping, config: Mapping, label: str, path: str) -> PriceTable:
    """--prices FILE, else the profile's prices, else the config's top-level prices."""
    if prices_file is not None:
        data, source = prices_file
        return parse_prices(data, source)
    if "prices" in profile:
        return parse_prices(profile["prices"], label)
    return parse_prices(config.get("prices"), path or "config")


def _markdown_mode(value) -> str:
    """The config key markdown: auto, always or never (YAML reads a bare never/always as text)."""
    if value not in MARKDOWN_MODES:
        raise UsageError(f"markdown must be one of {', '.join(MARKDOWN_MODES)}, got {value!r}")
    return value


def columns_from_env(env: Mapping[str, str]) -> int | None:
    """COLUMNS as a width, when it is a sensible one."""
    text = env.get(ENV_COLUMNS, "")
    return int(text) if text.isdigit() and 0 < int(text) < 10_000 else None


def _file_name(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or text_problem(value):
        raise UsageError(f"usage_log must be a file name, got {value!r}")
    return value


def _cache_dir(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or text_problem(value):
        raise UsageError(f"--cache (cache) must be a directory name, got {value!r}")
    return value


def _cache_mode(value) -> str | None:
    if value is None:
        return None
    if value not in CACHE_MODES:
        raise UsageError(f"--cache-mode (cache_mode) must be one of {', '.join(CACHE_MODES)}, got {value!r}")
    return value


def _budget(value) -> float | None:
    return None if value is None else non_negative(value, "--budget (budget)")


def _budget_tokens(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"--budget-tokens (budget_tokens) must be a whole number, 0 or more, got {value!r}")
    return value


def _max_time(value) -> float | None:
    """--max-time (config key max_time): seconds, checked as --timeout is."""
    try:
        return _positive_number(value)
    except UsageError:
        raise UsageError(
            f"--max-time (max_time) must be a number of seconds from 0 to {MAX_TIMEOUT:g}, got {value!r}"
        ) from None


def _retry_count(value) -> int:
    number = parse_whole(value.strip()) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise UsageError(f"retries must be a whole number, 0 or more, got {one_line(repr(value), 60)}")
    return number


def timeouts(timeout: float | None) -> tuple[float, float]:
    """(connect, read) seconds: --timeout bounds both; by default a short connect, a long read."""
    read = timeout or READ_TIMEOUT
    return min(CONNECT_TIMEOUT, read), read


def debug_enabled(env: Mapping[str, str]) -> bool:
    return env.get(ENV_DEBUG, "") not in ("", "0")


def color_allowed(env: Mapping[str, str]) -> bool:
    """NO_COLOR (non-empty) or TERM=dumb forbid every escape sequence."""
    return not env.get(ENV_NO_COLOR) and env.get(ENV_TERM) != "dumb"
