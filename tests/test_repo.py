"""The repository as a newcomer meets it: layout, README's two commands, CI running the same one, docs that resolve."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from server.config import REPO_ROOT

TOP_LEVEL = {"server", "tools", "bench", "harness", "deploy", "templates", "static", "uploads", "tests", "docs",
             "requirements.txt", "run.py", "README.md", ".ci"}
# Who may import whom, by top-level folder. The server imports none of the others; the harness (what tests and
# benchmarks drive the server with) only the server; the user's tools the server, never the measurements' or the
# tests' code; the measurements the harness and the tools too; the aarch64 check's scripts (.ci/pi) the harness.
MAY_IMPORT = {
    "server": {"server"},
    "harness": {"server", "harness"},
    "tools": {"server", "tools"},
    "bench": {"server", "harness", "tools", "bench"},
    ".ci": {"server", "harness"},
    "tests": {"server", "harness", "tools", "bench", "tests"},
}
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


def module_name(path: Path) -> str:
    """The dotted name Python gives a file of the repository (a package's __init__ is the package)."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every module of `known` that the file imports: at the top, inside functions and under TYPE_CHECKING alike.

    `from package import name` counts as importing package.name when that is a module, else the package.
    """
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            source = ".".join(filter(None, [base, node.module or ""]))
            found.update(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                         for alias in node.names)
    return found & known - {importer}


def import_graph(*folders: str) -> dict[str, set[str]]:
    """Module -> the modules it imports, for every module under the given top-level folders."""
    files = {module_name(path): path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(module)
        return None

    return next(filter(None, (visit(module) for module in sorted(graph))), None)


def test_find_cycle_names_the_modules_of_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_no_import_cycles_in_any_folder():
    """No module imports one that imports it back, not even where Python tolerates it (under TYPE_CHECKING, inside a
    function): a cycle is one concern split over two modules, or a lower module reaching up."""
    cycle = find_cycle(import_graph(*MAY_IMPORT))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The base layer is the top-level modules (server/*.py: config, files, jobs, layout, storage, ...); a package
# imports the base, itself and packages of lower layers only. The base imports the base only: the config holds the
# names and defaults of its options as data, and each package builds its own settings from it.
LAYERS = {"base": 0, "vision": 1, "demo": 1, "models": 2, "events": 2, "outputs": 2, "web": 3}


def layer_of(module: str) -> str:
    if (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file() and module.count(".") == 1:
        return "base"
    package = module.split(".")[1]
    assert package in LAYERS, f"{module}: a package the layers do not name (add it to LAYERS)"
    return package


def test_imports_run_one_way():
    """web -> models, events, outputs -> vision, demo -> base; nothing in server imports tools or tests."""
    graph = import_graph("server")
    for module in (name for name in graph if name.startswith("server.")):  # server/__init__.py: the app factory
        importer = layer_of(module)
        for target in graph[module]:
            assert target.split(".")[0] == "server", f"{module} imports {target}"
            if target == "server":
                continue
            imported = layer_of(target)
            assert imported in (importer, "base") or LAYERS[imported] < LAYERS[importer], \
                f"{module} ({importer}) imports {target} ({imported})"



ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"


def package_of(module: str) -> str:
    """The box a server module is drawn in: its package, "base" for the top-level modules, "web" for server/__init__."""
    return "web" if module == "server" else layer_of(module)


def package_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) for every pair of different boxes that some module of the first imports from the second."""
    return {(package_of(module), package_of(target)) for module, targets in graph.items() if module.startswith("server")
            for target in targets if package_of(module) != package_of(target)}


def drawn_imports() -> set[tuple[str, str]]:
    """The arrows of docs/architecture.md's picture (its mermaid block), run.py's left out."""
    picture = re.search(r"```mermaid\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert picture, "docs/architecture.md has no mermaid picture of the packages"
    arrows = set(re.findall(r"^\s*([\w.]+) --> (\w+)\s*$", picture.group(1), re.M))
    return {arrow for arrow in arrows if arrow[0] != "run.py"}


def test_the_architecture_picture_is_the_code():
    """docs/architecture.md draws every package's imports: an arrow the code lacks, or one it has that the picture
    lacks, fails here, so the one-screen map stays true."""
    actual, drawn = package_imports(import_graph("server")), drawn_imports()
    assert not actual - drawn, f"imports the picture lacks: {sorted(actual - drawn)}"
    assert not drawn - actual, f"arrows the code does not have: {sorted(drawn - actual)}"


def folder_of(module: str) -> str:
    return next(folder for folder in MAY_IMPORT if module == folder or module.startswith(folder + "."))


def test_the_folders_import_one_way():
    """The server, the harness, the user's tools, the measurements, the check, the tests: each imports only the
    folders MAY_IMPORT names for it (a tool importing tests/ would need the tests' packages to run)."""
    graph = import_graph(*MAY_IMPORT)
    for module, targets in sorted(graph.items()):
        allowed = MAY_IMPORT[folder_of(module)]
        wrong = sorted(target for target in targets if folder_of(target) not in allowed)
        assert not wrong, f"{module} imports {wrong}: {folder_of(module)}/ may import only {sorted(allowed)}"


def test_the_folder_check_sees_a_wrong_import(tmp_path, monkeypatch):
    """The check above is not blind: the harness importing tests/ is found."""
    (tmp_path / "harness").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "harness" / "client.py").write_text("from tests.support import helpers\n")
    (tmp_path / "tests" / "support.py").write_text("")
    monkeypatch.setattr(f"{__name__}.REPO_ROOT", tmp_path)
    graph = import_graph("harness", "tests")
    assert graph["harness.client"] == {"tests.support"}
    assert folder_of("tests.support") not in MAY_IMPORT["harness"]


MAX_MODULE_LINES = 500
LINE_LIMITED = ("server", "tools", "bench", "harness", ".ci")  # the tests are measured by what they check


def test_no_module_outside_the_tests_is_over_500_lines():
    lengths = {str(path.relative_to(REPO_ROOT)): len(path.read_text().splitlines())
               for folder in LINE_LIMITED for path in (REPO_ROOT / folder).rglob("*.py")}
    long = {name: lines for name, lines in lengths.items()
            if lines > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"
