"""OData query options the emulator understands: $select, $expand, $top/$skip listing pages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from emulators.graph.protocol import GraphError, Request


def parse_select(req: Request, known: frozenset[str], type_name: str) -> frozenset[str] | None:
    raw = req.query.get("$select", "")
    if not raw:
        return None
    names = frozenset(s.strip() for s in raw.split(",") if s.strip())
    lowered = {k.lower(): k for k in known}
    out = set()
    for n in names:
        canon = lowered.get(n.lower())
        if canon is None:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{n}' on type '{type_name}'.",
            )
        out.add(canon)
    return frozenset(out)


def split_top_level(raw: str) -> list[str]:
    """Split on commas that are not inside parentheses or quotes."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in raw:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


_EXPAND = re.compile(r"^(\w+)(?:\((.*)\))?$", re.S)


def parse_expand(req: Request) -> dict[str, str]:
    """$expand=attachments($select=name,size),singleValueExtendedProperties($filter=id eq '…')
    -> {"attachments": "$select=name,size", "singlevalueextendedproperties": "$filter=…"}."""
    out: dict[str, str] = {}
    for part in split_top_level(req.query.get("$expand", "")):
        m = _EXPAND.match(part)
        if not m:
            raise GraphError(400, "BadRequest", "Invalid $expand.")
        out[m.group(1).lower()] = m.group(2) or ""
    return out


SAFE = "$,()='"


def list_page(req: Request, items: Sequence[Any], context: str, default_top: int = 10) -> dict[str, Any]:
    """A plain (non-delta) collection page with $top/$skip and an absolute nextLink."""
    try:
        top = int(req.query.get("$top", default_top))
        skip = int(req.query.get("$skip", 0))
    except ValueError as exc:
        raise GraphError(400, "BadRequest", "Invalid $top or $skip.") from exc
    top = max(1, min(top, 1000))
    chunk = list(items[skip : skip + top])
    out: dict[str, Any] = {"@odata.context": context, "value": chunk}
    if skip + top < len(items):
        q = {k: v for k, v in req.query.items() if k != "$skip"}
        q["$skip"] = str(skip + top)
        out["@odata.nextLink"] = f"{req.base_url}{req.path}?{urlencode(q, safe=SAFE)}"
    return out


def context(req: Request, what: str) -> str:
    return f"{req.base_url}/$metadata#{what}"
