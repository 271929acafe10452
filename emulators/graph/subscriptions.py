"""Subscriptions (create with the validation handshake, renew, reauthorize, delete) and the Notifier that
delivers change and lifecycle notifications as Graph does: batched per notificationUrl, clientState,
a 3 s timeout with retries, and some duplicates (deterministic from a seed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from emulators.graph.protocol import GraphError, Response, iso, parse_dt, utcnow
from emulators.graph.routing import Ctx, Router, normalise
from emulators.graph.store import Change

if TYPE_CHECKING:
    from emulators.graph.server import Emulator

logger = logging.getLogger(__name__)

MAX_MINUTES = 4230
MAX_PER_MAILBOX = 1000
APP_ID = "00000000-0000-0000-0000-00000000c0de"
TYPES = {
    "message": "#Microsoft.Graph.Message",
    "contact": "#Microsoft.Graph.Contact",
    "event": "#Microsoft.Graph.Event",
}
PLURAL = {"message": "Messages", "contact": "Contacts", "event": "Events"}


@dataclass
class Subscription:
    id: str
    resource: str
    change_types: list[str]
    notification_url: str
    lifecycle_url: str
    expiration: datetime
    client_state: str | None
    user_id: str
    kind: str
    collection_id: str  # "" = the whole mailbox
    immutable: bool
    tls: str = "v1_2"
    created: float = field(default_factory=time.monotonic)

    def render(self) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.subscription",
            "id": self.id,
            "resource": self.resource,
            "applicationId": APP_ID,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url or None,
            "expirationDateTime": iso(self.expiration),
            "creatorId": APP_ID,
            "includeResourceData": False,
            "latestSupportedTlsVersion": self.tls,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


def resolve_resource(emu: Emulator, resource: str) -> tuple[str, str, str]:
    """users/{id}/mailFolders('inbox')/messages -> (user id, kind, collection id)."""
    path = resource.split("?")[0]
    seg = normalise(path)
    low = [s.lower() for s in seg]
    bad = GraphError(400, "InvalidRequest", f"The resource '{resource}' is not supported for subscriptions.")
    if "todo" in low:
        # To Do tasks take delegated subscriptions only ("Application: Not supported" in every
        # permission table); the refusal has the subscription service's Forbidden shape.
        raise GraphError(
            403,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access denied]",
        )
    if low and low[0] == "me":
        raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    if len(seg) < 3 or low[0] != "users":
        raise bad
    user = emu.tenant.user(seg[1])
    rest = low[2:]
    if rest == ["messages"]:
        return user.id, "message", ""
    if len(rest) == 3 and rest[0] == "mailfolders" and rest[2] == "messages":
        return user.id, "message", user.folder(seg[3]).id
    if rest in (["events"], ["calendar", "events"]):
        return user.id, "event", ""
    if rest == ["contacts"]:
        return user.id, "contact", ""
    if len(rest) == 3 and rest[0] == "contactfolders" and rest[2] == "contacts":
        return user.id, "contact", user.contact_folder(seg[3]).id
    raise bad


def _expiry(value: Any) -> datetime:
    if not value:
        raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
    exp = parse_dt(str(value))
    now = utcnow()
    if exp <= now:
        raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
    if exp > now + timedelta(minutes=MAX_MINUTES, seconds=5):
        raise GraphError(
            400, "ExtensionError", f"Subscription expiration can only be {MAX_MINUTES} minutes in the future."
        )
    return exp


async def create(ctx: Ctx) -> Response:
    emu, body = ctx.emu, ctx.req.json()
    change_types = [c.strip() for c in str(body.get("changeType", "")).split(",") if c.strip()]
    if not change_types or any(c not in ("created", "updated", "deleted") for c in change_types):
        raise GraphError(400, "InvalidRequest", "changeType must be created, updated and/or deleted.")
    url = body.get("notificationUrl") or ""
    life = body.get("lifecycleNotificationUrl") or ""
    for u in (url, life):
        if u and urlsplit(u).scheme not in ("http", "https"):
            raise GraphError(400, "InvalidRequest", "The notification URL must be an http(s) URL.")
    if not url:
        raise GraphError(400, "InvalidRequest", "notificationUrl is required.")
    state = body.get("clientState")
    if state is not None and len(str(state)) > 128:
        raise GraphError(400, "InvalidRequest", "clientState must be at most 128 characters.")
    expiration = _expiry(body.get("expirationDateTime"))
    if body.get("includeResourceData") and not body.get("encryptionCertificate"):
        raise GraphError(
            400,
            "InvalidRequest",
            "encryptionCertificate and encryptionCertificateId are required with includeResourceData.",
        )
    user_id, kind, coll = resolve_resource(emu, str(body.get("resource", "")))
    if emu.tenant.users[user_id].denied:
        raise GraphError(
            403,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access to OData is disabled.]",
        )
    if sum(1 for s in emu.notifier.subs.values() if s.user_id == user_id) >= MAX_PER_MAILBOX:
        raise GraphError(
            403,
            "ExtensionError",
            f"The maximum number of {MAX_PER_MAILBOX} subscriptions per mailbox has been reached.",
        )
    for target in (url, life):
        if target and not await emu.notifier.validate(target):
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. Notification endpoint must respond with "
                "200 OK to validation request.",
            )
    sub = Subscription(
        id=str(uuid.uuid4()),
        resource=str(body["resource"]),
        change_types=change_types,
        notification_url=url,
        lifecycle_url=life,
        expiration=expiration,
        client_state=state,
        user_id=user_id,
        kind=kind,
        collection_id=coll,
        immutable=ctx.req.prefer.get("idtype", "").lower() == "immutableid",
        tls=body.get("latestSupportedTlsVersion") or "v1_2",
    )
    emu.notifier.subs[sub.id] = sub
    return Response(
        201, {"@odata.context": f"{ctx.req.base_url}/$metadata#subscriptions/$entity", **sub.render()}
    )


def _sub(ctx: Ctx) -> Subscription:
    ctx.emu.notifier.expire()
    sub = ctx.emu.notifier.subs.get(ctx.params["id"])
    if sub is None:
        raise GraphError(
            404, "ResourceNotFound", f"The object was not found: subscription '{ctx.params['id']}'."
        )
    return sub


def list_subs(ctx: Ctx) -> Response:
    ctx.emu.notifier.expire()
    return Response(
        200,
        {
            "@odata.context": f"{ctx.req.base_url}/$metadata#subscriptions",
            "value": [s.render() for s in ctx.emu.notifier.subs.values()],
        },
    )


def get_sub(ctx: Ctx) -> Response:
    return Response(200, _sub(ctx).render())


def patch_sub(ctx: Ctx) -> Response:
    sub = _sub(ctx)
    body = ctx.req.json()
    if "expirationDateTime" in body:
        sub.expiration = _expiry(body["expirationDateTime"])
    if "notificationUrl" in body:
        sub.notification_url = body["notificationUrl"]
    if "lifecycleNotificationUrl" in body:
        raise GraphError(
            400,
            "InvalidRequest",
            "lifecycleNotificationUrl can only be set when the subscription is created.",
        )
    return Response(200, sub.render())


def reauthorize(ctx: Ctx) -> Response:
    _sub(ctx)
    return Response(204)


def delete_sub(ctx: Ctx) -> Response:
    sub = _sub(ctx)
    del ctx.emu.notifier.subs[sub.id]
    return Response(204)


class Notifier:
    """Turns store Changes into notification POSTs. Runs inside the server's event loop."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.client: httpx.AsyncClient | None = None
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.subs: dict[str, Subscription] = {}
        self.pending: list[tuple[str, dict[str, Any]]] = []  # (url, notification)
        self.deliveries: list[dict[str, Any]] = []
        self.rng = random.Random(0)
        self.tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        self.subs = {}
        self.pending = []
        self.deliveries = []
        self.rng = random.Random(self.emu.config.random_seed)
        self.emu.tenant.listeners.append(self.on_change)

    def counts(self) -> dict[str, int]:
        ok = sum(1 for d in self.deliveries if d["ok"])
        return {
            "subscriptions": len(self.subs),
            "posts": len(self.deliveries),
            "delivered": ok,
            "failed": len(self.deliveries) - ok,
            "pending": len(self.pending),
        }

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.emu.config.notify_timeout)
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.client:
            await self.client.aclose()

    def expire(self) -> None:
        now = utcnow()
        for sid in [s.id for s in self.subs.values() if s.expiration <= now]:
            del self.subs[sid]

    async def validate(self, url: str) -> bool:
        assert self.client is not None
        token = (
            f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        )
        try:
            r = await self.client.post(
                httpx.URL(url).copy_merge_params({"validationToken": token}),  # keeps the URL's ?code=
                content=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.emu.config.validation_timeout,
            )
        except httpx.HTTPError:
            return False
        return (
            r.status_code == 200
            and r.headers.get("content-type", "").startswith("text/plain")
            and r.text == token
        )

    def on_change(self, change: Change) -> None:
        self.expire()
        for sub in self.subs.values():
            if sub.user_id != change.user_id or sub.kind != change.kind:
                continue
            if sub.collection_id and sub.collection_id != change.collection_id:
                continue
            if change.change_type not in sub.change_types:
                continue
            self.enqueue(sub, change, change.change_type)
            rate = self.emu.config.duplicate_rate
            wants = change.change_type in ("created", "updated") and "updated" in sub.change_types
            if wants and self.rng.random() < rate:
                # Graph's extras: an unrequested "updated" after "created"; 2-4 "updated" for one event edit
                extra = (
                    self.rng.randint(1, 3)
                    if change.kind == "event" and change.change_type == "updated"
                    else 1
                )
                for _ in range(extra):
                    self.enqueue(sub, change, "updated")
        if self.wake:
            self.wake.set()

    def enqueue(self, sub: Subscription, change: Change, change_type: str) -> None:
        item_id = change.item_ids[1] if sub.immutable else change.item_ids[0]
        # Graph writes `resource` in several forms; only resourceData.id is reliable (edge case 12)
        forms = (
            f"Users/{sub.user_id}/{PLURAL[change.kind]}/{item_id}",
            f"Users('{sub.user_id}')/{PLURAL[change.kind].lower()}('{item_id}')",
        )
        resource = forms[0] if self.rng.random() < 0.75 else forms[1]
        data: dict[str, Any] = {"@odata.type": TYPES[change.kind], "@odata.id": resource, "id": item_id}
        if change.change_key:
            data["@odata.etag"] = f'W/"{change.change_key}"'
        self.pending.append(
            (
                sub.notification_url,
                {
                    "subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": iso(sub.expiration),
                    "changeType": change_type,
                    "resource": resource,
                    "resourceData": data,
                    "clientState": sub.client_state,
                    "tenantId": self.emu.tenant.tenant_id,
                },
            )
        )

    async def lifecycle(self, sid: str, event: str) -> None:
        sub = self.subs.get(sid)
        if sub is None:
            raise GraphError(404, "ResourceNotFound", f"The object was not found: subscription '{sid}'.")
        if event == "subscriptionRemoved":
            del self.subs[sid]
        if sub.lifecycle_url:
            note = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": iso(sub.expiration),
                "tenantId": self.emu.tenant.tenant_id,
                "clientState": sub.client_state,
                "lifecycleEvent": event,
            }
            self.pending.append((sub.lifecycle_url, note))
            if self.wake:
                self.wake.set()

    async def run(self) -> None:
        assert self.wake is not None
        while True:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(0.05)  # gather what arrives together into one POST per URL
            batch, self.pending = self.pending, []
            by_url: dict[str, list[dict[str, Any]]] = {}
            for url, note in batch:
                by_url.setdefault(url, []).append(note)
            for notes in by_url.values():
                if len(notes) > 1 and self.rng.random() < self.emu.config.duplicate_rate:
                    self.rng.shuffle(notes)  # no ordering guarantee
            for url, notes in by_url.items():
                task = asyncio.create_task(self.post(url, notes))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def post(self, url: str, notes: list[dict[str, Any]]) -> None:
        assert self.client is not None
        cfg = self.emu.config
        for attempt in range(cfg.notify_retries + 1):
            status: int | str
            try:
                r = await self.client.post(url, json={"value": notes}, timeout=cfg.notify_timeout)
                status = r.status_code
                ok = 200 <= r.status_code < 300
            except httpx.HTTPError as exc:
                status, ok = type(exc).__name__, False
            self.deliveries.append(
                {"url": url.split("?")[0], "attempt": attempt + 1, "status": status, "ok": ok, "value": notes}
            )
            if ok:
                return
            await asyncio.sleep(cfg.notify_retry_delay * (2**attempt))


def routes(r: Router) -> None:
    r.add("POST", "/subscriptions", create)
    r.add("GET", "/subscriptions", list_subs)
    r.add("GET", "/subscriptions/{id}", get_sub)
    r.add("PATCH", "/subscriptions/{id}", patch_sub)
    r.add("DELETE", "/subscriptions/{id}", delete_sub)
    r.add("POST", "/subscriptions/{id}/reauthorize", reauthorize)
