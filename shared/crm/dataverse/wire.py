"""Dataverse rows ⇄ the domain records: the one place (with `activity_rows` for emails and
appointments) where Dataverse's column names meet `shared.model`. Pure functions; the connector only
moves the dicts. Here: OData text, activity parties, the sync's JSON details, and contacts.

What has a Dataverse column goes there (what Dynamics users see and edit); what has none goes, as
JSON, into the connector's own custom column of that table (`crmsync_outlookdetails`,
`crmsync_outlookfields`), so a record reads back as it was written:

- emails and appointments: see `activity_rows`;
- contact: names, three e-mails, two business phones, mobile, job title, department, address,
  notes, `crmsync_outlookkey`; JSON: the company (Dataverse keeps it as a lookup to an account),
  further business phones, a display name other than "first last".
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from shared.model import (
    Address,
    ContactFields,
    CrmContact,
    CrmRef,
    PersonRef,
    PostalAddress,
)

Row = dict[str, Any]
NAMESPACE = uuid.UUID("7b0c58f2-3c1e-4b8e-9d41-2a6f0e5c9b37")  # the connector's deterministic ids
EMAILS = ("emailaddress1", "emailaddress2", "emailaddress3")
PARTIES = "participationtypemask,addressused,_partyid_value"
CONTACT_SELECT = (
    "contactid,firstname,lastname,fullname,emailaddress1,emailaddress2,emailaddress3,telephone1,business2,"
    "mobilephone,jobtitle,department,address1_line1,address1_city,address1_stateorprovince,"
    "address1_postalcode,address1_country,description,crmsync_outlookkey,crmsync_outlookfields,"
    "_ownerid_value,statecode,modifiedon"
)


# -- OData text --------------------------------------------------------------------------------


def literal(value: str) -> str:
    """An OData string literal: quoted, a quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def among(column: str, values: Sequence[str]) -> str:
    """`Microsoft.Dynamics.CRM.In`: the values as a JSON array (double quotes: no doubling needed)."""
    return (
        f"Microsoft.Dynamics.CRM.In(PropertyName={literal(column)},PropertyValues={json.dumps(list(values))})"
    )


def url(root: str, path: str, **options: str) -> str:
    """An absolute Web API URL with its query options percent-encoded (`+`, `&`, `#`, `%`, `/` in a
    Message-ID included), as a `$batch` request line needs it."""
    query = urlencode({f"${k}": v for k, v in options.items() if v}, quote_via=quote, safe="$")
    return root + path + (f"?{query}" if query else "")


def deterministic_id(kind: str, key: str) -> str:
    """The primary key the connector gives a row it creates for this key: a create whose answer was
    lost and is sent again meets the first one (412) instead of making a second."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{key}"))


def bounded(value: str, limit: int) -> str:
    return value if len(value) <= limit else "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def instant(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def details(row: Mapping[str, Any], column: str) -> dict[str, Any]:
    """The sync's JSON in a custom column ({} when there is none, or it is not ours)."""
    try:
        value = json.loads(row.get(column) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def pack(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def address_pair(a: Address | None) -> list[str] | None:
    return None if a is None else [a.address, a.name]


def from_pair(value: Any) -> Address | None:
    return Address(str(value[0]), str(value[1])) if value else None


def people_rows(people: Sequence[PersonRef]) -> list[list[str]]:
    return [[p.id, p.kind, p.name, p.email] for p in people]


def from_people_rows(value: Any) -> tuple[PersonRef, ...]:
    return tuple(PersonRef(str(i), str(k), str(n), str(e)) for i, k, n, e in value or [])


# -- parties -----------------------------------------------------------------------------------


def party(mask: int, address: str, contacts: Mapping[str, str], users: Mapping[str, str]) -> dict[str, Any]:
    """An activity party: bound to the linked contact with that address, else to the systemuser,
    else an unresolved address."""
    normal = address.strip().lower()
    out: dict[str, Any] = {"participationtypemask": mask, "addressused": address}
    if normal in contacts:
        out["partyid_contact@odata.bind"] = f"/contacts({contacts[normal]})"
    elif normal in users:
        out["partyid_systemuser@odata.bind"] = f"/systemusers({users[normal]})"
    return out


def existing_parties(row: Mapping[str, Any], collection: str) -> list[dict[str, Any]]:
    """The parties a row has, in the form a `PUT …/<collection>` takes them back."""
    out = []
    for p in row.get(collection) or []:
        item: dict[str, Any] = {"participationtypemask": p.get("participationtypemask")}
        if p.get("addressused"):
            item["addressused"] = p["addressused"]
        target = p.get("_partyid_value@Microsoft.Dynamics.CRM.lookuplogicalname")
        if p.get("_partyid_value") and target in ("contact", "systemuser", "account"):
            item[f"partyid_{target}@odata.bind"] = f"/{target}s({p['_partyid_value']})"
        out.append(item)
    return out


def linked_contacts(people: Sequence[PersonRef]) -> dict[str, str]:
    return {p.email.strip().lower(): p.id for p in people if p.email and p.kind == "contact"}


# -- contact -----------------------------------------------------------------------------------


def _full_name(first: str, last: str) -> str:
    return " ".join(p for p in (first, last) if p)


def contact_columns(fields: ContactFields) -> dict[str, Any]:
    """The contact's columns. Raises ValueError for what Dataverse cannot hold (over three e-mails)."""
    if len(fields.emails) > len(EMAILS):
        raise ValueError(f"a Dataverse contact keeps at most {len(EMAILS)} e-mail addresses")
    phones = list(fields.business_phones)
    extra: dict[str, Any] = {}
    if fields.display_name != _full_name(fields.given_name, fields.surname):
        extra["display"] = fields.display_name
        extra["named"] = [fields.given_name, fields.surname]
    if fields.company:
        extra["company"] = fields.company
    if len(phones) > 2:
        extra["phones"] = phones[2:]
    postal = fields.business_address
    columns: dict[str, Any] = {
        "firstname": fields.given_name or None,
        "lastname": fields.surname or None,
        "telephone1": phones[0] if phones else None,
        "business2": phones[1] if len(phones) > 1 else None,
        "mobilephone": fields.mobile_phone or None,
        "jobtitle": fields.job_title or None,
        "department": fields.department or None,
        "address1_line1": postal.street or None,
        "address1_city": postal.city or None,
        "address1_stateorprovince": postal.state or None,
        "address1_postalcode": postal.postal_code or None,
        "address1_country": postal.country or None,
        "description": fields.notes or None,
        "crmsync_outlookfields": pack(extra) if extra else None,
    }
    for n, column in enumerate(EMAILS):
        columns[column] = fields.emails[n] if n < len(fields.emails) else None
    return columns


def contact_from_row(row: Mapping[str, Any], owner: str) -> CrmContact:
    extra = details(row, "crmsync_outlookfields")
    first, last = str(row.get("firstname") or ""), str(row.get("lastname") or "")
    display = _full_name(first, last)
    if "display" in extra and extra.get("named") == [first, last]:
        display = str(extra["display"])
    phones = [str(row[c]) for c in ("telephone1", "business2") if row.get(c)] + list(
        extra.get("phones") or []
    )
    fields = ContactFields(
        given_name=first,
        surname=last,
        display_name=display,
        emails=tuple(str(row[c]) for c in EMAILS if row.get(c)),
        business_phones=tuple(phones),
        mobile_phone=str(row.get("mobilephone") or ""),
        company=str(extra.get("company") or ""),
        job_title=str(row.get("jobtitle") or ""),
        department=str(row.get("department") or ""),
        business_address=PostalAddress(
            street=str(row.get("address1_line1") or ""),
            city=str(row.get("address1_city") or ""),
            state=str(row.get("address1_stateorprovince") or ""),
            postal_code=str(row.get("address1_postalcode") or ""),
            country=str(row.get("address1_country") or ""),
        ),
        notes=str(row.get("description") or ""),
    )
    version = str(row.get("@odata.etag", "")).removeprefix('W/"').rstrip('"')
    return CrmContact(
        ref=CrmRef(str(row["contactid"]), version),
        owner=owner,
        fields=fields,
        key=str(row.get("crmsync_outlookkey") or ""),
        updated_at=parse_instant(row.get("modifiedon")),
    )


def person_from_row(row: Mapping[str, Any], address: str) -> PersonRef:
    spelled = next((str(row[c]) for c in EMAILS if str(row.get(c) or "").lower() == address), address)
    name = str(row.get("fullname") or "")
    extra = details(row, "crmsync_outlookfields")
    if "display" in extra and extra.get("named") == [row.get("firstname") or "", row.get("lastname") or ""]:
        name = str(extra["display"]) or name
    return PersonRef(id=str(row["contactid"]), kind="contact", name=name, email=spelled)
