from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_gives_the_two_commands_first() -> None:
    assert README.index("make demo") < README.index("## What it does")
    assert "make test" in README


def test_the_readme_is_a_front_page() -> None:
    assert len(README.splitlines()) <= 250


def test_the_readme_links_every_document() -> None:
    linked = set(re.findall(r"\]\(([^)#\s]+\.md)", README))
    documents = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")}
    assert documents - linked == set()
