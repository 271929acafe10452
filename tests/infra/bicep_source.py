"""Reading the Bicep in `infra/` for the tests.

Two independent real parsers (the Bicep compiler itself is .NET and cannot be installed offline):
- pycep-parser (Lark grammar; the parser checkov uses), which also gives the JSON the tests inspect;
- tree-sitter-bicep (the tree-sitter grammar), whose 1.1.0 release predates the `extension` keyword:
  its only accepted error is an `extension <alias>` line, and everything around it must parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter
import tree_sitter_bicep
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


EXTENSION_LINE = re.compile(r"^extension [A-Za-z][A-Za-z0-9]*$")


def _tree_sitter_nodes(source: bytes, wanted: Callable[[tree_sitter.Node], bool]) -> list[tuple[int, str]]:
    """(line, text) of every node of the tree-sitter-bicep parse that `wanted` picks, in file order."""
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))
    found: list[tuple[int, str]] = []
    pending = [parser.parse(source).root_node]
    while pending:
        node = pending.pop()
        if wanted(node):
            text = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
            found.append((node.start_point.row + 1, text))
        pending.extend(node.children)
    return sorted(found)


def tree_sitter_errors(source: bytes) -> list[tuple[int, str]]:
    """(line, text) of every ERROR or MISSING node tree-sitter-bicep reports."""
    return _tree_sitter_nodes(source, lambda node: node.type == "ERROR" or node.is_missing)


def string_literals(source: bytes) -> list[tuple[int, str]]:
    """(line, text) of every string literal, in decorators and interpolated strings too (the type
    keyword `string` is a node of the same name, without the quote)."""
    return _tree_sitter_nodes(
        source,
        lambda node: node.type in {"string", "multiline_string"} and source[node.start_byte] == ord("'"),
    )
