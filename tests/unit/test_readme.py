from __future__ import annotations

from pathlib import Path

from shared.config import SETTINGS
from shared.users import COLUMNS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_the_readme_gives_the_two_commands_first() -> None:
    assert README.index("make demo") < README.index("## What it does")
    assert "make test" in README


def test_every_app_setting_and_user_column_is_documented() -> None:
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in README]
    missing += [name for name in COLUMNS if f"`{name}`" not in README]
    assert missing == []
