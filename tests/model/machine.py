"""The model-based test of the whole engine (docs/architecture.md §9.5).

Hypothesis drives two synced mailboxes with two chosen folders each: mail is delivered (the same
message can reach both mailboxes), categorised, read, moved between chosen and other folders, and
deleted, while Graph throttles (429 with fractional, missing and long Retry-After), fails (503) and
expires sync state (410 mid-round and on the stored link), the CRM fails (5xx, timeouts, writes applied
but answered with an error, refusals), workers die at any awaited adapter call (then their lease
expires), notifications arrive duplicated, late, reordered and forged, and two workers take the same
job at once. The model keeps only what Outlook holds and what was ever eligible.

Checked after every step: no journal ever disappears, no key has two records, no cursor goes
backwards. Checked at quiescence (faults cleared, leases and backoffs expired, every queued job and
every stream run): every message that is now eligible has its journal, seen by its mailbox, with the
right subject and people; no journal exists for mail that was never eligible; no open issue; every
user's status is "ok".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shared import notifications
from shared.errors import SyncError
from shared.model import Job, JobOutcome, SubscriptionRecord
from shared.state.memory import QueuedMessage
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from shared.sync.runner import LEASE_SECONDS
from tests.integration.crash import SimulatedCrash
from tests.model.tripwire import Tripwire
from tests.model.world import (
    ANN,
    CHOSEN,
    CRM_FAULTS,
    DAN,
    FOLDERS,
    GRAPH_FAULTS,
    ORG_DOMAINS,
    TEMPLATES,
    USERS,
    Template,
    World,
)

T = TypeVar("T")
STREAMS = tuple(f"mail:{f}" for f in CHOSEN)
MAX_DEQUEUE = 5  # host.json maxDequeueCount: then the message goes to the poison queue
VISIBILITY_SECONDS = 30.0
CATEGORY = "CRM"
# Where a worker dies: nowhere, the n-th awaited adapter call of the run (any await point), or the n-th
# call of one adapter method (so the rarer ones, such as a journal write, are hit often enough).
CRASH_METHODS = (
    "graph.read_page", "graph.get_message", "crm.find_people", "crm.upsert_journals", "state.get_keys",
    "state.put_keys", "crm.upsert_journal", "state.get_key", "state.put_key", "state.record_decisions",
    "state.record_issue", "state.save_cursor", "state.renew", "state.release", "state.resolve_issue",
    "state.acquire",
)  # fmt: skip
CRASH = st.one_of(
    st.none(),
    st.tuples(st.just("*"), st.integers(1, 16), st.booleans()),
    st.tuples(st.sampled_from(CRASH_METHODS), st.integers(1, 3), st.booleans()),
)


@dataclass
class Msg:
    user: str
    id: str
    template: Template
    folder: str
    categories: tuple[str, ...]


Crash = tuple[str, int, bool] | None


def tripwire(crash: Crash) -> Tripwire:
    if crash is None:
        return Tripwire()
    method, nth, after = crash
    return Tripwire(nth, after=after, method=method)


def eligible(message: Msg) -> bool:
    """Would a sync now journal it for its mailbox? (ANN: policy all; DAN: policy category.)"""
    if message.folder not in CHOSEN or message.template.internal:
        return False
    return message.user == ANN or CATEGORY in message.categories


class MailSyncModel(RuleBasedStateMachine):
    world_factory: Callable[[], World]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.world = self.world_factory()
        self.messages: dict[tuple[str, str], Msg] = {}
        self.ever: dict[str, set[str]] = {u: set() for u in USERS}  # user -> imids ever eligible there
        self.journal_keys: set[str] = set()
        self.positions: dict[tuple[str, str], tuple[datetime, tuple[int, int]]] = {}
        self.dequeues: dict[str, int] = {}
        self.secrets = {(u, s): f"secret-{u}-{s}" for u in USERS for s in STREAMS}
        self.crashes = 0

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    @initialize()
    def setup(self) -> None:
        self.run(self.world.start())
        state = self.world.state
        self.run(state.put_config(ANN, {"Enabled": True, "MailFolders": ",".join(CHOSEN)}))
        self.run(
            state.put_config(
                DAN,
                {
                    "Enabled": True,
                    "MailFolders": ",".join(CHOSEN),
                    "MailPolicy": "category",
                    "MailCategory": CATEGORY,
                    "CrmOwner": "crm-dan",
                },
            )  # fmt: skip
        )
        expires = self.world.clock.now + timedelta(days=3)
        for (user, stream), secret in self.secrets.items():
            record = SubscriptionRecord(
                user, f"users/{user}/{stream}", stream, f"sub-{user}-{stream}", secret, expires
            )
            self.run(state.put_subscription(record))

    def teardown(self) -> None:
        try:
            if hasattr(self, "world"):
                self.quiesce_and_check()
        finally:
            try:
                self.run(self.world.close())
            finally:
                self.loop.close()

    # -- Outlook ------------------------------------------------------------------------------------

    def _note(self) -> None:
        for message in self.messages.values():
            if eligible(message):
                self.ever[message.user].add(message.template.imid)

    def _pick(self, index: int) -> Msg:
        keys = sorted(self.messages)
        return self.messages[keys[index % len(keys)]]

    @rule(
        users=st.sampled_from([(ANN,), (DAN,), (ANN, DAN)]),
        template=st.sampled_from(TEMPLATES),
        folder=st.sampled_from(("inbox", "inbox", "archive", "sentitems")),
        tagged=st.booleans(),
    )
    def deliver(self, users: tuple[str, ...], template: Template, folder: str, tagged: bool) -> None:
        categories = (CATEGORY,) if tagged else ()
        for user in users:
            message_id = self.world.deliver(user, folder, template, categories)
            self.messages[(user, message_id)] = Msg(user, message_id, template, folder, categories)
        self._note()

    @precondition(lambda self: bool(self.messages))
    @rule(index=st.integers(0, 50), tagged=st.booleans())
    def categorise(self, index: int, tagged: bool) -> None:
        message = self._pick(index)
        message.categories = (CATEGORY,) if tagged else ("Other",)
        self.world.set_categories(message.user, message.id, message.categories)
        self._note()

    @precondition(lambda self: bool(self.messages))
    @rule(index=st.integers(0, 50))
    def mark_read(self, index: int) -> None:
        message = self._pick(index)
        self.world.mark_read(message.user, message.id)

    @precondition(lambda self: bool(self.messages))
    @rule(index=st.integers(0, 50), folder=st.sampled_from(FOLDERS))
    def move(self, index: int, folder: str) -> None:
        message = self._pick(index)
        if message.folder != folder:
            self.world.move(message.user, message.id, folder)
            message.folder = folder
        self._note()

    @precondition(lambda self: bool(self.messages))
    @rule(index=st.integers(0, 50), via=st.sampled_from(FOLDERS))
    def move_away_and_back(self, index: int, via: str) -> None:
        """Between two syncs (Graph then reports it in its folder only as `@removed`)."""
        message = self._pick(index)
        if message.folder != via:
            self.world.move(message.user, message.id, via)
            self.world.move(message.user, message.id, message.folder)
        self._note()

    @precondition(lambda self: bool(self.messages))
    @rule(index=st.integers(0, 50))
    def delete(self, index: int) -> None:
        message = self._pick(index)
        self.world.delete(message.user, message.id)
        del self.messages[(message.user, message.id)]

    # -- faults -------------------------------------------------------------------------------------

    @rule(name=st.sampled_from([f[0] for f in GRAPH_FAULTS]), count=st.integers(1, 3))
    def graph_fault(self, name: str, count: int) -> None:
        self.world.graph_fault(name, count)

    @rule(user=st.sampled_from(USERS))
    def expire_stored_links(self, user: str) -> None:
        self.world.expire_links(user)

    @rule(name=st.sampled_from(CRM_FAULTS), count=st.integers(1, 4))
    def crm_fault(self, name: str, count: int) -> None:
        self.world.crm_fault(name, count)

    @rule(seconds=st.sampled_from([1.0, 30.0, 400.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.clock.advance(seconds)

    # -- the service --------------------------------------------------------------------------------

    def engine(self, wire: Tripwire | None = None) -> Engine:
        world, clock = self.world, self.world.clock
        state, crm, mail = world.state, world.crm, world.mail
        if wire is not None:
            state, crm, mail = wire.wrap(state, "state"), wire.wrap(crm, "crm"), wire.wrap(mail, "graph")
        stream = MailStream(state, crm, mail, org_domains=ORG_DOMAINS, clock=clock)
        return Engine(state, world.queue, {"mail": stream}, clock=clock)

    async def _job(self, job: Job, wire: Tripwire | None) -> JobOutcome | None:
        """One worker runs one job. A crash leaves everything as it was at that instant; the dead
        worker's lease expires later. A transient failure raises, as the queue trigger sees it."""
        try:
            return await self.engine(wire).run_job(job)
        except SimulatedCrash:
            self.crashes += 1
            return None

    @rule(
        user=st.sampled_from(USERS),
        stream=st.sampled_from(STREAMS),
        duplicates=st.integers(1, 3),
        forged=st.integers(0, 2),
    )
    def notify(self, user: str, stream: str, duplicates: int, forged: int) -> None:
        entry = {"subscriptionId": f"sub-{user}-{stream}", "clientState": self.secrets[(user, stream)]}
        fake = {"subscriptionId": f"sub-{user}-{stream}", "clientState": "guessed"}
        unknown = {"subscriptionId": "sub-nobody", "clientState": "x"}
        body = {"value": [entry] * duplicates + [fake, unknown][:forged]}
        before = len(self.world.queue)
        import json

        result = self.run(
            notifications.handle_changes(
                json.dumps(body).encode(), self.world.state, self.world.state, self.world.queue
            )
        )
        assert result.ignored == forged and result.accepted == duplicates
        assert len(self.world.queue) - before <= 1  # coalesced: at most one job per user+stream

    @rule()
    def sweep(self) -> None:
        self.run(self.engine().sweep())

    @precondition(lambda self: len(self.world.queue) > 0)
    @rule(index=st.integers(0, 20), crash=CRASH)
    def worker_takes_a_queued_job(self, index: int, crash: Crash) -> None:
        """Any visible message, in any order (late and reordered notifications, repeated jobs)."""
        queue = self.world.queue
        now = self.world.clock.now
        visible = [m for m in queue.messages if m.visible_at <= now]
        if not visible:
            return
        message = visible[index % len(visible)]
        queue.messages.remove(message)
        count = self.dequeues.get(message.text, 0) + 1
        self.dequeues[message.text] = count
        failed = False
        wire = tripwire(crash)
        try:
            outcome = self.run(self._job(Job.from_json(message.text), wire))
            failed = outcome is None
        except SyncError:
            failed = True
        if failed:
            self._last_fired = wire.fired.split(" (")[0]
            self._after_crash() if wire.fired else None
            if count < MAX_DEQUEUE:  # the message becomes visible again; then it is poisoned
                queue.messages.append(
                    QueuedMessage(message.text, now + timedelta(seconds=VISIBILITY_SECONDS))
                )
        else:
            self.dequeues.pop(message.text, None)

    @rule(
        user=st.sampled_from(USERS),
        stream=st.sampled_from(STREAMS),
        fresh=st.sampled_from([False, False, False, True]),
        crash=CRASH,
    )
    def worker_runs(self, user: str, stream: str, fresh: bool, crash: Crash) -> None:
        wire = tripwire(crash)
        try:
            self.run(self._job(Job(user, stream, "manual", fresh_round=fresh), wire))
        except SyncError:
            pass  # the status says so; the queue would retry
        if wire.fired:
            self._last_fired = wire.fired.split(" (")[0]
            self._after_crash()

    @rule(user=st.sampled_from(USERS), stream=st.sampled_from(STREAMS))
    def two_workers_one_job(self, user: str, stream: str) -> None:
        job = Job(user, stream, "notification")

        async def both() -> list[Any]:
            return await asyncio.gather(self._job(job, None), self._job(job, None), return_exceptions=True)

        for result in self.run(both()):
            if isinstance(result, BaseException) and not isinstance(result, SyncError):
                raise result

    def _after_crash(self) -> None:
        """A crashed worker never lets go of its lease: the next one waits for it to expire."""
        if currently_in_test_context():
            event(f"crash {self._last_fired}")
        self.world.clock.advance(LEASE_SECONDS + 1)

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def journals_are_never_deleted_or_duplicated(self) -> None:
        if not hasattr(self, "world"):
            return
        journals, records = self.world.journals()
        assert records == len(journals), f"{records} journal records for {len(journals)} keys"
        missing = self.journal_keys - set(journals)
        assert not missing, f"journals disappeared: {sorted(missing)}"
        self.journal_keys |= set(journals)

    @invariant()
    def cursors_never_go_backwards(self) -> None:
        if not hasattr(self, "world"):
            return
        for user in USERS:
            cursors = self.run(self.world.state.list_cursors(user))
            for stream, cursor in cursors.items():
                position = self.world.link_position(cursor.link)
                if position is None or not cursor.link:
                    continue
                started = cursor.round_started or datetime.min.replace(tzinfo=UTC)
                now = (started, position)
                before = self.positions.get((user, stream))
                if before is not None:
                    assert now >= before, f"{user} {stream}: cursor went back from {before} to {now}"
                self.positions[(user, stream)] = now

    @invariant()
    def checkpoints_follow_effects(self) -> None:
        """A saved cursor is past a message only once that message is journaled (or recorded as an
        issue to retry): checked at every step, before any later round could hide a gap."""
        if not hasattr(self, "world"):
            return
        journals, _ = self.world.journals()
        for user in USERS:
            cursors = self.run(self.world.state.list_cursors(user))
            open_issues = {i.item_key for i in self.run(self.world.state.list_issues(user))}
            for stream, cursor in cursors.items():
                folder = stream.partition(":")[2]
                covered = self.world.covered(user, folder, cursor.link)
                if covered is None:
                    continue
                for message_id in covered:
                    message = self.messages.get((user, message_id))
                    if message is None or not eligible(message):
                        continue
                    key = message.template.imid
                    done = key in journals and user in journals[key].seen_by
                    assert done or key in open_issues, (
                        f"{user} {stream}: the cursor is past {message.template.subject!r}, "
                        "which is neither journaled nor recorded as an issue"
                    )

    # -- quiescence ---------------------------------------------------------------------------------

    def quiesce_and_check(self) -> None:
        world = self.world
        world.clear_faults()
        world.clock.advance(timedelta(hours=8).total_seconds())  # leases, throttling delays, backoffs
        for _ in range(40):  # drain what is queued, as the queue trigger would
            visible = [m for m in world.queue.messages if m.visible_at <= world.clock.now]
            if not visible:
                break
            world.queue.messages.remove(visible[0])
            self.run(self._job(Job.from_json(visible[0].text), None))
        for user in USERS:
            for stream in STREAMS:
                outcome = self.run(self._job(Job(user, stream, "sweep"), None))
                assert outcome is not None and outcome.status == "done", (user, stream, outcome)
        self.journals_are_never_deleted_or_duplicated()
        self.cursors_never_go_backwards()
        journals, _ = world.journals()

        for message in self.messages.values():  # nothing lost
            if eligible(message):
                key = message.template.imid
                assert key in journals, f"lost: {message.template.subject} in {message.user}/{message.folder}"
                assert message.user in journals[key].seen_by, f"{key} not linked to {message.user}"
        ever_anywhere = set().union(*self.ever.values())
        by_key = {t.imid: t for t in TEMPLATES}
        for key, journal in journals.items():  # nothing invented, and right
            assert key in ever_anywhere, f"journal for mail that was never eligible: {key}"
            template = by_key[key]
            assert journal.subject == template.subject
            assert journal.people == template.people, (key, journal.people)
            assert journal.seen_by <= {u for u in USERS if key in self.ever[u]}, (key, journal.seen_by)
        for user in USERS:
            issues = self.run(world.state.list_issues(user))
            assert issues == [], f"open issues after quiescence: {[i.reason for i in issues]}"
            row = self.run(world.state.get_user(user))
            assert row is not None and row.columns.get("State") == "ok", row and row.columns


def with_world(factory: Callable[[], World]) -> type[MailSyncModel]:
    return type("MailSync", (MailSyncModel,), {"world_factory": staticmethod(factory)})


__all__ = ["MailSyncModel", "with_world"]
