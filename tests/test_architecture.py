"""The shape of the code, read from the source with ``ast``: layers only call down, modules stay small,
and test modules share code through ``tests/support/`` only.

Layers of ``coordinator/`` (docs/architecture.md), lowest first; a module may import its own layer
and lower ones, ``TYPE_CHECKING``-only imports included (they are still a dependency of the design):

    0  core/, metrics, settings        pure
    1  store/, redis_embedded          Redis-backed
    2  realtime/
    3  h5/, payments/, tableops/, erp/
    4  services
    5  api/
    6  app, launcher, cli
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "coordinator"
TESTS = ROOT / "tests"
MAX_LINES = 400

#: The first name under ``coordinator.`` → its layer.
LAYERS: dict[str, int] = {
    "core": 0, "metrics": 0, "settings": 0, "log_redaction": 0, "security_headers": 0,
    "store": 1, "redis_embedded": 1, "redis_private": 1,
    "realtime": 2,
    "h5": 3, "payments": 3, "tableops": 3, "erp": 3,
    "services": 4,
    "api": 5,
    "app": 6, "launcher": 6, "cli": 6, "workers": 6,
}


@dataclass(frozen=True)
class Violation:
    """One breach of a rule, worded for the failure message."""

    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def module_name(path: Path, root: Path) -> str:
    """The dotted module name of a file under ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, importer: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module ``source`` imports, absolute and dotted, with its line (``from m import x`` gives
    ``m.x`` too, since ``x`` may be a submodule). Imports anywhere count: in functions, under
    ``TYPE_CHECKING``, in ``try``."""
    found: list[tuple[int, str]] = []
    package = importer if is_package else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")
    return found


def layer_of(module: str) -> int | None:
    """The layer of a ``coordinator.*`` module; None for other packages and the package itself."""
    parts = module.split(".")
    if parts[0] != "coordinator" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1], -1)


def upward_imports(source: str, importer: str, path: str, is_package: bool = False) -> list[Violation]:
    """The imports of ``source`` (module ``importer``) that reach a higher layer than its own."""
    own = layer_of(importer)
    if own is None:
        return []
    if own == -1:
        return [Violation(path, 1, f"{importer} has no layer: add it to LAYERS in tests/test_architecture.py")]
    # One report per line and target layer: ``from coordinator.realtime import liveness`` names the
    # package and the submodule, the most specific name is the one worth reading.
    worst: dict[tuple[int, str], str] = {}
    for line, target in imported_modules(source, importer, is_package):
        layer = layer_of(target)
        if layer is not None and layer > own:
            key = (line, ".".join(target.split(".")[:2]))
            worst[key] = max(worst.get(key, ""), target, key=len)
    return [Violation(path, line, f"{importer} (layer {own}) imports {target} (layer {layer_of(target)})")
            for (line, _), target in sorted(worst.items())]


def imports_of_test_modules(source: str, importer: str, path: str) -> list[Violation]:
    """The imports of ``source`` that name another test module (``test_*``) instead of ``tests.support``."""
    named: dict[int, str] = {}  # line -> the test module it imports (the first name that is one)
    for line, target in imported_modules(source, importer):
        parts = target.split(".")
        tested = next((i for i, part in enumerate(parts) if i and part.startswith("test_")), None)
        if parts[0] == "tests" and tested is not None:
            named.setdefault(line, ".".join(parts[: tested + 1]))
    return [Violation(path, line, f"{importer} imports the test module {target}: move what it needs to tests/support/")
            for line, target in sorted(named.items())]


def _sources(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if "__pycache__" not in p.parts)


# --- the rules, on this repository -------------------------------------------------------------------


def test_no_module_of_coordinator_imports_a_higher_layer():
    """Every import inside coordinator/ goes to the importer's own layer or a lower one."""
    violations = []
    for path in _sources(PACKAGE, "*.py"):
        violations += upward_imports(path.read_text(), module_name(path, ROOT), str(path.relative_to(ROOT)),
                                     is_package=path.name == "__init__.py")
    assert not violations, "imports from a higher layer:\n" + "\n".join(map(str, violations))


def test_no_module_of_coordinator_is_over_400_lines():
    """Every coordinator/**/*.py has at most 400 lines (one job per module)."""
    too_long = [f"{path.relative_to(ROOT)}: {n} lines"
                for path in _sources(PACKAGE, "*.py")
                if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not too_long, f"modules over {MAX_LINES} lines:\n" + "\n".join(too_long)


def test_no_test_module_imports_another():
    """tests/**/test_*.py take fixtures from plugins and helpers from tests.support, never from each other."""
    violations = []
    for path in _sources(TESTS, "test_*.py"):
        violations += imports_of_test_modules(path.read_text(), module_name(path, ROOT), str(path.relative_to(ROOT)))
    assert not violations, "test modules importing test modules:\n" + "\n".join(map(str, violations))


def test_every_top_level_module_of_coordinator_has_a_layer():
    """Each top-level module or package of coordinator/ is placed in LAYERS (none unplaced)."""
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert names and names <= set(LAYERS), f"modules without a layer: {sorted(names - set(LAYERS))}"


# --- the checkers can fail: literal sources -----------------------------------------------------------


def test_an_upward_import_is_reported_with_both_layers():
    """store importing realtime is named with its line and both layers; importing core is fine."""
    source = "from coordinator.core import rules\nfrom coordinator.realtime import liveness\n"
    [violation] = upward_imports(source, "coordinator.store.engine", "coordinator/store/engine.py")
    assert str(violation) == ("coordinator/store/engine.py:2: coordinator.store.engine (layer 1) imports "
                              "coordinator.realtime.liveness (layer 2)")


def test_type_checking_and_function_level_imports_count():
    """An import under TYPE_CHECKING or inside a function is a dependency like any other."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from coordinator.services import Services\n"
              "def f():\n    import coordinator.api.ws\n")
    lines = sorted({v.line for v in upward_imports(source, "coordinator.core.views", "core/views.py")})
    assert lines == [3, 5]


def test_relative_imports_are_resolved_before_judging():
    """``from ..api import ws`` in coordinator/realtime/hub.py is the upward import it looks like."""
    violations = upward_imports("from ..api import ws\nfrom . import stream\n", "coordinator.realtime.hub", "hub.py")
    assert [v.line for v in violations] == [1]
    assert "coordinator.api" in violations[0].text


def test_same_and_lower_layers_and_other_packages_pass():
    """The api layer may import services, store and core, and any third-party package."""
    source = ("import json\nimport aiohttp\nfrom coordinator import settings\nfrom coordinator.services import Services\n"
              "from coordinator.store.keys import events\nfrom coordinator.api.errors import x\n")
    assert upward_imports(source, "coordinator.api.h5", "api/h5.py") == []


def test_a_module_without_a_layer_is_reported():
    """A new top-level module must be placed in a layer before it can pass."""
    [violation] = upward_imports("", "coordinator.helpers", "coordinator/helpers.py")
    assert "has no layer" in violation.text


def test_importing_a_test_module_is_reported():
    """``from tests.test_ws import Socket`` is reported (relative or not); ``tests.support`` helpers are not."""
    source = ("from tests.support.app import bearer\nfrom tests.test_ws import Socket\n"
              "from tests import test_sweeper\nimport tests.test_h5_orders\nfrom .test_ws import open_socket\n")
    violations = imports_of_test_modules(source, "tests.test_realtime_multiprocess", "t.py")
    assert sorted({v.line for v in violations}) == [2, 3, 4, 5]
    assert "tests/support/" in violations[0].text
