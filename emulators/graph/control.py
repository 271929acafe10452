"""The control API under /_emulator/: what Graph itself cannot do (add users, deliver mail from anyone,
inject faults, expire tokens, deny a mailbox, send lifecycle events, stats, reset). No auth."""

from __future__ import annotations

from typing import Any

from emulators.graph import calendar, mail, mailbox, meetings, todo
from emulators.graph.protocol import GraphError, Response
from emulators.graph.routing import Ctx, Router
from emulators.graph.throttling import Fault


def add_user(ctx: Ctx) -> Response:
    body = ctx.req.json()
    upn = body.get("userPrincipalName", "")
    if "@" not in upn:
        raise GraphError(400, "BadRequest", "userPrincipalName must be an address.")
    enabled = body.get("accountEnabled")
    user = ctx.emu.tenant.add_user(
        upn,
        body.get("displayName") or upn.split("@")[0],
        body.get("id", ""),
        purpose=str(body.get("userPurpose") or "user"),
        enabled=None if enabled is None else bool(enabled),
    )
    return Response(201, mail.render_user(user))


def get_mailbox(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    return Response(200, mailbox.describe(tenant, tenant.user(ctx.params["upn"])))


def patch_mailbox(ctx: Ctx) -> Response:
    """Set-Mailbox / Add-RecipientPermission / Outlook's delegate dialog."""
    tenant = ctx.emu.tenant
    return Response(200, mailbox.configure(tenant, tenant.user(ctx.params["upn"]), ctx.req.json()))


def organise_meeting(ctx: Ctx) -> Response:
    return Response(201, meetings.organise(ctx.emu.tenant, ctx.req.json()))


def respond(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    body = ctx.req.json()
    return Response(200, meetings.respond(tenant, tenant.user(ctx.params["upn"]), ctx.params["id"], body))


def cancel_meeting(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    comment = str(ctx.req.json().get("comment", ""))
    return Response(200, meetings.cancel(tenant, tenant.user(ctx.params["upn"]), ctx.params["id"], comment))


def deliver(ctx: Ctx) -> Response:
    """Mail from anyone (inside or outside the tenant) arrives in the user's folder (default Inbox)."""
    user = ctx.emu.tenant.user(ctx.params["upn"])
    spec: dict[str, Any] = dict(ctx.req.json())
    if not spec.get("from"):
        raise GraphError(400, "BadRequest", "'from' is required.")
    folder = user.folder(spec.pop("folder", None) or "inbox")
    m = mail.new_message(ctx.emu.tenant, user, folder, spec)
    out = mail.render_message(m, mail.View(False, "", None, {}))
    out["immutableId"] = m.immutable_id
    return Response(201, out)


def invitation(ctx: Ctx) -> Response:
    """An invitation from outside the tenant arrives: Exchange puts the meeting in the user's calendar
    under the iCalUId the invitation carries (the sender chose it), organized by the sender."""
    user = ctx.emu.tenant.user(ctx.params["upn"])
    spec: dict[str, Any] = dict(ctx.req.json())
    uid, organizer = spec.pop("iCalUId", ""), spec.get("organizer")
    if not uid or not organizer:
        raise GraphError(400, "BadRequest", "'iCalUId' and 'organizer' are required.")
    spec.setdefault("responseStatus", {"response": "notResponded", "time": "0001-01-01T00:00:00Z"})
    ev = calendar.create_event(ctx.emu.tenant, user, spec)
    ev.ical_uid = uid
    return Response(201, {"id": ev.id, "iCalUId": uid})


def organizer_cancel(ctx: Ctx) -> Response:
    """The (outside) organizer cancels a meeting: the user's copy stays, with isCancelled and a
    "Canceled:" subject, as Outlook shows it until the user removes it."""
    user = ctx.emu.tenant.user(ctx.params["upn"])
    ev, day = calendar.find(user, ctx.params["id"])
    if day:
        over = ev.exceptions.setdefault(day, {})
        over.update(isCancelled=True, subject="Canceled: " + over.get("subject", ev.data.get("subject", "")))
        ev.exception_keys[day] = ctx.emu.tenant.new_change_key()
    else:
        ev.data.update(isCancelled=True, subject="Canceled: " + ev.data.get("subject", ""))
    calendar.touch_event(ctx.emu.tenant, user, ev)
    if ctx.req.json().get("sendMessage"):
        messages = meetings.cancelled_by_outside_organizer(ctx.emu.tenant, user, ev)
        return Response(200, {"messages": messages})
    return Response(204)


# To Do, as its user would change it in the app --------------------------------------------------------------
def todo_add_list(ctx: Ctx) -> Response:
    tenant, body = ctx.emu.tenant, ctx.req.json()
    name = str(body.get("displayName") or "")
    if not name:
        raise GraphError(400, "BadRequest", "displayName is required.")
    lst = tenant.add_todo_list(tenant.user(ctx.params["upn"]), name, shared=bool(body.get("isShared")))
    return Response(201, todo.render_list(lst))


def todo_patch_list(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    user = tenant.user(ctx.params["upn"])
    lst = todo.named_list(user, ctx.params["list"])
    todo.rename_list(tenant, user, lst, str(ctx.req.json().get("displayName") or ""))
    return Response(200, todo.render_list(lst))


def todo_delete_list(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    user = tenant.user(ctx.params["upn"])
    todo.delete_list(tenant, user, todo.named_list(user, ctx.params["list"]))
    return Response(204)


def todo_add_task(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    user = tenant.user(ctx.params["upn"])
    t = todo.create_task(tenant, user, todo.named_list(user, ctx.params["list"]), ctx.req.json())
    return Response(201, todo.render_task(t, "UTC", None, frozenset({"linkedresources", "checklistitems"})))


def todo_patch_task(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    user = tenant.user(ctx.params["upn"])
    t = todo.find_task(user, ctx.params["task"])
    dup = ctx.emu.config.todo_due_change_duplicates
    todo.update_task(tenant, user, user.todo_lists[t.list_id], t, ctx.req.json(), due_change_duplicates=dup)
    return Response(200, todo.render_task(t, "UTC", None, frozenset({"linkedresources", "checklistitems"})))


def todo_delete_task(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    user = tenant.user(ctx.params["upn"])
    t = todo.find_task(user, ctx.params["task"])
    todo.delete_task(tenant, user.todo_lists[t.list_id], t)
    return Response(204)


def todo_move_task(ctx: Ctx) -> Response:
    tenant = ctx.emu.tenant
    user = tenant.user(ctx.params["upn"])
    t = todo.find_task(user, ctx.params["task"])
    target = todo.named_list(user, str(ctx.req.json().get("list") or ""))
    return Response(200, todo.render_task(todo.move_task(tenant, user, t, target), "UTC"))


def add_fault(ctx: Ctx) -> Response:
    b = ctx.req.json()
    retry_after = b.get("retryAfter")
    fault = Fault(
        status=int(b["status"]),
        count=int(b.get("count", 1)),
        method=b.get("method", "") or "",
        path_contains=b.get("pathContains", "") or "",
        retry_after=None if retry_after is None else str(retry_after),
        error_code=b.get("errorCode", "") or "",
        message=b.get("message", "") or "",
        headers={str(k): str(v) for k, v in (b.get("headers") or {}).items()},
    )
    ctx.emu.faults.add(fault)
    return Response(201, {"pending": len(ctx.emu.faults.pending)})


def clear_faults(ctx: Ctx) -> Response:
    ctx.emu.faults.pending.clear()
    return Response(204)


def expire_tokens(ctx: Ctx) -> Response:
    user = ctx.emu.tenant.user(ctx.params["upn"])
    return Response(200, {"expired": ctx.emu.states.expire_user(user.id)})


def deny(ctx: Ctx) -> Response:
    ctx.emu.tenant.user(ctx.params["upn"]).denied = True
    return Response(204)


def allow(ctx: Ctx) -> Response:
    ctx.emu.tenant.user(ctx.params["upn"]).denied = False
    return Response(204)


async def lifecycle(ctx: Ctx) -> Response:
    event = ctx.req.json().get("lifecycleEvent", "")
    if event not in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
        raise GraphError(
            400,
            "BadRequest",
            "lifecycleEvent must be reauthorizationRequired, subscriptionRemoved or missed.",
        )
    await ctx.emu.notifier.lifecycle(ctx.params["id"], event)
    return Response(202)


def stats(ctx: Ctx) -> Response:
    emu = ctx.emu
    s = emu.stats
    return Response(
        200,
        {
            "requests": s.total,
            "batchSubRequests": s.batch_sub_requests,
            "byRoute": dict(s.by_route),
            "byUser": dict(s.by_user),
            "byStatus": dict(s.by_status),
            "throttled": {**emu.throttle.throttled, "injected": emu.faults.injected},
            "notifications": emu.notifier.counts(),
        },
    )


def request_log(ctx: Ctx) -> Response:
    """Method, route template, user and status of recent requests (no bodies, no query strings)."""
    return Response(200, {"value": list(ctx.emu.stats.log)})


def notifications(ctx: Ctx) -> Response:
    """Every notification POST attempted (url without query, payload, outcome)."""
    return Response(200, {"value": list(ctx.emu.notifier.deliveries)})


def reset(ctx: Ctx) -> Response:
    ctx.emu.reset(empty=bool(ctx.req.json().get("empty", False)))
    return Response(204)


def get_settings(ctx: Ctx) -> Response:
    return Response(200, ctx.emu.settings())


def patch_settings(ctx: Ctx) -> Response:
    ctx.emu.apply_settings(ctx.req.json())
    return Response(200, ctx.emu.settings())


def routes(r: Router) -> None:
    r.add("POST", "/users", add_user)
    r.add("POST", "/users/{upn}/deliver", deliver)
    r.add("POST", "/users/{upn}/expire-delta-tokens", expire_tokens)
    r.add("POST", "/users/{upn}/deny", deny)
    r.add("POST", "/users/{upn}/allow", allow)
    r.add("POST", "/users/{upn}/invitations", invitation)
    r.add("POST", "/users/{upn}/events/{id}/organizer-cancel", organizer_cancel)
    r.add("GET", "/users/{upn}/mailbox", get_mailbox)
    r.add("PATCH", "/users/{upn}/mailbox", patch_mailbox)
    r.add("POST", "/meetings", organise_meeting)
    r.add("POST", "/users/{upn}/events/{id}/respond", respond)
    r.add("POST", "/users/{upn}/events/{id}/cancel-meeting", cancel_meeting)
    r.add("POST", "/users/{upn}/todo/lists", todo_add_list)
    r.add("PATCH", "/users/{upn}/todo/lists/{list}", todo_patch_list)
    r.add("DELETE", "/users/{upn}/todo/lists/{list}", todo_delete_list)
    r.add("POST", "/users/{upn}/todo/lists/{list}/tasks", todo_add_task)
    r.add("PATCH", "/users/{upn}/todo/tasks/{task}", todo_patch_task)
    r.add("DELETE", "/users/{upn}/todo/tasks/{task}", todo_delete_task)
    r.add("POST", "/users/{upn}/todo/tasks/{task}/move", todo_move_task)
    r.add("POST", "/faults", add_fault)
    r.add("DELETE", "/faults", clear_faults)
    r.add("POST", "/subscriptions/{id}/lifecycle", lifecycle)
    r.add("GET", "/stats", stats)
    r.add("GET", "/requests", request_log)
    r.add("GET", "/notifications", notifications)
    r.add("POST", "/reset", reset)
    r.add("GET", "/settings", get_settings)
    r.add("PATCH", "/settings", patch_settings)
