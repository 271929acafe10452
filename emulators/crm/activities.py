"""Journals and appointments: idempotent upserts by key, cancel, CRM-side edits, the change feed."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from emulators.crm import validate
from emulators.crm.db import Database, dumps, new_id, now
from emulators.crm.people import People, parse_cursor
from emulators.crm.validate import ApiError


def _view(row: sqlite3.Row) -> dict[str, Any]:
    return {
        **json.loads(row["doc"]),
        "id": row["id"],
        "key": row["key"],
        "seq": row["seq"],
        "updatedAt": row["updated_at"],
    }


class Journals:
    def __init__(self, db: Database, people: People) -> None:
        self.db, self.people = db, people

    def put(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = validate.journal(body)
        with self.db.transaction() as conn:
            self.people.check_refs(conn, doc["people"])
            row = conn.execute("SELECT id FROM journals WHERE key = ?", (key,)).fetchone()
            row_id = row["id"] if row else new_id("j")
            seq = self.db.next_seq(conn)
            conn.execute(
                "INSERT OR REPLACE INTO journals (id, key, owner, doc, seq, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row_id, key, doc["owner"], dumps(doc), seq, now()),
            )
        return {"id": row_id, "version": str(seq), "created": row is None}

    def put_item(self, item: Any) -> dict[str, Any]:
        """One item of a bulk write, `{"key": ..., <journal>}`: its ref, or its error (nothing written)."""
        key = item.get("key") if isinstance(item, dict) else None
        try:
            if not isinstance(key, str) or not key:
                raise ApiError(400, "badRequest", "each journal needs a non-empty 'key'")
            return {"key": key, **self.put(key, {k: v for k, v in item.items() if k != "key"})}
        except ApiError as error:
            failure = {"status": error.status, "code": error.code, "message": error.message}
            return {"key": key if isinstance(key, str) else "", "error": failure}

    def get(self, key: str) -> dict[str, Any]:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM journals WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise ApiError(404, "notFound", "no journal with this key")
        return _view(row)

    def all(self, owner: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT * FROM journals ORDER BY seq DESC").fetchall()
        return [_view(r) for r in rows if owner is None or r["owner"] == owner]


class Appointments:
    def __init__(self, db: Database, people: People) -> None:
        self.db, self.people = db, people

    def _store(self, conn: sqlite3.Connection, row_id: str, key: str | None, doc: dict[str, Any]) -> int:
        self.people.check_refs(conn, doc["people"])
        seq = self.db.next_seq(conn)
        conn.execute(
            "INSERT OR REPLACE INTO appointments (id, key, owner, doc, seq, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (row_id, key, doc["owner"], dumps(doc), seq, now()),
        )
        return seq

    def put(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = validate.appointment(body)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id FROM appointments WHERE key = ?", (key,)).fetchone()
            row_id = row["id"] if row else new_id("a")
            seq = self._store(conn, row_id, key, doc)
        return {"id": row_id, "version": str(seq), "created": row is None}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = validate.appointment(body)
        with self.db.transaction() as conn:
            row_id = new_id("a")
            seq = self._store(conn, row_id, None, doc)
        return {"id": row_id, "version": str(seq), "created": True}

    def _find(self, conn: sqlite3.Connection, column: str, value: str) -> sqlite3.Row:
        row = conn.execute(f"SELECT * FROM appointments WHERE {column} = ?", (value,)).fetchone()  # noqa: S608
        if row is None:
            raise ApiError(404, "notFound", "no such appointment")
        return row

    def patch(self, row_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.db.transaction() as conn:
            row = self._find(conn, "id", row_id)
            doc = validate.appointment({**json.loads(row["doc"]), **body})
            seq = self._store(conn, row_id, row["key"], doc)
        return {"id": row_id, "version": str(seq), "created": False}

    def cancel(self, key: str) -> dict[str, Any]:
        with self.db.transaction() as conn:
            row = self._find(conn, "key", key)
            doc = json.loads(row["doc"])
            if doc.get("cancelled"):
                return {"id": row["id"], "version": str(row["seq"]), "created": False}
            seq = self._store(conn, row["id"], key, {**doc, "cancelled": True})
        return {"id": row["id"], "version": str(seq), "created": False}

    def delete(self, key: str) -> None:
        with self.db.transaction() as conn:
            self._find(conn, "key", key)
            conn.execute("DELETE FROM appointments WHERE key = ?", (key,))

    def get(self, column: str, value: str) -> dict[str, Any]:
        with self.db.transaction() as conn:
            return _view(self._find(conn, column, value))

    def all(self, owner: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT * FROM appointments ORDER BY seq DESC").fetchall()
        return [_view(r) for r in rows if owner is None or r["owner"] == owner]

    def changes(self, owner: str, cursor: str | None, limit: int) -> dict[str, Any]:
        after = parse_cursor(cursor) or 0
        with self.db.transaction() as conn:
            latest = self.db.current_seq(conn)
            rows = conn.execute(
                "SELECT * FROM appointments WHERE owner = ? AND seq > ? ORDER BY seq LIMIT ?",
                (owner, after, limit + 1),
            ).fetchall()
        page, more = rows[:limit], len(rows) > limit
        return {
            "changes": [_view(r) for r in page],
            "cursor": str(page[-1]["seq"] if more else max(latest, after)),
            "hasMore": more,
        }
