"""POST /$batch: up to 20 sub-requests, each through the full pipeline (so each can be throttled on its
own: a 429 inside a 200 envelope), `dependsOn` -> 424 when a dependency failed."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from emulators.graph.protocol import GraphError, Request, Response, error_body
from emulators.graph.routing import Ctx, Router

MAX_REQUESTS = 20


async def run_batch(ctx: Ctx) -> Response:
    payload = ctx.req.json()
    items = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise GraphError(400, "BadRequest", "Invalid batch payload: 'requests' is required.")
    if len(items) > MAX_REQUESTS:
        raise GraphError(400, "BadRequest", f"Too many requests in a batch; the maximum is {MAX_REQUESTS}.")
    ids: dict[str, dict[str, Any]] = {}
    for it in items:
        rid = str(it.get("id", ""))
        if not rid or not it.get("method") or not it.get("url"):
            raise GraphError(400, "BadRequest", "Each batch request needs id, method and url.")
        if rid.lower() in {k.lower() for k in ids}:
            raise GraphError(400, "BadRequest", f"Batch request ids must be unique; '{rid}' is repeated.")
        if it.get("body") is not None and not any(
            k.lower() == "content-type" for k in (it.get("headers") or {})
        ):
            raise GraphError(
                400, "BadRequest", "A Content-Type header is required when a batch request has a body."
            )
        ids[rid] = it
    for it in items:
        for dep in it.get("dependsOn") or []:
            if str(dep) not in ids:
                raise GraphError(400, "BadRequest", f"dependsOn refers to an unknown id '{dep}'.")

    results: dict[str, dict[str, Any]] = {}
    done: dict[str, asyncio.Event] = {rid: asyncio.Event() for rid in ids}
    parallel = asyncio.Semaphore(4)  # Outlook runs up to 4 sub-requests of a batch at once

    async def run(rid: str, it: dict[str, Any]) -> None:
        deps = [str(d) for d in it.get("dependsOn") or []]
        for d in deps:
            await done[d].wait()
        if any(not 200 <= results[d]["status"] < 300 for d in deps):
            results[rid] = {
                "id": rid,
                "status": 424,
                "headers": {"Content-Type": "application/json"},
                "body": error_body(424, "FailedDependency", "A dependency of this request failed."),
            }
        else:
            async with parallel:
                resp = await ctx.emu.handle(sub_request(ctx.req, it), in_batch=True)
            results[rid] = envelope(rid, resp)
        done[rid].set()

    await asyncio.gather(*(run(rid, it) for rid, it in ids.items()))
    return Response(200, {"responses": list(results.values())})  # in completion order, as Graph may


def sub_request(outer: Request, it: dict[str, Any]) -> Request:
    url = str(it["url"])
    if url.startswith("http"):
        url = urlsplit(url).path.removeprefix("/v1.0") + (
            "?" + urlsplit(url).query if urlsplit(url).query else ""
        )
    parts = urlsplit(url if url.startswith("/") else "/" + url)
    headers = dict(outer.headers)
    headers.pop("content-length", None)
    headers.pop("prefer", None)
    headers.update({k.lower(): str(v) for k, v in (it.get("headers") or {}).items()})
    body = it.get("body")
    raw = b""
    if isinstance(body, (dict, list)):
        raw = json.dumps(body).encode()
    elif isinstance(body, str):
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raw = body.encode()
    return Request(
        str(it["method"]).upper(), parts.path, dict(parse_qsl(parts.query)), headers, raw, outer.base_url
    )


def envelope(rid: str, resp: Response) -> dict[str, Any]:
    headers = {k: v for k, v in resp.headers.items() if not k.startswith("X-")}
    out: dict[str, Any] = {"id": rid, "status": resp.status, "headers": headers}
    if resp.body is not None:
        if isinstance(resp.body, bytes):
            out["body"] = base64.b64encode(resp.body).decode()
        else:
            headers.setdefault("Content-Type", "application/json")
            out["body"] = resp.body
    return out


def routes(r: Router) -> None:
    r.add("POST", "/$batch", run_batch)
