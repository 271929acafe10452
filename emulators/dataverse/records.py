"""Writing rows as the Web API does: create, update, upsert, delete, lookups set with `@odata.bind`,
activity parties (deep insert, `PUT …/email_activity_parties`), state/status rules, alternate keys,
and the cascade of a deleted contact or account onto the activities regarding it.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emulators.dataverse import errors
from emulators.dataverse.schema import ACTIVITIES, BY_SET, CASCADE_REGARDING, TABLES, Column, Table
from emulators.dataverse.store import Row, Store

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REF = re.compile(r"^/?(?:.*/api/data/v9\.\d/)?([A-Za-z_]+)\((.+)\)$")
_party_order = itertools.count(1)


@dataclass
class Options:
    """Behaviours a test can switch (the real one is undocumented, or depends on the organisation)."""

    reject_duplicate_messageid: bool = False  # POST /emails with a used messageid: 412 0x80040237
    principal_user: str = ""  # the systemuser the token stands for (the application user)
    content_ids: dict[str, tuple[str, str]] = field(default_factory=dict)  # "$n" in a change set


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))


def parse_instant(value: Any, column: str) -> str | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise errors.bad_request(
            f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.", "0x0"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(table: Table, column: Column, value: Any) -> Any:
    """A written value checked against its column, in the form the row keeps."""
    if value is None:
        return None
    kind = column.kind
    if kind in ("string", "memo"):
        if not isinstance(value, str):
            raise errors.bad_request(
                f"Cannot convert a value to target type 'Edm.String' for '{column.name}'.", "0x0"
            )
        if len(value) > column.max_length:
            raise errors.too_long(column.name, table.logical, column.max_length)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise errors.bad_request(
                f"Cannot convert a value to target type 'Edm.Boolean' for '{column.name}'.", "0x0"
            )
        return value
    if kind in ("integer", "picklist", "state", "status"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise errors.bad_request(
                f"Cannot convert a value to target type 'Edm.Int32' for '{column.name}'.", "0x0"
            )
        if kind == "picklist" and value not in column.options:
            raise errors.bad_request(
                f"A validation error occurred. The value {value} of '{column.name}' "
                f"on record of type '{table.logical}' is outside the valid range.",
                "0x8004431a",
            )
        return value
    if kind == "datetime":
        return parse_instant(value, column.name)
    if kind == "guid":
        if not isinstance(value, str) or not is_guid(value):
            raise errors.bad_request(
                f"Cannot convert the literal '{value}' to the expected type 'Edm.Guid'.", "0x0"
            )
        return value.lower()
    raise AssertionError(kind)


class Records:
    def __init__(self, store: Store, options: Options) -> None:
        self.store = store
        self.options = options

    # -- finding rows ----------------------------------------------------------------------------

    def by_key(self, table: Table, key: str | dict[str, Any]) -> Row | None:
        if isinstance(key, str):
            return self.store.get(table.logical, key)
        names = tuple(sorted(key))
        if names == (table.primary_id,):
            return self.store.get(table.logical, str(key[table.primary_id]))
        if names not in {tuple(sorted(k)) for k in table.keys}:
            raise errors.invalid_key(table.type_name)
        if any(isinstance(v, str) and re.search(r"[/<>*%&:\\?+]", v) for v in key.values()):
            raise errors.invalid_key(table.type_name)  # Dataverse: these characters break key URLs
        for row in self.store.all(table.logical):
            if all(_same(row.get(n), v) for n, v in key.items()):
                return row
        return None

    def resolve_ref(self, text: str) -> tuple[Table, Row]:
        """The row an `@odata.bind` value (or `$n` in a change set) points to."""
        if text in self.options.content_ids:
            logical, row_id = self.options.content_ids[text]
            table = TABLES[logical]
        else:
            match = _REF.match(text)
            if match is None or match.group(1) not in BY_SET:
                raise errors.bad_request(f"The reference '{text}' is not a valid entity reference.", "0x0")
            table, row_id = BY_SET[match.group(1)], match.group(2)
            if not is_guid(row_id):
                key = dict(_pairs(row_id))
                row = self.by_key(table, key)
                if row is None:
                    raise errors.key_not_found(table.logical)
                return table, row
        row = self.store.get(table.logical, row_id)
        if row is None:
            raise errors.object_does_not_exist(table.logical, row_id)
        return table, row

    # -- writing ---------------------------------------------------------------------------------

    def create(self, table: Table, body: Mapping[str, Any], key: Mapping[str, Any] | None = None) -> Row:
        if table.read_only:
            raise errors.DataverseError(405, "0x80060888", f"Create is not supported on {table.entity_set}.")
        row: Row = {"@lookup": {}}
        for name, value in (key or {}).items():
            row[name] = value
        parties = self._apply(table, row, body, creating=True)
        primary = row.get(table.primary_id) or str(uuid.uuid4())
        if self.store.get(table.logical, primary) is not None:
            raise errors.duplicate_record()
        row[table.primary_id] = primary
        self._defaults(table, row)
        self._check_keys(table, row)
        duplicate_check = table.logical == "email" and self.options.reject_duplicate_messageid
        if (
            duplicate_check
            and row.get("messageid")
            and self.store.find("email", "messageid", row["messageid"])
        ):
            raise errors.duplicate_record()
        self.store.put(table.logical, row, table.primary_id)
        if parties is not None:
            self._put_parties(table, row, parties)
        return row

    def update(self, table: Table, row: Row, body: Mapping[str, Any]) -> Row:
        if table.read_only:
            raise errors.DataverseError(405, "0x80060888", f"Update is not supported on {table.entity_set}.")
        changed = {k for k in body if not k.startswith("@")} - {table.primary_id}
        if table.activity and row.get("statecode") in (1, 2) and changed - {"statecode", "statuscode"}:
            raise errors.read_only_record()
        new = {**row, "@lookup": dict(row.get("@lookup", {}))}
        parties = self._apply(table, new, body, creating=False)
        if parties is not None:
            raise errors.bad_request(f"Use PUT …/{table.parties} to replace activity parties.", "0x0")
        self._state(table, new, body)
        self._computed(table, new)
        self._check_keys(table, new)
        return self.store.put(table.logical, new, table.primary_id)

    def replace_parties(self, table: Table, row: Row, parties: Any) -> None:
        if table.activity and row.get("statecode") in (1, 2):
            raise errors.read_only_record()
        if not isinstance(parties, list):
            raise errors.bad_request("The request body must be a collection of activity parties.", "0x0")
        checked = [self._party(table, p) for p in parties]
        for party in self.parties_of(row[table.primary_id]):
            self.store.delete("activityparty", party["activitypartyid"])
        self.store.put(table.logical, {**row}, table.primary_id)  # the activity changed
        self._put_parties(table, row, checked)

    def delete(self, table: Table, row: Row) -> None:
        if table.read_only:
            raise errors.DataverseError(405, "0x80060888", f"Delete is not supported on {table.entity_set}.")
        row_id = row[table.primary_id]
        if table.logical in CASCADE_REGARDING:
            for logical in ACTIVITIES:
                for activity in self.store.find(logical, "_regardingobjectid_value", row_id):
                    self.delete(TABLES[logical], activity)
            for party in self.store.find("activityparty", "_partyid_value", row_id):
                self.store.put("activityparty", {**party, "ispartydeleted": True}, "activitypartyid")
        if table.activity:
            for party in self.parties_of(row_id):
                self.store.delete("activityparty", party["activitypartyid"])
        self.store.delete(table.logical, row_id)

    def parties_of(self, activity_id: str) -> list[Row]:
        found = self.store.find("activityparty", "_activityid_value", activity_id)
        return sorted(found, key=lambda p: int(p.get("@order", 0)))

    # -- inside ----------------------------------------------------------------------------------

    def _apply(self, table: Table, row: Row, body: Mapping[str, Any], *, creating: bool) -> list[Row] | None:
        if not isinstance(body, Mapping):
            raise errors.bad_request("The request body must be a JSON object.", "0x0")
        parties: list[Row] | None = None
        for name, value in body.items():
            if name.startswith("@odata."):
                continue
            if name.endswith("@odata.bind"):
                self._bind(table, row, name[: -len("@odata.bind")], value)
            elif name == table.parties and table.parties:
                if not creating:
                    return [] if value is not None else None
                if not isinstance(value, list):
                    raise errors.bad_request(f"'{name}' must be a collection.", "0x0")
                parties = [self._party(table, p) for p in value]
            elif name in table.navs:
                if value is not None:
                    raise errors.undeclared_property(name)
                row[f"_{table.navs[name].column}_value"] = None
            else:
                column = table.columns.get(name)
                if column is None or column.kind == "lookup":
                    raise errors.unknown_payload_property(name, table.type_name)
                if column.read_only or (column.create_only and not creating):
                    continue
                if column.not_for_create and creating:
                    raise errors.bad_request(
                        f"'{name}' is not valid for create on {table.logical}.", "0x80040203"
                    )
                row[name] = _value(table, column, value)
        if creating and table.activity and "statecode" in body:
            raise errors.bad_request(
                "An activity is created open; set its state with a later update.", "0x80040203"
            )
        return parties

    def _bind(self, table: Table, row: Row, nav_name: str, value: Any) -> None:
        nav = table.navs.get(nav_name)
        if nav is None:
            raise errors.undeclared_property(nav_name)
        column = f"_{nav.column}_value"
        if value is None:
            row[column] = None
            row["@lookup"].pop(nav.column, None)
            return
        target_table, target = self.resolve_ref(str(value))
        if target_table.logical not in nav.targets:
            raise errors.bad_request(
                f"'{nav_name}' cannot refer to a {target_table.logical} "
                f"(it refers to {', '.join(nav.targets)}).",
                "0x80048d19",
            )
        row[column] = target[target_table.primary_id]
        row["@lookup"][nav.column] = target_table.logical

    def _party(self, table: Table, party: Any) -> Row:
        if not isinstance(party, Mapping):
            raise errors.bad_request("An activity party must be a JSON object.", "0x0")
        parties = TABLES["activityparty"]
        row: Row = {"@lookup": {}}
        for name, value in party.items():
            if name.startswith("@odata."):
                continue
            if name.endswith("@odata.bind"):
                self._bind(parties, row, name[: -len("@odata.bind")], value)
            elif name in ("participationtypemask", "addressused"):
                row[name] = _value(parties, parties.columns[name], value)
            else:
                raise errors.unknown_payload_property(name, parties.type_name)
        if row.get("participationtypemask") not in table.party_masks:
            raise errors.DataverseError(
                400, "0x80043506", "The participation type is not allowed for this activity party."
            )
        if not row.get("_partyid_value") and not row.get("addressused"):
            raise errors.DataverseError(
                400, "0x80043518", "One or more activity parties have invalid addresses."
            )
        if row.get("_partyid_value") and not row.get("addressused"):
            target = self.store.get(row["@lookup"]["partyid"], row["_partyid_value"]) or {}
            row["addressused"] = target.get("emailaddress1") or target.get("internalemailaddress")
        return row

    def _put_parties(self, table: Table, row: Row, parties: list[Row]) -> None:
        for party in parties:
            stored = {**party, "activitypartyid": str(uuid.uuid4()), "ispartydeleted": False}
            stored["_activityid_value"] = row[table.primary_id]
            stored["@lookup"] = {**party["@lookup"], "activityid": table.logical}
            stored["@order"] = next(_party_order)
            self.store.put("activityparty", stored, "activitypartyid")

    def _defaults(self, table: Table, row: Row) -> None:
        if table.states:
            state = row.setdefault("statecode", 0)
            default, valid = table.states[state]
            row.setdefault("statuscode", default)
            if row["statuscode"] not in valid:
                raise errors.invalid_state(state, row["statuscode"], table.logical)
        if table.logical == "email":
            row.setdefault("directioncode", True)
        if "ownerid" in table.columns and not row.get("_ownerid_value") and self.options.principal_user:
            row["_ownerid_value"] = self.options.principal_user
            row["@lookup"]["ownerid"] = "systemuser"
        self._computed(table, row)

    def _state(self, table: Table, row: Row, body: Mapping[str, Any]) -> None:
        if "statecode" not in body and "statuscode" not in body:
            return
        state = row.get("statecode", 0)
        if state not in table.states:
            raise errors.invalid_state(state, body.get("statuscode"), table.logical)
        default, valid = table.states[state]
        status = body.get("statuscode", default if "statecode" in body else row.get("statuscode"))
        if status not in valid:
            raise errors.invalid_state(state, status, table.logical)
        row["statuscode"] = status

    def _computed(self, table: Table, row: Row) -> None:
        if table.logical in ("contact", "systemuser"):
            row["fullname"] = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p) or None

    def _check_keys(self, table: Table, row: Row) -> None:
        for key in table.keys:
            values = {name: row.get(name) for name in key}
            if any(v is None for v in values.values()):
                continue
            for other in self.store.all(table.logical):
                if other[table.primary_id] != row[table.primary_id] and all(
                    _same(other.get(n), v) for n, v in values.items()
                ):
                    raise errors.duplicate_key(",".join(key), ",".join(key))


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left.lower() == right.lower()
    return bool(left == right)


def _pairs(text: str) -> list[tuple[str, Any]]:
    """`name='value',other=3` (a key segment) as pairs; a quote inside a value is doubled."""
    pairs: list[tuple[str, Any]] = []
    for match in re.finditer(r"\s*([A-Za-z_]\w*)\s*=\s*('(?:[^']|'')*'|[^,]+)\s*,?", text):
        raw = match.group(2)
        if raw.startswith("'"):
            value: Any = raw[1:-1].replace("''", "'")
        elif is_guid(raw):
            value = raw.lower()
        else:
            try:
                value = int(raw)
            except ValueError:
                value = raw
        pairs.append((match.group(1), value))
    return pairs


def parse_key(text: str) -> str | dict[str, Any]:
    """The inside of `entityset(...)`: a GUID, or alternate-key pairs."""
    text = text.strip()
    if is_guid(text):
        return text.lower()
    pairs = _pairs(text)
    if not pairs:
        raise errors.bad_request(f"Bad key segment '({text})'.", "0x0")
    return dict(pairs)


Lookup = Callable[[str, str], list[str] | None]
