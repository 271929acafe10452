"""The in-memory tenant: users, mail folders, messages, contact folders, contacts, events, and one
change log per collection (what delta rounds read)."""

from __future__ import annotations

import base64
import bisect
import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emulators.graph.protocol import GraphError, utcnow

USER_PURPOSES = ("user", "linked", "shared", "room", "equipment", "others")
WELL_KNOWN_FOLDERS = (
    ("inbox", "Inbox"),
    ("sentitems", "Sent Items"),
    ("drafts", "Drafts"),
    ("deleteditems", "Deleted Items"),
    ("archive", "Archive"),
    ("junkemail", "Junk Email"),
    ("outbox", "Outbox"),
)


class ChangeLog:
    """Append-only (seq, key, kind) entries of one collection. `latest[key]` is the seq of the key's last
    entry; an entry is live only if it is its key's latest one. Reading from a seq is a bisect."""

    __slots__ = ("seqs", "keys", "kinds", "latest")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.keys: list[str] = []
        self.kinds: list[str] = []  # "upsert", "read" (read-state only), "removed"
        self.latest: dict[str, int] = {}

    def record(self, seq: int, key: str, kind: str) -> None:
        self.seqs.append(seq)
        self.keys.append(key)
        self.kinds.append(kind)
        self.latest[key] = seq

    def after(self, seq: int) -> Iterator[tuple[int, str, str]]:
        """Live entries with a seq greater than `seq`, oldest first."""
        i = bisect.bisect_right(self.seqs, seq)
        seqs, keys, kinds, latest = self.seqs, self.keys, self.kinds, self.latest
        for j in range(i, len(seqs)):
            s = seqs[j]
            k = keys[j]
            yield s, k, kinds[j] if latest[k] == s else ""


@dataclass(eq=False)
class Attachment:
    id: str
    name: str
    size: int
    content_type: str = "application/octet-stream"


@dataclass(eq=False)
class Message:
    immutable_id: str
    rest_id: str
    folder_id: str
    subject: str
    body_html: str
    unique_html: str
    sender: tuple[str, str]  # (name, address) of who actually sent it
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    bcc: list[tuple[str, str]]
    received: datetime
    sent: datetime
    created: datetime
    modified: datetime
    internet_message_id: str
    conversation_id: str
    change_key: str
    created_seq: int
    is_read: bool = False
    is_draft: bool = False
    importance: str = "normal"
    categories: list[str] = field(default_factory=list)
    flag: dict[str, Any] = field(default_factory=lambda: {"flagStatus": "notFlagged"})
    attachments: list[Attachment] = field(default_factory=list)
    sensitivity: int = 0
    deleted: bool = False
    preview: str | None = None  # bodyPreview, computed once per body
    from_addr: tuple[str, str] | None = None  # whom it is from, when not the sender (send on behalf)
    odata_type: str = "#microsoft.graph.message"  # or eventMessage, eventMessageRequest, eventMessageResponse
    meeting: dict[str, Any] | None = None  # a meeting message's own properties; "_event": (User, event id)


@dataclass(eq=False)
class MailFolder:
    id: str
    display_name: str
    parent_id: str
    is_hidden: bool = False
    messages: dict[str, Message] = field(default_factory=dict)  # rest id -> message
    unread: int = 0
    log: ChangeLog = field(default_factory=ChangeLog)
    departures: dict[str, int] = field(default_factory=dict)  # immutable id -> seq it last left this folder


@dataclass(eq=False)
class Contact:
    id: str
    folder_id: str
    data: dict[str, Any]
    change_key: str
    created: datetime
    modified: datetime
    created_seq: int


@dataclass(eq=False)
class ContactFolder:
    id: str
    display_name: str
    parent_id: str
    contacts: dict[str, Contact] = field(default_factory=dict)
    log: ChangeLog = field(default_factory=ChangeLog)


@dataclass(eq=False)
class Event:
    id: str
    data: dict[str, Any]  # Graph properties as given (subject, body, start, end, recurrence, attendees...)
    change_key: str
    created: datetime
    modified: datetime
    created_seq: int
    ical_uid: str
    exceptions: dict[str, dict[str, Any]] = field(default_factory=dict)  # occurrence date -> overrides
    cancelled: set[str] = field(default_factory=set)  # occurrence dates (YYYY-MM-DD)
    exception_keys: dict[str, str] = field(default_factory=dict)  # occurrence date -> change key
    deleted: bool = False
    booked_by: str = ""  # user id of the delegate who booked this meeting in its organizer's calendar


@dataclass(eq=False)
class TodoTask:
    """A Microsoft To Do task (not an outlookItem: no changeKey, an @odata.etag only)."""

    id: str
    list_id: str
    data: dict[str, Any]  # title, body (plain text), importance, status, isReminderOn, categories, recurrence
    dates: dict[str, datetime]  # dueDateTime, startDateTime, reminderDateTime, completedDateTime (UTC)
    due_zone: str  # the time zone the due date was written in: its date is the local midnight there
    created: datetime
    modified: datetime
    body_modified: datetime
    etag: str
    linked: list[dict[str, Any]] = field(default_factory=list)  # linkedResources
    checklist: list[dict[str, Any]] = field(default_factory=list)  # checklistItems


@dataclass(eq=False)
class TodoTaskList:
    id: str
    display_name: str
    etag: str
    wellknown: str = "none"  # defaultList ("Tasks"), flaggedEmails ("Flagged emails") or none
    is_owner: bool = True
    is_shared: bool = False
    tasks: dict[str, TodoTask] = field(default_factory=dict)
    log: ChangeLog = field(default_factory=ChangeLog)


@dataclass(eq=False)
class User:
    id: str
    upn: str
    display_name: str
    root_folder_id: str
    folders: dict[str, MailFolder] = field(default_factory=dict)
    well_known: dict[str, str] = field(default_factory=dict)  # name -> folder id
    messages: dict[str, Message] = field(default_factory=dict)  # every id ever given (both kinds) -> message
    folder_log: ChangeLog = field(default_factory=ChangeLog)
    contact_root_id: str = ""
    contact_folders: dict[str, ContactFolder] = field(default_factory=dict)
    contact_folder_log: ChangeLog = field(default_factory=ChangeLog)
    events: dict[str, Event] = field(default_factory=dict)
    event_log: ChangeLog = field(default_factory=ChangeLog)
    denied: bool = False
    master_categories: list[dict[str, str]] = field(default_factory=list)
    purpose: str = "user"  # mailboxSettings.userPurpose: user, shared, room, equipment, linked, others
    account_enabled: bool = True  # shared mailboxes: false unless created the legacy way
    settings: dict[str, Any] = field(default_factory=dict)  # the rest of mailboxSettings
    # Exchange's recipient permissions and Set-Mailbox switches, by the grantee's user id
    send_as: set[str] = field(default_factory=set)
    send_on_behalf: set[str] = field(default_factory=set)
    delegates: list[str] = field(default_factory=list)  # calendar delegates (Outlook), who get meeting mail
    copy_sent_as: bool = False  # MessageCopyForSentAsEnabled
    copy_send_on_behalf: bool = False  # MessageCopyForSendOnBehalfEnabled
    todo_lists: dict[str, TodoTaskList] = field(default_factory=dict)
    todo_log: ChangeLog = field(default_factory=ChangeLog)  # the lists themselves (lists delta)

    def folder(self, ref: str) -> MailFolder:
        fid = self.well_known.get(ref.lower(), ref) if ref.lower() != "msgfolderroot" else self.root_folder_id
        folder = self.folders.get(fid)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return folder

    def message(self, ref: str) -> Message:
        m = self.messages.get(ref)
        if m is None or m.deleted or (ref != m.rest_id and ref != m.immutable_id):
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return m

    def contact_folder(self, ref: str) -> ContactFolder:
        folder = self.contact_folders.get(self.contact_root_id if ref.lower() == "contacts" else ref)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return folder

    def contact(self, ref: str) -> Contact:
        for folder in self.contact_folders.values():
            c = folder.contacts.get(ref)
            if c is not None:
                return c
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


@dataclass(frozen=True)
class Change:
    """What happened, for subscriptions: resource kind (message/contact/event), the collection, the item."""

    user_id: str
    kind: str
    collection_id: str  # mail folder / contact folder id; "" for events
    item_ids: tuple[str, str]  # (rest id, immutable id); equal for contacts and events
    change_type: str  # created / updated / deleted
    change_key: str = ""


class Tenant:
    """Everything the emulator holds. Writes go through methods that bump change logs and emit Changes."""

    def __init__(self, tenant_id: str = "") -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.users: dict[str, User] = {}  # id -> user
        self.by_upn: dict[str, User] = {}  # lower-case upn -> user
        self.seq = 0
        self.counter = 0
        self.epoch = uuid.uuid4().hex[:8]
        self.listeners: list[Callable[[Change], None]] = []
        self.sent_times: dict[str, datetime] = {}  # internetMessageId -> the sent time its copies share

    # ids and versions -------------------------------------------------------------------------------
    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def new_id(self, prefix: str) -> str:
        """Opaque, case-sensitive ids shaped like Exchange's (AAMkAG… for REST ids, AAkALg… immutable)."""
        self.counter += 1
        digest = hashlib.sha256(f"{self.epoch}:{prefix}:{self.counter}".encode()).digest()
        return prefix + base64.urlsafe_b64encode(digest[:30]).decode()

    def new_padded_id(self, prefix: str, size: int = 29) -> str:
        """A To Do id: URL-safe base64 with its padding, so ids hold `-`, `_` and `=` as Exchange's do."""
        self.counter += 1
        digest = hashlib.sha256(f"{self.epoch}:{prefix}:{self.counter}".encode()).digest()
        return prefix + base64.urlsafe_b64encode(digest[:size]).decode()

    def new_etag(self) -> str:
        """A To Do @odata.etag value (base64 with + / =, as in Graph's examples)."""
        self.counter += 1
        return base64.b64encode(
            hashlib.sha256(f"{self.epoch}:etag:{self.counter}".encode()).digest()[:22]
        ).decode()

    def new_change_key(self) -> str:
        self.counter += 1
        digest = hashlib.sha256(f"{self.epoch}:ck:{self.counter}".encode()).digest()
        return "CQAAABYAAA" + base64.b64encode(digest[:21]).decode()

    def emit(self, change: Change) -> None:
        for listener in list(self.listeners):
            listener(change)

    # users ------------------------------------------------------------------------------------------
    def user(self, ref: str) -> User:
        u = self.users.get(ref) or self.by_upn.get(ref.lower())
        if u is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{ref}' does not exist or one of its queried reference-property objects "
                "are not present.",
            )
        return u

    def add_user(
        self,
        upn: str,
        display_name: str,
        user_id: str = "",
        purpose: str = "user",
        enabled: bool | None = None,
    ) -> User:
        """A mailbox: a person's (`purpose` "user") or a shared, room or equipment mailbox, which has a
        user object whose sign-in is blocked (accountEnabled false) unless `enabled` says otherwise."""
        if upn.lower() in self.by_upn:
            raise GraphError(409, "ErrorConflict", f"A user with userPrincipalName {upn} already exists.")
        if purpose not in USER_PURPOSES:
            raise GraphError(400, "BadRequest", f"userPurpose must be one of {', '.join(USER_PURPOSES)}.")
        uid = user_id or str(
            uuid.UUID(bytes=hashlib.sha256(f"{self.epoch}:{upn.lower()}".encode()).digest()[:16])
        )
        root = self.new_id("AAMkAGfolder")
        user = User(id=uid, upn=upn, display_name=display_name, root_folder_id=root, purpose=purpose)
        user.account_enabled = purpose in ("user", "linked") if enabled is None else enabled
        user.settings = {
            "timeZone": "UTC",
            "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
            "dateFormat": "M/d/yyyy",
            "timeFormat": "h:mm tt",
            "language": {"locale": "en-US", "displayName": "English (United States)"},
            "automaticRepliesSetting": {
                "status": "disabled",
                "externalAudience": "all",
                "internalReplyMessage": "",
                "externalReplyMessage": "",
            },
            "workingHours": {
                "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "startTime": "08:00:00.0000000",
                "endTime": "17:00:00.0000000",
                "timeZone": {"name": "UTC"},
            },
        }
        self.users[uid] = user
        self.by_upn[upn.lower()] = user
        for name, display in WELL_KNOWN_FOLDERS:
            folder = self.add_mail_folder(user, display, root)
            user.well_known[name] = folder.id
        for name, wellknown in (("Tasks", "defaultList"), ("Flagged emails", "flaggedEmails")):
            self.add_todo_list(user, name, wellknown)
        croot = self.new_id("AAMkAGcfolder")
        user.contact_root_id = croot
        user.contact_folders[croot] = ContactFolder(croot, "Contacts", self.new_id("AAMkAGcroot"))
        user.contact_folder_log.record(self.next_seq(), croot, "upsert")
        return user

    def add_mail_folder(self, user: User, display_name: str, parent_id: str) -> MailFolder:
        folder = MailFolder(self.new_id("AAMkAGfolder"), display_name, parent_id)
        user.folders[folder.id] = folder
        user.folder_log.record(self.next_seq(), folder.id, "upsert")
        if parent_id in user.folders:
            user.folder_log.record(self.next_seq(), parent_id, "upsert")
        return folder

    def add_todo_list(
        self, user: User, name: str, wellknown: str = "none", shared: bool = False
    ) -> TodoTaskList:
        lst = TodoTaskList(self.new_padded_id("AQMkAD", 28), name, self.new_etag(), wellknown, True, shared)
        user.todo_lists[lst.id] = lst
        user.todo_log.record(self.next_seq(), lst.id, "upsert")
        return lst

    def touch_folder(self, user: User, folder: MailFolder) -> None:
        """Counts changed: mailFolders/delta reports the folder as updated."""
        user.folder_log.record(self.next_seq(), folder.id, "upsert")

    # messages ---------------------------------------------------------------------------------------
    def put_message(self, user: User, folder: MailFolder, m: Message) -> None:
        """Store a new message (ids, change key and created_seq already set)."""
        folder.messages[m.rest_id] = m
        user.messages[m.rest_id] = m
        user.messages[m.immutable_id] = m
        if not m.is_read:
            folder.unread += 1
        folder.log.record(m.created_seq, m.rest_id, "upsert")
        self.touch_folder(user, folder)
        self.emit(Change(user.id, "message", folder.id, (m.rest_id, m.immutable_id), "created", m.change_key))

    def update_message(self, user: User, m: Message, *, read_only: bool = False) -> None:
        """Record an in-place change (the caller already changed the fields)."""
        m.change_key = self.new_change_key()
        m.modified = utcnow()
        folder = user.folders[m.folder_id]
        folder.unread = (
            sum(1 for x in folder.messages.values() if not x.is_read) if read_only else folder.unread
        )
        folder.log.record(self.next_seq(), m.rest_id, "read" if read_only else "upsert")
        if read_only:
            self.touch_folder(user, folder)
        self.emit(Change(user.id, "message", folder.id, (m.rest_id, m.immutable_id), "updated", m.change_key))

    def move_message(self, user: User, m: Message, target: MailFolder) -> None:
        source = user.folders[m.folder_id]
        if source is target:
            return
        del source.messages[m.rest_id]
        seq = self.next_seq()
        source.log.record(seq, m.rest_id, "removed")
        source.departures[m.immutable_id] = seq
        if not m.is_read:
            source.unread -= 1
        self.emit(Change(user.id, "message", source.id, (m.rest_id, m.immutable_id), "deleted"))
        m.rest_id = self.new_id("AAMkAG")  # REST ids change on move; the immutable id does not
        user.messages[m.rest_id] = m
        m.folder_id = target.id
        m.change_key = self.new_change_key()
        m.modified = utcnow()
        target.messages[m.rest_id] = m
        if not m.is_read:
            target.unread += 1
        target.log.record(self.next_seq(), m.rest_id, "upsert")
        self.touch_folder(user, source)
        self.touch_folder(user, target)
        self.emit(Change(user.id, "message", target.id, (m.rest_id, m.immutable_id), "created", m.change_key))

    def delete_message(self, user: User, m: Message) -> None:
        folder = user.folders[m.folder_id]
        del folder.messages[m.rest_id]
        if not m.is_read:
            folder.unread -= 1
        m.deleted = True
        folder.log.record(self.next_seq(), m.rest_id, "removed")
        self.touch_folder(user, folder)
        self.emit(Change(user.id, "message", folder.id, (m.rest_id, m.immutable_id), "deleted"))
