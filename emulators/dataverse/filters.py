"""`$filter` as Dataverse reads it: comparisons (`eq ne gt ge lt le`), `and or not`, parentheses,
`contains` / `startswith` / `endswith`, `Microsoft.Dynamics.CRM.In` / `NotIn`, `any` / `all` over an
activity-party collection, `null`, quoted strings (a quote inside is doubled), GUIDs (bare or quoted),
numbers, booleans and ISO date-times. String comparisons ignore case, as Dataverse's do. An unknown
property is refused with Dataverse's message; so is a lone quote ("unterminated literal").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulators.dataverse import errors
from emulators.dataverse.schema import TABLES, Table

Node = tuple[Any, ...]
_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])"
    r"|(?P<date>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)(?![\w-])"
    r"|(?P<number>-?\d+(?:\.\d+)?)(?![\w-])"
    r"|(?P<name>[A-Za-z_$][\w.]*(?:/[A-Za-z_$][\w.]*)*)"
    r"|(?P<punct>[(),:=])"
    r")"
)
_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {"contains", "startswith", "endswith"}
_DATAVERSE_IN = {"Microsoft.Dynamics.CRM.In": False, "Microsoft.Dynamics.CRM.NotIn": True}


def column_of(table: Table, name: str) -> str:
    """The stored name of a property named in a query (`_x_value` for a lookup), or a 400."""
    if name in table.columns and table.columns[name].kind != "lookup":
        return name
    if name.startswith("_") and name.endswith("_value"):
        inner = name[1:-6]
        if inner in table.columns and table.columns[inner].kind == "lookup":
            return name
    if name in table.columns:  # a lookup's logical name
        return f"_{name}_value"
    raise errors.no_such_property(name, table.type_name)


class _Parser:
    def __init__(self, text: str, table: Table) -> None:
        self.text, self.table = text, table
        self.tokens: list[tuple[str, Any, int]] = self._tokens(text)
        self.at = 0
        self.scopes: dict[str, Table] = {}

    def _tokens(self, text: str) -> list[tuple[str, Any, int]]:
        out: list[tuple[str, Any, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos].isspace():
                pos += 1
                continue
            if text[pos] == "'":
                end, value = _string(text, pos)
                out.append(("string", value, pos))
                pos = end
                continue
            if text[pos] == "[":
                end = _array_end(text, pos)
                try:
                    out.append(("array", json.loads(text[pos:end]), pos))
                except ValueError:
                    raise errors.bad_request(
                        f"Invalid JSON. A comma character ',' was expected at position {pos}.", "0x0"
                    ) from None
                pos = end
                continue
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise errors.bad_request(f"Syntax error at position {pos} in '{text}'.", "0x0")
            kind = match.lastgroup or ""
            out.append((kind, match.group(kind), pos))
            pos = match.end()
        return out

    def peek(self, offset: int = 0) -> tuple[str, Any, int]:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", None, len(self.text))

    def take(self, kind: str, value: Any = None) -> Any:
        token = self.peek()
        if token[0] != kind or (value is not None and token[1] != value):
            raise errors.bad_request(f"Syntax error at position {token[2]} in '{self.text}'.", "0x0")
        self.at += 1
        return token[1]

    def parse(self) -> Node:
        node = self.or_()
        if self.peek()[0] != "end":
            raise errors.bad_request(f"Syntax error at position {self.peek()[2]} in '{self.text}'.", "0x0")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek()[:2] == ("name", "or"):
            self.at += 1
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.peek()[:2] == ("name", "and"):
            self.at += 1
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.peek()[:2] == ("name", "not"):
            self.at += 1
            return ("not", self.not_())
        return self.primary()

    def primary(self) -> Node:
        kind, value, _ = self.peek()
        if kind == "punct" and value == "(":
            self.at += 1
            node = self.or_()
            self.take("punct", ")")
            return node
        if kind == "name" and value in _FUNCTIONS:
            self.at += 1
            self.take("punct", "(")
            prop = self.operand()
            self.take("punct", ",")
            literal = self.operand()
            self.take("punct", ")")
            return ("fn", value, prop, literal)
        if kind == "name" and value in _DATAVERSE_IN:
            return self.dataverse_in(_DATAVERSE_IN[value])
        if kind == "name" and re.search(r"/(any|all)$", value) and self.peek(1)[1] == "(":
            return self.lambda_()
        left = self.operand()
        op = self.take("name")
        if op not in _COMPARE:
            raise errors.bad_request(f"Syntax error: unknown operator '{op}' in '{self.text}'.", "0x0")
        return ("cmp", op, left, self.operand())

    def dataverse_in(self, negate: bool) -> Node:
        self.at += 1
        self.take("punct", "(")
        self.take("name", "PropertyName")
        self.take("punct", "=")
        name = self.take("string")
        self.take("punct", ",")
        self.take("name", "PropertyValues")
        self.take("punct", "=")
        values = self.take("array")
        self.take("punct", ")")
        node: Node = ("in", ("prop", None, column_of(self.table, name)), [_plain(v) for v in values])
        return ("not", node) if negate else node

    def lambda_(self) -> Node:
        path = self.take("name")
        collection, _, quantifier = path.rpartition("/")
        if collection != self.table.parties:
            raise errors.no_such_property(collection, self.table.type_name)
        self.take("punct", "(")
        var = self.take("name")
        self.take("punct", ":")
        self.scopes[var] = TABLES["activityparty"]
        body = self.or_()
        self.take("punct", ")")
        return ("lambda", quantifier, var, body)

    def operand(self) -> Node:
        kind, value, _ = self.take_any()
        if kind == "string":
            return ("lit", value)
        if kind == "guid":
            return ("lit", value.lower())
        if kind == "date":
            return ("lit", _instant(value))
        if kind == "number":
            return ("lit", float(value) if "." in value else int(value))
        if kind == "name":
            if value in ("true", "false"):
                return ("lit", value == "true")
            if value == "null":
                return ("lit", None)
            scope, _, name = value.rpartition("/")
            if scope and scope in self.scopes:
                return ("prop", scope, column_of(self.scopes[scope], name))
            return ("prop", None, column_of(self.table, value))
        raise errors.bad_request(f"Syntax error at position {self.peek()[2]} in '{self.text}'.", "0x0")

    def take_any(self) -> tuple[str, Any, int]:
        token = self.peek()
        self.at += 1
        return token


def _string(text: str, start: int) -> tuple[int, str]:
    pos, chars = start + 1, []
    while pos < len(text):
        if text[pos] == "'":
            if pos + 1 < len(text) and text[pos + 1] == "'":
                chars.append("'")
                pos += 2
                continue
            return pos + 1, "".join(chars)
        chars.append(text[pos])
        pos += 1
    raise errors.bad_request(f"There is an unterminated literal at position {start} in '{text}'.", "0x0")


def _array_end(text: str, start: int) -> int:
    depth, pos, quoted = 0, start, False
    while pos < len(text):
        char = text[pos]
        if quoted:
            if char == "\\":
                pos += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    raise errors.bad_request(f"There is an unterminated array at position {start} in '{text}'.", "0x0")


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower() if re.fullmatch(r"[0-9a-fA-F-]{36}", value) else value
    return value


def _instant(text: str) -> str:
    """A date-time in the form rows keep: UTC, whole seconds, `Z`."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_filter(text: str, table: Table) -> Node:
    return _Parser(text, table).parse()


@dataclass
class Scope:
    """What a filter is evaluated against: the row, and the activity parties of activities."""

    row: dict[str, Any]
    parties: list[dict[str, Any]]


def evaluate(node: Node, scope: Scope, bound: dict[str, dict[str, Any]] | None = None) -> Any:
    bound = bound or {}
    op = node[0]
    if op == "or":
        return bool(evaluate(node[1], scope, bound)) or bool(evaluate(node[2], scope, bound))
    if op == "and":
        return bool(evaluate(node[1], scope, bound)) and bool(evaluate(node[2], scope, bound))
    if op == "not":
        return not evaluate(node[1], scope, bound)
    if op == "lit":
        return node[1]
    if op == "prop":
        source = bound[node[1]] if node[1] else scope.row
        return source.get(node[2])
    if op == "cmp":
        return _compare(node[1], evaluate(node[2], scope, bound), evaluate(node[3], scope, bound))
    if op == "fn":
        value, wanted = evaluate(node[2], scope, bound), evaluate(node[3], scope, bound)
        if not isinstance(value, str) or not isinstance(wanted, str):
            return False
        value, wanted = value.lower(), wanted.lower()
        return {"contains": wanted in value, "startswith": value.startswith(wanted)}.get(
            node[1], value.endswith(wanted)
        )
    if op == "in":
        value = evaluate(node[1], scope, bound)
        return any(_compare("eq", value, v) for v in node[2])
    if op == "lambda":
        hits = (evaluate(node[3], scope, {**bound, node[2]: p}) for p in scope.parties)
        return any(hits) if node[1] == "any" else all(hits)
    raise AssertionError(op)


def _compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        left, right = left.lower(), right.lower()
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool({"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op])
    except TypeError:
        return False


def candidates(node: Node, lookup: Any) -> set[str] | None:
    """Row ids a filter can only match among, from indexed equality tests (None: no index helps).
    `lookup(column, value)` answers the ids whose indexed column equals value, or None."""
    op = node[0]
    if (
        op == "cmp"
        and node[1] == "eq"
        and node[2][0] == "prop"
        and node[2][1] is None
        and (node[3][0] == "lit" and isinstance(node[3][1], str))
    ):
        found = lookup(node[2][2], node[3][1])
        return None if found is None else set(found)
    if op == "in" and node[1][1] is None:
        out: set[str] = set()
        for value in node[2]:
            found = lookup(node[1][2], str(value))
            if found is None:
                return None
            out |= set(found)
        return out
    if op == "or":
        left, right = candidates(node[1], lookup), candidates(node[2], lookup)
        return None if left is None or right is None else left | right
    if op == "and":
        left, right = candidates(node[1], lookup), candidates(node[2], lookup)
        if left is None or right is None:
            return left if right is None else right
        return left & right
    return None
