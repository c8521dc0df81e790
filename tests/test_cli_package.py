"""The CLI is one package whose command modules register on one `cli` group: `python -m
api.cli` and the `longform` script show the same commands, and no command module imports
the package itself (the import circle that once registered commands on a second copy)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import api.cli
from api.cli.base import cli

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [
    "booookscore", "cancel", "config", "dataset", "db", "delete", "eval", "fake-llm", "jobs", "keys", "prompts", "purge",
    "result", "retry", "serve", "status", "steps", "submit", "summarize", "upload", "watch", "worker", "write",
]


def listed_commands(help_text: str) -> list[str]:
    section = help_text.split("\nCommands:\n", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, re.MULTILINE)]


def test_the_package_has_every_command_on_one_group():
    assert api.cli.cli is cli
    assert cli.list_commands(None) == COMMANDS
    assert sorted(cli.commands["eval"].commands) == ["longbench-write", "longen", "symbench", "tlg"]
    assert sorted(cli.commands["dataset"].commands) == ["build", "delete", "export"]
    assert sorted(cli.commands["db"].commands) == ["current", "upgrade"]
    assert sorted(cli.commands["keys"].commands) == ["create", "list", "revoke"]


def test_python_m_and_the_console_script_list_the_same_commands():
    script = Path(sys.executable).with_name("longform")
    if not script.exists():
        pytest.skip("the longform console script is not installed next to this Python")
    as_module = subprocess.run([sys.executable, "-m", "api.cli", "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=60)
    as_script = subprocess.run([str(script), "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert as_module.returncode == 0 and as_script.returncode == 0, as_module.stderr + as_script.stderr
    assert listed_commands(as_module.stdout) == listed_commands(as_script.stdout) == COMMANDS
    assert as_module.stdout == as_script.stdout


def test_no_command_module_imports_the_package():
    """Each module under api/cli/ may import api.cli.<module>, never `api.cli` itself (only
    __init__ and __main__ do): so loading any of them cannot re-enter the package."""
    package = REPO / "api" / "cli"
    for path in sorted(package.glob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "api.cli" and node.level == 0, f"{path.name} imports from {node.module}"
            elif isinstance(node, ast.Import):
                assert all(alias.name != "api.cli" for alias in node.names), f"{path.name} imports api.cli"
