"""The package stands on the public APIs of its libraries, and its layers stay apart.

Two checks, both run by the plain test command:

- an ``ast`` walk over ``supportbot/**/*.py`` that fails on what breaks with a dependency's next
  release or behind its back: importing a private name (``from lib import _x``) or a private
  module (``lib._x``) of another distribution, reading or writing a private attribute the
  package never defines itself (``app._middleware``, ``getattr(app, "_middleware")``: so it is
  a library's), assigning ``__class__``, writing ``sys.modules``;
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
_ATTRIBUTE_CALLS = {"getattr", "setattr", "hasattr", "delattr"}
# public API spelled with a leading underscore so it cannot clash with a field's name:
# SQLAlchemy's ``Row._mapping``, namedtuple's methods
PUBLIC_UNDERSCORED = {"_mapping", "_asdict", "_replace", "_fields", "_make"}


def defined_names(source: str) -> set[str]:
    """Every name this module defines: a private attribute read elsewhere is ours if one of
    the package's modules defines it (``self._x = ...``, ``def _x``, a field ``_x: int``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _foreign(name: str, ours: set[str]) -> bool:
    return _private(name) and name not in ours and name not in PUBLIC_UNDERSCORED


def violations(source: str, filename: str = "<source>", ours: set[str] | None = None) -> list[str]:
    """What this module does that the package must not, one line per finding. ``ours``: the
    names the whole package defines (this module's own when not given)."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    ours = defined_names(source) if ours is None else ours
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and _foreign(node.attr, ours):
            found.append(f"{where}: uses the private attribute {node.attr} of a library")
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
            if (isinstance(func, ast.Name) and func.id in _ATTRIBUTE_CALLS
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[1].value, str)
                    and _foreign(node.args[1].value, ours)):
                found.append(f"{where}: uses the private attribute {node.args[1].value} "
                             "of a library")
    return found


def _modules() -> Iterator[Path]:
    yield from sorted(PACKAGE.rglob("*.py"))


def test_the_package_uses_only_public_apis_of_its_dependencies() -> None:
    sources = {path: path.read_text(encoding="utf-8") for path in _modules()}
    ours = set().union(*(defined_names(source) for source in sources.values()))
    found = [line for path, source in sources.items()
             for line in violations(source, str(path.relative_to(ROOT)), ours)]
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
    # the Slack adapter's old auth.test warm-up, reading and writing Bolt's internals
    ("for m in getattr(self.app, '_async_middleware_list', []): pass",
     "private attribute _async_middleware_list"),
    ("for m in self.app._async_middleware_list: pass", "private attribute _async_middleware_list"),
    ("port = site._server.sockets[0].getsockname()[1]", "private attribute _server"),
    ("setattr(client, '_session', None)", "private attribute _session"),
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
    "class Pool:\n    def __init__(self):\n        self._free = []\n"
    "def drain(pool):\n    return pool._free",  # our own class's private attribute
    "value = getattr(self, '_deadline', None)\nself._deadline = 1",
    "row._mapping['id']",  # SQLAlchemy's public API
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
