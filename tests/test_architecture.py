"""The package stands on the public APIs of its libraries, and its layers stay apart.

Two checks, both run by the plain test command:

- an ``ast`` walk over ``supportbot/**/*.py`` that fails on what breaks with a dependency's next
  release or behind its back: importing a private name (``from lib import _x``) or a private
  module (``lib._x``) of another distribution, assigning ``__class__``, writing ``sys.modules``;
- the import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``): the core layers
  never import the platform adapters or their SDKs, nothing imports the CLI, adapters see the
  engine only through its package and its public types (``supportbot.engine.types``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "supportbot"
OURS = "supportbot"


def _private(part: str) -> bool:
    """``_x`` is private; ``__future__``/``__init__`` style dunders are not."""
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _writes_sys_modules(node: ast.expr) -> bool:
    """``sys.modules`` itself, or a subscript / method of it."""
    if isinstance(node, ast.Subscript):
        node = node.value
    return (isinstance(node, ast.Attribute) and node.attr == "modules"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def violations(source: str, filename: str = "<source>") -> list[str]:
    """What this module does that the package must not, one line per finding."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != OURS:
                if any(_private(p) for p in parts):
                    found.append(f"{where}: imports the private module {node.module}")
                found += [f"{where}: imports the private name {node.module}.{alias.name}"
                          for alias in node.names if _private(alias.name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != OURS and any(_private(p) for p in parts):
                    found.append(f"{where}: imports the private module {alias.name}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "__class__":
                    found.append(f"{where}: assigns __class__")
                if _writes_sys_modules(target):
                    found.append(f"{where}: writes sys.modules")
        elif isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "setattr" and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == "__class__"):
                found.append(f"{where}: assigns __class__")
            if (isinstance(func, ast.Attribute) and func.attr in _MUTATORS
                    and _writes_sys_modules(func.value)):
                found.append(f"{where}: writes sys.modules")
    return found


def _modules() -> Iterator[Path]:
    yield from sorted(PACKAGE.rglob("*.py"))


def test_the_package_uses_only_public_apis_of_its_dependencies() -> None:
    found = [line for path in _modules()
             for line in violations(path.read_text(encoding="utf-8"),
                                    str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize(("source", "finding"), [
    ("from telegram._utils.types import ODVInput", "private module telegram._utils.types"),
    ("from httpcore import _synchronization", "private name httpcore._synchronization"),
    ("import httpcore._async.connection_pool as pool", "private module httpcore._async"),
    ("client.__class__ = Faster", "assigns __class__"),
    ("setattr(client, '__class__', Faster)", "assigns __class__"),
    ("import sys\nsys.modules['sniffio'] = None", "writes sys.modules"),
    ("import sys\ndel sys.modules['sniffio']", "writes sys.modules"),
    ("import sys\nsys.modules.update(sniffio=None)", "writes sys.modules"),
])
def test_the_check_catches(source: str, finding: str) -> None:
    [line] = violations(source)
    assert finding in line


@pytest.mark.parametrize("source", [
    "from __future__ import annotations",
    "from supportbot.engine._internal import helper",  # our own modules are ours to arrange
    "from telegram.request import HTTPXRequest",
    "import sys\nmodule = sys.modules[__name__]",  # reading is fine
    "self.__class__.__name__",
])
def test_the_check_allows(source: str) -> None:
    assert violations(source) == []


# --- import-linter ----------------------------------------------------------------------------


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_the_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken" in result.stdout
