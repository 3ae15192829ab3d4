"""Imports point toward purer modules, and heavy libraries stay where they belong."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = ROOT / "anyfast_cli"

# module prefix -> the files (relative to the package; "dir/" for a whole folder) that may import it
ALLOWED = {
    "typer": {"cli.py"},
    "click": set(),  # Typer vendors it; it is not even installed
    "httpx": {"client.py", "fetch.py", "batch/"},  # fetch.py: -a URLs, with client.py's policy and deadline
    "aiohttp": {"client.py", "batch/"},  # the batch transport, chosen by measurement
    "yaml": {"documents.py"},  # the one YAML loader, below settings, inputs and schema
    "jsonschema": {"schema.py"},  # only when --schema is used
    "markdown_it": {"mdrender.py"},  # the Markdown renderer, loaded only when an answer is rendered
    "pygments": {"mdrender.py"},
    "anyfast_cli.cli": {"__main__.py"},
    "anyfast_cli.commands": {"cli.py", "commands/"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count)."""
    package = ".".join(("anyfast_cli", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def allowed(relative: str, places: set[str]) -> bool:
    return any(relative == p or (p.endswith("/") and relative.startswith(p)) for p in places)


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_stay_where_they_belong(path):
    relative = path.relative_to(PACKAGE).as_posix()
    for module in imported_modules(path):
        for prefix, places in ALLOWED.items():
            if (module == prefix or module.startswith(prefix + ".")) and not allowed(relative, places):
                pytest.fail(f"{relative} imports {module}; only {sorted(places) or 'nothing'} may")


def test_errors_imports_nothing_from_the_package():
    assert not {m for m in imported_modules(PACKAGE / "errors.py") if m.startswith("anyfast_cli")}


def test_output_never_imports_the_client():
    assert not {m for m in imported_modules(PACKAGE / "output.py") if m.startswith(("anyfast_cli.client", "httpx"))}


def test_importing_the_cli_loads_no_heavy_library():
    code = "import json, sys, anyfast_cli.cli; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(done.stdout))
    loaded = modules | {name.split(".")[0] for name in modules}
    assert "typer" in loaded  # the check itself works
    assert loaded.isdisjoint(
        {
            "httpx",
            "httpcore",
            "aiohttp",
            "yaml",
            "rich",
            "asyncio",
            "jsonschema",
            "markdown_it",
            "pygments",
            "anyfast_cli.client",
            "anyfast_cli.mdrender",
        }
    )


def package_module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("anyfast_cli", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def test_no_two_modules_import_each_other_even_lazily():
    """Arrows point one way (architecture.md): no cycle through the package's own modules,
    lazy imports included (schema.py and settings.py once imported each other)."""
    modules = {package_module(path): path for path in FILES}
    graph = {
        name: sorted(m for m in imported_modules(path) if m in modules and m != name) for name, path in modules.items()
    }
    done: set[str] = set()
    for start in graph:
        path, branches = [start], [iter(graph[start])]
        while branches:
            following = next(branches[-1], None)
            if following is None:
                done.add(path.pop())
                branches.pop()
            elif following in path:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(following) :] + [following]))
            elif following not in done:
                path.append(following)
                branches.append(iter(graph[following]))


def test_a_plain_streamed_complete_loads_only_what_it_uses(proc_env, tmp_path):
    """Start-up counts in every one-shot command: a plain `complete` (no --schema, prompt file,
    usage log, Markdown or config) loads none of the modules only those need."""
    listing = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        "from anyfast_cli.cli import main\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        "sys.argv = ['anyfast', 'complete', '-n', 'hi']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=proc_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(listing.read_text()))
    assert "anyfast_cli.client" in loaded  # it did send
    optional = {
        "anyfast_cli.schema",
        "anyfast_cli.commands.schema_answer",
        "jsonschema",
        "anyfast_cli.template",
        "anyfast_cli.templating",
        "anyfast_cli.usagelog",
        "anyfast_cli.markdown",
        "anyfast_cli.mdrender",
        "anyfast_cli.cache",
        "anyfast_cli.fetch",
        "yaml",
        "aiohttp",
        "asyncio",
    }
    assert not loaded & optional, sorted(loaded & optional)
