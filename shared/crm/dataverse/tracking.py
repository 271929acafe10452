"""Change tracking (Dataverse's own change feed): read a table's rows once, then only what changed.

The first read asks `Prefer: odata.track-changes` and pages through every row; the last page's
`@odata.deltaLink` carries the token for the next read, which answers the rows created or changed
since (whole) and `$deletedEntity` entries for the rows deleted since. The token is the cursor the
engine keeps. Tracked reads take no `$filter`, so rows are filtered by the caller. A token older than
the organisation's retention is refused (`0x80044352`): the read then starts over from a full read,
and says so (`fresh`), so the caller can treat it as a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.crm.dataverse.webapi import Refused, WebApi

EXPIRED = "0x80044352"


@dataclass
class TrackedRead:
    rows: list[dict[str, Any]] = field(default_factory=list)  # created or changed (all, when fresh)
    deleted: list[str] = field(default_factory=list)  # ids of rows deleted since the token
    token: str = ""
    fresh: bool = True  # a full read: the first, or after the token expired


async def read_changes(
    api: WebApi, entity_set: str, select: str, token: str | None, page_size: int
) -> TrackedRead:
    if token:
        try:
            return await _read(api, entity_set, select, token, page_size)
        except Refused as refused:
            if refused.code != EXPIRED:
                raise
    return await _read(api, entity_set, select, None, page_size)


async def _read(api: WebApi, entity_set: str, select: str, token: str | None, page_size: int) -> TrackedRead:
    out = TrackedRead(fresh=token is None)
    headers = {"Prefer": f"odata.track-changes,odata.maxpagesize={page_size}"}
    params: dict[str, str] | None = {"$select": select, **({"$deltatoken": token} if token else {})}
    link = entity_set
    route = f"GET {entity_set} (changes)"
    while True:
        page = await api.json("GET", link, route, params=params, headers=headers)
        for row in page.get("value") or []:
            if "reason" in row and "id" in row:
                out.deleted.append(str(row["id"]))
            else:
                out.rows.append(row)
        if page.get("@odata.nextLink"):
            link, params = str(page["@odata.nextLink"]), None  # replayed verbatim, with the same Prefer
            continue
        delta = str(page.get("@odata.deltaLink") or "")
        out.token = parse_qs(urlsplit(delta).query).get("$deltatoken", [""])[0]
        return out
