"""The tables the stand-in serves: their entity sets, columns, lookups (with the navigation properties
a client binds), activity-party collections, alternate keys and state/status pairs.

A fixed table stands in for `$metadata` (docs/dataverse-behaviour.md says which parts of Dataverse's
schema are modelled). Column kinds: string and memo (with a maximum length), integer, boolean,
datetime (UTC, whole seconds), guid, state, status, picklist, lookup. Columns marked read-only are
accepted in a write and not stored, as Dataverse does with columns not valid for create or update.
The `crmsync_*` columns are the custom columns the product's connector needs (a publisher prefix
`crmsync`): an organisation creates them once (docs/deploy.md); the stand-in has them built in.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    max_length: int = 0
    read_only: bool = False
    targets: tuple[str, ...] = ()  # lookups: the tables it may point to
    create_only: bool = False  # valid for create, not for update (the primary key)
    not_for_create: bool = False  # valid for update only (appointment.statecode)
    options: tuple[int, ...] = ()  # picklists


@dataclass(frozen=True)
class Nav:
    """A single-valued navigation property: what `<name>@odata.bind` sets."""

    name: str
    column: str  # the lookup column it sets (`_<column>_value` when read)
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    logical: str
    entity_set: str
    primary_id: str
    primary_name: str
    columns: dict[str, Column]
    navs: dict[str, Nav] = field(default_factory=dict)
    parties: str = ""  # the activity-party collection navigation property (activities only)
    party_masks: tuple[int, ...] = ()
    keys: tuple[tuple[str, ...], ...] = ()  # alternate keys
    states: dict[int, tuple[int, tuple[int, ...]]] = field(default_factory=dict)  # state: (default, valid)
    tracked: bool = True  # change tracking enabled
    read_only: bool = False  # only GET (activityparty, activitypointer)
    activity: bool = False

    @property
    def type_name(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical}"

    def lookups(self) -> dict[str, Column]:
        return {name: c for name, c in self.columns.items() if c.kind == "lookup"}


def _s(name: str, length: int, **kw: object) -> Column:
    return Column(name, "string", length, **kw)  # type: ignore[arg-type]


def _m(name: str, length: int, **kw: object) -> Column:
    return Column(name, "memo", length, **kw)  # type: ignore[arg-type]


def _columns(*columns: Column) -> dict[str, Column]:
    return {c.name: c for c in columns}


_SYSTEM = (
    Column("createdon", "datetime", read_only=True),
    Column("modifiedon", "datetime", read_only=True),
    Column("versionnumber", "integer", read_only=True),
)
_OWNED = (Column("ownerid", "lookup", targets=("systemuser", "team")),)
_OWNER_NAV = {"ownerid": Nav("ownerid", "ownerid", ("systemuser", "team"))}


def _regarding(activity: str) -> dict[str, Nav]:
    return {
        f"regardingobjectid_{t}_{activity}": Nav(
            f"regardingobjectid_{t}_{activity}", "regardingobjectid", (t,)
        )
        for t in ("contact", "account")
    }


_ACTIVITY = (
    Column("activityid", "guid", create_only=True),
    _s("subject", 400),
    Column("regardingobjectid", "lookup", targets=("contact", "account")),
    Column("actualend", "datetime"),
    Column("actualstart", "datetime"),
    Column("prioritycode", "picklist", options=(0, 1, 2)),
    Column("statecode", "state"),
    Column("statuscode", "status"),
    *_OWNED,
    *_SYSTEM,
)

TABLES: dict[str, Table] = {}


def _add(table: Table) -> None:
    TABLES[table.logical] = table


_add(
    Table(
        "systemuser",
        "systemusers",
        "systemuserid",
        "fullname",
        _columns(
            Column("systemuserid", "guid", create_only=True),
            _s("fullname", 200, read_only=True),
            _s("firstname", 64),
            _s("lastname", 64),
            _s("internalemailaddress", 100),
            _s("domainname", 1024),
            Column("azureactivedirectoryobjectid", "guid"),
            Column("applicationid", "guid"),
            Column("accessmode", "picklist", options=(0, 1, 2, 3, 4, 5)),
            Column("isdisabled", "boolean"),
            *_SYSTEM,
        ),
    )
)
_add(
    Table(
        "team",
        "teams",
        "teamid",
        "name",
        _columns(Column("teamid", "guid", create_only=True), _s("name", 160), *_SYSTEM),
    )
)
_add(
    Table(
        "account",
        "accounts",
        "accountid",
        "name",
        _columns(
            Column("accountid", "guid", create_only=True),
            _s("name", 160),
            _s("emailaddress1", 100),
            _s("accountnumber", 20),
            Column("statecode", "state"),
            Column("statuscode", "status"),
            *_OWNED,
            *_SYSTEM,
        ),
        navs=dict(_OWNER_NAV),
        keys=(("accountnumber",),),
        states={0: (1, (1,)), 1: (2, (2,))},
    )
)
_add(
    Table(
        "contact",
        "contacts",
        "contactid",
        "fullname",
        _columns(
            Column("contactid", "guid", create_only=True),
            _s("fullname", 160, read_only=True),
            _s("firstname", 50),
            _s("middlename", 50),
            _s("lastname", 50),
            _s("emailaddress1", 100),
            _s("emailaddress2", 100),
            _s("emailaddress3", 100),
            _s("telephone1", 50),
            _s("telephone2", 50),
            _s("telephone3", 50),
            _s("business2", 50),
            _s("mobilephone", 50),
            _s("company", 50),
            _s("jobtitle", 100),
            _s("department", 100),
            _s("address1_line1", 250),
            _s("address1_line2", 250),
            _s("address1_line3", 250),
            _s("address1_city", 80),
            _s("address1_stateorprovince", 50),
            _s("address1_postalcode", 20),
            _s("address1_country", 80),
            _m("description", 2000),
            Column("parentcustomerid", "lookup", targets=("account", "contact")),
            Column("statecode", "state"),
            Column("statuscode", "status"),
            _s("crmsync_outlookkey", 100),
            _m("crmsync_outlookfields", 100_000),
            *_OWNED,
            *_SYSTEM,
        ),
        navs={
            **_OWNER_NAV,
            "parentcustomerid_account": Nav("parentcustomerid_account", "parentcustomerid", ("account",)),
            "parentcustomerid_contact": Nav("parentcustomerid_contact", "parentcustomerid", ("contact",)),
        },
        keys=(("crmsync_outlookkey",),),
        states={0: (1, (1,)), 1: (2, (2,))},
    )
)
_add(
    Table(
        "email",
        "emails",
        "activityid",
        "subject",
        _columns(
            *_ACTIVITY,
            _s("subject", 800),
            _m("description", 1_073_741_823),
            Column("directioncode", "boolean"),
            _s("messageid", 320),
            _s("inreplyto", 320, read_only=True),
            _s("conversationindex", 2048, read_only=True),
            _s("trackingtoken", 50),
            Column("senton", "datetime", read_only=True),
            _s("sender", 250),
            _s("torecipients", 500, read_only=True),
            _m("crmsync_outlookdetails", 1_048_576),
        ),
        navs={**_OWNER_NAV, **_regarding("email")},
        parties="email_activity_parties",
        party_masks=(1, 2, 3, 4),
        states={0: (1, (1, 8)), 1: (2, (2, 3, 4, 6, 7)), 2: (5, (5,))},
        activity=True,
    )
)
_add(
    Table(
        "appointment",
        "appointments",
        "activityid",
        "subject",
        _columns(
            *_ACTIVITY,
            _s("subject", 200),
            _m("description", 1_048_576),
            Column("scheduledstart", "datetime"),
            Column("scheduledend", "datetime"),
            Column("scheduleddurationminutes", "integer"),
            Column("isalldayevent", "boolean"),
            _s("location", 200),
            _s("globalobjectid", 300),
            Column("instancetypecode", "picklist", read_only=True, options=(0, 1, 2, 3, 4)),
            Column("statecode", "state", not_for_create=True),
            _s("crmsync_occurrencestart", 64),
            _m("crmsync_outlookdetails", 1_048_576),
        ),
        navs={**_OWNER_NAV, **_regarding("appointment")},
        parties="appointment_activity_parties",
        party_masks=(5, 6, 7, 9, 10),
        states={0: (1, (1, 2)), 1: (3, (3,)), 2: (4, (4,)), 3: (5, (5, 6))},
        activity=True,
    )
)
_add(
    Table(
        "task",
        "tasks",
        "activityid",
        "subject",
        _columns(
            *_ACTIVITY,
            _m("description", 2000),
            Column("scheduledend", "datetime"),
            Column("scheduledstart", "datetime"),
            Column("percentcomplete", "integer"),
        ),
        navs={**_OWNER_NAV, **_regarding("task")},
        states={0: (2, (2, 3, 4, 7)), 1: (5, (5,)), 2: (6, (6,))},
        activity=True,
    )
)
_add(
    Table(
        "activityparty",
        "activityparties",
        "activitypartyid",
        "partyid",
        _columns(
            Column("activitypartyid", "guid", create_only=True),
            Column("activityid", "lookup", targets=("email", "appointment", "task"), read_only=True),
            Column("partyid", "lookup", targets=("contact", "systemuser", "account")),
            Column("participationtypemask", "picklist", options=tuple(range(1, 14))),
            _s("addressused", 320),
            Column("ispartydeleted", "boolean", read_only=True),
        ),
        navs={
            f"partyid_{t}": Nav(f"partyid_{t}", "partyid", (t,)) for t in ("contact", "systemuser", "account")
        },
        tracked=False,
        read_only=True,
    )
)
_add(
    Table(
        "activitypointer",
        "activitypointers",
        "activityid",
        "subject",
        _columns(*_ACTIVITY, _s("activitytypecode", 64, read_only=True)),
        tracked=False,
        read_only=True,
    )
)

BY_SET: dict[str, Table] = {t.entity_set: t for t in TABLES.values()}
ACTIVITIES = tuple(t.logical for t in TABLES.values() if t.activity)
# Deleting a row of the key table deletes the activities regarding it (the Regarding relationship's
# Delete behaviour is Cascade) and marks the activity parties pointing to it `ispartydeleted`.
CASCADE_REGARDING = ("contact", "account")
