"""Reading collections: `GET /{set}` with its query options, server-driven paging, change tracking.

Paging: at most `Prefer: odata.maxpagesize` rows a page (5,000 by default and at most, or the
stand-in's smaller `page_cap`), the rest behind `@odata.nextLink`, whose `$skiptoken` is a paging
cookie (opaque to clients: replay it verbatim). Rows are ordered by `$orderby`, then the primary key.

Change tracking: `Prefer: odata.track-changes` on a tracked table answers every row, and the last page
carries `@odata.deltaLink` with a `$deltatoken` (`<version>!<MM/dd/yyyy HH:mm:ss>`). Reading that link
answers the rows created or changed since, whole (in the `$select` shape), then `$deletedEntity`
entries for the rows deleted since, and a new deltaLink. `$filter`, `$orderby`, `$expand` and `$top`
are refused with change tracking; a token older than the retention (`expire-tokens` in the control
API) is refused with `0x80044352`.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from emulators.dataverse import errors, filters, query
from emulators.dataverse.records import Records
from emulators.dataverse.schema import ACTIVITIES, TABLES, Table
from emulators.dataverse.store import Row

MAX_PAGE = 5000


@dataclass
class Page:
    body: dict[str, Any]
    applied: list[str]  # Preference-Applied


def prefer(headers: Mapping[str, str]) -> dict[str, str]:
    """The `Prefer` header's preferences (several may be given, comma-separated)."""
    out: dict[str, str] = {}
    for part in query.split_top(headers.get("prefer", "")):
        name, _, value = part.partition("=")
        out[name.strip().lower()] = value.strip().strip('"')
    return out


def _cookie(state: dict[str, Any], page: int) -> str:
    inner = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
    return f'<cookie pagenumber="{page}" pagingcookie="{inner}" istracking="{bool(state.get("t"))}" />'


def _uncookie(text: str) -> tuple[dict[str, Any], int]:
    try:
        page = int(text.split('pagenumber="', 1)[1].split('"', 1)[0])
        inner = text.split('pagingcookie="', 1)[1].split('"', 1)[0]
        return dict(json.loads(base64.urlsafe_b64decode(inner.encode()))), page
    except (IndexError, ValueError):
        raise errors.bad_request("The $skiptoken is not one this service issued.", "0x0") from None


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.lower())
    if isinstance(value, bool):
        return (1, int(value))
    return (1, value)


def _compare(order: Sequence[tuple[str, bool]], left: Sequence[Any], right: Sequence[Any]) -> int:
    for (_, desc), a, b in zip(order, left, right, strict=True):
        ka, kb = _sort_key(a), _sort_key(b)
        if ka != kb:
            less = ka < kb
            return (1 if less else -1) if desc else (-1 if less else 1)
    return 0


class Listing:
    def __init__(self, records: Records, page_cap: int = MAX_PAGE) -> None:
        self.records = records
        self.page_cap = page_cap

    def rows_of(self, table: Table) -> list[Row]:
        if table.logical != "activitypointer":
            return self.records.store.all(table.logical)
        out = []
        for logical in ACTIVITIES:
            for row in self.records.store.all(logical):
                out.append({**row, "activitytypecode": logical})
        return out

    def get(self, table: Table, base: str, raw_query: str, headers: Mapping[str, str]) -> Page:
        options = dict(parse_qsl(raw_query, keep_blank_values=True))
        prefs = prefer(headers)
        if "$skip" in options:
            raise errors.bad_request("The query parameter $skip is not supported.", "0x0")
        if "$deltatoken" in options or "odata.track-changes" in prefs:
            return self._tracked(table, base, options, prefs)
        select = query.parse_select(options.get("$select"), table)
        order = [*query.parse_orderby(options.get("$orderby"), table), (table.primary_id, False)]
        rows = self._matching(table, options.get("$filter"))
        rows.sort(key=functools.cmp_to_key(lambda a, b: _compare(order, _vals(order, a), _vals(order, b))))
        size, applied = self._size(prefs)
        top = int(options["$top"]) if options.get("$top", "").isdigit() else None
        if top is not None and "odata.maxpagesize" not in prefs:  # with maxpagesize, $top is ignored
            rows, size = rows[:top], min(size, top)
        count = len(rows)
        state: dict[str, Any] = {}
        number = 1
        if "$skiptoken" in options:
            state, number = _uncookie(options["$skiptoken"])
            after = state.get("after")
            if after is not None:
                rows = [r for r in rows if _compare(order, _vals(order, r), after) > 0]
        page = rows[:size]
        expands = query.parse_expand(options.get("$expand"), table)
        annotations = self._annotations(prefs, applied)
        body: dict[str, Any] = {"@odata.context": _context(base, table, options.get("$select"))}
        if options.get("$count") == "true":
            body["@odata.count"] = min(count, MAX_PAGE)
        body["value"] = [self._render(table, r, select, expands, annotations, base) for r in page]
        if len(rows) > size:
            state = {"after": _vals(order, page[-1])}
            rest = {k: v for k, v in options.items() if k != "$skiptoken"}
            link = f"{base}{table.entity_set}?{urlencode(rest, quote_via=quote, safe='$,()')}"
            body["@odata.nextLink"] = f"{link}&$skiptoken={quote(_cookie(state, number + 1), safe='')}"
        return Page(body, applied)

    def _render(
        self,
        table: Table,
        row: Row,
        select: list[str] | None,
        expands: list[query.Expand],
        notes: bool,
        base: str,
    ) -> dict[str, Any]:
        out = query.render(table, row, select, notes)
        if table.logical == "activitypointer":
            out["activitytypecode"] = row.get("activitytypecode")
        parties = TABLES["activityparty"]
        for expand in expands:
            found = self.records.parties_of(row[table.primary_id])
            if expand.filter is not None:
                found = [p for p in found if query.evaluate(expand.filter, query.Scope(p, []))]
            out[expand.nav] = [query.render(parties, p, expand.select, notes) for p in found]
            out[f"{expand.nav}@odata.nextLink"] = (
                f"{base}{table.entity_set}({row[table.primary_id]})/{expand.nav}"
            )
        return out

    def _matching(self, table: Table, text: str | None) -> list[Row]:
        if not text:
            return self.rows_of(table)
        node = query.parse_filter(text, table)
        store = self.records.store

        def lookup(column: str, value: str) -> list[str] | None:
            if table.logical == "activitypointer" or not store.indexed(table.logical, column):
                return None
            return [str(r["@id"]) for r in store.find(table.logical, column, value)]

        ids = filters.candidates(node, lookup)
        pool = self.rows_of(table) if ids is None else [store.get(table.logical, i) or {} for i in ids]
        out = []
        for row in pool:
            parties = self.records.parties_of(row[table.primary_id]) if table.parties else []
            if row and query.evaluate(node, query.Scope(row, parties)):
                out.append(row)
        return out

    def _size(self, prefs: Mapping[str, str]) -> tuple[int, list[str]]:
        size, applied = MAX_PAGE, []
        if "odata.maxpagesize" in prefs:
            try:
                size = max(1, min(MAX_PAGE, int(prefs["odata.maxpagesize"])))
            except ValueError:
                raise errors.bad_request("odata.maxpagesize must be a whole number.", "0x0") from None
            applied.append(f"odata.maxpagesize={size}")
        return min(size, self.page_cap), applied

    @staticmethod
    def _annotations(prefs: Mapping[str, str], applied: list[str]) -> bool:
        wanted = prefs.get("odata.include-annotations")
        if wanted is None:
            return False
        applied.append(f'odata.include-annotations="{wanted}"')
        return wanted == "*" or "lookuplogicalname" in wanted

    # -- change tracking -------------------------------------------------------------------------

    def _tracked(self, table: Table, base: str, options: dict[str, str], prefs: Mapping[str, str]) -> Page:
        if not table.tracked:
            raise errors.not_tracked(table.logical)
        for option in ("$filter", "$orderby", "$expand", "$top"):
            if option in options:
                raise errors.bad_request(
                    f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.', "0x0"
                )
        select = query.parse_select(options.get("$select"), table)
        size, applied = self._size(prefs)
        store = self.records.store
        state, number = _uncookie(options["$skiptoken"]) if "$skiptoken" in options else ({}, 1)
        since = _token_version(options["$deltatoken"]) if "$deltatoken" in options else None
        if since is not None and since < store.expired_below:
            raise errors.expired_version_stamp()
        upto = int(state.get("upto", store.version))
        after = tuple(state["after"]) if "after" in state else None
        entries = [
            e for e in self._changes(table, base, select, since, upto) if after is None or e[0] > after
        ]
        page = [entry for _, entry in entries[:size]]
        context = _context(base, table, options.get("$select")) + ("/$delta" if since is not None else "")
        body: dict[str, Any] = {"@odata.context": context, "value": page}
        rest = {k: v for k, v in options.items() if k not in ("$skiptoken", "$deltatoken")}
        link = f"{base}{table.entity_set}?{urlencode(rest, quote_via=quote, safe='$,()')}"
        link += "&" if rest else ""
        if len(entries) > size:
            cookie = _cookie({"t": 1, "upto": upto, "after": list(entries[size - 1][0])}, number + 1)
            delta = f"$deltatoken={quote(options['$deltatoken'], safe='')}&" if since is not None else ""
            body["@odata.nextLink"] = f"{link}{delta}$skiptoken={quote(cookie, safe='')}"
        else:
            body["@odata.deltaLink"] = f"{link}$deltatoken={quote(_token(upto), safe='')}"
        if since is None:
            applied.append("odata.track-changes")
        return Page(body, applied)

    def _changes(
        self, table: Table, base: str, select: list[str] | None, since: int | None, upto: int
    ) -> list[tuple[tuple[int, int, str], Any]]:
        """(sort key, entry) of what a tracked read answers, in order: the rows created or changed in
        (since, upto] (every row up to `upto` for the first read), then the rows deleted in it."""
        store = self.records.store
        low = -1 if since is None else since
        entries: list[tuple[tuple[int, int, str], Any]] = []
        for row in store.all(table.logical):
            version = int(row.get("versionnumber", 0))
            if low < version <= upto:
                entries.append(((0, version, row[table.primary_id]), query.render(table, row, select)))
        if since is not None:
            here = {r[table.primary_id] for r in store.all(table.logical)}
            seen: set[str] = set()
            for version, logical, row_id in store.deleted:
                if logical == table.logical and since < version <= upto and row_id not in here | seen:
                    seen.add(row_id)
                    gone = {
                        "@odata.context": f"{base}$metadata#{table.entity_set}/$deletedEntity",
                        "id": row_id,
                        "reason": "deleted",
                    }
                    entries.append(((1, version, row_id), gone))
        entries.sort(key=lambda e: e[0])
        return entries


def _vals(order: Sequence[tuple[str, bool]], row: Row) -> list[Any]:
    return [row.get(name) for name, _ in order]


def _context(base: str, table: Table, select: str | None) -> str:
    return f"{base}$metadata#{table.entity_set}" + (f"({select})" if select else "")


def _token(version: int) -> str:
    return f"{version}!{datetime.now(UTC).strftime('%m/%d/%Y %H:%M:%S')}"


def _token_version(token: str) -> int:
    head = token.partition("!")[0]
    if not head.isdigit():
        raise errors.expired_version_stamp()
    return int(head)
