"""Sending mail: `sendMail` and a draft's `send`, with Exchange's send rights and the copies it keeps
(Microsoft's "send mail from another user" and message-send pages, and Exchange's "save sent items in the
delegator's mailbox" settings).

Whom a message is from is resolved against the from-mailbox's rights: the sending mailbox itself; Send As
(from = sender = the other mailbox, no trace of who sent it); Send on Behalf (from = the other mailbox,
sender = who sent it); otherwise 403 ErrorSendAsDenied. Sent Items: the sending mailbox's (unless
`saveToSentItems` is false), plus the from-mailbox's when its MessageCopyForSentAsEnabled /
MessageCopyForSendOnBehalfEnabled is on (whatever `saveToSentItems` says). Every copy, and every
recipient's copy in the tenant, carries one internetMessageId."""

from __future__ import annotations

from typing import Any

from emulators.graph import mail
from emulators.graph.protocol import GraphError, Response, iso, utcnow
from emulators.graph.routing import Ctx, Router
from emulators.graph.store import Message, Tenant, User

SEND_AS_DENIED = (
    "The user account which was used to submit this request does not have the right to send mail on "
    "behalf of the specified sending account."
)


def resolve(tenant: Tenant, acting: User, whom: Any) -> tuple[User | None, str]:
    """(the from-mailbox when it is not the acting one, "self" | "sendAs" | "sendOnBehalf")."""
    address = mail.pair(whom)[1].lower() if whom else ""
    if not address or address == acting.upn.lower():
        return None, "self"
    owner = tenant.by_upn.get(address)
    if owner is not None and acting.id in owner.send_as:
        return owner, "sendAs"
    if owner is not None and acting.id in owner.send_on_behalf:
        return owner, "sendOnBehalf"
    raise GraphError(403, "ErrorSendAsDenied", SEND_AS_DENIED)


def submit(tenant: Tenant, acting: User, spec: dict[str, Any], *, save: bool) -> None:
    """Send `spec` (Graph message properties, `from` as the client set it) from `acting`'s mailbox."""
    owner, right = resolve(tenant, acting, spec.get("from"))
    me = {"emailAddress": {"name": acting.display_name, "address": acting.upn}}
    them = {"emailAddress": {"name": owner.display_name, "address": owner.upn}} if owner else me
    out = {k: v for k, v in spec.items() if k not in ("isDraft", "sender", "@odata.type")}
    out["from"] = them
    out["sender"] = them if right == "sendAs" else me
    now = iso(utcnow())
    out["receivedDateTime"] = out["sentDateTime"] = now
    out.setdefault("internetMessageId", f"<{tenant.new_id('')[:24]}@{acting.upn.split('@')[-1]}>")
    out.setdefault("conversationId", "AAQkAG" + tenant.new_id("")[:40])
    sent = {**out, "isRead": True, "isDraft": False}
    if save:
        mail.new_message(tenant, acting, acting.folder("sentitems"), sent)
    if owner is not None and (
        (right == "sendAs" and owner.copy_sent_as) or (right == "sendOnBehalf" and owner.copy_send_on_behalf)
    ):
        mail.new_message(tenant, owner, owner.folder("sentitems"), sent)
    deliver_to_tenant(tenant, out)


def deliver_to_tenant(tenant: Tenant, spec: dict[str, Any]) -> None:
    """Each recipient mailbox of the tenant gets its copy in its Inbox (once, however often it is named)."""
    seen: set[str] = set()
    for key in ("toRecipients", "ccRecipients", "bccRecipients", "to", "cc"):
        for r in spec.get(key, []):
            addr = mail.pair(r)[1].lower()
            target = tenant.by_upn.get(addr)
            if target is not None and addr not in seen:
                seen.add(addr)
                mail.new_message(tenant, target, target.folder("inbox"), {**spec, "isRead": False})


def send_mail(ctx: Ctx) -> Response:
    payload = {k.lower(): v for k, v in ctx.req.json().items()}  # action parameters: any casing
    msg = payload.get("message") or {}
    if not msg.get("toRecipients") and not msg.get("ccRecipients") and not msg.get("bccRecipients"):
        raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
    submit(ctx.emu.tenant, ctx.u, dict(msg), save=bool(payload.get("savetosentitems", True)))
    return Response(202)


def send_draft(ctx: Ctx) -> Response:
    """POST …/messages/{id}/send: the draft leaves Drafts (reported as removed there) and a new item, with
    a new id even under ImmutableId, arrives in Sent Items with the draft's internetMessageId and
    conversationId."""
    u, tenant = ctx.u, ctx.emu.tenant
    m = u.message(ctx.params["message"])
    if not m.is_draft:
        raise GraphError(400, "ErrorInvalidOperation", "Only a draft message can be sent.")
    if not (m.to or m.cc or m.bcc):
        raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
    spec = _as_spec(m)
    submit(tenant, u, spec, save=True)  # rights are checked before the draft goes
    tenant.delete_message(u, m)
    return Response(202)


def _as_spec(m: Message) -> dict[str, Any]:
    def people(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [mail.recipient(p) for p in pairs]

    return {
        "subject": m.subject,
        "bodyHtml": m.body_html,
        "toRecipients": people(m.to),
        "ccRecipients": people(m.cc),
        "bccRecipients": people(m.bcc),
        "from": mail.recipient(m.from_addr or m.sender),
        "internetMessageId": m.internet_message_id,
        "conversationId": m.conversation_id,
        "importance": m.importance,
        "categories": list(m.categories),
        "attachments": [
            {"name": a.name, "size": a.size, "contentType": a.content_type} for a in m.attachments
        ],
    }


def routes(r: Router) -> None:
    r.add("POST", "/users/{user}/sendMail", send_mail)
    for prefix in (
        "/users/{user}/messages/{message}",
        "/users/{user}/mailFolders/{folder}/messages/{message}",
    ):
        r.add("POST", prefix + "/send", send_draft)
