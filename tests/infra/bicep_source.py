"""Reading the Bicep in `infra/` for the tests: parse with pycep (a real Bicep parser, the one
checkov uses) and pick out resources, modules and literal values."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep JSON of one file; raises on a syntax error."""
    return dict(BicepParser().parse(file_path=path))


def unquote(key: str) -> str:
    """pycep keeps the quotes of quoted object keys ('azd-service-name')."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def resources_of_type(path: Path, resource_type: str) -> dict[str, dict[str, Any]]:
    """Symbolic name -> config of every resource of that type declared in the file."""
    found = parse(path).get("resources", {})
    return {
        name: r["config"] for name, r in found.items() if r["type"] == resource_type and not r["existing"]
    }


def only(items: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert len(items) == 1, f"expected exactly one, found {sorted(items)}"
    return next(iter(items.values()))
