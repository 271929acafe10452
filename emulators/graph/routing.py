"""Path templates -> handlers. Graph URL forms are normalised first: `mailFolders('inbox')` ->
`mailFolders/inbox`, `delta()` -> `delta`; literal segments match case-insensitively."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from emulators.graph.protocol import GraphError, Request, Response

if TYPE_CHECKING:
    from emulators.graph.server import Emulator
    from emulators.graph.store import User


@dataclass
class Ctx:
    req: Request
    emu: Emulator
    params: dict[str, str]
    user: User | None = None

    @property
    def u(self) -> User:
        assert self.user is not None
        return self.user


Handler = Callable[[Ctx], "Response | Awaitable[Response]"]

_KEY_SYNTAX = re.compile(r"\(\s*'([^']*)'\s*\)")


def normalise(path: str) -> list[str]:
    path = _KEY_SYNTAX.sub(lambda m: "/" + m.group(1), path)
    segments = [unquote(s) for s in path.strip("/").split("/") if s]
    return [s[:-2] if s.endswith("()") else s for s in segments]


@dataclass
class Route:
    method: str
    template: str
    parts: list[str]
    handler: Handler


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        self.routes.append(Route(method, template, template.strip("/").split("/"), handler))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        segments = normalise(path)
        allowed = False
        for route in self.routes:
            if len(route.parts) != len(segments):
                continue
            params: dict[str, Any] = {}
            for part, seg in zip(route.parts, segments, strict=True):
                if part.startswith("{"):
                    params[part[1:-1]] = seg
                elif part.lower() != seg.lower():
                    break
            else:
                if route.method == method:
                    return route, params
                allowed = True
        if allowed:
            raise GraphError(405, "Request_BadRequest", "The HTTP method is not allowed on this resource.")
        raise GraphError(
            400, "BadRequest", f"Resource not found for the segment '{segments[-1] if segments else ''}'."
        )
