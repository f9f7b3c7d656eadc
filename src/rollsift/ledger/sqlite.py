"""SQLite ledger: the default, one file per run (``RUN/ledger.sqlite``), stdlib ``sqlite3`` only.

Crash safety. The file is in WAL mode; every ``record_*`` call is one transaction, committed before
it returns, so a SIGKILL leaves the file consistent and holding every call that returned (a
transaction cut short is discarded by SQLite on the next open). ``synchronous=NORMAL``: a commit
does not wait for fsync, which is what makes appends fast; after a power loss or an OS crash the
last commits may be missing, never half-written. That loss would matter only for events the
trainer's checkpoint already counts on, so ``record_step`` (written last in a step, right before a
checkpoint) commits with ``synchronous=FULL``: the WAL is fsynced there, and with it every event
before. ``sync()`` is the same barrier on demand.

The file is self-describing: the views ``live_groups``, ``live_selections``, ``live_filters`` and
``live_steps`` apply the rollback rule, for anyone reading it with the sqlite3 shell or pandas.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import UserError
from .rows import COLUMNS
from .state import LedgerBase, _json_default

SCHEMA_VERSION = 1
TABLES = {"groups": "group_events", "selections": "selection_events", "filters": "filter_events",
          "steps": "step_events", "uses": "use_events"}
LIVE_VIEWS = {"groups": "live_groups", "selections": "live_selections", "filters": "live_filters",
              "steps": "live_steps", "uses": "live_uses"}

class LedgerFullError(UserError, OSError):
    """The disk under a ledger is full. Not a damaged ledger: the file still holds the run's
    history (SQLite rolled the failed write back), so the way out is free space, never removing it."""

    def __init__(self, path: Path, cause: BaseException, *, started: bool) -> None:
        where = path.parent
        then = ("then continue the run with --resume (the ledger holds its history: do not remove it)" if started
                else "then start the run again")
        super().__init__(errno.ENOSPC, f"{path}: the disk is full ({cause}). Free space on {where} "
                                       f"(see `df -h {where}`), {then}")
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def _disk_full(e: BaseException) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return code == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in str(e) or (
        isinstance(e, OSError) and e.errno == errno.ENOSPC)


def _clear_when_full(method):
    """A write that finds the disk full raises ``LedgerFullError`` (the history stays intact)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.OperationalError, OSError) as e:
            if _disk_full(e) and not isinstance(e, LedgerFullError):
                raise LedgerFullError(self.path, e, started=True) from e
            raise

    return wrapper


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
-- one row per attempt; attempt b > 0 was started by rollback(after_step); see cutoffs
CREATE TABLE IF NOT EXISTS attempts (attempt INTEGER PRIMARY KEY, after_step INTEGER, started REAL);
-- one row per register_pool call: JSON arrays of ids and labels (labels NULL when none given);
-- the pool is the union, a later non-null label winning (read with json_each in SQL)
CREATE TABLE IF NOT EXISTS pool (seq INTEGER PRIMARY KEY, ids TEXT NOT NULL, labels TEXT);
CREATE TABLE IF NOT EXISTS group_events (
    id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL, step INTEGER NOT NULL, round INTEGER NOT NULL,
    epoch INTEGER NOT NULL, prompt_id TEXT NOT NULL, purpose TEXT NOT NULL, n INTEGER NOT NULL,
    n_correct INTEGER NOT NULL, accuracy REAL NOT NULL, mean REAL NOT NULL, std REAL NOT NULL,
    policy_version INTEGER NOT NULL, pruned INTEGER NOT NULL,
    rewards BLOB NOT NULL,  -- n little-endian float64
    correct BLOB NOT NULL,  -- n bytes, 0 or 1
    lengths BLOB NOT NULL   -- n little-endian int32, completion lengths in tokens
);
CREATE TABLE IF NOT EXISTS selection_events (
    id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL, step INTEGER NOT NULL, round INTEGER NOT NULL,
    epoch INTEGER NOT NULL, prompt_id TEXT NOT NULL, kept INTEGER NOT NULL, reason TEXT, prob REAL
);
CREATE TABLE IF NOT EXISTS filter_events (
    id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL, step INTEGER NOT NULL, round INTEGER NOT NULL,
    name TEXT NOT NULL, prompt_id TEXT NOT NULL, kept INTEGER NOT NULL, reason TEXT, n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS step_events (
    id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL, step INTEGER NOT NULL, metrics TEXT NOT NULL
);
-- which groups each training step used, and the policy versions involved (staleness = trainer - group)
CREATE TABLE IF NOT EXISTS use_events (
    id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL, step INTEGER NOT NULL, prompt_id TEXT NOT NULL,
    group_step INTEGER NOT NULL, group_round INTEGER NOT NULL, group_version INTEGER NOT NULL,
    trainer_version INTEGER NOT NULL, replayed INTEGER NOT NULL
);
-- the rollback rule: an attempt's events are live up to the smallest after_step of any later attempt
CREATE VIEW IF NOT EXISTS cutoffs AS
    SELECT a.attempt, (SELECT MIN(b.after_step) FROM attempts b WHERE b.attempt > a.attempt) AS cutoff
    FROM attempts a;
"""
for _k, _t in TABLES.items():
    SCHEMA += (f"CREATE VIEW IF NOT EXISTS {LIVE_VIEWS[_k]} AS SELECT e.* FROM {_t} e JOIN cutoffs c "
               f"USING (attempt) WHERE c.cutoff IS NULL OR e.step <= c.cutoff;\n")


class SqliteLedger(LedgerBase):
    """``readonly=True`` opens an existing file without writing anything, not even SQLite's -wal and
    -shm files: a ledger closed cleanly (no -wal file beside it) is opened ``immutable``; a live or
    killed run's (its -wal holds events not yet in the main file) read-only with SQLite's shared
    memory, or, where its directory cannot be written (read-only media), ``immutable`` with a
    warning that events still in the -wal file are not seen."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"no ledger at {str(self.path)!r}")
            self._db = _connect_readonly(self.path)
        else:
            started = self.path.is_file() and self.path.stat().st_size > 0
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = _connect(self.path)
                self._db.execute("PRAGMA busy_timeout = 10000")
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
                with _transaction(self._db):  # not executescript, which commits on its own
                    for stmt in SCHEMA.split(";\n"):
                        if stmt.strip():
                            self._db.execute(stmt)
                    self._db.execute("INSERT OR IGNORE INTO attempts VALUES (0, NULL, ?)", (time.time(),))
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            except (sqlite3.OperationalError, OSError) as e:
                if _disk_full(e):
                    raise LedgerFullError(self.path, e, started=started) from e
                raise
        db = self._db
        db.execute("PRAGMA busy_timeout = 10000")
        version = self.get_meta("schema")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{str(self.path)!r}: ledger schema {version!r}, this rollsift reads {SCHEMA_VERSION}")
        self.attempt = db.execute("SELECT MAX(attempt) FROM attempts").fetchone()[0]
        cols = {k: ", ".join(c) for k, c in COLUMNS.items()}
        self._insert = {k: f"INSERT INTO {TABLES[k]} ({cols[k]}) VALUES ({', '.join('?' * len(COLUMNS[k]))})"
                        for k in COLUMNS}

    # ------------------------------------------------------------------ storage hooks
    @_clear_when_full
    def _append(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        db = self._db
        durable = table == "steps"
        if durable:
            db.execute("PRAGMA synchronous = FULL")
        try:
            with _transaction(db):
                db.executemany(self._insert[table], rows)
        finally:
            if durable:
                db.execute("PRAGMA synchronous = NORMAL")

    def _rows(self, table: str, columns: Sequence[str], include_rolled_back: bool) -> Iterator[tuple]:
        if table == "uses" and not self._has_table(TABLES[table]):  # a ledger written before use events
            return iter(())
        cols = ", ".join(f"e.{c}" for c in columns)
        live = "(c.cutoff IS NULL OR e.step <= c.cutoff)"
        sql = f"SELECT {cols}, {live} FROM {TABLES[table]} e JOIN cutoffs c USING (attempt)"
        if not include_rolled_back:
            sql += f" WHERE {live}"
        return self._db.execute(sql + " ORDER BY e.id")

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    @_clear_when_full
    def _register(self, ids: list[str], labels: list[Any] | None) -> None:
        ids_json = json.dumps(ids)
        labels_json = None if labels is None else json.dumps(labels, default=_json_default)
        digest = hashlib.sha256(f"{ids_json}\n{labels_json}".encode()).hexdigest()
        if self.get_meta("pool_sha256") == digest:  # the same pool again (every resume registers it)
            return
        with _transaction(self._db):
            self._db.execute("INSERT INTO pool (ids, labels) VALUES (?, ?)", (ids_json, labels_json))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('pool_sha256', ?)", (json.dumps(digest),))

    def _pool(self) -> tuple[list[str], list[Any]]:
        pool: dict[str, Any] = {}
        for ids_json, labels_json in self._db.execute("SELECT ids, labels FROM pool ORDER BY seq"):
            ids = json.loads(ids_json)
            labels = [None] * len(ids) if labels_json is None else json.loads(labels_json)
            if not pool:
                pool = dict(zip(ids, labels))
                continue
            for pid, lab in zip(ids, labels):
                if lab is not None or pid not in pool:
                    pool[pid] = lab
        return list(pool), list(pool.values())

    @_clear_when_full
    def _new_attempt(self, after_step: int) -> int:
        db = self._db
        with _transaction(db):
            attempt = db.execute("SELECT MAX(attempt) + 1 FROM attempts").fetchone()[0]
            db.execute("INSERT INTO attempts VALUES (?, ?, ?)", (attempt, after_step, time.time()))
        return attempt

    def _attempts(self) -> list[tuple[int, int | None]]:
        return [tuple(r) for r in self._db.execute("SELECT attempt, after_step FROM attempts ORDER BY attempt")]

    # ------------------------------------------------------------------ metadata and lifetime
    @_clear_when_full
    def set_meta(self, key: str, value: Any) -> None:
        """Run metadata (JSON-encodable); not tied to a step, so never rolled back."""
        with _transaction(self._db):
            text = json.dumps(value, default=_json_default)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, text))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    @_clear_when_full
    def sync(self) -> None:
        """Durability barrier: fsync the WAL, and with it every event written so far."""
        self._db.execute("PRAGMA synchronous = FULL")
        try:
            self.set_meta("synced_at", time.time())
        finally:
            self._db.execute("PRAGMA synchronous = NORMAL")

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: "ok" for a sound file."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    base = "file:" + urllib.parse.quote(str(path.resolve()))
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return sqlite3.connect(base + "?immutable=1", uri=True, isolation_level=None)
    try:
        db = sqlite3.connect(base + "?mode=ro", uri=True, isolation_level=None)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        import warnings

        warnings.warn(f"{path}: the directory cannot be written, so events still in {wal.name} are not read "
                      f"(open the ledger once where it can be written to fold them in)", stacklevel=3)
        return sqlite3.connect(base + "?immutable=1", uri=True, isolation_level=None)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_: Any) -> None:
        if not exc_type:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
            self.db.execute("ROLLBACK")
