"""Tasks: writes that keep the change sequence, deletes that leave a tombstone, the change feed."""

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
        "owner": row["owner"],
        "seq": row["seq"],
        "updatedAt": row["updated_at"],
    }


def _ref(row_id: str, seq: int, created: bool = False) -> dict[str, Any]:
    return {"id": row_id, "version": str(seq), "created": created}


class Tasks:
    def __init__(self, db: Database, people: People) -> None:
        self.db = db
        self.people = people

    def _write(self, conn: sqlite3.Connection, row_id: str, key: str | None, doc: dict[str, Any]) -> int:
        """Insert or replace a live task; records a removal for the old owner when the owner changes."""
        if doc["regarding"]:
            self.people.check_refs(conn, [{"id": doc["regarding"]}])
        old = conn.execute("SELECT owner FROM tasks WHERE id = ?", (row_id,)).fetchone()
        seq = self.db.next_seq(conn)
        if old and old["owner"] != doc["owner"]:
            conn.execute(
                "INSERT INTO task_removals (task_id, owner, seq) VALUES (?, ?, ?)",
                (row_id, old["owner"], seq),
            )
        stored = {k: v for k, v in doc.items() if k != "owner"}
        conn.execute(
            "INSERT OR REPLACE INTO tasks (id, key, owner, doc, seq, deleted, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 0, ?)",
            (row_id, key, doc["owner"], dumps(stored), seq, now()),
        )
        return seq

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = validate.task(body)
        with self.db.transaction() as conn:
            row_id = new_id("t")
            return _ref(row_id, self._write(conn, row_id, body.get("key") or None, doc), created=True)

    def put_by_key(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = validate.task(body)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id, deleted FROM tasks WHERE key = ?", (key,)).fetchone()
            if row and row["deleted"]:
                raise ApiError(409, "taskDeleted", "the task with this key was deleted in the CRM")
            row_id = row["id"] if row else new_id("t")
            return _ref(row_id, self._write(conn, row_id, key, doc), created=row is None)

    def _live(self, conn: sqlite3.Connection, row_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM tasks WHERE id = ?", (row_id,)).fetchone()
        if row is None or row["deleted"]:
            raise ApiError(404, "notFound", "no such task")
        return row

    def patch(self, row_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.db.transaction() as conn:
            row = self._live(conn, row_id)
            doc = validate.task({**json.loads(row["doc"]), "owner": row["owner"], **body})
            key = body["key"] if body.get("key") else row["key"]
            if key != row["key"]:
                holder = conn.execute("SELECT id FROM tasks WHERE key = ?", (key,)).fetchone()
                if holder and holder["id"] != row_id:
                    raise ApiError(409, "keyTaken", "another task already holds this key")
            return _ref(row_id, self._write(conn, row_id, key, doc))

    def get(self, row_id: str) -> dict[str, Any]:
        with self.db.transaction() as conn:
            return _view(self._live(conn, row_id))

    def delete(self, row_id: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT owner, deleted FROM tasks WHERE id = ?", (row_id,)).fetchone()
            if row is None:
                raise ApiError(404, "notFound", "no such task")
            if row["deleted"]:
                return
            seq = self.db.next_seq(conn)
            conn.execute(
                "UPDATE tasks SET deleted = 1, seq = ?, updated_at = ? WHERE id = ?", (seq, now(), row_id)
            )
            conn.execute(
                "INSERT INTO task_removals (task_id, owner, seq) VALUES (?, ?, ?)",
                (row_id, row["owner"], seq),
            )

    def all(self, owner: str | None = None) -> list[dict[str, Any]]:
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT * FROM tasks WHERE deleted = 0 ORDER BY seq").fetchall()
        return [_view(r) for r in rows if owner is None or r["owner"] == owner]

    def changes(self, owner: str, cursor: str | None, limit: int) -> dict[str, Any]:
        """As the contact feed: a cursor is `<seq>`, or `<seq>:<floor>` while an initial read pages
        (removals before the floor concern tasks the reader never saw)."""
        after, _, floor_text = (cursor or "").partition(":")
        start = parse_cursor(after)
        with self.db.transaction() as conn:
            latest = self.db.current_seq(conn)
            floor = parse_cursor(floor_text) or (latest if start is None else 0)
            live = conn.execute(
                "SELECT * FROM tasks WHERE owner = ? AND deleted = 0 AND seq > ?", (owner, start or 0)
            ).fetchall()
            gone = {
                r["task_id"]: r["seq"]
                for r in conn.execute(
                    "SELECT task_id, seq FROM task_removals WHERE owner = ? AND seq > ? ORDER BY seq",
                    (owner, max(start or 0, floor)),
                )
            }
        for r in live:
            gone.pop(r["id"], None)
        events: list[tuple[int, str, Any]] = [(r["seq"], "change", _view(r)) for r in live]
        events += [(seq, "removal", {"id": tid, "seq": seq}) for tid, seq in gone.items()]
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
