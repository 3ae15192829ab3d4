"""The wheel: its name and metadata, the man page and completions where man and the shells
look (§6), and an install beside the AnyFast SDK (issue 12).

On PyPI, `anyfast` is the AnyFast Python SDK (import package `anyfast`, no command). This
project is the distribution `anyfast-cli`, so pip keeps the two apart: installing either one
never removes the other, and the `anyfast` command stays ours.

Nothing here downloads anything: the wheel is built with the hatchling of this environment
(the `test` extra installs it), the SDK is a stand-in wheel written here, and every install
is `--no-index --no-deps`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import venv
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest
from helpers import ROOT

import anyfast_cli
from anyfast_cli import __version__

DISTRIBUTION = "anyfast-cli"
WHEEL_NAME = "anyfast_cli"  # the distribution's name as wheel files and .dist-info spell it

# checked-in file -> where the wheel's data scheme puts it, relative to the environment's prefix
SHARED_DATA = {
    "man/anyfast.1": "share/man/man1/anyfast.1",
    "completions/anyfast.bash": "share/bash-completion/completions/anyfast",
    "completions/_anyfast": "share/zsh/site-functions/_anyfast",
    "completions/anyfast.fish": "share/fish/vendor_completions.d/anyfast.fish",
}

SDK_VERSION = "0.0.1"


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the working tree, offline: no build isolation, no index."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.fail("hatchling is not installed; `pip install -e '.[test]'` installs it (the wheel is built offline)")
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ]
    )
    wheels = list(out.glob("*.whl"))
    assert [w.name for w in wheels] == [f"{WHEEL_NAME}-{__version__}-py3-none-any.whl"]
    return wheels[0]


@pytest.fixture(scope="module")
def metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        return HeaderParser().parsestr(archive.read(f"{WHEEL_NAME}-{__version__}.dist-info/METADATA").decode())


def test_wheel_installs_man_page_and_completions(wheel):
    data = f"{WHEEL_NAME}-{__version__}.data/data/"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        missing = [data + target for target in SHARED_DATA.values() if data + target not in names]
        assert not missing, f"not in {wheel.name}: {missing}"
        for source, target in SHARED_DATA.items():
            assert archive.read(data + target) == (ROOT / source).read_bytes(), target


def test_wheel_holds_the_package_and_its_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(f"{WHEEL_NAME}-{__version__}.dist-info/entry_points.txt").decode()
    assert "anyfast_cli/cli.py" in names
    assert "anyfast_cli/__main__.py" in names  # python -m anyfast_cli
    assert "anyfast_cli/events.schema.json" in names  # `anyfast schema --events` reads it from the package
    assert "anyfast = anyfast_cli.cli:main" in entry_points
    assert not [name for name in names if name.startswith("anyfast/")], "the import package `anyfast` is the SDK's"


def test_wheel_metadata_names_the_distribution_its_license_and_urls(wheel, metadata):
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["Version"] == __version__  # hatch reads it from anyfast_cli/__init__.py
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(f"{WHEEL_NAME}-{__version__}.dist-info/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Homepage", "Repository", "Issues"} <= set(urls), urls
    classifiers = metadata.get_all("Classifier")
    assert "Environment :: Console" in classifiers and "Programming Language :: Python :: 3 :: Only" in classifiers


def test_installed_metadata_version_is_the_package_version():
    """One source of truth: hatch writes __version__ into the metadata, and `anyfast --version`
    prints __version__ (without importing importlib.metadata, for start-up time). Fails when the
    environment's install is stale: run `pip install -e '.[test]'` again."""
    assert importlib.metadata.version(DISTRIBUTION) == anyfast_cli.__version__


# --- beside the AnyFast SDK (issue 12) -----------------------------------------------------


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


@pytest.fixture(scope="module")
def sdk_wheel(tmp_path_factory) -> Path:
    """A stand-in for the SDK's wheel, as pip sees it: distribution `anyfast`, import package
    `anyfast`, no command, a dependency (skipped by --no-deps)."""
    dist_info = f"anyfast-{SDK_VERSION}.dist-info"
    files = {
        "anyfast/__init__.py": f'"""Stand-in for the AnyFast Python SDK (tests/test_wheel.py)."""\n\n__version__ = "{SDK_VERSION}"\n',
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: anyfast\nVersion: {SDK_VERSION}\n"
            "Summary: Stand-in for the AnyFast Python SDK\nLicense: Apache-2.0\n"
            "Requires-Python: >=3.8\nRequires-Dist: httpx\n"
        ),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests/test_wheel.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/top_level.txt": "anyfast\n",
    }
    record = [_record_line(name, text.encode()) for name, text in files.items()] + [f"{dist_info}/RECORD,,"]
    path = tmp_path_factory.mktemp("sdk") / f"anyfast-{SDK_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


# Run by the new environment's Python, in isolated mode (-I: no PYTHONPATH, no user site, not
# the current directory), so it sees only what pip installed there.
INSPECT = """
import importlib.metadata, json, sys
import anyfast, anyfast_cli
report = {"prefix": sys.prefix, "modules": {m.__name__: [m.__file__, m.__version__] for m in (anyfast, anyfast_cli)}}
for name in ("anyfast", "anyfast-cli"):
    dist = importlib.metadata.distribution(name)
    report[name] = {
        "version": dist.version,
        "scripts": sorted(e.name for e in dist.entry_points if e.group == "console_scripts"),
        "missing": sorted(str(f) for f in dist.files if not f.locate().exists()),
    }
print(json.dumps(report))
"""


def _environment() -> dict[str, str]:
    """This process's environment without the Python variables that would reach past the venv."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


@pytest.mark.parametrize("sdk_first", [False, True], ids=["ours-then-sdk", "sdk-then-ours"])
def test_installs_beside_the_anyfast_sdk_in_either_order(sdk_first, wheel, sdk_wheel, tmp_path):
    prefix = tmp_path / "venv"
    venv.create(prefix, with_pip=False, symlinks=os.name != "nt")  # pip comes from here: `pip --python`
    python = prefix / "bin" / "python"
    env = _environment()
    for path in (sdk_wheel, wheel) if sdk_first else (wheel, sdk_wheel):
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "--no-index",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                str(path),
            ],
            env=env,
            cwd=tmp_path,
        )

    # Both distributions are there, whole: every file each one's RECORD lists still exists.
    report = json.loads(_run([str(python), "-I", "-c", INSPECT], env=env, cwd=tmp_path).stdout)
    assert Path(report["prefix"]) == prefix
    assert report["anyfast"] == {"version": SDK_VERSION, "scripts": [], "missing": []}
    assert report["anyfast-cli"] == {"version": __version__, "scripts": ["anyfast"], "missing": []}
    for module, (file, version) in report["modules"].items():
        assert Path(file).is_relative_to(prefix), f"{module} imported from {file}, not the new environment"
        assert version == (SDK_VERSION if module == "anyfast" else __version__), module
    for source, target in SHARED_DATA.items():
        assert (prefix / target).read_bytes() == (ROOT / source).read_bytes(), target

    # The `anyfast` command is ours and runs. Its runtime dependencies were not installed
    # (--no-deps): lend it this environment's, after the new one's own site-packages so they
    # cannot shadow what pip put there.
    site_packages = Path(report["modules"]["anyfast_cli"][0]).parent.parent
    lent = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    (site_packages / "zz_test_lent_dependencies.pth").write_text("\n".join(lent) + "\n")
    assert "anyfast_cli.cli" in (prefix / "bin" / "anyfast").read_text()
    for command in (
        [str(prefix / "bin" / "anyfast"), "--version"],
        [str(python), "-I", "-m", "anyfast_cli", "--version"],
    ):
        assert _run(command, env=env, cwd=tmp_path).stdout == f"anyfast {__version__}\n", command
