"""The archive ledger: one SQLite database (``DEST/archive.sqlite``) that says, for every series
of a job, where it came from, what state it is in and what was written for it.

Consistency model
=================
* **One writer.** Only the coordinator (the process running :func:`medgpu.archive.archive`)
  writes the ledger. Workers -- local processes or Dask workers, possibly on other
  machines -- get a task description, write the stream with :func:`medgpu.api.compress`
  (temporary file, then an atomic rename to a path that depends only on the series) and
  *return* a result; they never open the database. So there is no write contention to
  arbitrate, and a worker that dies cannot leave the ledger half-updated.
* **One coordinator per archive.** The coordinator holds an exclusive ``flock`` on
  ``DEST/.lock`` for the whole job (:func:`acquire_lock`). The kernel drops the lock when
  the process dies, even by SIGKILL, so a crashed job never blocks the next one, and two
  jobs can never run on one archive at the same time.
* **State transitions are transactions.** ``pending -> running`` (a claim: ``attempts`` +1,
  ``run_id`` set), ``running -> done | pending (retry) | failed | skipped``; each is one
  ``BEGIN IMMEDIATE`` transaction whose ``WHERE`` clause names the expected state and run,
  and every transition is also appended to ``events`` (an audit log). The database is in
  WAL mode with ``synchronous=FULL``: a committed ``done`` survives a crash or power loss,
  and readers (progress monitors, tests) never block the writer.
* **A series is ``done`` only after its stream was verified** (decoded, size and PSNR
  recorded) and renamed into place; the row records the stream's size and SHA-256.
* **Recovery** (:meth:`Ledger.begin_run`): rows left ``running`` by an earlier run belong to a
  dead coordinator (we hold the lock), so they go back to ``pending`` (their stream, if any,
  is rewritten at the same path -- each series still ends with exactly one stream);
  ``failed`` rows get a fresh set of retries; ``done`` rows whose stream vanished or
  changed size go back to ``pending``. Leftover temporary files are removed by the job.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medgpu.errors import OptionError, OutputError

__all__ = ["LEDGER_NAME", "LOCK_NAME", "STATES", "Ledger", "acquire_lock"]

LEDGER_NAME = "archive.sqlite"
LOCK_NAME = ".lock"
STATES = ("pending", "running", "done", "failed", "skipped")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    key            TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    source         TEXT NOT NULL,            -- JSON: paths / PACS identifiers
    name           TEXT NOT NULL UNIQUE,     -- stream path relative to DEST
    fingerprint    TEXT NOT NULL,
    info           TEXT NOT NULL DEFAULT '{}',
    state          TEXT NOT NULL CHECK (state IN ('pending','running','done','failed','skipped')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    run_id         TEXT,
    started        REAL,
    finished       REAL,
    error          TEXT,
    bytes          INTEGER,
    original_bytes INTEGER,
    ratio          REAL,
    psnr           REAL,
    sha256         TEXT,
    seconds        REAL,
    result         TEXT
);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    started  REAL NOT NULL,
    finished REAL,
    pid      INTEGER,
    host     TEXT,
    status   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   REAL NOT NULL,
    run_id TEXT,
    key    TEXT,
    event  TEXT NOT NULL,
    detail TEXT
);
"""


def _sql_float(value: Any) -> float | None:
    """SQLite stores inf fine but not NaN; keep NaN out."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@contextlib.contextmanager
def acquire_lock(dest: Path) -> Iterator[None]:
    """Hold the archive's exclusive lock (``DEST/.lock``) for the duration of the block."""
    import fcntl

    path = dest / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise OutputError(f"another archive job is running on {dest} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


class Ledger:
    """The job's SQLite ledger (see the module doc for the consistency model)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise OptionError(f"{self.path.parent} is not a medgpu archive (no {self.path.name})")
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        else:
            self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        version = self.get_meta("schema")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise OptionError(f"{self.path} was written by a newer medgpu (ledger schema {version})")

    # ------------------------------------------------------------------ basics

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _event(self, run_id: str | None, key: str | None, event: str, detail: Any = None) -> None:
        text = detail if detail is None or isinstance(detail, str) else json.dumps(detail, default=str)
        self._db.execute("INSERT INTO events (time, run_id, key, event, detail) VALUES (?,?,?,?,?)",
                         (time.time(), run_id, key, event, text))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Store the job's coding options, or check them against the stored ones.

        An archive is coded with one codec, weights, quality, GoP and slice axis; resuming
        it with other options would mix streams, so that is refused.
        """
        text = json.dumps(dict(options), sort_keys=True)
        with self.transaction() as db:
            stored = db.execute("SELECT value FROM meta WHERE key='options'").fetchone()
            if stored is None:
                db.execute("INSERT INTO meta VALUES ('options', ?)", (text,))
                return
        old = json.loads(stored[0])
        diff = [f"{k} {old.get(k)!r} (now {options.get(k)!r})" for k in sorted(set(old) | set(options))
                if old.get(k) != options.get(k)]
        if diff:
            raise OptionError(f"{self.path.parent} was archived with {', '.join(diff)}; "
                              f"resume with the same options or use another destination")

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ runs

    def begin_run(self, run_id: str, dest: Path) -> dict[str, int]:
        """Start run ``run_id``: recover rows of dead runs (see the module doc). Needs the lock."""
        recovered = {"interrupted": 0, "failed_reset": 0, "missing_output": 0}
        with self.transaction() as db:
            db.execute("UPDATE runs SET status='interrupted', finished=? WHERE status='running'", (time.time(),))
            db.execute("INSERT INTO runs (run_id, started, pid, host, status) VALUES (?,?,?,?, 'running')",
                       (run_id, time.time(), os.getpid(), socket.gethostname()))
            for row in db.execute("SELECT key, run_id FROM series WHERE state='running'").fetchall():
                self._event(run_id, row["key"], "interrupted", f"run {row['run_id']} ended without a result")
                recovered["interrupted"] += 1
            db.execute("UPDATE series SET state='pending', run_id=NULL WHERE state='running'")
            for row in db.execute("SELECT key FROM series WHERE state='failed'").fetchall():
                self._event(run_id, row["key"], "retry-new-run")
                recovered["failed_reset"] += 1
            db.execute("UPDATE series SET state='pending', attempts=0 WHERE state='failed'")
            for row in db.execute("SELECT key, name, bytes FROM series WHERE state='done'").fetchall():
                stream = dest / row["name"]
                size = stream.stat().st_size if stream.is_file() else None
                if size != row["bytes"]:
                    self._event(run_id, row["key"], "output-missing", f"{row['name']}: size {size}, expected {row['bytes']}")
                    db.execute("UPDATE series SET state='pending', attempts=0 WHERE key=?", (row["key"],))
                    recovered["missing_output"] += 1
        return recovered

    def end_run(self, run_id: str, status: str = "finished") -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET status=?, finished=? WHERE run_id=?", (status, time.time(), run_id))

    # ------------------------------------------------------------------ series

    def upsert(self, run_id: str, key: str, kind: str, source: Mapping[str, Any], name: str,
               fingerprint: str, info: Mapping[str, Any] | None = None) -> str:
        """Add a discovered series as ``pending``, or refresh one that is not done yet.

        Returns the row's state. ``name`` (the stream path relative to DEST) is kept from
        the first insertion; when another series already has it, a suffix made from the key
        is added. A ``skipped`` series whose input changed (fingerprint) is retried.
        """
        src, inf = json.dumps(dict(source), sort_keys=True), json.dumps(dict(info or {}), sort_keys=True, default=str)
        with self.transaction() as db:
            row = db.execute("SELECT state, fingerprint FROM series WHERE key=?", (key,)).fetchone()
            if row is None:
                name = self._unique_name(name, key)
                db.execute("INSERT INTO series (key, kind, source, name, fingerprint, info, state) "
                           "VALUES (?,?,?,?,?,?, 'pending')", (key, kind, src, name, fingerprint, inf))
                self._event(run_id, key, "discovered", name)
                return "pending"
            state = row["state"]
            if state in ("pending", "failed") or (state == "skipped" and row["fingerprint"] != fingerprint):
                db.execute("UPDATE series SET kind=?, source=?, fingerprint=?, info=?, state='pending', "
                           "error=CASE WHEN state='skipped' THEN NULL ELSE error END WHERE key=?",
                           (kind, src, fingerprint, inf, key))
                if state == "skipped":
                    self._event(run_id, key, "input-changed")
                return "pending"
            return state

    def _unique_name(self, name: str, key: str) -> str:
        import hashlib

        taken = self._db.execute("SELECT 1 FROM series WHERE name=?", (name,)).fetchone()
        if taken is None:
            return name
        stem, dot, suffix = name.rpartition(".")
        tag = hashlib.sha1(key.encode()).hexdigest()[:8]
        return f"{stem}-{tag}.{suffix}" if dot else f"{name}-{tag}"

    def add_unreadable(self, run_id: str, key: str, path: str, reason: str, fingerprint: str) -> None:
        """Record an input that cannot be read as ``skipped`` (unless it is already done)."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM series WHERE key=?", (key,)).fetchone()
            if row is not None and row["state"] == "done":
                return
            if row is None:
                name = self._unique_name(f"unreadable/{key}", key)
                db.execute("INSERT INTO series (key, kind, source, name, fingerprint, state, error) "
                           "VALUES (?, 'unreadable', ?, ?, ?, 'skipped', ?)",
                           (key, json.dumps({"paths": [path]}), name, fingerprint, reason))
            else:
                db.execute("UPDATE series SET state='skipped', error=?, fingerprint=? WHERE key=?",
                           (reason, fingerprint, key))
            self._event(run_id, key, "unreadable", reason)

    def claim(self, run_id: str, key: str) -> int:
        """``pending -> running`` for this run; returns the attempt number (1, 2, ...)."""
        with self.transaction() as db:
            cur = db.execute("UPDATE series SET state='running', run_id=?, attempts=attempts+1, started=?, "
                             "error=NULL WHERE key=? AND state='pending'", (run_id, time.time(), key))
            if cur.rowcount != 1:
                raise RuntimeError(f"ledger: {key} is not pending")
            attempts = db.execute("SELECT attempts FROM series WHERE key=?", (key,)).fetchone()[0]
            self._event(run_id, key, "claimed", f"attempt {attempts}")
        return int(attempts)

    def _transition(self, run_id: str, key: str, sets: str, values: tuple, event: str, detail: Any) -> None:
        with self.transaction() as db:
            cur = db.execute(f"UPDATE series SET {sets} WHERE key=? AND state='running' AND run_id=?",
                             (*values, key, run_id))
            if cur.rowcount != 1:
                raise RuntimeError(f"ledger: {key} is not running in run {run_id}")
            self._event(run_id, key, event, detail)

    def mark_done(self, run_id: str, key: str, result: Mapping[str, Any]) -> None:
        """``running -> done`` with the verified result."""
        self._transition(
            run_id, key,
            "state='done', finished=?, error=NULL, bytes=?, original_bytes=?, ratio=?, psnr=?, sha256=?, "
            "seconds=?, result=?",
            (time.time(), int(result["bytes"]), int(result["original_bytes"]), _sql_float(result.get("ratio")),
             _sql_float(result.get("psnr")), result.get("sha256"), _sql_float(result.get("seconds")),
             json.dumps(_json_safe(result), sort_keys=True)),
            "done", {"bytes": result["bytes"], "psnr": _json_safe(result.get("psnr"))},
        )

    def mark_retry(self, run_id: str, key: str, error: str) -> None:
        """``running -> pending`` after a transient failure."""
        self._transition(run_id, key, "state='pending', error=?", (error,), "retry", error)

    def mark_failed(self, run_id: str, key: str, error: str, *, skipped: bool = False) -> None:
        """``running -> failed`` (retries used up, or a permanent error) or ``-> skipped``
        (the input cannot be read)."""
        state = "skipped" if skipped else "failed"
        self._transition(run_id, key, f"state='{state}', finished=?, error=?", (time.time(), error), state, error)

    # ------------------------------------------------------------------ queries

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        item = dict(row)
        for col in ("source", "info", "result"):
            item[col] = json.loads(item[col]) if item.get(col) else ({} if col != "result" else None)
        return item

    def rows(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every series (or those in ``state``), by key, with JSON columns decoded."""
        query = "SELECT * FROM series" + (" WHERE state=?" if state else "") + " ORDER BY key"
        return [self._decode(r) for r in self._db.execute(query, (state,) if state else ()).fetchall()]

    def row(self, key: str) -> dict[str, Any] | None:
        found = self._db.execute("SELECT * FROM series WHERE key=?", (key,)).fetchone()
        return None if found is None else self._decode(found)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, n in self._db.execute("SELECT state, COUNT(*) FROM series GROUP BY state"):
            counts[state] = int(n)
        return counts

    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM events" + (" WHERE key=?" if key else "") + " ORDER BY id"
        return [dict(r) for r in self._db.execute(query, (key,) if key else ()).fetchall()]


def _json_safe(value: Any) -> Any:
    from medgpu.bitstream.sidecar import to_json_safe

    return to_json_safe(value)
