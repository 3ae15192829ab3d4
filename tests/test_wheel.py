"""The wheel installs the man page and the completions where man and the shells look (§6)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from anyfast_cli import __version__

ROOT = Path(__file__).resolve().parent.parent

# checked-in file -> where the wheel's data scheme puts it, relative to the environment's prefix
SHARED_DATA = {
    "man/anyfast.1": "share/man/man1/anyfast.1",
    "completions/anyfast.bash": "share/bash-completion/completions/anyfast",
    "completions/_anyfast": "share/zsh/site-functions/_anyfast",
    "completions/anyfast.fish": "share/fish/vendor_completions.d/anyfast.fish",
}

# What pip prints when it cannot fetch the build backend for an isolated build (no network).
NO_INDEX = ("No matching distribution found for hatchling", "Could not find a version that satisfies")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the working tree. With hatchling in this environment the build needs
    no network; without it (a fresh CI venv), pip fetches it into an isolated build environment."""
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(out), str(ROOT)]
    if importlib.util.find_spec("hatchling") is not None:
        command.insert(-1, "--no-build-isolation")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and any(message in result.stderr for message in NO_INDEX):
        pytest.skip("cannot build the wheel: hatchling is not installed and the package index is unreachable")
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(out.glob("anyfast-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_installs_man_page_and_completions(wheel):
    data = f"anyfast-{__version__}.data/data/"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        missing = [data + target for target in SHARED_DATA.values() if data + target not in names]
        assert not missing, f"not in {wheel.name}: {missing}"
        for source, target in SHARED_DATA.items():
            assert archive.read(data + target) == (ROOT / source).read_bytes(), target


def test_wheel_holds_the_package_and_its_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(f"anyfast-{__version__}.dist-info/entry_points.txt").decode()
    assert "anyfast_cli/cli.py" in names
    assert "anyfast = anyfast_cli.cli:main" in entry_points
