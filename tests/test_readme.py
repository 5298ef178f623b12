"""The README's Guarantees table names the test of each guarantee: every test it names
exists, so a renamed or removed test cannot leave a guarantee pointing at nothing. (The
README's commands, endpoints and settings are checked beside the code they describe:
``test_cli``, ``test_openapi``, ``test_settings``.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import README

ROOT = README.parent


def _named_tests() -> list[tuple[str, str | None]]:
    """(file, test) for each "`tests/x.py::test_a`, `::test_b`" (a file alone: test None)."""
    named: list[tuple[str, str | None]] = []
    for path, first, rest in re.findall(
        r"`(tests/[\w/]+\.py)((?:::\w+)?)`((?:, `::\w+`)*)", README.read_text()
    ):
        names = ([first[2:]] if first else []) + re.findall(r"`::(\w+)`", rest)
        named.extend((path, name) for name in names or [None])
    return named


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {node.name for node in ast.walk(tree) if isinstance(node, kinds)}


def test_every_test_the_readme_names_exists() -> None:
    named = _named_tests()
    assert len(named) > 15
    missing = [
        f"{path}::{name}" if name else path
        for path, name in named
        if not (ROOT / path).is_file() or (name is not None and name not in _defined(ROOT / path))
    ]
    assert missing == []
