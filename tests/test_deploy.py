"""What a Raspberry Pi gets: the runtime requirement set, and the systemd unit that runs the server."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import REPO_ROOT, Config, config_from_args

UNIT = REPO_ROOT / "deploy" / "edge-detect.service"
RUNTIME = REPO_ROOT / "requirements.txt"
DEVELOPMENT = REPO_ROOT / "tests" / "requirements.txt"
TOOLS = REPO_ROOT / "tools" / "requirements.txt"
# Never on the device: 3 GB of aarch64 wheels (torch with its CUDA libraries), and the desktop OpenCV needs libGL.
BANNED = re.compile(r"^(torch|torchvision|torchaudio|triton|ultralytics|onnxslim|nvidia-.*|opencv-python)$")
# Modules that more than one distribution provides, whichever of them this venv happens to have.
PROVIDERS = {"cv2": {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}}


def requirement_names(path: Path) -> set[str]:
    """The distributions a requirements file names, with those of the files it includes (`-r other.txt`)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names |= requirement_names(path.parent / line[3:].strip())
        elif line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def unit_entries(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in text.splitlines() if re.match(r"^[A-Z][A-Za-z]+=", line)]


def unit_value(key: str, text: str | None = None) -> str:
    values = [value for name, value in unit_entries(text or UNIT.read_text()) if name == key]
    assert values, f"{UNIT.name} has no {key}="
    return values[-1]


def unit_environment(text: str | None = None) -> dict[str, str]:
    entries = unit_entries(text or UNIT.read_text())
    return dict(value.split("=", 1) for name, value in entries if name == "Environment")


# -- requirement sets ----------------------------------------------------------------------------------
def test_runtime_set_has_no_torch_cuda_or_desktop_opencv():
    runtime = requirement_names(RUNTIME)
    assert "opencv-python-headless" in runtime
    assert not {name for name in runtime if BANNED.match(name)}


def test_development_set_brings_what_the_tests_compare_against():
    assert {"ultralytics", "torch", "torchvision", "onnxslim", "pytest", "playwright"} <= requirement_names(DEVELOPMENT)


def test_the_tools_set_is_part_of_the_development_set_and_the_runtime_set_has_none_of_it():
    """The user's tools (slimming: torch) have their own set; README's test command installs it too, a Pi never."""
    tools = requirement_names(TOOLS)
    assert {"torch", "ultralytics", "torch-pruning"} <= tools <= requirement_names(DEVELOPMENT)
    assert not tools & requirement_names(RUNTIME)


def _third_party_imports(folder: Path) -> dict[str, str]:
    """Top-level modules imported anywhere under folder that are not the standard library or the project."""
    found = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"server", "__future__"}:
                    found.setdefault(top, str(path.relative_to(folder)))
    return found


def _not_required(folder: str, required: set[str]) -> dict[str, tuple[str, list[str]]]:
    """Modules imported under folder that no distribution of required provides: module -> (a file, providers)."""
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in _third_party_imports(REPO_ROOT / folder).items():
        provided_by = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        provided_by |= PROVIDERS.get(module, set())
        if not provided_by & required and module != folder:
            missing[module] = (where, sorted(provided_by))
    return missing


def test_every_module_the_server_imports_is_in_the_runtime_set():
    """A new `import x` in server/ without x in requirements.txt would fail only on a fresh Pi: catch it here."""
    missing = _not_required("server", requirement_names(RUNTIME))
    assert not missing, f"imported by the server but not in requirements.txt: {missing}"


def test_every_module_the_tools_import_is_in_their_set():
    """A user installs requirements.txt and tools/requirements.txt to run tools/, not the development set."""
    missing = _not_required("tools", requirement_names(RUNTIME) | requirement_names(TOOLS))
    assert not missing, f"imported by tools/ but not in requirements.txt or tools/requirements.txt: {missing}"


def test_the_import_check_sees_a_module_outside_the_runtime_set(tmp_path):
    """The check above is not blind: an import of torch is found and torch is not in the runtime set."""
    (tmp_path / "sneaky.py").write_text("import torch.nn\nfrom ultralytics import YOLO\nimport json\n")
    found = _third_party_imports(tmp_path)
    assert set(found) == {"torch", "ultralytics"}
    assert not {"torch", "ultralytics"} & requirement_names(RUNTIME)


# -- the systemd unit -----------------------------------------------------------------------------------
def test_unit_runs_the_venv_python_as_a_dedicated_user():
    workdir = unit_value("WorkingDirectory")
    command = unit_value("ExecStart").split()
    assert command[0] == f"{workdir}/.venv/bin/python" and command[1] == f"{workdir}/run.py"
    assert unit_value("User") not in {"", "root"} and unit_value("Group") == unit_value("User")
    assert unit_value("Restart") == "on-failure"
    assert unit_value("StandardOutput") == "journal" and unit_value("StandardError") == "journal"
    assert unit_value("WantedBy") == "multi-user.target"


def test_unit_keeps_uploads_under_var_lib_owned_by_the_service():
    state = Path("/var/lib") / unit_value("StateDirectory")  # systemd creates it, owned by User=
    uploads = Path(unit_environment()["EDGE_UPLOADS"])
    assert state == Path("/var/lib/edge-detect") and uploads.is_relative_to(state)
    # ProtectSystem=strict leaves only the state directory (and a private /tmp) writable.
    assert unit_value("ProtectSystem") == "strict" and unit_value("PrivateTmp") == "yes"


def test_unit_environment_is_read_by_the_servers_config():
    """Every EDGE_* the unit sets is a real flag, and the config it gives is the one the unit means."""
    environment = unit_environment()
    flags = {f"EDGE_{name.upper()}" for name in Config.__dataclass_fields__}
    assert {name for name in environment if name.startswith("EDGE_")} <= flags
    config = config_from_args([], environ=environment)
    assert config.uploads == Path("/var/lib/edge-detect/uploads")
    assert config.host == "0.0.0.0" and config.port == 5000


def test_a_misspelled_flag_in_the_unit_would_be_caught():
    broken = UNIT.read_text().replace("EDGE_UPLOADS=", "EDGE_UPLOAD_DIR=")
    flags = {f"EDGE_{name.upper()}" for name in Config.__dataclass_fields__}
    assert "EDGE_UPLOAD_DIR" in set(unit_environment(broken)) - flags


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify the unit, its install folder moved under tmp_path with a stand-in venv python."""
    workdir = unit_value("WorkingDirectory")
    moved = tmp_path / workdir.lstrip("/")
    python = tmp_path / unit_value("ExecStart").split()[0].lstrip("/")
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    (moved / "run.py").write_text("")
    unit = tmp_path / UNIT.name
    unit.write_text(unit_text.replace(workdir, str(moved)))
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path):
    result = _verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_verify_rejects_a_broken_unit(tmp_path):
    """The verification above can fail: a unit whose ExecStart names no file is refused."""
    broken = UNIT.read_text().replace("/.venv/bin/python", "/venv-missing/bin/python")
    result = _verify(broken, tmp_path)
    assert result.returncode != 0 and "venv-missing" in result.stderr
