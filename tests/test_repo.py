"""The repository as a newcomer meets it: layout, README's two commands, CI running the same one."""

from __future__ import annotations

import re
import subprocess

from server.config import REPO_ROOT

TOP_LEVEL = {"server", "tools", "deploy", "docs", "templates", "static", "uploads", "tests", "requirements.txt", "run.py", "README.md", ".ci"}


def readme_commands() -> list[str]:
    return re.findall(r"```\n(python3 -m venv[^\n]*)\n```", (REPO_ROOT / "README.md").read_text())


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    start, test = commands
    assert start.endswith("run.py --demo") and "-r requirements.txt" in start
    assert test.endswith("-m pytest tests") and "tests/requirements.txt" in test


def test_ci_runs_the_readme_test_command():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert "Install and run the tests" in script and 'eval "$test_command"' in script
    assert "Install and run the tests" in (REPO_ROOT / "README.md").read_text()


def test_top_level_layout_is_as_designed():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    top = {line.split("/")[0] for line in tracked.stdout.splitlines()}
    assert top - {".gitignore"} <= TOP_LEVEL
    assert (REPO_ROOT / "uploads" / ".gitkeep").exists()


def test_imports_run_one_way():
    """web -> models, events -> vision, tools on top: a lower layer never imports a higher one, nothing imports tools."""
    layers = {"vision": 0, "models": 1, "events": 1, "web": 2}
    for path in (REPO_ROOT / "server").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) tools\b", text, re.M), f"{path} imports tools"
        package = path.relative_to(REPO_ROOT / "server").parts[0]
        if package not in layers:
            continue
        for imported in re.findall(r"^\s*(?:from|import) server\.(\w+)", text, re.M):
            if imported in layers:
                assert layers[imported] <= layers[package], f"{path} ({package}) imports server.{imported}"
