"""The settings against the README's table of them: every setting named, and each scalar's
default as the table gives it."""

from __future__ import annotations

import re
from decimal import Decimal

from app.settings import Settings
from tests.conftest import README


def _table() -> list[tuple[list[str], list[str]]]:
    """Each row of the README's settings table: its names, and its defaults' cells."""
    text = README.read_text()
    start = text.index("| setting | default | meaning |")
    rows = text[start : text.index("\n\n", start)].splitlines()[2:]
    table = []
    for row in rows:
        cells = row.split("|")
        written = re.findall(r"`([^`]*)`", cells[2]) or cells[2].split()  # `5`, or none
        table.append((re.findall(r"`\[*(\w+)\]*`", cells[1]), written))
    return table


def _as_written(default: object) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float | Decimal) and default == int(default):
        return str(int(default))
    return str(default)


def test_the_readme_names_every_setting_and_only_those() -> None:
    named = [name for names, _ in _table() for name in names]
    assert sorted(named) == sorted(Settings.model_fields)


def test_the_readme_gives_each_scalar_setting_its_default() -> None:
    differing = []
    for names, defaults in _table():
        if not defaults:  # a table of its own ([[accounts]] ...): no single default
            continue
        if len(defaults) == 1 and len(names) > 1:
            defaults = defaults * len(names)
        for name, written in zip(names, defaults, strict=True):
            default = _as_written(Settings.model_fields[name].default)
            if default != written:
                differing.append((name, written, default))
    assert differing == []
