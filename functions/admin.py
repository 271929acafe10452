"""HTTP: admin API and status page under `/api/manage/`. The same operations as the `crmsync` CLI.

Every route is registered through `_admin_route`, which makes it `anonymous` to the Functions host
(no Functions key opens it, the webhook key included) and lets a request through only when
`shared.admin_access` finds an admin credential: an Entra sign-in with the `CrmSync.Admin` app role
under App Service authentication, else `ADMIN_KEY`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from shared import admin, admin_access, status_page, wiring
from shared.errors import UserConfigError

bp = func.Blueprint()
logger = logging.getLogger(__name__)
Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]
ADMIN_AUTH_LEVEL = func.AuthLevel.ANONYMOUS  # to the host; `shared.admin_access` checks every request


def _json(value: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(value, default=str), status_code=status, mimetype="application/json")


def _admin_route(route: str, methods: list[str]) -> Callable[[Handler], Any]:
    """Register `handler` at `manage/<route>`, behind the admin check."""

    def register(handler: Handler) -> Any:
        @functools.wraps(handler)
        async def gated(req: func.HttpRequest) -> func.HttpResponse:
            settings = (await wiring.services()).settings
            verdict = admin_access.check(
                req.headers,
                req.params,
                easy_auth=settings is not None and settings.easy_auth,
                admin_key=settings.admin_key if settings is not None else "",
            )
            if not verdict.allowed:
                logger.info("admin request refused status=%d route=%s", verdict.status, route)
                return _json({"error": verdict.reason}, verdict.status)
            return await handler(req)

        return bp.route(route=f"manage/{route}", methods=methods, auth_level=ADMIN_AUTH_LEVEL)(gated)

    return register


@_admin_route("users", ["GET"])
async def list_users(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    return _json([asdict(s) for s in await admin.user_statuses(services.state)])


@_admin_route("users/{upn}/{action:regex(^(sync|resync)$)}", ["POST"])
async def force_sync(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    upn, action = req.route_params["upn"], req.route_params["action"]
    try:
        jobs = await admin.request_sync(services.state, services.queue, upn, fresh=action == "resync")
    except UserConfigError as error:
        return _json({"error": str(error)}, 404 if "no SyncUsers row" in str(error) else 400)
    return _json({"queued": [job.stream for job in jobs]}, 202)


@_admin_route("users/{upn}/approve", ["POST"])
async def approve_held(req: func.HttpRequest) -> func.HttpResponse:
    """Approve contact changes held by the mass-change brake (as `crmsync approve`)."""
    services = await wiring.services()
    try:
        message = await admin.approve(services.state, services.queue, req.route_params["upn"])
    except UserConfigError as error:
        return _json({"error": str(error)}, 404)
    return _json({"result": message}, 202)


@_admin_route("users/{upn}/check", ["GET"])
async def check_user(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    upn = req.route_params["upn"]
    if await services.state.get_user(upn) is None:
        return _json({"error": f"no SyncUsers row for {upn!r}"}, 404)
    checks = await admin.check(services.state, services.crm, services.probe, upn)
    return _json({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]})


@_admin_route("users/{upn}/explain", ["GET"])
async def explain_message(req: func.HttpRequest) -> func.HttpResponse:
    message = req.params.get("message", "")
    if not message:
        return _json({"error": "give ?message=<internetMessageId>"}, 400)
    services = await wiring.services()
    upn = req.route_params["upn"]
    if await services.state.get_user(upn) is None:
        return _json({"error": f"no SyncUsers row for {upn!r}"}, 404)
    return _json({"explanation": await admin.explain(services.state, upn, message)})


@_admin_route("status", ["GET"])
async def status(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    statuses = await admin.user_statuses(services.state)
    return func.HttpResponse(status_page.render(statuses, datetime.now(UTC)), mimetype="text/html")
