"""The SQLite database of the reference CRM: schema, the change sequence, one transaction per call.

One connection serves the whole (single-process, single-event-loop) server; every store call runs
synchronously inside one `BEGIN IMMEDIATE` transaction, so concurrent requests never interleave
inside a write and a crash never leaves half a write.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS people (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, key TEXT UNIQUE, owner TEXT NOT NULL, doc TEXT NOT NULL,
  seq INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS people_owner ON people (owner, seq);
CREATE TABLE IF NOT EXISTS person_emails (person_id TEXT NOT NULL, email TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS person_emails_email ON person_emails (email);
CREATE TABLE IF NOT EXISTS removals (
  person_id TEXT NOT NULL, owner TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS removals_owner ON removals (owner, seq);
CREATE TABLE IF NOT EXISTS journals (
  id TEXT PRIMARY KEY, key TEXT UNIQUE NOT NULL, owner TEXT NOT NULL, doc TEXT NOT NULL,
  seq INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS appointments (
  id TEXT PRIMARY KEY, key TEXT UNIQUE, owner TEXT NOT NULL, doc TEXT NOT NULL,
  seq INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS appointments_owner ON appointments (owner, seq);
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY, key TEXT UNIQUE, owner TEXT NOT NULL, doc TEXT NOT NULL,
  seq INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner, seq);
CREATE TABLE IF NOT EXISTS task_removals (task_id TEXT NOT NULL, owner TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS task_removals_owner ON task_removals (owner, seq);
"""
TABLES = ("meta", "people", "person_emails", "removals", "journals", "appointments", "tasks", "task_removals")


def now() -> str:
    return datetime.now(UTC).isoformat()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class Database:
    def __init__(self, path: str = ":memory:") -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def next_seq(self, conn: sqlite3.Connection) -> int:
        conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('seq', 0)")
        conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'seq'")
        return self.current_seq(conn)

    @staticmethod
    def current_seq(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()
        return int(row["value"]) if row else 0

    def reset(self) -> None:
        with self.transaction() as conn:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    def close(self) -> None:
        self._conn.close()
