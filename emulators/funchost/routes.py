"""ASP.NET route templates, as HTTP trigger routes are written: `users/{id}`, `{id:int}`,
`{name?}`, `{*rest}`, chained constraints (`{n:int:min(1)}`) and `regex(...)`.

Literal segments match case-insensitively. Constraints are checked as ASP.NET Core checks them:
int, long, bool, guid, alpha, decimal/double/float, min, max, range, minlength, maxlength, length,
regex (unanchored, case-insensitive, as `Regex.IsMatch`); any other constraint is not checked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass


class RouteError(ValueError):
    pass


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def _constraint(name: str, arg: str) -> Callable[[str], bool]:
    args = [a.strip() for a in arg.split(",")] if arg else []
    n = [int(a) for a in args] if name in {"min", "max", "range", "minlength", "maxlength", "length"} else []
    checks: dict[str, Callable[[str], bool]] = {
        "int": lambda v: re.fullmatch(r"-?\d+", v) is not None,
        "long": lambda v: re.fullmatch(r"-?\d+", v) is not None,
        "bool": lambda v: v.lower() in {"true", "false"},
        "guid": _is_guid,
        "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
        "decimal": lambda v: _number(v) is not None,
        "double": lambda v: _number(v) is not None,
        "float": lambda v: _number(v) is not None,
        "min": lambda v: re.fullmatch(r"-?\d+", v) is not None and int(v) >= n[0],
        "max": lambda v: re.fullmatch(r"-?\d+", v) is not None and int(v) <= n[0],
        "range": lambda v: re.fullmatch(r"-?\d+", v) is not None and n[0] <= int(v) <= n[1],
        "minlength": lambda v: len(v) >= n[0],
        "maxlength": lambda v: len(v) <= n[0],
        "length": lambda v: len(v) == n[0] if len(n) == 1 else n[0] <= len(v) <= n[1],
        "regex": lambda v: re.search(arg, v, re.IGNORECASE) is not None,
    }
    return checks.get(name, lambda v: True)


def _split(template: str) -> list[str]:
    """Split on `/` outside braces (a regex constraint may hold a slash)."""
    segments, depth, current = [], 0, ""
    for ch in template.strip("/"):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += ch
    return [*segments, current] if template.strip("/") else []


@dataclass(frozen=True)
class Parameter:
    name: str
    optional: bool
    catch_all: bool
    checks: tuple[Callable[[str], bool], ...]


def _closing(text: str, segment: str) -> int:
    """The index of the `)` that closes the `(` at text[0]."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return i
    raise RouteError(f"unbalanced parentheses in {segment!r}")


def _parameter(segment: str) -> Parameter:
    body = segment[1:-1]
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", body)
    if not m:
        raise RouteError(f"route parameter {segment!r} has no name")
    name, rest = m.group(0), body[m.end() :]
    checks = []
    while rest.startswith(":"):
        c = re.match(r":([A-Za-z]+)", rest)
        if not c:
            raise RouteError(f"bad constraint in {segment!r}")
        rest, arg = rest[c.end() :], ""
        if rest.startswith("("):
            close = _closing(rest, segment)
            arg, rest = rest[1:close], rest[close + 1 :]
        checks.append(_constraint(c.group(1), arg))
    if rest not in {"", "?"}:
        raise RouteError(f"route parameter {segment!r} is not supported")
    return Parameter(name, rest == "?", catch_all, tuple(checks))


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    segments: tuple[str | Parameter, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        segments: list[str | Parameter] = []
        for segment in _split(template):
            if segment.startswith("{") and segment.endswith("}"):
                segments.append(_parameter(segment))
            elif "{" in segment or "}" in segment:
                raise RouteError(f"route segment {segment!r} is not supported")
            else:
                segments.append(segment.lower())
        return cls(template, tuple(segments))

    @property
    def rank(self) -> tuple[int, ...]:
        """Sorts literal segments before parameters, optional ones after, catch-alls last."""
        return tuple(
            0 if isinstance(s, str) else 3 if s.catch_all else 2 if s.optional else 1 for s in self.segments
        )

    def match(self, path: str) -> dict[str, str] | None:
        parts = path.strip("/").split("/") if path.strip("/") else []
        values: dict[str, str] = {}
        for i, segment in enumerate(self.segments):
            if isinstance(segment, Parameter) and segment.catch_all:
                rest = "/".join(parts[i:])
                if rest:
                    values[segment.name] = rest
                return values if all(check(rest) for check in segment.checks) or not rest else None
            if i >= len(parts):
                if isinstance(segment, Parameter) and segment.optional:
                    continue
                return None
            if isinstance(segment, str):
                if parts[i].lower() != segment:
                    return None
            elif all(check(parts[i]) for check in segment.checks):
                values[segment.name] = parts[i]
            else:
                return None
        return values if len(parts) <= len(self.segments) else None
