"""HTTP (function key): admin API and status page. The same operations as the `crmsync` CLI."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

import azure.functions as func

from shared import admin, status_page, wiring
from shared.errors import UserConfigError

bp = func.Blueprint()


def _json(value: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(value, default=str), status_code=status, mimetype="application/json")


@bp.route(route="manage/users", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_users(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    return _json([asdict(s) for s in await admin.user_statuses(services.state)])


@bp.route(route="manage/users/{upn}/{action:regex(^(sync|resync)$)}", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)  # fmt: skip
async def force_sync(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    upn, action = req.route_params["upn"], req.route_params["action"]
    try:
        jobs = await admin.request_sync(services.state, services.queue, upn, fresh=action == "resync")
    except UserConfigError as error:
        return _json({"error": str(error)}, 404 if "no SyncUsers row" in str(error) else 400)
    return _json({"queued": [job.stream for job in jobs]}, 202)


@bp.route(route="manage/users/{upn}/approve", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def approve_held(req: func.HttpRequest) -> func.HttpResponse:
    """Approve contact changes held by the mass-change brake (as `crmsync approve`)."""
    services = await wiring.services()
    try:
        message = await admin.approve(services.state, services.queue, req.route_params["upn"])
    except UserConfigError as error:
        return _json({"error": str(error)}, 404)
    return _json({"result": message}, 202)


@bp.route(route="manage/users/{upn}/check", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def check_user(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    upn = req.route_params["upn"]
    if await services.state.get_user(upn) is None:
        return _json({"error": f"no SyncUsers row for {upn!r}"}, 404)
    checks = await admin.check(services.state, services.crm, services.probe, upn)
    return _json({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]})


@bp.route(route="manage/users/{upn}/explain", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def explain_message(req: func.HttpRequest) -> func.HttpResponse:
    message = req.params.get("message", "")
    if not message:
        return _json({"error": "give ?message=<internetMessageId>"}, 400)
    services = await wiring.services()
    upn = req.route_params["upn"]
    if await services.state.get_user(upn) is None:
        return _json({"error": f"no SyncUsers row for {upn!r}"}, 404)
    return _json({"explanation": await admin.explain(services.state, upn, message)})


@bp.route(route="manage/status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def status(req: func.HttpRequest) -> func.HttpResponse:
    services = await wiring.services()
    statuses = await admin.user_statuses(services.state)
    return func.HttpResponse(status_page.render(statuses, datetime.now(UTC)), mimetype="text/html")
