"""The repository as a newcomer meets it: layout, README's two commands, CI running the same one, docs that resolve."""

from __future__ import annotations

import re
import subprocess

from server.config import REPO_ROOT

TOP_LEVEL = {"server", "tools", "deploy", "templates", "static", "uploads", "tests", "docs", "requirements.txt", "run.py",
             "README.md", ".ci"}
README = REPO_ROOT / "README.md"
README_MAX_BYTES = 15 * 1024  # a manual read in ten minutes; methods and measurements live in docs/


def readme_commands() -> list[str]:
    return re.findall(r"```\n(python3 -m venv[^\n]*)\n```", README.read_text())


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    start, test = commands
    assert start.endswith("run.py --demo") and "-r requirements.txt" in start
    assert test.endswith("-m pytest tests") and "tests/requirements.txt" in test


def test_ci_runs_the_readme_test_command():
    """.ci/run finds its test command in README with its own shell line: it must be README's second command."""
    script = (REPO_ROOT / ".ci" / "run").read_text()
    finder = re.search(r"^test_command=\$\((.*)\)$", script, re.M)
    assert finder and 'eval "$test_command"' in script
    found = subprocess.run(["bash", "-c", finder.group(1)], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == readme_commands()[1]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_every_relative_link_resolves():
    assert len(README.read_bytes()) <= README_MAX_BYTES
    pages = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an outside address
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name} links to missing {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.name} links to missing anchor {target}"


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
