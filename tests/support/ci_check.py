"""The aarch64 check's Python (.ci/pi/), loaded by path: the check runs it as scripts, and `.ci` is no package name."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from server.config import REPO_ROOT

CHECK_FOLDER = REPO_ROOT / ".ci" / "pi"


def check_module(name: str) -> ModuleType:
    """.ci/pi/<name>.py as a module, loaded once."""
    key = f"ci_pi_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, CHECK_FOLDER / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
