"""HTTP: Graph change notifications and lifecycle events. Verify, enqueue, answer 202 at once.

Never reads Graph or the CRM. The URLs Graph calls carry the function key (`?code=`), so the
endpoints are function-level protected; Graph's validation handshake is answered first.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import notifications, wiring
from shared.errors import BadNotification, TooLarge

bp = func.Blueprint()
logger = logging.getLogger(__name__)
MAX_TOKEN_CHARS = 2048


def _handshake(req: func.HttpRequest) -> func.HttpResponse | None:
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        return func.HttpResponse("validation token too long", status_code=400, mimetype="text/plain")
    return func.HttpResponse(token, status_code=200, mimetype="text/plain")


def _bad(error: BadNotification) -> func.HttpResponse:
    status = 413 if isinstance(error, TooLarge) else 400
    return func.HttpResponse(str(error), status_code=status, mimetype="text/plain")


@bp.route(route="notifications", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    handshake = _handshake(req)
    if handshake is not None:
        return handshake
    services = await wiring.services()
    try:
        result = await notifications.handle_changes(
            req.get_body(), services.state, services.state, services.queue
        )
    except BadNotification as error:
        return _bad(error)
    logger.info("notifications accepted=%d ignored=%d unread=%d enqueued=%d coalesced=%d", result.accepted,
                result.ignored, result.unread, result.enqueued, result.coalesced)  # fmt: skip
    return func.HttpResponse(status_code=202)


@bp.route(route="lifecycle", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    handshake = _handshake(req)
    if handshake is not None:
        return handshake
    services = await wiring.services()
    try:
        result = await notifications.handle_lifecycle(req.get_body(), services.state, services.queue)
    except BadNotification as error:
        return _bad(error)
    logger.info(
        "lifecycle accepted=%d ignored=%d unread=%d enqueued=%d",
        result.accepted,
        result.ignored,
        result.unread,
        result.enqueued,
    )
    return func.HttpResponse(status_code=202)
