"""Markers that work: ``python -m pytest -m "not slow"`` is a quick subset that still reaches every
product package (each one is imported by a test file with tests that are not marked slow).

Read from the test files' syntax (no test runs): a file is slow when it sets
``pytestmark = pytest.mark.slow`` (or a list holding it); a test is slow when decorated with
``@pytest.mark.slow``. What a file imports is resolved to the defining module (``from segmenter
import VideoPredictor`` reaches ``segmenter.video``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("gsam_runtime", "ontologies", "detectors", "segmenter", "grounded_sam")


def _is_slow(node: ast.expr) -> bool:
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow(e) for e in node.elts)
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "slow"


def _fast_tests(tree: ast.Module) -> list[str]:
    """Names of the tests in a module that ``-m "not slow"`` selects."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            if _is_slow(node.value):
                return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            if not any(_is_slow(d) for d in node.decorator_list):
                found.append(node.name)
    return found


def _reached(tree: ast.Module) -> set[str]:
    """Product modules a test module imports, resolved to where the names are defined."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] in PRODUCT}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] in PRODUCT:
            names.add(node.module)
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                where = getattr(value, "__module__", None) or getattr(value, "__name__", None)
                if isinstance(where, str) and where.split(".")[0] in PRODUCT:
                    names.add(where)
    return names


def _packages() -> list[str]:
    return sorted(".".join(p.parent.relative_to(ROOT).parts) for top in PRODUCT for p in (ROOT / top).rglob("__init__.py"))


def test_markers_are_registered(pytestconfig: pytest.Config) -> None:
    declared = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert {"slow", "parity"} <= declared
    assert "--strict-markers" in pytestconfig.getini("addopts")  # a misspelt marker is an error, not a no-op


def test_not_slow_still_reaches_every_package() -> None:
    reached: set[str] = set()
    slow_somewhere = False
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        fast = _fast_tests(tree)
        slow_somewhere |= len(fast) < sum(
            1 for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test"))
        if fast:
            reached |= _reached(tree)
    assert slow_somewhere, "no test is marked slow: the quick subset is the whole suite"
    missing = [pkg for pkg in _packages() if not any(m == pkg or m.startswith(pkg + ".") for m in reached)]
    assert not missing, f"packages no quick test imports: {missing}"
