"""The policy package stays pure: no network, filesystem, clock, process or logging access.

Checked statically with ``ast``, over every module of image_updater/policy and every
project module they import (transitively), so a helper cannot smuggle I/O in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "image_updater" / "policy"

#: Top-level modules whose import means I/O, a clock, randomness or global logging.
FORBIDDEN_MODULES = frozenset({
    "os", "pathlib", "io", "socket", "ssl", "select", "selectors", "subprocess", "shutil",
    "tempfile", "glob", "time", "logging", "asyncio", "threading", "multiprocessing",
    "random", "secrets", "uuid", "urllib", "http", "httpx", "requests", "boto3", "botocore",
    "git", "ruamel", "yaml", "apscheduler", "prometheus_client", "sqlite3", "signal", "sys",
})
#: Calls that read the clock or touch the outside world even without a forbidden import.
FORBIDDEN_CALLS = frozenset({
    "now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp", "open", "print", "input",
    "exec", "eval", "__import__", "breakpoint",
})


def _module_path(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "image_updater":
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _called_names(tree: ast.AST) -> set[str]:
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                called.add(func.id)
            elif isinstance(func, ast.Attribute):
                called.add(func.attr)
    return called


def _closure() -> dict[Path, ast.Module]:
    """The policy modules and every image_updater module reachable from their imports."""
    todo = sorted(POLICY.glob("*.py"))
    seen: dict[Path, ast.Module] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imports(seen[path]):
            parts = name.split(".")
            # Importing a.b.c also runs a/__init__.py and a/b/__init__.py.
            for depth in range(1, len(parts) + 1):
                found = _module_path(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


MODULES = _closure()


def test_closure_covers_the_policy_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"version.py", "constraint.py", "filters.py", "strategies.py"} <= names
    assert len(MODULES) >= 4


@pytest.mark.parametrize("path", sorted(MODULES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_forbidden_imports(path: Path) -> None:
    roots = {name.split(".")[0] for name in _imports(MODULES[path])}
    assert roots & FORBIDDEN_MODULES == set()


@pytest.mark.parametrize("path", sorted(MODULES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_clock_or_io_calls(path: Path) -> None:
    assert _called_names(MODULES[path]) & FORBIDDEN_CALLS == set()


def test_the_checker_catches_impurity() -> None:
    # Guard against a checker that passes vacuously.
    tree = ast.parse("import os\nfrom datetime import datetime\nx = datetime.now()\n")
    assert {n.split(".")[0] for n in _imports(tree)} & FORBIDDEN_MODULES == {"os"}
    assert _called_names(tree) & FORBIDDEN_CALLS == {"now"}
