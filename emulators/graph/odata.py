"""OData query options the emulator understands: $select, $expand, $top/$skip listing pages."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from emulators.graph.protocol import GraphError, Request, parse_dt


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


_EXPAND = re.compile(r"^([\w./]+)(?:\((.*)\))?$", re.S)  # also a cast: microsoft.graph.eventMessage/event


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


def list_page(
    req: Request,
    items: Sequence[Any],
    context: str,
    default_top: int = 10,
    render: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """A plain (non-delta) collection page with $top/$skip and an absolute nextLink. Only the items of
    the page are rendered."""
    try:
        top = int(req.query.get("$top", default_top))
        skip = int(req.query.get("$skip", 0))
    except ValueError as exc:
        raise GraphError(400, "BadRequest", "Invalid $top or $skip.") from exc
    top = max(1, min(top, 1000))
    chunk = [render(x) for x in items[skip : skip + top]] if render else list(items[skip : skip + top])
    out: dict[str, Any] = {"@odata.context": context, "value": chunk}
    if skip + top < len(items):
        q = {k: v for k, v in req.query.items() if k != "$skip"}
        q["$skip"] = str(skip + top)
        out["@odata.nextLink"] = f"{req.base_url}{req.path}?{urlencode(q, safe=SAFE)}"
    return out


def context(req: Request, what: str) -> str:
    return f"{req.base_url}/$metadata#{what}"


# $filter: the small subset Outlook lists are queried with ------------------------------------------------
_LAMBDA = re.compile(r"^(\w+)/any\(\s*(\w+)\s*:\s*(.*)\)$", re.S)
_COMPARE = re.compile(r"^([\w/]+)\s+(eq|ne|ge|gt|le|lt)\s+(.+)$", re.S)
Getter = Callable[[str], Any]


def split_and(raw: str) -> list[str]:
    parts, depth, cur, quoted, i = [], 0, "", False, 0
    while i < len(raw):
        ch = raw[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if not quoted and depth == 0 and raw[i : i + 5].lower() == " and ":
            parts.append(cur.strip())
            cur, i = "", i + 5
            continue
        cur += ch
        i += 1
    parts.append(cur.strip())
    return [p for p in parts if p]


def _literal(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    try:
        return float(raw) if "." in raw and "T" not in raw else int(raw)
    except ValueError:
        pass
    try:
        return parse_dt(raw)
    except GraphError:
        raise GraphError(400, "BadRequest", f"Invalid filter clause: '{raw}'.") from None


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, datetime):
        left = parse_dt(left)
    if isinstance(left, datetime) and isinstance(right, str):
        try:
            right = parse_dt(right)
        except GraphError:
            left = left.isoformat()
    if isinstance(left, str) and isinstance(right, str):
        left, right = left.casefold(), right.casefold()
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    return bool({"ge": left >= right, "gt": left > right, "le": left <= right, "lt": left < right}[op])


def _member(item: Any, prop: str) -> Any:
    return (item or {}).get(prop)


def compile_filter(raw: str) -> Callable[[Getter], bool]:
    """`internetMessageId eq '<x>' and receivedDateTime ge 2026-01-01T00:00:00Z`,
    `emailAddresses/any(a: a/address eq 'x@y')`,
    `singleValueExtendedProperties/any(ep: ep/id eq '…' and ep/value eq '…')` -> a predicate over a getter."""
    tests: list[Callable[[Getter], bool]] = []
    for clause in split_and(raw.strip()):
        while clause.startswith("(") and clause.endswith(")"):
            clause = clause[1:-1].strip()
        lam = _LAMBDA.match(clause)
        if lam:
            coll, var, body = lam.groups()
            inner = compile_filter(re.sub(rf"\b{re.escape(var)}/", "", body))

            def any_test(get: Getter, coll: str = coll, inner: Callable[[Getter], bool] = inner) -> bool:
                return any(inner(functools.partial(_member, item)) for item in get(coll) or [])

            tests.append(any_test)
            continue
        cmp = _COMPARE.match(clause)
        if not cmp:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: '{clause}'.")
        prop, op, lit = cmp.group(1), cmp.group(2).lower(), _literal(cmp.group(3))

        def compare_test(get: Getter, prop: str = prop, op: str = op, lit: Any = lit) -> bool:
            value: Any = get(prop.split("/")[0])
            for part in prop.split("/")[1:]:
                value = (value or {}).get(part)
            return _compare(value, op, lit)

        tests.append(compare_test)
    return lambda get: all(t(get) for t in tests)
