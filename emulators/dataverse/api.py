"""The Web API's resources under `/api/data/v9.2/`: one call in, one reply out.

`WebApi.handle` is what both a plain HTTP request and each part of a `$batch` go through. It reads the
resource path (`contacts`, `contacts(<id>)`, `contacts(crmsync_outlookkey='k')`,
`emails(<id>)/email_activity_parties`, `WhoAmI`, `EntityDefinitions…`), then creates, reads, updates
or deletes. Names are case-sensitive, as in Dataverse.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from emulators.dataverse import errors, query
from emulators.dataverse.listing import Listing, prefer
from emulators.dataverse.records import Options, Records, is_guid, parse_key
from emulators.dataverse.schema import BY_SET, TABLES, Table
from emulators.dataverse.store import Row, Store

API_PATH = "/api/data/v9.2/"
ORGANIZATION_ID = "6f4a3a0e-8f16-4a4c-9d1e-2d1a6e0c5b11"
BUSINESS_UNIT_ID = "0b7f0c5e-5b3d-4f7e-9a52-7c9e2a1d4e21"
APPLICATION_USER_ID = "a7d1c3e2-5b4f-4e6a-8c9d-0e1f2a3b4c5d"


@dataclass
class Call:
    method: str
    path: str  # decoded, after /api/data/v9.2/
    query: str  # raw query string
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    base: str  # https://host:port/api/data/v9.2/


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    entity: tuple[str, str] | None = None  # (table, id) of the row a write touched

    @classmethod
    def json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> Reply:
        head = {"Content-Type": "application/json; odata.metadata=minimal", **(headers or {})}
        return cls(status, head, json.dumps(value).encode())

    @classmethod
    def error(cls, error: errors.DataverseError) -> Reply:
        return cls.json(error.status, error.body(), error.headers)


def split_path(path: str) -> list[tuple[str, str | None]]:
    """`a(b)/c` → [("a", "b"), ("c", None)]; slashes inside quotes or parentheses do not split."""
    segments, depth, quoted, current = [], 0, False, ""
    for char in path:
        if char == "'":
            quoted = not quoted
        if not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "/" and depth == 0 and not quoted:
            segments.append(current)
            current = ""
        else:
            current += char
    segments.append(current)
    out: list[tuple[str, str | None]] = []
    for segment in segments:
        match = re.fullmatch(r"([^()]*)(?:\((.*)\))?", segment, re.S)
        assert match is not None
        out.append((match.group(1), match.group(2)))
    return out


class WebApi:
    def __init__(self, store: Store, *, page_cap: int = 5000) -> None:
        self.store = store
        self.options = Options(principal_user=APPLICATION_USER_ID)
        self.records = Records(store, self.options)
        self.listing = Listing(self.records, page_cap)
        self.seed()

    def seed(self) -> None:
        """The application user the product signs in as (an app-only token's systemuser)."""
        if self.store.get("systemuser", APPLICATION_USER_ID) is None:
            user = {
                "systemuserid": APPLICATION_USER_ID,
                "firstname": "#",
                "lastname": "crmsync",
                "accessmode": 4,
                "applicationid": "3c6b1a52-8d6e-4a1f-9c0b-7e2d5f4a3b10",
                "isdisabled": False,
                "@lookup": {},
            }
            user["fullname"] = "# crmsync"
            self.store.put("systemuser", user, "systemuserid")

    def handle(self, call: Call) -> Reply:
        try:
            return self._route(call)
        except errors.DataverseError as error:
            return Reply.error(error)

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, call: Call) -> Reply:
        segments = split_path(call.path)
        name, key = segments[0]
        if name in ("WhoAmI", "WhoAmI()") and call.method == "GET":
            return Reply.json(
                200,
                {
                    "@odata.context": f"{call.base}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                    "BusinessUnitId": BUSINESS_UNIT_ID,
                    "UserId": APPLICATION_USER_ID,
                    "OrganizationId": ORGANIZATION_ID,
                },
            )
        if name == "EntityDefinitions" and call.method == "GET":
            return self._metadata(call, segments)
        table = BY_SET.get(name)
        if table is None:
            raise errors.resource_not_found(name)
        if key is None:
            return self._collection(call, table, segments)
        row_key = parse_key(key)
        if len(segments) == 1:
            return self._entity(call, table, row_key)
        nav = segments[1][0]
        if nav == table.parties and len(segments) == 2:
            return self._parties(call, table, row_key)
        raise errors.resource_not_found(nav)

    def _collection(self, call: Call, table: Table, segments: list[tuple[str, str | None]]) -> Reply:
        if len(segments) == 2 and segments[1][0] == "$count" and call.method == "GET":
            count = len(self.listing.rows_of(table))
            return Reply(200, {"Content-Type": "text/plain"}, str(min(count, 5000)).encode())
        if len(segments) > 1:
            raise errors.resource_not_found(segments[1][0])
        if call.method == "GET":
            page = self.listing.get(table, call.base, call.query, call.headers)
            applied = {"Preference-Applied": ",".join(page.applied)} if page.applied else {}
            return Reply.json(200, page.body, applied)
        if call.method == "POST":
            row = self.records.create(table, _body(call))
            return self._written(call, table, row, created=True)
        raise errors.DataverseError(
            405, "0x80060888", f"The HTTP method '{call.method}' is not allowed here."
        )

    def _entity(self, call: Call, table: Table, key: str | dict[str, Any]) -> Reply:
        row = self.records.by_key(table, key)
        if call.method == "GET":
            if row is None:
                raise _missing(table, key)
            return self._read(call, table, row)
        if call.method == "DELETE":
            if row is None:
                raise _missing(table, key)
            _check_etag(call, row)
            self.records.delete(table, row)
            return Reply(204)
        if call.method == "PATCH":
            return self._upsert(call, table, key, row)
        raise errors.DataverseError(
            405, "0x80060888", f"The HTTP method '{call.method}' is not allowed here."
        )

    def _upsert(self, call: Call, table: Table, key: str | dict[str, Any], row: Row | None) -> Reply:
        body = _body(call)
        if row is None:
            if call.headers.get("if-match"):
                raise _missing(table, key)
            keyed = (
                {table.primary_id: key}
                if isinstance(key, str)
                else {k: v for k, v in key.items() if k not in body}
            )
            created = self.records.create(table, body, keyed)
            return self._written(call, table, created, created=True, key=key)
        if call.headers.get("if-none-match", "").strip() == "*":
            raise errors.duplicate_record()
        _check_etag(call, row)
        if not isinstance(key, str):  # key columns cannot be changed through themselves
            body = {k: v for k, v in body.items() if k not in key}
        updated = self.records.update(table, row, body)
        return self._written(call, table, updated, created=False, key=key)

    def _read(self, call: Call, table: Table, row: Row) -> Reply:
        options = dict(parse_qsl(call.query))
        select = query.parse_select(options.get("$select"), table)
        expands = query.parse_expand(options.get("$expand"), table)
        tag = f'W/"{row.get("versionnumber", 0)}"'
        if not expands and call.headers.get("if-none-match", "").strip() == tag:
            return Reply(304)
        notes = "odata.include-annotations" in prefer(call.headers)
        body = self.listing._render(table, row, select, expands, notes, call.base)
        body = {"@odata.context": f"{call.base}$metadata#{table.entity_set}/$entity", **body}
        return Reply.json(200, body, {"ETag": tag})

    def _parties(self, call: Call, table: Table, key: str | dict[str, Any]) -> Reply:
        row = self.records.by_key(table, key)
        if row is None:
            raise _missing(table, key)
        parties = TABLES["activityparty"]
        if call.method == "GET":
            found = self.records.parties_of(row[table.primary_id])
            return Reply.json(
                200,
                {
                    "@odata.context": f"{call.base}$metadata#activityparties",
                    "value": [query.render(parties, p, None) for p in found],
                },
            )
        if call.method == "PUT":
            body = _body(call)
            self.records.replace_parties(table, row, body.get("value"))
            return Reply(204, entity=(table.logical, row[table.primary_id]))
        raise errors.DataverseError(
            405, "0x80060888", f"The HTTP method '{call.method}' is not allowed here."
        )

    def _written(
        self, call: Call, table: Table, row: Row, *, created: bool, key: str | dict[str, Any] | None = None
    ) -> Reply:
        row_id = row[table.primary_id]
        entity = (table.logical, row_id)
        if prefer(call.headers).get("return") == "representation":
            options = dict(parse_qsl(call.query))
            select = query.parse_select(options.get("$select"), table)
            body = {
                "@odata.context": f"{call.base}$metadata#{table.entity_set}/$entity",
                **query.render(table, row, select),
            }
            headers = {"Preference-Applied": "return=representation", "ETag": body["@odata.etag"]}
            reply = Reply.json(201 if created else 200, body, headers)
            reply.entity = entity
            return reply
        if isinstance(key, dict):  # an upsert addressed by alternate key answers with the key form
            pairs = ",".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={v}" for k, v in key.items())
            url = f"{call.base}{table.entity_set}({pairs})"
        else:
            url = f"{call.base}{table.entity_set}({row_id})"
        return Reply(204, {"OData-EntityId": url}, entity=entity)

    # -- metadata (the small part clients read) --------------------------------------------------

    def _metadata(self, call: Call, segments: list[tuple[str, str | None]]) -> Reply:
        options = dict(parse_qsl(call.query))
        if segments[0][1] is None:
            wanted = re.search(r"LogicalName eq '([^']*)'", options.get("$filter", ""))
            tables = [TABLES[wanted.group(1)]] if wanted and wanted.group(1) in TABLES else []
            if not wanted:
                tables = list(TABLES.values())
            return Reply.json(200, {"value": [_definition(t) for t in tables]})
        logical = _named(segments[0][1])
        table = TABLES.get(logical)
        if table is None:
            raise errors.DataverseError(404, "0x80040217", f"Could not find entity with name '{logical}'.")
        if len(segments) == 1:
            return Reply.json(200, _definition(table))
        if segments[1][0] != "Attributes":
            raise errors.resource_not_found(segments[1][0])
        if segments[1][1] is not None:
            name = _named(segments[1][1])
            column = table.columns.get(name)
            if column is None:
                raise errors.DataverseError(
                    404, "0x80040217", f"Could not find attribute '{name}' on '{logical}'."
                )
            return Reply.json(
                200, {"LogicalName": name, "AttributeType": column.kind, "MaxLength": column.max_length}
            )
        picklists = [c for c in table.columns.values() if c.kind == "picklist"]
        return Reply.json(
            200,
            {
                "value": [
                    {
                        "LogicalName": c.name,
                        "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{logical}.{c.name}")),
                        "OptionSet": {
                            "Options": [
                                {
                                    "Value": v,
                                    "Label": {"LocalizedLabels": [{"Label": str(v), "LanguageCode": 1033}]},
                                }
                                for v in c.options
                            ]
                        },
                    }
                    for c in picklists
                ]
            },
        )


def _named(key: str) -> str:
    """`LogicalName='contact'` → contact."""
    parsed = parse_key(key) if "=" in key else {}
    return str(parsed.get("LogicalName", "")) if isinstance(parsed, dict) else ""


def _definition(table: Table) -> dict[str, Any]:
    return {
        "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, table.logical)),
        "LogicalName": table.logical,
        "SchemaName": table.logical.capitalize(),
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name,
        "ChangeTrackingEnabled": table.tracked,
    }


def _body(call: Call) -> dict[str, Any]:
    try:
        value = json.loads(call.body or b"{}")
    except ValueError:
        raise errors.bad_request("The request body is not valid JSON.", "0x80048d19") from None
    if not isinstance(value, dict):
        raise errors.bad_request("The request body must be a JSON object.", "0x80048d19")
    return value


def _missing(table: Table, key: str | dict[str, Any]) -> errors.DataverseError:
    if isinstance(key, str) or tuple(key) == (table.primary_id,):
        return errors.object_does_not_exist(
            table.logical, key if isinstance(key, str) else str(key[table.primary_id])
        )
    return errors.key_not_found(table.logical)


def _check_etag(call: Call, row: Row) -> None:
    wanted = call.headers.get("if-match", "").strip()
    if wanted and wanted != "*" and wanted != f'W/"{row.get("versionnumber", 0)}"':
        raise errors.version_mismatch()


__all__ = ["API_PATH", "APPLICATION_USER_ID", "Call", "Reply", "WebApi", "is_guid"]
