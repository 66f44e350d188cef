"""The package layers hold: no import cycles between the CLI, the demo and the rest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


MODULES = sorted(SERVICES.rglob("*.py"))


def package(path: Path) -> str:
    return path.relative_to(SERVICES).parts[0]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SERVICES)))
def test_layering(path):
    found = imports(path)
    if package(path) != "cli":
        assert not any(m.startswith("services.cli") for m in found), "nothing imports the CLI"
    if package(path) not in ("cli", "demo"):
        assert not any(m.startswith("services.demo") for m in found), "only the CLI runs the demo"
    if package(path) == "runtime":
        banned = ("services.accounting", "services.ledger", "services.attribution")
        assert not any(m.startswith(banned) for m in found), "plumbing knows no money"
