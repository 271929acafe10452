"""People and contacts: lookup by address, writes that keep the change sequence, the change feed."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from emulators.crm import validate
from emulators.crm.db import Database, dumps, new_id, now
from emulators.crm.validate import ApiError


def _view(row: sqlite3.Row) -> dict[str, Any]:
    doc = json.loads(row["doc"])
    return {
        **doc,
        "id": row["id"],
        "kind": row["kind"],
        "key": row["key"],
        "owner": row["owner"],
        "seq": row["seq"],
        "updatedAt": row["updated_at"],
    }


def _ref(row_id: str, seq: int, created: bool = False) -> dict[str, Any]:
    return {"id": row_id, "version": str(seq), "created": created}


ASSIGNED_ELSEWHERE = "the contact is assigned to another owner: not changed"


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise ApiError(400, "badCursor", "the cursor is not one this CRM issued")
    return int(cursor)


class People:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _write(self, conn: sqlite3.Connection, row_id: str, key: str | None, doc: dict[str, Any]) -> int:
        """Insert or replace a live person; records a removal when the owner changes."""
        old = conn.execute("SELECT owner, deleted FROM people WHERE id = ?", (row_id,)).fetchone()
        if key is not None:
            holder = conn.execute("SELECT id FROM people WHERE key = ?", (key,)).fetchone()
            if holder and holder["id"] != row_id:
                raise ApiError(409, "keyTaken", "another person already holds this key")
        seq = self.db.next_seq(conn)
        if old and old["owner"] != doc["owner"] and not old["deleted"]:
            conn.execute(
                "INSERT INTO removals (person_id, owner, seq, reason) VALUES (?, ?, ?, 'reassigned')",
                (row_id, old["owner"], seq),
            )
        stored = {k: v for k, v in doc.items() if k not in ("kind", "owner")}
        conn.execute(
            "INSERT OR REPLACE INTO people (id, kind, key, owner, doc, seq, deleted, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (row_id, doc["kind"], key, doc["owner"], dumps(stored), seq, now()),
        )
        conn.execute("DELETE FROM person_emails WHERE person_id = ?", (row_id,))
        conn.executemany(
            "INSERT INTO person_emails (person_id, email) VALUES (?, ?)",
            [(row_id, e.strip().lower()) for e in doc["emails"]],
        )
        return seq

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = validate.person(body)
        key = body.get("key") or None
        with self.db.transaction() as conn:
            row_id = new_id("p")
            return _ref(row_id, self._write(conn, row_id, key, doc), created=True)

    def put_by_key(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = validate.person({**body, "kind": body.get("kind") or "contact"})
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id, deleted, owner FROM people WHERE key = ?", (key,)).fetchone()
            if row and row["deleted"]:
                raise ApiError(409, "contactDeleted", "the contact with this key was deleted in the CRM")
            if row and row["owner"] != doc["owner"]:
                raise ApiError(409, "assignedElsewhere", ASSIGNED_ELSEWHERE)
            row_id = row["id"] if row else new_id("p")
            return _ref(row_id, self._write(conn, row_id, key, doc), created=row is None)

    def _live(self, conn: sqlite3.Connection, row_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM people WHERE id = ?", (row_id,)).fetchone()
        if row is None or row["deleted"] or row["kind"] == "company":
            raise ApiError(404, "notFound", "no such contact")
        return row

    def patch(self, row_id: str, body: dict[str, Any], if_owner: str | None = None) -> dict[str, Any]:
        """`if_owner`: apply only while the contact is assigned to this owner (409 otherwise)."""
        with self.db.transaction() as conn:
            row = self._live(conn, row_id)
            if if_owner is not None and row["owner"] != if_owner:
                raise ApiError(409, "assignedElsewhere", ASSIGNED_ELSEWHERE)
            current = {**json.loads(row["doc"]), "kind": row["kind"], "owner": row["owner"]}
            doc = validate.person({**current, **{k: v for k, v in body.items() if k != "kind"}})
            key = body["key"] if body.get("key") else row["key"]
            return _ref(row_id, self._write(conn, row_id, key, doc))

    def get(self, row_id: str) -> dict[str, Any]:
        with self.db.transaction() as conn:
            return _view(self._live(conn, row_id))

    def delete(self, row_id: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT owner, deleted, kind FROM people WHERE id = ?", (row_id,)).fetchone()
            if row is None or row["kind"] == "company":
                raise ApiError(404, "notFound", "no such contact")
            if row["deleted"]:
                return
            seq = self.db.next_seq(conn)
            conn.execute(
                "UPDATE people SET deleted = 1, seq = ?, updated_at = ? WHERE id = ?", (seq, now(), row_id)
            )
            conn.execute("DELETE FROM person_emails WHERE person_id = ?", (row_id,))
            conn.execute(
                "INSERT INTO removals (person_id, owner, seq, reason) VALUES (?, ?, ?, 'deleted')",
                (row_id, row["owner"], seq),
            )

    def lookup(self, addresses: list[str]) -> dict[str, list[dict[str, str]]]:
        matches: dict[str, list[dict[str, str]]] = {}
        with self.db.transaction() as conn:
            for address in addresses:
                wanted = address.strip().lower()
                rows = conn.execute(
                    "SELECT DISTINCT p.* FROM person_emails e JOIN people p ON p.id = e.person_id"
                    " WHERE e.email = ? AND p.deleted = 0 AND p.kind != 'company' ORDER BY p.seq",
                    (wanted,),
                ).fetchall()
                matches[wanted] = [_person_ref(row, wanted) for row in rows]
        return matches

    def all(self, owner: str | None = None, include_companies: bool = False) -> list[dict[str, Any]]:
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT * FROM people WHERE deleted = 0 ORDER BY seq").fetchall()
        return [
            _view(r)
            for r in rows
            if (owner is None or r["owner"] == owner) and (include_companies or r["kind"] != "company")
        ]

    def changes(self, owner: str, cursor: str | None, limit: int) -> dict[str, Any]:
        """A cursor is `<seq>`; while an initial read (no cursor) pages, it is `<seq>:<floor>`, where
        floor is the sequence when that read began: removals before it concern contacts the reader
        never saw, so they are not reported."""
        after, _, floor_text = (cursor or "").partition(":")
        start = parse_cursor(after)
        with self.db.transaction() as conn:
            latest = self.db.current_seq(conn)
            floor = parse_cursor(floor_text) or (latest if start is None else 0)
            live = conn.execute(
                "SELECT * FROM people WHERE owner = ? AND kind = 'contact' AND deleted = 0 AND seq > ?",
                (owner, start or 0),
            ).fetchall()
            gone: dict[str, tuple[int, str]] = {}
            for r in conn.execute(
                "SELECT person_id, seq, reason FROM removals WHERE owner = ? AND seq > ? ORDER BY seq",
                (owner, max(start or 0, floor)),
            ):
                gone[r["person_id"]] = (r["seq"], r["reason"])
        for r in live:
            gone.pop(r["id"], None)
        events: list[tuple[int, str, Any]] = [(r["seq"], "change", _view(r)) for r in live]
        events += [
            (seq, "removal", {"id": pid, "seq": seq, "reason": why}) for pid, (seq, why) in gone.items()
        ]
        events.sort(key=lambda e: e[0])
        page, more = events[:limit], len(events) > limit
        if not more:
            next_cursor = str(max(latest, start or 0))
        else:
            next_cursor = f"{page[-1][0]}:{floor}" if floor > page[-1][0] else str(page[-1][0])
        return {
            "changes": [e[2] for e in page if e[1] == "change"],
            "removals": [e[2] for e in page if e[1] == "removal"],
            "cursor": next_cursor,
            "hasMore": more,
        }

    def check_refs(self, conn: sqlite3.Connection, refs: list[dict[str, str]]) -> None:
        for ref in refs:
            row = conn.execute("SELECT kind, deleted FROM people WHERE id = ?", (ref["id"],)).fetchone()
            if row is None or row["deleted"] or row["kind"] == "company":
                raise ApiError(422, "unknownPerson", f"no person with id {ref['id']!r} to link")


def _person_ref(row: sqlite3.Row, wanted: str) -> dict[str, str]:
    doc = json.loads(row["doc"])
    email = next((e for e in doc["emails"] if e.strip().lower() == wanted), wanted)
    name = doc.get("displayName") or " ".join(p for p in (doc.get("givenName"), doc.get("surname")) if p)
    return {"id": row["id"], "kind": row["kind"], "name": name, "email": email}
