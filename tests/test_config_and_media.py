"""`anyfast config path|show`, and video input (--video/--fps) for complete and chat."""

from __future__ import annotations

import base64
import json
import os

import pytest
import yaml
from helpers import KEY

from anyfast_cli.attachments import VIDEO_MAX_BYTES


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "xdg" / "anyfast" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(
        "profile: work\n"
        "profiles:\n"
        "  work:\n"
        "    model: glm-4-7-251222\n"
        f"    api_key: {KEY}\n"
        "    temperature: 0.3\n"
        "  local:\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "    api_key_env: LOCAL_KEY\n"
    )
    path.chmod(0o600)
    return path


# --- config path ----------------------------------------------------------------------------


def test_config_path_follows_xdg_then_env_then_flag(cli, tmp_path, config_file):
    assert cli("config", "path").stdout == f"{config_file}\n"
    other, flagged = tmp_path / "other.yaml", tmp_path / "flagged.yaml"
    other.write_text("")
    flagged.write_text("")
    assert cli("config", "path", ANYFAST_CONFIG=str(other)).stdout == f"{other}\n"
    assert cli("config", "path", "--config", flagged, ANYFAST_CONFIG=str(other)).stdout == f"{flagged}\n"


def test_config_path_of_a_named_missing_file_is_an_error(cli, tmp_path):
    result = cli("config", "path", "--config", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and result.stdout == ""
    assert "does not exist" in result.stderr


def test_config_path_of_a_missing_file_says_so_on_stderr_only(cli, tmp_path):
    result = cli("config", "path")
    assert result.exit_code == 0
    assert result.stdout.strip().endswith("anyfast/config.yaml")
    assert "does not exist" in result.stderr


# --- config show ----------------------------------------------------------------------------


def show_json(cli, *args, **env) -> dict:
    result = cli("config", "show", "--json", *args, **env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_show_names_the_source_of_every_setting(cli, config_file):
    shown = show_json(cli)
    assert shown["config"] == {"value": str(config_file), "source": "default"}
    assert shown["profile"] == {"value": "work", "source": "config"}
    assert shown["model"] == {"value": "glm-4-7-251222", "source": "profile"}
    assert shown["base_url"]["source"] == "default"
    assert shown["api_key"] == {"value": "***", "source": "profile"}
    assert shown["temperature"] == {"value": 0.3, "source": "profile"}
    assert shown["retries"] == {"value": 2, "source": "default"}


def test_show_flags_beat_environment_beat_profile(cli, config_file):
    shown = show_json(cli, "-m", "from-flag", "--retries", "4", ANYFAST_MODEL="from-env", ANYFAST_API_KEY="sk-env-key")
    assert shown["model"] == {"value": "from-flag", "source": "flag"}
    assert shown["retries"] == {"value": 4, "source": "flag"}
    assert shown["api_key"] == {"value": "***", "source": "environment"}
    assert show_json(cli, ANYFAST_MODEL="from-env")["model"] == {"value": "from-env", "source": "environment"}


def test_show_another_profile_and_where_its_key_comes_from(cli, config_file):
    shown = show_json(cli, "--profile", "local")
    assert shown["profile"] == {"value": "local", "source": "flag"}
    assert shown["base_url"] == {"value": "http://127.0.0.1:9/v1", "source": "profile"}
    assert shown["api_key"] == {"value": "***", "source": "profile via $LOCAL_KEY"}
    assert show_json(cli, ANYFAST_PROFILE="local")["profile"]["source"] == "environment"


@pytest.mark.parametrize("as_json", [True, False])
def test_show_never_prints_the_key(cli, config_file, as_json):
    result = cli("config", "show", *(["--json"] if as_json else []), ANYFAST_API_KEY="sk-very-secret-env")
    assert result.exit_code == 0
    assert KEY not in result.output and "sk-very-secret-env" not in result.output


def test_show_as_text_is_one_aligned_line_per_setting(cli, config_file):
    result = cli("config", "show")
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:8]] == [
        "config",
        "profile",
        "model",
        "base_url",
        "api_key",
        "timeout",
        "max_time",
        "retries",
    ]
    assert "glm-4-7-251222" in lines[2] and lines[2].endswith("(profile)")
    assert len({line.index("(") for line in lines}) == 1  # the sources line up


def test_show_a_broken_config_is_a_usage_error_naming_file_and_line(cli, config_file):
    config_file.write_text("profiles:\n  work: [unclosed\n")
    result = cli("config", "show")
    assert result.exit_code == 2
    assert f"{config_file}:" in result.stderr and "invalid YAML" in result.stderr


def test_show_warns_about_a_key_readable_by_others(cli, config_file):
    config_file.chmod(0o644)
    result = cli("config", "show")
    assert result.exit_code == 0
    assert "others can read it" in result.stderr and "chmod 600" in result.stderr


# --- video input ----------------------------------------------------------------------------


def sent_content(gateway) -> list:
    return gateway.requests[-1].body["messages"][-1]["content"]


def test_video_file_becomes_a_data_uri_part_with_its_mime_type_and_fps(run, gateway, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    result = run("complete", "--video", clip, "--fps", "2", "What happens?")
    assert result.exit_code == 0, result.stderr
    text, video = sent_content(gateway)
    assert text == {"type": "text", "text": "What happens?"}
    assert video == {
        "type": "video_url",
        "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode(), "fps": 2.0},
    }


def test_video_url_passes_through_without_fps_unless_given(run, gateway):
    result = run("complete", "--video", "https://example.com/v.mp4", "describe")
    assert result.exit_code == 0, result.stderr
    assert sent_content(gateway)[1] == {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}


def test_images_and_videos_together_text_first(run, gateway, tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    result = run("complete", "-i", tmp_path / "a.png", "--video", "https://e.com/v.mp4", "both")
    assert result.exit_code == 0, result.stderr
    assert [part["type"] for part in sent_content(gateway)] == ["text", "image_url", "video_url"]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.mp4", "cannot read video"),
        (lambda d: d / "notes.txt", "not a known video type"),
    ],
)
def test_bad_video_files_are_usage_errors_and_nothing_is_sent(run, gateway, tmp_path, make, words):
    path = make(tmp_path)
    if path.suffix == ".txt":
        path.write_text("hello")
    result = run("complete", "--video", path, "x")
    assert result.exit_code == 2
    assert words in result.stderr
    assert not gateway.requests


def test_an_oversized_video_is_a_clear_error_not_a_huge_request(run, gateway, tmp_path):
    big = tmp_path / "big.mp4"
    with open(big, "wb") as handle:
        handle.truncate(VIDEO_MAX_BYTES + 1)  # sparse: no real disk use
    result = run("complete", "--video", big, "x")
    assert result.exit_code == 2
    assert "limit" in result.stderr and "https:// URL" in result.stderr
    assert not gateway.requests


def test_fps_must_be_positive(run, gateway):
    result = run("complete", "--video", "https://e.com/v.mp4", "--fps", "0", "x")
    assert result.exit_code == 2 and "--fps" in result.stderr
    assert not gateway.requests


def test_chat_keeps_video_references_in_the_saved_conversation(run, gateway, tmp_path):
    clip = tmp_path / "media" / "clip.webm"
    clip.parent.mkdir()
    clip.write_bytes(b"webm")
    saved = tmp_path / "talk.yaml"
    result = run("chat", "--video", clip, "--fps", "1", "--save", saved, "what is this?")
    assert result.exit_code == 0, result.stderr
    assert sent_content(gateway)[1]["video_url"]["url"].startswith("data:video/webm;base64,")
    turn = yaml.safe_load(saved.read_text())["messages"][0]
    assert turn == {
        "role": "user",
        "content": "what is this?",
        "videos": [os.path.join("media", "clip.webm")],
        "fps": 1.0,
    }
    again = run("chat", "-f", saved, "and now?")  # the saved reference loads again
    assert again.exit_code == 0, again.stderr
    assert gateway.requests[-1].body["messages"][0]["content"][1]["video_url"]["fps"] == 1.0


@pytest.mark.parametrize(
    "profile_line, words",
    [
        ("temperature: 7", "temperature"),
        ("timeout: abc", "timeout"),
        ("retries: -1", "retries"),
        ("base_url: ftp://x", "base URL"),
    ],
)
def test_a_bad_profile_value_names_the_profile_and_file(cli, config_file, profile_line, words):
    config_file.write_text(f"profiles:\n  default:\n    {profile_line}\n")
    result = cli("complete", "--dry-run", "hi")
    assert result.exit_code == 2
    assert f"profile 'default' in {config_file}:" in result.stderr and words in result.stderr


def test_a_setting_at_the_top_level_of_the_config_is_an_error_not_ignored(cli, config_file):
    config_file.write_text("model: glm-4-7-251222\n")
    result = cli("config", "show")
    assert result.exit_code == 2
    assert "unknown top-level key(s) model" in result.stderr and "inside a profile" in result.stderr
