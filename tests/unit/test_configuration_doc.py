"""docs/configuration.md documents every app setting and every admin column of `SyncUsers`, exactly:
each table lists the names the code reads, in the code's order, with no row the code does not know,
and every setting's default as `shared/config.py` has it."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config import SETTINGS
from shared.users import COLUMNS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")


def _section(number: int) -> str:
    start = re.search(rf"^## {number}\. .*$", DOC, re.M)
    assert start is not None, f"docs/configuration.md has no section {number}"
    end = re.search(r"^## ", DOC[start.end() :], re.M)
    return DOC[start.end() : start.end() + end.start()] if end else DOC[start.end() :]


def _rows(section: str, header: str) -> list[list[str]]:
    """The rows of the one table in `section` whose header starts with `header`, cells stripped."""
    tables = re.findall(r"(?:^\|.*\|\n)+", section, re.M)
    chosen = [t for t in tables if t.startswith(f"| {header} |")]
    assert len(chosen) == 1, f"expected one table headed {header!r}"
    lines = chosen[0].splitlines()[2:]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def test_the_settings_table_lists_every_setting_in_order_with_its_default() -> None:
    rows = _rows(_section(1), "setting")
    assert [row[0] for row in rows] == [f"`{s.name}`" for s in SETTINGS]
    for s, row in zip(SETTINGS, rows, strict=True):
        expected = f"`{s.default}`" if s.default else ("required" if s.required else "")
        assert row[2] == expected, s.name
        assert row[1], f"{s.name} has no meaning"


def test_the_users_table_lists_every_admin_column_in_order() -> None:
    rows = _rows(_section(2), "column")
    assert [row[0] for row in rows] == [f"`{name}`" for name in COLUMNS]
    assert all(row[1] for row in rows)
