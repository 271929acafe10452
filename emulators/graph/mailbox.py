"""Mailbox settings (`/users/{id}/mailboxSettings`, with `userPurpose` telling a person's mailbox from a
shared, room or equipment one, as Microsoft's userPurpose page has it) and the Exchange-side mailbox
configuration the control API sets as an admin would with Set-Mailbox / Add-RecipientPermission /
Outlook's delegate dialog: Send As, Send on Behalf, delegates and the MessageCopyFor…
switches."""

from __future__ import annotations

from typing import Any

from emulators.graph.odata import context
from emulators.graph.protocol import GraphError, Response
from emulators.graph.recurrence import zone
from emulators.graph.routing import Ctx, Router
from emulators.graph.store import Tenant, User

DELIVERY_OPTIONS = (
    "sendToDelegateAndInformationToPrincipal",
    "sendToDelegateAndPrincipal",
    "sendToDelegateOnly",
)
UPDATABLE = frozenset(
    [
        "automaticRepliesSetting",
        "dateFormat",
        "delegateMeetingMessageDeliveryOptions",
        "language",
        "timeFormat",
        "timeZone",
        "workingHours",
    ]
)


def settings(u: User) -> dict[str, Any]:
    """The mailboxSettings object. `userPurpose` is a plain enum string here, as the v1.0 CSDL has it
    (the SDK reads an object there as None); only the sub-resource wraps it in {"value": …}."""
    return {"archiveFolder": u.well_known["archive"], **u.settings, "userPurpose": u.purpose}


def get_settings(ctx: Ctx) -> Response:
    u = ctx.u
    return Response(
        200, {"@odata.context": context(ctx.req, f"users('{u.id}')/mailboxSettings"), **settings(u)}
    )


def get_setting(ctx: Ctx) -> Response:
    """GET …/mailboxSettings/{name}: a primitive answers {"value": …}, an object answers itself."""
    u, name = ctx.u, ctx.params["name"]
    found = {k.lower(): k for k in settings(u)}.get(name.lower())
    if found is None:
        raise GraphError(
            400,
            "RequestBroker--ParseUri",
            f"Could not find a property named '{name}' on type 'mailboxSettings'.",
        )
    value = settings(u)[found]
    ctx_url = context(ctx.req, f"users('{u.id}')/mailboxSettings/{found}")
    body = (
        {"@odata.context": ctx_url, **value}
        if isinstance(value, dict)
        else {"@odata.context": ctx_url, "value": value}
    )
    return Response(200, body)


def patch_settings(ctx: Ctx) -> Response:
    u = ctx.u
    body = {k: v for k, v in ctx.req.json().items() if not k.startswith("@odata.")}
    for k, v in body.items():
        if k not in UPDATABLE:
            raise GraphError(400, "ErrorInvalidPropertySet", f"The property '{k}' cannot be updated.")
        if k == "delegateMeetingMessageDeliveryOptions" and v not in DELIVERY_OPTIONS:
            raise GraphError(
                400, "ErrorInvalidParameter", f"Invalid delegateMeetingMessageDeliveryOptions '{v}'."
            )
        if k == "timeZone":
            zone(str(v))
    for k, v in body.items():
        u.settings[k] = (
            {**u.settings[k], **v} if isinstance(v, dict) and isinstance(u.settings.get(k), dict) else v
        )
    return get_settings(ctx)


def configure(tenant: Tenant, u: User, body: dict[str, Any]) -> dict[str, Any]:
    """The control API's Set-Mailbox: grants by address (each must be a mailbox of the tenant), switches,
    delegates (adding one in Outlook also grants Send on Behalf), the delivery option, accountEnabled."""

    def ids(key: str) -> set[str]:
        return {tenant.user(str(a)).id for a in body.get(key) or []}

    if "sendAs" in body:
        u.send_as = ids("sendAs")
    if "grantSendOnBehalfTo" in body:
        u.send_on_behalf = ids("grantSendOnBehalfTo")
    if "delegates" in body:
        u.delegates = [tenant.user(str(a)).id for a in body["delegates"] or []]
        u.send_on_behalf |= set(u.delegates)
    if "messageCopyForSentAsEnabled" in body:
        u.copy_sent_as = bool(body["messageCopyForSentAsEnabled"])
    if "messageCopyForSendOnBehalfEnabled" in body:
        u.copy_send_on_behalf = bool(body["messageCopyForSendOnBehalfEnabled"])
    if "accountEnabled" in body:
        u.account_enabled = bool(body["accountEnabled"])
    option = body.get("delegateMeetingMessageDeliveryOptions")
    if option is not None:
        if option not in DELIVERY_OPTIONS:
            raise GraphError(
                400, "BadRequest", f"delegateMeetingMessageDeliveryOptions must be one of {DELIVERY_OPTIONS}."
            )
        u.settings["delegateMeetingMessageDeliveryOptions"] = option
    if "timeZone" in body:
        zone(str(body["timeZone"]))
        u.settings["timeZone"] = str(body["timeZone"])
    return describe(tenant, u)


def describe(tenant: Tenant, u: User) -> dict[str, Any]:
    def upns(ids: set[str] | list[str]) -> list[str]:
        return sorted(tenant.users[i].upn for i in ids)

    return {
        "userPrincipalName": u.upn,
        "userPurpose": u.purpose,
        "accountEnabled": u.account_enabled,
        "sendAs": upns(u.send_as),
        "grantSendOnBehalfTo": upns(u.send_on_behalf),
        "delegates": [tenant.users[i].upn for i in u.delegates],
        "messageCopyForSentAsEnabled": u.copy_sent_as,
        "messageCopyForSendOnBehalfEnabled": u.copy_send_on_behalf,
        "delegateMeetingMessageDeliveryOptions": u.settings["delegateMeetingMessageDeliveryOptions"],
        "timeZone": u.settings["timeZone"],
    }


def routes(r: Router) -> None:
    r.add("GET", "/users/{user}/mailboxSettings", get_settings)
    r.add("PATCH", "/users/{user}/mailboxSettings", patch_settings)
    r.add("GET", "/users/{user}/mailboxSettings/{name}", get_setting)
