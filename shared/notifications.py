"""Graph change and lifecycle notifications: parse, verify, coalesce, enqueue. Nothing else.

Notifications are doorbells (docs/architecture.md §3.4): their content is never trusted or applied, it
only says which user+stream to read by delta. So the handler:

- parses the body strictly (size cap, JSON object with a `value` list of objects) → `BadNotification`
  (the function answers 400 and nothing changes);
- for each entry, looks the subscription up (one point read per distinct id) and compares its
  clientState in constant time; unknown subscriptions and wrong clientState are ignored (Graph's
  guidance: answer 202 anyway and reveal nothing), and counted;
- bounds the storage reads one request can cause: at most `MAX_DISTINCT_SUBSCRIPTIONS` distinct ids
  are looked up, and none more once `MAX_REFUSED_SUBSCRIPTIONS` distinct ids were unknown or carried a
  wrong clientState (a genuine Graph POST names only live subscriptions, at most a stale one or two
  after a recreation). Entries not looked up are ignored, counted as `unread`; the sweep (every 5
  minutes) reads every stream whatever a notification says, so a doorbell lost here costs latency only;
- coalesces: one job per user+stream per burst, through the lease table's queued marker; a job is
  enqueued only when none is already waiting for that user+stream.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import BadNotification, TooLarge
from shared.model import Job, SubscriptionRecord
from shared.ports.state import JobQueue, LeaseStore, SubscriptionStore

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_ENTRIES = 1_000
MAX_DISTINCT_SUBSCRIPTIONS = 300  # storage reads one request may cause (each ~1-4 ms)
MAX_REFUSED_SUBSCRIPTIONS = 5  # distinct unknown or forged ids before the rest is not read
COALESCE_SECONDS = 120.0
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


@dataclass(frozen=True)
class Entry:
    subscription_id: str
    client_state: str
    lifecycle_event: str = ""


@dataclass
class Verified:
    accepted: list[tuple[SubscriptionRecord, Entry]] = field(default_factory=list)
    ignored: int = 0
    unread: int = 0  # ignored without a look-up: past the caps on distinct and refused ids


@dataclass(frozen=True)
class NotificationResult:
    accepted: int
    ignored: int
    enqueued: int
    coalesced: int
    unread: int = 0


def parse(body: bytes) -> list[Entry]:
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadNotification(f"not UTF-8 JSON: {type(error).__name__}") from None
    except RecursionError:
        raise BadNotification("JSON nested too deeply") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise BadNotification("a JSON number too long to read") from None
    if not isinstance(document, dict) or not isinstance(document.get("value"), list):
        raise BadNotification("expected a JSON object with a 'value' list")
    items: list[Any] = document["value"]
    if len(items) > MAX_ENTRIES:
        raise BadNotification(f"more than {MAX_ENTRIES} notifications in one body")
    entries: list[Entry] = []
    for item in items:
        if not isinstance(item, dict):
            raise BadNotification("every notification must be a JSON object")
        subscription_id = item.get("subscriptionId")
        client_state = item.get("clientState", "")
        event = item.get("lifecycleEvent", "")
        if not isinstance(subscription_id, str) or not subscription_id or len(subscription_id) > 200:
            raise BadNotification("every notification needs a string subscriptionId")
        if not isinstance(client_state, str) or not isinstance(event, str):
            raise BadNotification("clientState and lifecycleEvent must be strings")
        entries.append(Entry(subscription_id, client_state, event))
    return entries


async def verify(entries: list[Entry], subscriptions: SubscriptionStore) -> Verified:
    verified = Verified()
    records: dict[str, SubscriptionRecord | None] = {}
    refused: set[str] = set()  # distinct ids that were unknown or carried a wrong clientState
    for entry in entries:
        sid = entry.subscription_id
        if sid not in records:
            if len(records) >= MAX_DISTINCT_SUBSCRIPTIONS or len(refused) >= MAX_REFUSED_SUBSCRIPTIONS:
                verified.ignored += 1
                verified.unread += 1
                continue
            records[sid] = await subscriptions.get_subscription(sid)
        record = records[sid]
        if record is None or not hmac.compare_digest(
            record.client_state.encode("utf-8"), entry.client_state.encode("utf-8")
        ):
            refused.add(sid)
            verified.ignored += 1
            continue
        verified.accepted.append((record, entry))
    return verified


async def enqueue_coalesced(
    targets: Mapping[tuple[str, str], str], leases: LeaseStore, queue: JobQueue
) -> tuple[int, int]:
    """Enqueue one job per (user, stream) unless one is already waiting. Returns (enqueued, coalesced)."""
    enqueued = coalesced = 0
    for (user, stream), reason in targets.items():
        if await leases.mark_queued(user, stream, COALESCE_SECONDS):
            await queue.enqueue(Job(user=user, stream=stream, reason=reason))
            enqueued += 1
        else:
            coalesced += 1
    return enqueued, coalesced


async def handle_changes(
    body: bytes, subscriptions: SubscriptionStore, leases: LeaseStore, queue: JobQueue
) -> NotificationResult:
    verified = await verify(parse(body), subscriptions)
    targets = {(record.user, record.stream): "notification" for record, entry in verified.accepted}
    enqueued, coalesced = await enqueue_coalesced(targets, leases, queue)
    return NotificationResult(len(verified.accepted), verified.ignored, enqueued, coalesced, verified.unread)


async def handle_lifecycle(
    body: bytes, subscriptions: SubscriptionStore, queue: JobQueue
) -> NotificationResult:
    """Verify lifecycle events and enqueue a `lifecycle:<event>` job per user+stream (never coalesced:
    a removed subscription must be recreated even while a sync job is waiting)."""
    verified = await verify(parse(body), subscriptions)
    known = [
        (record, entry) for record, entry in verified.accepted if entry.lifecycle_event in LIFECYCLE_EVENTS
    ]
    targets = {(record.user, record.stream): f"lifecycle:{entry.lifecycle_event}" for record, entry in known}
    for (user, stream), reason in targets.items():
        await queue.enqueue(Job(user=user, stream=stream, reason=reason))
    ignored = (
        verified.ignored + len(verified.accepted) - len(known)
    )  # forged, unknown, or not a lifecycle event
    return NotificationResult(len(verified.accepted), ignored, len(targets), 0, verified.unread)
