"""Users, mail folders, messages, message delta, sendMail."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emulators.graph import delta
from emulators.graph.odata import (
    compile_filter,
    context,
    list_page,
    parse_expand,
    parse_select,
    split_and,
)
from emulators.graph.protocol import GraphError, Request, Response, iso, parse_dt, utcnow
from emulators.graph.routing import Ctx, Router
from emulators.graph.store import Attachment, MailFolder, Message, Tenant, User

MESSAGE_TYPE = "#microsoft.graph.message"
MESSAGE_SELECT_TYPE = "Microsoft.OutlookServices.Message"  # as Outlook names it in a $select error
EVENT_EXPAND = "microsoft.graph.eventmessage/event"
DRAFT_ONLY = frozenset(
    [
        "subject",
        "body",
        "replyTo",
        "internetMessageId",
        "toRecipients",
        "ccRecipients",
        "bccRecipients",
        "from",
    ]
)
MESSAGE_FLAGS = "integer 0x0e07"  # PR_MESSAGE_FLAGS; MSGFLAG_READ 0x01, MSGFLAG_UNSENT 0x08
SUBMIT_TIME = "systemtime 0x0039"  # PR_CLIENT_SUBMIT_TIME
DELIVERY_TIME = "systemtime 0x0e06"  # PR_MESSAGE_DELIVERY_TIME
MESSAGE_PROPS = frozenset(
    [
        "id",
        "createdDateTime",
        "lastModifiedDateTime",
        "changeKey",
        "categories",
        "receivedDateTime",
        "sentDateTime",
        "hasAttachments",
        "internetMessageId",
        "subject",
        "bodyPreview",
        "importance",
        "parentFolderId",
        "conversationId",
        "conversationIndex",
        "isDeliveryReceiptRequested",
        "isReadReceiptRequested",
        "isRead",
        "isDraft",
        "webLink",
        "inferenceClassification",
        "body",
        "uniqueBody",
        "sender",
        "from",
        "toRecipients",
        "ccRecipients",
        "bccRecipients",
        "replyTo",
        "flag",
        "internetMessageHeaders",
    ]
)
DEFAULT_PROPS = MESSAGE_PROPS - {"uniqueBody", "internetMessageHeaders"}
FOLDER_PROPS = frozenset(
    [
        "id",
        "displayName",
        "parentFolderId",
        "childFolderCount",
        "unreadItemCount",
        "totalItemCount",
        "isHidden",
    ]
)
SENSITIVITY_TAG = "Integer 0x36"
QUOTE_MARKERS = (
    '<div id="appendonsend"',
    '<div id="divRplyFwdMsg"',
    "<blockquote",
    '<hr style="display:inline',
)


# rendering --------------------------------------------------------------------------------------------
def html_to_text(s: str) -> str:
    s = re.sub(r"(?is)<(script|style)\b.*?</\1>", "", s)
    s = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|<hr[^>]*>", "\n", s)
    s = re.sub(r"<[^>]+>", "", s)
    s = html.unescape(s)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+", " ", s)).strip()


def unique_part(body_html: str) -> str:
    """The part of a reply that is not quoted: everything before Outlook's reply/forward separator."""
    cut = min((i for i in (body_html.find(mk) for mk in QUOTE_MARKERS) if i >= 0), default=-1)
    if cut < 0:
        return body_html
    own = body_html[:cut]
    opened = own.lower().count("<body")
    return own + ("</body></html>" if opened else "")


def recipient(pair: tuple[str, str]) -> dict[str, Any]:
    return {"emailAddress": {"name": pair[0], "address": pair[1]}}


@dataclass(frozen=True)
class View:
    """How this request wants items rendered (Prefer headers are evaluated per request)."""

    immutable: bool
    body_type: str  # "" = as stored (html), "text" or "html"
    select: frozenset[str] | None
    expand: dict[str, str]

    @classmethod
    def of(cls, req: Request, select: frozenset[str] | None = None) -> View:
        prefer = req.prefer
        body_type = prefer.get("outlook.body-content-type", "").lower()
        return cls(prefer.get("idtype", "").lower() == "immutableid", body_type, select, parse_expand(req))

    def id_of(self, m: Message) -> str:
        return m.immutable_id if self.immutable else m.rest_id

    def applied(self, resp: Response) -> Response:
        if self.body_type in ("text", "html"):
            resp.headers["Preference-Applied"] = f'outlook.body-content-type="{self.body_type}"'
        return resp


def body(content_html: str, view: View) -> dict[str, str]:
    if view.body_type == "text":
        return {"contentType": "text", "content": html_to_text(content_html)}
    return {"contentType": "html", "content": content_html}


def render_message(m: Message, view: View) -> dict[str, Any]:
    props = view.select if view.select is not None else DEFAULT_PROPS
    out: dict[str, Any] = {
        "@odata.type": m.odata_type,
        "@odata.etag": f'W/"{m.change_key}"',
        "id": view.id_of(m),
    }
    for p in props:
        if p == "id":
            continue
        out[p] = _message_prop(m, p, view)
    if m.meeting is not None and view.select is None:  # a derived type's own properties (never $select-able)
        out.update({k: v for k, v in m.meeting.items() if not k.startswith("_")})
    expand = view.expand
    if EVENT_EXPAND in expand and m.meeting is not None:
        from emulators.graph import meetings

        out["event"] = meetings.linked_event(m)
    if "singlevalueextendedproperties" in expand:
        wanted = expand["singlevalueextendedproperties"].lower()
        if m.sensitivity and ("0x0036" in wanted or "0x36" in wanted or not wanted):
            out["singleValueExtendedProperties"] = [{"id": SENSITIVITY_TAG, "value": str(m.sensitivity)}]
        else:
            out["singleValueExtendedProperties"] = []
    if "attachments" in expand:
        out["attachments"] = [render_attachment(a) for a in m.attachments]
    return out


def render_attachment(a: Attachment) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": a.id,
        "name": a.name,
        "size": a.size,
        "contentType": a.content_type,
        "isInline": False,
    }


def _message_prop(m: Message, p: str, view: View) -> Any:
    match p:
        case "createdDateTime":
            return iso(m.created)
        case "lastModifiedDateTime":
            return iso(m.modified)
        case "changeKey":
            return m.change_key
        case "categories":
            return list(m.categories)
        case "receivedDateTime":
            return iso(m.received)
        case "sentDateTime":
            return iso(m.sent)
        case "hasAttachments":
            return bool(m.attachments)
        case "internetMessageId":
            return m.internet_message_id
        case "subject":
            return m.subject
        case "bodyPreview":
            if m.preview is None:
                m.preview = html_to_text(m.body_html)[:255]
            return m.preview
        case "importance":
            return m.importance
        case "parentFolderId":
            return m.folder_id
        case "conversationId":
            return m.conversation_id
        case "conversationIndex":
            return base64.b64encode(hashlib.sha256(m.conversation_id.encode()).digest()[:22]).decode()
        case "isDeliveryReceiptRequested" | "isReadReceiptRequested":
            return False
        case "isRead":
            return m.is_read
        case "isDraft":
            return m.is_draft
        case "webLink":
            return (
                f"https://outlook.office365.com/owa/?ItemID={m.rest_id}&exvsurl=1&viewmodel=ReadMessageItem"
            )
        case "inferenceClassification":
            return "focused"
        case "body":
            return body(m.body_html, view)
        case "uniqueBody":
            return body(m.unique_html, view)
        case "sender":
            return recipient(m.sender)
        case "from":
            return recipient(m.from_addr or m.sender)
        case "toRecipients":
            return [recipient(r) for r in m.to]
        case "ccRecipients":
            return [recipient(r) for r in m.cc]
        case "bccRecipients":
            return [recipient(r) for r in m.bcc]
        case "replyTo":
            return []
        case "flag":
            return dict(m.flag)
        case "internetMessageHeaders":
            return [{"name": "Message-ID", "value": m.internet_message_id}]
    return None


def render_folder(f: MailFolder, user: User, select: frozenset[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"@odata.type": "#microsoft.graph.mailFolder", "id": f.id}
    full = {
        "displayName": f.display_name,
        "parentFolderId": f.parent_id,
        "childFolderCount": sum(1 for x in user.folders.values() if x.parent_id == f.id),
        "unreadItemCount": f.unread,
        "totalItemCount": len(f.messages),
        "isHidden": f.is_hidden,
    }
    out.update({k: v for k, v in full.items() if select is None or k in select})
    return out


def render_user(u: User) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.user",
        "id": u.id,
        "userPrincipalName": u.upn,
        "displayName": u.display_name,
        "mail": u.upn,
        "businessPhones": [],
        "givenName": u.display_name.split(" ")[0],
        "surname": u.display_name.split(" ")[-1],
        "jobTitle": None,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
    }


# creating messages --------------------------------------------------------------------------------------
def pair(value: Any) -> tuple[str, str]:
    if isinstance(value, str):
        return (value.split("@")[0].replace(".", " ").title(), value)
    addr = value.get("emailAddress", value)
    return (addr.get("name") or addr.get("address", ""), addr.get("address", ""))


def _sent(tenant: Tenant, spec: dict[str, Any], received: datetime) -> datetime:
    """Every copy of a message carries the sent time of its Date header: unless the spec gives one, an
    earlier copy of the same internetMessageId in the tenant gives it; the first copy was sent when it
    arrived."""
    given = parse_dt(spec["sentDateTime"]) if spec.get("sentDateTime") else None
    wanted = spec.get("internetMessageId")
    if not wanted:
        return given or received
    first = tenant.sent_times.setdefault(wanted, given or received)
    return given or first


def new_message(tenant: Tenant, user: User, folder: MailFolder, spec: dict[str, Any]) -> Message:
    """Build and store a message from a control-API/Graph-ish spec."""
    now = utcnow()
    received = parse_dt(spec["receivedDateTime"]) if spec.get("receivedDateTime") else now
    html_body = spec.get("bodyHtml")
    if html_body is None:
        b = spec.get("body") or {}
        content = b.get("content", "")
        html_body = (
            content if b.get("contentType", "html").lower() == "html" else f"<p>{html.escape(content)}</p>"
        )
    seq = tenant.next_seq()
    key = tenant.new_id("")
    whom = pair(spec.get("from") or {"address": user.upn, "name": user.display_name})
    sender = pair(spec["sender"]) if spec.get("sender") else whom
    m = Message(
        immutable_id="AAkALg" + key,
        rest_id="AAMkAG" + key,
        folder_id=folder.id,
        subject=spec.get("subject", ""),
        body_html=html_body,
        unique_html=spec.get("uniqueBodyHtml") or unique_part(html_body),
        sender=sender,
        from_addr=whom if whom[1].lower() != sender[1].lower() else None,
        to=[pair(x) for x in spec.get("to", spec.get("toRecipients", []))],
        cc=[pair(x) for x in spec.get("cc", spec.get("ccRecipients", []))],
        bcc=[pair(x) for x in spec.get("bcc", spec.get("bccRecipients", []))],
        received=received,
        sent=_sent(tenant, spec, received),
        created=now,
        modified=now,
        internet_message_id=spec.get("internetMessageId") or f"<{key[:24]}@emulator.local>",
        conversation_id=spec.get("conversationId") or "AAQkAG" + tenant.new_id("")[:40],
        change_key=tenant.new_change_key(),
        created_seq=seq,
        is_read=bool(spec.get("isRead", False)),
        is_draft=bool(spec.get("isDraft", False)),
        importance=spec.get("importance", "normal"),
        categories=list(spec.get("categories", [])),
        attachments=[
            Attachment(
                tenant.new_id("AAMkAGatt"),
                a["name"],
                int(a.get("size", 0)),
                a.get("contentType", "application/octet-stream"),
            )
            for a in spec.get("attachments", [])
        ],
        sensitivity=_sensitivity(spec.get("sensitivity", 0)),
        odata_type=spec.get("@odata.type") or MESSAGE_TYPE,
        meeting=spec.get("meeting"),
    )
    if spec.get("flag"):
        m.flag = dict(spec["flag"])
    tenant.put_message(user, folder, m)
    return m


def _sensitivity(value: Any) -> int:
    names = {"normal": 0, "personal": 1, "private": 2, "confidential": 3}
    if isinstance(value, str):
        if value.lower() not in names:
            raise GraphError(400, "ErrorInvalidProperty", f"Invalid sensitivity '{value}'.")
        return names[value.lower()]
    return int(value or 0)


# handlers -----------------------------------------------------------------------------------------------
USER_PROPS = frozenset(
    [
        "id",
        "userPrincipalName",
        "displayName",
        "mail",
        "businessPhones",
        "givenName",
        "surname",
        "jobTitle",
        "mobilePhone",
        "officeLocation",
        "preferredLanguage",
        "accountEnabled",  # these four only when selected
        "assignedLicenses",
        "userType",
        "mailboxSettings",
    ]
)


def _user_select(req: Request, single: bool) -> frozenset[str] | None:
    """`$select` on users: the default properties, plus accountEnabled, assignedLicenses and userType;
    mailboxSettings only on a single user: on `/users` neither `$select` nor `$filter` can reach it
    (as reported; undocumented)."""
    raw = req.query.get("$select", "") + "," + req.query.get("$expand", "")
    if not single and "mailboxsettings" in (raw + req.query.get("$filter", "")).lower():
        raise GraphError(
            400,
            "Request_BadRequest",
            "mailboxSettings can be read only for one user, not on the users collection.",
        )
    return parse_select(req, USER_PROPS, "microsoft.graph.user")


def _user_body(u: User, select: frozenset[str] | None) -> dict[str, Any]:
    full = render_user(u)
    if select is None:
        return full
    extra: dict[str, Any] = {
        "accountEnabled": u.account_enabled,
        "assignedLicenses": []
        if u.purpose != "user"
        else [{"skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df"}],
        "userType": "Member",
    }
    if "mailboxSettings" in select:
        from emulators.graph.mailbox import settings

        extra["mailboxSettings"] = settings(u)
    out = {"@odata.type": full["@odata.type"], "id": u.id}
    out.update({k: v for k, v in {**full, **extra}.items() if k in select})
    return out


def get_users(ctx: Ctx) -> Response:
    select = _user_select(ctx.req, single=False)
    users = [_user_body(u, select) for u in ctx.emu.tenant.users.values()]
    return Response(200, list_page(ctx.req, users, context(ctx.req, "users"), default_top=100))


def get_user(ctx: Ctx) -> Response:
    body = _user_body(ctx.u, _user_select(ctx.req, single=True))
    return Response(200, {"@odata.context": context(ctx.req, "users/$entity"), **body})


def list_folders(ctx: Ctx) -> Response:
    u = ctx.u
    parent = u.folder(ctx.params["folder"]).id if "folder" in ctx.params else u.root_folder_id
    select = parse_select(ctx.req, FOLDER_PROPS, "microsoft.graph.mailFolder")
    rows = [render_folder(f, u, select) for f in u.folders.values() if f.parent_id == parent]
    return Response(200, list_page(ctx.req, rows, context(ctx.req, f"users('{u.id}')/mailFolders")))


def get_folder(ctx: Ctx) -> Response:
    select = parse_select(ctx.req, FOLDER_PROPS, "microsoft.graph.mailFolder")
    return Response(200, render_folder(ctx.u.folder(ctx.params["folder"]), ctx.u, select))


def create_folder(ctx: Ctx) -> Response:
    u = ctx.u
    parent = u.folder(ctx.params["folder"]).id if "folder" in ctx.params else u.root_folder_id
    name = (ctx.req.json() or {}).get("displayName", "")
    if not name:
        raise GraphError(400, "ErrorInvalidParameter", "The displayName is required.")
    if any(f.display_name.lower() == name.lower() and f.parent_id == parent for f in u.folders.values()):
        raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
    folder = ctx.emu.tenant.add_mail_folder(u, name, parent)
    return Response(201, render_folder(folder, u))


def folder_delta(ctx: Ctx) -> Response:
    u, req, emu = ctx.u, ctx.req, ctx.emu
    link = f"{req.base_url}/users/{u.id}/mailFolders/delta"
    cursor = delta.resume(emu.states, req, u.id, emu.tenant.seq)
    if cursor is None:
        select = parse_select(req, FOLDER_PROPS, "microsoft.graph.mailFolder")
        opts = {"select": sorted(select) if select is not None else None}
        cursor = delta.begin(emu.states, u.id, "folders", emu.tenant.seq, opts)
    sel = cursor.options.get("select")
    select = frozenset(sel) if sel is not None else None

    def emit(seq: int, key: str, kind: str, c: delta.Cursor) -> list[dict[str, Any]] | None:
        f = u.folders.get(key)
        if kind == "removed" or f is None:
            return None if c.initial(seq) else [{"id": key, "@removed": {"reason": "deleted"}}]
        return [render_folder(f, u, select)]

    page = delta.run_page(emu.states, u.folder_log, cursor, limit=delta.page_size(req), link=link, emit=emit)
    return Response(200, page.body(context(req, "Collection(mailFolder)")))


def message_delta(ctx: Ctx) -> Response:
    u, req, emu = ctx.u, ctx.req, ctx.emu
    view_now = View.of(req)
    cursor = delta.resume(emu.states, req, u.id, emu.tenant.seq)
    if cursor is None:
        folder = u.folder(ctx.params["folder"])
        for bad in ("$search", "$skip", "$count"):
            if bad in req.query:
                raise GraphError(
                    400,
                    "ErrorInvalidUrlQuery",
                    f"The query parameter '{bad}' is not supported with change tracking over the "
                    "'Messages' resource.",
                )
        order = " ".join(req.query.get("$orderby", "").split()).lower()
        if order and order != "receiveddatetime desc":
            raise GraphError(
                400, "ErrorInvalidUrlQuery", "Only receivedDateTime desc is supported in $orderby."
            )
        select = parse_select(req, MESSAGE_PROPS, MESSAGE_SELECT_TYPE)
        change_type = req.query.get("changeType", "")
        if change_type and change_type not in ("created", "updated", "deleted"):
            raise GraphError(400, "ErrorInvalidParameter", f"Invalid changeType '{change_type}'.")
        opts: dict[str, Any] = {
            "select": sorted(select) if select is not None else None,
            "filter": _parse_filter(req.query.get("$filter", "")),
            "changeType": change_type,
            "expand": req.query.get("$expand", ""),
            "top": int(req.query["$top"]) if req.query.get("$top", "").isdigit() else 0,
            "orderby": "desc" if order else "",
        }
        cursor = delta.begin(emu.states, u.id, folder.id, emu.tenant.seq, opts)
    else:
        folder = u.folders.get(cursor.collection) or u.folder(cursor.collection)
    o = cursor.options
    sel = o.get("select")
    view = View(
        view_now.immutable,
        view_now.body_type,
        frozenset(sel) if sel is not None else None,
        parse_expand(Request("GET", "", {"$expand": o.get("expand", "")}, {})),
    )
    flt = o.get("filter")
    change_type = o.get("changeType", "")

    def emit(seq: int, key: str, kind: str, c: delta.Cursor) -> list[dict[str, Any]] | None:
        m = u.messages[key]
        initial = c.initial(seq)
        if kind == "removed":
            if initial:
                return None
            # reported even off-filter and whatever changeType asked for
            return [
                {
                    "@odata.type": MESSAGE_TYPE,
                    "id": view.id_of(m) if view.immutable else key,
                    "@removed": {"reason": "deleted"},
                }
            ]
        if not initial and kind == "read":
            return [render_message(m, view)]  # read-state changes surface even off-filter
        if flt and not _matches(m.received, flt):
            return None
        if change_type and not initial:
            created = m.created_seq > c.base
            if change_type == "deleted" or (change_type == "created") != created:
                return None
        if view.immutable and not initial and folder.departures.get(m.immutable_id, 0) > c.base:
            return None  # A→B→A with immutable ids surfaces only as a delete in A (docs-contrib#72)
        return [render_message(m, view)]

    cap = o.get("top") or (emu.config.filter_cap if flt else 0)
    link = f"{req.base_url}/users/{u.id}/mailFolders/{folder.id}/messages/delta"
    if o.get("orderby") and cursor.base == 0 and o.get("after") != "done":
        # a first round ordered newest first: its initial contents by receivedDateTime desc, so a
        # capped round returns the newest messages (docs/graph-behaviour.md §1.2, `$orderby`)
        ordered = sorted(
            (
                (m.received, key, m.created_seq)  # in the initial contents: seq ≤ origin
                for key, m in folder.messages.items()
                if m.created_seq <= cursor.origin
            ),
            reverse=True,
        )
        page = delta.run_ordered_page(
            emu.states, folder.log, cursor, ordered=ordered, limit=delta.page_size(req), link=link,
            emit=emit, cap=cap, encode=datetime.isoformat, decode=datetime.fromisoformat,
        )  # fmt: skip
    else:
        page = delta.run_page(
            emu.states, folder.log, cursor, limit=delta.page_size(req), link=link, emit=emit, cap=cap
        )
    return view.applied(Response(200, page.body(context(req, "Collection(message)"))))


_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+'?([0-9T:\-.+Z]+)'?\s*$", re.I)


def _parse_filter(raw: str) -> list[str] | None:
    if not raw:
        return None
    m = _FILTER.match(raw)
    if not m:
        raise GraphError(
            400,
            "ErrorInvalidUrlQueryFilter",
            "The query filter contains one or more invalid nodes: only receivedDateTime ge|gt is "
            "supported with change tracking.",
        )
    return [m.group(1).lower(), iso(parse_dt(m.group(2)))]


def _matches(received: datetime, flt: list[str]) -> bool:
    bound = parse_dt(flt[1])
    return received >= bound if flt[0] == "ge" else received > bound


def list_messages(ctx: Ctx) -> Response:
    u, req = ctx.u, ctx.req
    view = View.of(req, parse_select(req, MESSAGE_PROPS, MESSAGE_SELECT_TYPE))
    if "folder" in ctx.params:
        msgs = list(u.folder(ctx.params["folder"]).messages.values())
    else:
        msgs = [m for f in u.folders.values() for m in f.messages.values()]
    order = _list_order(req)
    if req.query.get("$filter"):
        test = compile_filter(req.query["$filter"])
        msgs = [m for m in msgs if test(functools.partial(_filter_value, m, view))]
    msgs.sort(key=lambda m: m.received, reverse=True)  # without $orderby: newest first
    for prop, descending in reversed(order):  # stable sorts, last key first
        msgs.sort(key=functools.partial(_order_value, view=view, prop=prop), reverse=descending)
    page = list_page(req, msgs, context(req, "Collection(message)"), render=lambda m: render_message(m, view))
    return view.applied(Response(200, page))


_ORDER = re.compile(r"^(\w+)(?:\s+(asc|desc))?$", re.I)


def _list_order(req: Request) -> list[tuple[str, bool]]:
    """`$orderby` of a message listing as (property, descending). With `$filter` too, Exchange wants
    each `$orderby` property in the filter, in the same order, before any other filtered property;
    otherwise 400 InefficientFilter (learn.microsoft.com/graph/api/user-list-messages, "Using filter
    and orderby in the same query")."""
    order: list[tuple[str, bool]] = []
    for part in (p.strip() for p in req.query.get("$orderby", "").split(",")):
        if not part:
            continue
        found = _ORDER.match(part)
        lowered = {k.lower(): k for k in MESSAGE_PROPS}
        if not found or found.group(1).lower() not in lowered:
            raise GraphError(400, "BadRequest", f"Invalid $orderby clause: '{part}'.")
        order.append((lowered[found.group(1).lower()], (found.group(2) or "asc").lower() == "desc"))
    raw = req.query.get("$filter", "")
    if order and raw:
        filtered: list[str] = []
        for clause in split_and(raw):
            prop = re.split(r"[\s/(]", clause.strip().lstrip("("), maxsplit=1)[0].lower()
            if prop not in filtered:
                filtered.append(prop)
        if [p.lower() for p, _ in order] != filtered[: len(order)]:
            raise GraphError(
                400, "InefficientFilter", "The restriction or sort order is too complex for this operation."
            )
    return order


def _order_value(m: Message, view: View, prop: str) -> tuple[bool, Any]:
    value = _filter_value(m, view, prop)
    return (value is not None, value if not isinstance(value, dict | list) else str(value))


_INSTANTS = {"receivedDateTime": "received", "sentDateTime": "sent", "createdDateTime": "created",
             "lastModifiedDateTime": "modified"}  # fmt: skip


def _filter_value(m: Message, view: View, prop: str) -> Any:
    if prop in _INSTANTS:  # compared as instants (not rendered and parsed back for every message)
        return getattr(m, _INSTANTS[prop])
    return view.id_of(m) if prop == "id" else _message_prop(m, prop, view)


def _message(ctx: Ctx) -> Message:
    m = ctx.u.message(ctx.params["message"])
    if "folder" in ctx.params and ctx.u.folder(ctx.params["folder"]).id != m.folder_id:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return m


def get_message(ctx: Ctx) -> Response:
    req = ctx.req
    view = View.of(req, parse_select(req, MESSAGE_PROPS, MESSAGE_SELECT_TYPE))
    m = _message(ctx)
    return view.applied(
        Response(200, {"@odata.context": context(req, "messages/$entity"), **render_message(m, view)})
    )


def patch_message(ctx: Ctx) -> Response:
    m = _message(ctx)
    _check_if_match(ctx.req, m.change_key)
    patch = ctx.req.json()
    read_only = {k for k in patch if not k.startswith("@odata.")} == {"isRead"}
    for k, v in patch.items():
        if k.startswith("@odata."):
            continue
        if k in DRAFT_ONLY and not m.is_draft:
            raise GraphError(
                400,
                "ErrorInvalidPropertyUpdateSentMessage",
                "Update operation is not allowed on a sent message.",
            )
        if k == "isRead":
            m.is_read = bool(v)
        elif k == "categories":
            m.categories = list(v or [])
        elif k == "flag":
            m.flag = dict(v or {"flagStatus": "notFlagged"})
        elif k == "importance":
            m.importance = v
        elif k == "subject":
            m.subject = v
        elif k == "body":
            m.body_html = m.unique_html = v.get("content", "")
            m.preview = None
        elif k == "internetMessageId":
            m.internet_message_id = str(v)
        elif k == "replyTo":
            pass  # kept as []: nothing reads it back here
        elif k in ("toRecipients", "ccRecipients", "bccRecipients"):
            setattr(
                m,
                {"toRecipients": "to", "ccRecipients": "cc", "bccRecipients": "bcc"}[k],
                [pair(x) for x in v or []],
            )
        elif k == "from":
            m.from_addr = pair(v) if v else None
        elif k == "singleValueExtendedProperties":
            for p in v or []:
                pid = p.get("id", "").lower()
                if pid == MESSAGE_FLAGS:  # the flags are the store's, once the item exists
                    raise GraphError(
                        400, "ErrorInvalidPropertySet", "The property PR_MESSAGE_FLAGS can't be changed."
                    )
                if "0x36" in pid.replace("0x0036", "0x36"):
                    m.sensitivity = int(p.get("value", 0))
        else:
            raise GraphError(
                400, "ErrorInvalidPropertyUpdateSentMessage", f"The property '{k}' cannot be updated."
            )
    ctx.emu.tenant.update_message(ctx.u, m, read_only=read_only)
    return get_message(ctx)


def _check_if_match(req: Request, change_key: str) -> None:
    want = req.headers.get("if-match", "")
    if want and want != "*" and want.removeprefix("W/").strip('"') != change_key:
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The change key passed in the request does not match the current change key for the item.",
        )


def delete_message(ctx: Ctx) -> Response:
    ctx.emu.tenant.delete_message(ctx.u, _message(ctx))
    return Response(204)


def move_message(ctx: Ctx) -> Response:
    m = _message(ctx)
    dest = {k.lower(): v for k, v in (ctx.req.json() or {}).items()}.get("destinationid", "")
    if not dest:
        raise GraphError(400, "ErrorInvalidParameter", "The destinationId is required.")
    ctx.emu.tenant.move_message(ctx.u, m, ctx.u.folder(dest))
    view = View.of(ctx.req)
    return Response(201, render_message(m, view))


def create_message(ctx: Ctx) -> Response:
    """POST …/messages creates a draft, in Drafts or in the folder named, whatever the body says (Microsoft:
    "Create a draft of a new message"; reported for folders too); only PR_MESSAGE_FLAGS without
    MSGFLAG_UNSENT, set at creation, makes an item that is not a draft (the way mail importers do it), with
    its read flag and delivery times."""
    u = ctx.u
    folder = u.folder(ctx.params.get("folder", "drafts"))
    body = ctx.req.json()
    if not isinstance(body, dict):
        raise GraphError(400, "RequestBodyRead", "The request body must be a message.")
    if body.get("@odata.type", MESSAGE_TYPE).lower() != MESSAGE_TYPE.lower():
        raise GraphError(400, "ErrorInvalidRequest", "Odata type not supported.")  # eventMessage…: no
    spec = {k: v for k, v in body.items() if k not in ("isDraft", "@odata.type", "sender")}
    props = {
        str(p.get("id", "")).lower(): p.get("value") for p in body.get("singleValueExtendedProperties") or []
    }
    flags = _int_or_none(props.get(MESSAGE_FLAGS))
    spec["isDraft"] = flags is None or bool(flags & 0x08)
    if flags is None or "isRead" not in spec:
        spec["isRead"] = True if flags is None else bool(flags & 0x01)
    now = iso(utcnow())
    if spec["isDraft"]:
        spec["receivedDateTime"] = spec["sentDateTime"] = now
    else:
        spec["receivedDateTime"] = props.get(DELIVERY_TIME) or spec.get("receivedDateTime") or now
        spec["sentDateTime"] = props.get(SUBMIT_TIME) or spec.get("sentDateTime") or spec["receivedDateTime"]
        spec["sender"] = body.get("sender") or body.get("from")
    for p in props:
        if p in ("integer 0x36", "integer 0x0036"):
            spec["sensitivity"] = int(props[p] or 0)
    domain = u.upn.split("@")[-1]
    spec.setdefault("internetMessageId", f"<{ctx.emu.tenant.new_id('')[:24]}@{domain}>")
    m = new_message(ctx.emu.tenant, u, folder, spec)
    return Response(201, render_message(m, View.of(ctx.req)))


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value), 0)
    except ValueError as exc:
        raise GraphError(400, "ErrorInvalidExtendedPropertyValue", f"Invalid value '{value}'.") from exc


def list_attachments(ctx: Ctx) -> Response:
    m = _message(ctx)
    select = ctx.req.query.get("$select", "")
    rows = []
    for a in m.attachments:
        row = render_attachment(a)
        if select:
            keep = {s.strip() for s in select.split(",")} | {"id", "@odata.type"}
            row = {k: v for k, v in row.items() if k in keep}
        rows.append(row)
    return Response(200, {"@odata.context": context(ctx.req, "attachments"), "value": rows})


def routes(r: Router) -> None:
    r.add("GET", "/users", get_users)
    r.add("GET", "/users/{user}", get_user)
    r.add("GET", "/users/{user}/mailFolders/delta", folder_delta)
    r.add("GET", "/users/{user}/mailFolders", list_folders)
    r.add("POST", "/users/{user}/mailFolders", create_folder)
    r.add("GET", "/users/{user}/mailFolders/{folder}", get_folder)
    r.add("GET", "/users/{user}/mailFolders/{folder}/childFolders", list_folders)
    r.add("POST", "/users/{user}/mailFolders/{folder}/childFolders", create_folder)
    r.add("GET", "/users/{user}/mailFolders/{folder}/messages/delta", message_delta)
    r.add("GET", "/users/{user}/mailFolders/{folder}/messages", list_messages)
    r.add("POST", "/users/{user}/mailFolders/{folder}/messages", create_message)
    r.add("GET", "/users/{user}/messages", list_messages)
    r.add("POST", "/users/{user}/messages", create_message)
    for prefix in (
        "/users/{user}/messages/{message}",
        "/users/{user}/mailFolders/{folder}/messages/{message}",
    ):
        r.add("GET", prefix, get_message)
        r.add("PATCH", prefix, patch_message)
        r.add("DELETE", prefix, delete_message)
        r.add("POST", prefix + "/move", move_message)
        r.add("GET", prefix + "/attachments", list_attachments)
