"""OData query options as Dataverse reads them: `$select`, `$orderby`, `$expand`, and the JSON shape
of a row (`$filter` is in `filters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulators.dataverse import errors
from emulators.dataverse.filters import Node, Scope, column_of, evaluate, parse_filter
from emulators.dataverse.schema import TABLES, Table

__all__ = ["Expand", "Node", "Scope", "column_of", "evaluate", "parse_filter", "render", "split_top"]


def split_top(text: str) -> list[str]:
    """Split at commas outside parentheses and quotes (`$expand`, `$orderby` lists)."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def parse_select(text: str | None, table: Table) -> list[str] | None:
    if not text:
        return None
    return [column_of(table, name.strip()) for name in text.split(",") if name.strip()]


def parse_orderby(text: str | None, table: Table) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    for part in split_top(text or ""):
        name, _, direction = part.partition(" ")
        if direction.strip() not in ("", "asc", "desc"):
            raise errors.bad_request(f"Syntax error in $orderby '{text}'.", "0x0")
        order.append((column_of(table, name), direction.strip() == "desc"))
    return order


@dataclass
class Expand:
    nav: str
    select: list[str] | None
    filter: Node | None


def parse_expand(text: str | None, table: Table) -> list[Expand]:
    out = []
    for part in split_top(text or ""):
        nav, _, options = part.partition("(")
        nav = nav.strip()
        if nav != table.parties or not nav:
            raise errors.bad_request(
                f"Could not find a property named '{nav}' on type '{table.type_name}' that can be expanded "
                "(the stand-in expands activity-party collections only).",
                "0x0",
            )
        parties = TABLES["activityparty"]
        select, node = None, None
        for option in options.rstrip(")").split(";") if options else []:
            name, _, value = option.partition("=")
            if name.strip() == "$select":
                select = parse_select(value, parties)
            elif name.strip() == "$filter":
                node = parse_filter(value, parties)
            elif name.strip() in ("$orderby", "$top"):
                continue  # single-level expand: allowed, the stand-in keeps party order
            else:
                raise errors.bad_request(
                    f"Query option '{name}' is not supported inside $expand.", "0x80060888"
                )
        out.append(Expand(nav, select, node))
    return out


def render(
    table: Table, row: dict[str, Any], select: list[str] | None, annotations: bool = False
) -> dict[str, Any]:
    """A row as the Web API returns it: `@odata.etag`, the selected columns (all when no $select),
    the primary key always, lookups as `_x_value` (with the target table when annotations are asked)."""
    out: dict[str, Any] = {"@odata.etag": f'W/"{row.get("versionnumber", 0)}"'}
    names = select if select is not None else _all_columns(table)
    for name in [*names, table.primary_id]:
        out[name] = row.get(name)
        if annotations and name.endswith("_value") and row.get(name):
            target = row.get("@lookup", {}).get(name[1:-6])
            out[f"{name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = target
    return out


def _all_columns(table: Table) -> list[str]:
    return [f"_{c.name}_value" if c.kind == "lookup" else c.name for c in table.columns.values()]
