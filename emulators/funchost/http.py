"""HTTP triggers: route `/<routePrefix>/<route>` to the function, check its auth level, turn the
Starlette request into an `azure.functions.HttpRequest` and the function's result back into a
response, as the host and the Python worker do.

Auth levels: `anonymous` needs no key; `function` takes the function's own key, a host key or the
master key; `admin` takes the master key only. The key comes in the `x-functions-key` header or the
`code` query parameter and is compared in constant time. 404 for an unknown route, 405 for a
method the function does not take, 401 for a missing or wrong key, 500 when the function raises.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import azure.functions as func
from starlette.requests import Request
from starlette.responses import Response

from emulators.funchost.config import Keys
from emulators.funchost.indexing import FunctionSpec
from emulators.funchost.invoke import Invoker

logger = logging.getLogger(__name__)

REASON = "This function was programmatically called via the host APIs."


def supplied_key(request: Request) -> str:
    return request.headers.get("x-functions-key") or request.query_params.get("code") or ""


def key_matches(supplied: str, valid: list[str]) -> bool:
    """Constant-time comparison against every valid key (no early exit)."""
    given = supplied.encode("utf-8")
    matched = False
    for key in valid:
        matched |= bool(key) and hmac.compare_digest(given, key.encode("utf-8"))
    return matched and bool(given)


def authorized(level: str, function_name: str, request: Request, keys: Keys) -> bool:
    if level == "anonymous":
        return True
    valid = [keys.master]
    if level == "function":
        valid += [keys.host, keys.functions.get(function_name, "")]
    return key_matches(supplied_key(request), valid)


async def to_function_request(request: Request, route_params: dict[str, str]) -> func.HttpRequest:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=headers,
        params=dict(request.query_params),
        route_params=route_params,
        body=await request.body(),
    )


def to_response(result: Any) -> Response:
    if result is None:
        return Response(status_code=204)
    if isinstance(result, str):
        return Response(result, media_type="text/plain")
    if not isinstance(result, func.HttpResponse):
        logger.error("an HTTP function returned %s, not HttpResponse or str", type(result).__name__)
        return Response(status_code=500)
    response = Response(result.get_body(), status_code=result.status_code)
    pairs = [(k, v) for k, v in result.headers.items() if k.lower() != "content-length"]
    if not any(k.lower() == "content-type" for k, _ in pairs):
        mimetype = result.mimetype
        pairs.append(
            (
                "content-type",
                f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype,
            )
        )
    response.raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
    return response


class HttpFunctions:
    def __init__(self, specs: list[FunctionSpec], invoker: Invoker, keys: Keys, route_prefix: str) -> None:
        self.specs = sorted(
            (s for s in specs if s.kind == "http" and not s.error and s.route is not None),
            key=lambda s: s.route.rank if s.route else (),
        )
        self.invoker = invoker
        self.keys = keys
        self.prefix = f"/{route_prefix}" if route_prefix else ""

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
            return Response(status_code=404)
        path = path[len(self.prefix) :]
        matched: list[tuple[FunctionSpec, dict[str, str]]] = []
        for spec in self.specs:
            assert spec.route is not None
            params = spec.route.match(path)
            if params is not None:
                matched.append((spec, params))
        if not matched:
            return Response(status_code=404)
        allowed = [(s, p) for s, p in matched if request.method in s.methods]
        if not allowed:
            methods = sorted({m for s, _ in matched for m in s.methods})
            return Response(status_code=405, headers={"allow": ", ".join(methods)})
        spec, params = allowed[0]
        if not authorized(spec.auth_level, spec.name, request, self.keys):
            return Response(status_code=401)
        try:
            result = await self.invoker.invoke(spec, await to_function_request(request, params), REASON)
        except Exception:
            return Response(status_code=500)  # logged by the invoker
        return to_response(result)
