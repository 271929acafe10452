"""The stand-in's rows: in memory, optionally written through to a SQLite file (`--db`).

Every write takes the next number of one organisation-wide row version (Dataverse's `versionnumber`,
which the etag `W/"<n>"` and change tracking are built on). Deletions are logged with their version
for change tracking. A change set runs inside `transaction()`: on failure every row it touched is put
back, the version counter and the deletion log too. String columns that clients look rows up by are
indexed case-insensitively (Dataverse's `eq` on strings ignores case).
"""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from emulators.dataverse.schema import TABLES

Row = dict[str, Any]

# (table, stored column) pairs kept in a lower-cased value index
INDEXED: dict[str, tuple[str, ...]] = {
    "contact": ("emailaddress1", "emailaddress2", "emailaddress3", "crmsync_outlookkey"),
    "email": ("messageid", "_regardingobjectid_value"),
    "appointment": ("globalobjectid", "_regardingobjectid_value"),
    "task": ("_regardingobjectid_value",),
    "systemuser": ("internalemailaddress", "domainname"),
    "activityparty": ("_activityid_value", "_partyid_value"),
}


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, db_path: str = ":memory:") -> None:
        self.rows: dict[str, dict[str, Row]] = {name: {} for name in TABLES}
        self.version = 0
        self.deleted: list[tuple[int, str, str]] = []  # (version, table, id)
        self.expired_below = 0  # delta tokens issued before this version are expired
        self._index: dict[tuple[str, str], dict[str, set[str]]] = {
            (t, c): {} for t, columns in INDEXED.items() for c in columns
        }
        self._undo: dict[tuple[str, str], Row | None] | None = None
        # in memory: nothing to write through (the rows are the dicts above)
        self._persist = db_path != ":memory:"
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS rows (tbl TEXT, id TEXT, doc TEXT, PRIMARY KEY (tbl, id));"
            "CREATE TABLE IF NOT EXISTS deleted (version INTEGER, tbl TEXT, id TEXT);"
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER);"
        )
        self._load()

    # -- reading ---------------------------------------------------------------------------------

    def get(self, table: str, row_id: str) -> Row | None:
        return self.rows[table].get(row_id.lower())

    def all(self, table: str) -> list[Row]:
        return list(self.rows[table].values())

    def find(self, table: str, column: str, value: str) -> list[Row]:
        """Rows whose indexed `column` equals `value`, ignoring case."""
        ids = self._index[(table, column)].get(value.lower(), set())
        return [self.rows[table][i] for i in sorted(ids)]

    def indexed(self, table: str, column: str) -> bool:
        return (table, column) in self._index

    # -- writing ---------------------------------------------------------------------------------

    def put(self, table: str, row: Row, primary: str) -> Row:
        """Store the row (a new version of it), stamping version and times."""
        row_id = str(row[primary]).lower()
        row[primary] = row["@id"] = row_id
        before = self.rows[table].get(row_id)
        self._remember(table, row_id, before)
        self.version += 1
        stamp = now_text()
        row["versionnumber"] = self.version
        row["modifiedon"] = stamp
        row.setdefault("createdon", before["createdon"] if before else stamp)
        self._unindex(table, before)
        self.rows[table][row_id] = row
        self._reindex(table, row)
        self._save(table, row_id, row)
        return row

    def delete(self, table: str, row_id: str) -> None:
        row_id = row_id.lower()
        before = self.rows[table].pop(row_id, None)
        if before is None:
            return
        self._remember(table, row_id, before)
        self._unindex(table, before)
        self.version += 1
        self.deleted.append((self.version, table, row_id))
        self._save(table, row_id, None)
        if self._persist:
            self._db.execute("INSERT INTO deleted VALUES (?, ?, ?)", (self.version, table, row_id))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside stand or fall together (a $batch change set)."""
        if self._undo is not None:
            yield
            return
        self._undo = {}
        version, deleted = self.version, len(self.deleted)
        try:
            yield
        except BaseException:
            undo, self._undo = self._undo, None
            for (table, row_id), before in undo.items():
                self._unindex(table, self.rows[table].get(row_id))
                if before is None:
                    self.rows[table].pop(row_id, None)
                else:
                    self.rows[table][row_id] = before
                    self._reindex(table, before)
                self._save(table, row_id, before)
            self.version = version
            del self.deleted[deleted:]
            if self._persist:
                self._db.execute("DELETE FROM deleted WHERE version > ?", (version,))
            self._meta()
            raise
        finally:
            self._undo = None

    def reset(self) -> None:
        for rows in self.rows.values():
            rows.clear()
        for index in self._index.values():
            index.clear()
        self.deleted.clear()
        self.version = self.expired_below = 0
        self._db.executescript("DELETE FROM rows; DELETE FROM deleted; DELETE FROM meta;")

    def expire_tokens(self) -> None:
        """Every delta token issued so far is expired (as after Dataverse's retention period)."""
        self.version += 1  # tokens issued from now on are newer than the cut
        self.expired_below = self.version
        self._meta()

    # -- inside ----------------------------------------------------------------------------------

    def _remember(self, table: str, row_id: str, before: Row | None) -> None:
        if self._undo is not None and (table, row_id) not in self._undo:
            self._undo[(table, row_id)] = copy.deepcopy(before)

    def _reindex(self, table: str, row: Row | None) -> None:
        if row is None:
            return
        for column in INDEXED.get(table, ()):
            value = row.get(column)
            if isinstance(value, str) and value:
                self._index[(table, column)].setdefault(value.lower(), set()).add(str(row["@id"]))

    def _unindex(self, table: str, row: Row | None) -> None:
        if row is None:
            return
        for column in INDEXED.get(table, ()):
            value = row.get(column)
            if isinstance(value, str) and value:
                self._index[(table, column)].get(value.lower(), set()).discard(str(row["@id"]))

    def _save(self, table: str, row_id: str, row: Row | None) -> None:
        if not self._persist:
            return
        if row is None:
            self._db.execute("DELETE FROM rows WHERE tbl = ? AND id = ?", (table, row_id))
        else:
            self._db.execute("INSERT OR REPLACE INTO rows VALUES (?, ?, ?)", (table, row_id, json.dumps(row)))
        self._meta()

    def _meta(self) -> None:
        if not self._persist:
            return
        self._db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("version", self.version), ("expired_below", self.expired_below)],
        )

    def _load(self) -> None:
        for table, _row_id, doc in self._db.execute("SELECT tbl, id, doc FROM rows"):
            row = json.loads(doc)
            self.rows[table][str(row["@id"])] = row
            self._reindex(table, row)
        self.deleted = [(int(v), t, i) for v, t, i in self._db.execute("SELECT * FROM deleted ORDER BY 1")]
        meta = dict(self._db.execute("SELECT name, value FROM meta"))
        self.version = int(meta.get("version", 0))
        self.expired_below = int(meta.get("expired_below", 0))
