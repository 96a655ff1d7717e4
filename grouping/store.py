"""The results store: every trained network's losses, with what produced them.

An embedded SQLite database (stdlib `sqlite3`) in the run directory,
``<run dir>/store.sqlite``. One row per finished (or failed) training job:

* ``key``: the canonical JSON of the job's settings (`canonical_json`:
  sorted keys, no spaces). The settings hold everything that can change the
  numbers: the kind of job (``network``, ``affinity`` or ``lookahead``), the tasks in
  order, the encoder size, the training configuration (steps, batch size,
  optimizer, learning rate, seed, ...), the data (source, resolution, scene
  counts and seed, the dataset's name, which ends with the renderer's
  fingerprint or a fingerprint of a directory's files) and the code version
  (`code_version`: a hash of the source that trains: `CODE_PATHS`). A job is reused only when
  its key matches exactly, so a store written by another code version or
  other settings is never mixed in: its rows are simply not matched (and
  `count_other` tells how many there are).
* ``status``: ``done`` or ``failed``. Only ``done`` rows are ever returned as
  results; a network whose loss became NaN or infinite is recorded as
  ``failed`` with its error, and is trained again (and fails again) on a
  rerun rather than being taken as valid.
* ``result``: the job's output as JSON (per-task validation and test losses
  and metrics, training seconds, ...), and a few columns copied out of the
  settings for people who query the file by hand (tasks, size, steps, seed,
  code version).

Writes are transactions: a row appears only after its network finished, in
one INSERT that SQLite commits atomically (rollback journal, synchronous
writes), so a run killed at any moment (kill -9) loses at most the network
in training; that network's orbax checkpoints (``checkpoint_dir``, under the
run directory, named by the hash of its key) let the rerun resume it.

A store whose schema version differs from `SCHEMA_VERSION` is refused with a
`StoreError` (a ValueError: the command-line tools print it and exit 2).

A full disk while a row is written rolls the transaction back (no half row)
and raises `mtl.cli.DiskFullError` naming the run directory; after space is
freed the same command finds every row written before and resumes.

One run per directory: opening a store takes `RunLock` on its directory
(``<run dir>/run.lock``: an exclusive `fcntl.flock`, plus a small JSON with
the holder's pid, host, start time and command for the message). Another
process opening a store in that directory while the first has it open gets
`RunLocked` at once (a StoreError) naming that process; the lock ends when
the store is closed or its process ends, however it ends (the kernel drops a
flock with its process), so a killed run never blocks the next one. Within
one process the lock is re-entrant (counted): a process may open a store it
already has open, as the tests do. ``ResultsStore(path, lock=False)`` reads a
store without the lock (e.g. to look at a run in progress).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "SCHEMA_VERSION",
    "STORE_NAME",
    "LOCK_NAME",
    "ResultsStore",
    "RunLock",
    "RunLocked",
    "StoreError",
    "canonical_json",
    "code_version",
    "key_hash",
]

SCHEMA_VERSION = 1
STORE_NAME = "store.sqlite"
LOCK_NAME = "run.lock"
#: The source folders whose .py files make up the code version.
#: The source that decides a stored result's numbers: the data, the network and
#: its training (mtl/, tasks/), the affinity probes (TAG's and the corrected lookahead), how the runner trains and
#: keys a job, how the data are loaded and named, and the store itself. Selection, objectives, estimators'
#: predictions and reports are left out: editing them changes no trained
#: number, so it must not throw away finished networks (a ground truth is
#: hours of training). A method whose training code lives elsewhere must put
#: that code's hash in its own store keys.
CODE_PATHS = ("mtl", "tasks", "grouping/affinity.py", "grouping/lookahead.py", "grouping/runner.py",
              "grouping/dataspec.py", "grouping/store.py")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,          -- canonical JSON of the settings
    key_hash TEXT NOT NULL,        -- sha256 of key, 16 hex digits (checkpoint folder names)
    kind TEXT NOT NULL,            -- 'network', 'affinity' or 'lookahead'
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    tasks TEXT NOT NULL,           -- '+'-joined task names
    size REAL,
    steps INTEGER,
    seed INTEGER,
    code_version TEXT NOT NULL,
    result TEXT,                   -- JSON, NULL when failed
    error TEXT,                    -- the failure, NULL when done
    created TEXT NOT NULL
);
"""


class StoreError(ValueError):
    """The store cannot be used (another schema version, not a store, ...)."""


class RunLocked(StoreError):
    """Another process is using the run directory."""


# Locks this process holds: lock file path -> [fd, count, pid]. flock belongs to
# an open file description, so a second open in the same process would block
# on the first: the process takes each lock once and counts.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory, for one process at a time.

    ``with RunLock(dir):`` (or `acquire` / `release`). The lock is an
    `fcntl.flock` on ``dir/run.lock``, which the kernel releases when the
    holding process ends, killed or not; the file also holds a JSON line (pid,
    host, start time, command) so that a refused run can say who holds it.
    A file left by a process that is gone is simply taken over (with a note
    on stderr). Re-entrant within a process (counted). Where the file system
    does not support flock, the JSON alone decides: a live pid on this host
    holds the lock, a dead one does not.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._key: str | None = None

    def acquire(self) -> "RunLock":
        if self._key is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None and held[2] == os.getpid():
                held[1] += 1
                self._key = key
                return self
            fd = os.open(key, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                previous = self._take(fd)
            except BaseException:
                os.close(fd)
                raise
            _HELD[key] = [fd, 1, os.getpid()]
            self._key = key
        if previous and previous.get("pid") != os.getpid():
            print(f"note: {self.directory} was locked by {_describe(previous)}, which is no longer running; "
                  "taking it over", file=sys.stderr)
        return self

    def _take(self, fd: int) -> dict | None:
        """Takes the flock on `fd` and writes this process's record; returns the record found there."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refusal(_read_record(fd, wait=True)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            found = _read_record(fd)  # no flock here: the record alone decides
            if found and found.get("pid") != os.getpid() and (
                    found.get("host") != socket.gethostname() or _pid_alive(int(found.get("pid", 0)))):
                raise self._refusal(found, unlocked=True) from None
        previous = _read_record(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:500]}
        try:  # the lock holds without the record (a full disk): only the message would lack it
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            pass
        return previous

    def _refusal(self, holder: dict | None, unlocked: bool = False) -> RunLocked:
        who = _describe(holder) if holder else "another process"
        hint = f"; if it is no longer running, delete {self.path}" if unlocked else ""
        return RunLocked(
            f"another run is using the run directory {self.directory}: {who}. Wait for it to finish, "
            f"or use another --out directory{hint}"
        )

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[key]
            fd = held[0]
            try:
                os.ftruncate(fd, 0)  # an empty file: nobody holds it
            except OSError:
                pass
            os.close(fd)  # drops the flock

    @property
    def held(self) -> bool:
        return self._key is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_record(fd: int, wait: bool = False) -> dict | None:
    """The JSON record in a lock file, or None. With `wait`, gives a process that
    has just taken the lock a moment to write its record."""
    deadline = time.monotonic() + (1.0 if wait else 0.0)
    found = None
    while True:
        try:
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            record = json.loads(text) if text else None
            if isinstance(record, dict) and "pid" in record:
                found = record
                # A dead pid here may be the record of a killed run that the new holder has not yet replaced.
                if not wait or record.get("host") != socket.gethostname() or _pid_alive(int(record["pid"])):
                    return record
        except (OSError, ValueError, TypeError):
            pass
        if time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def _describe(record: dict) -> str:
    parts = [f"pid {record.get('pid')}" + (f" on host {record['host']}" if record.get("host") else "")]
    if record.get("started"):
        parts.append(f"started {record['started']}")
    if record.get("command"):
        parts.append(f"command: {record['command']}")
    return ", ".join(parts)


def package_root() -> Path:
    """The folder holding mtl/, tasks/ and grouping/."""
    return Path(__file__).resolve().parents[1]


def code_version(root: str | os.PathLike | None = None) -> str:
    """12 hex digits: sha256 over the paths and bytes of the .py files of
    `CODE_PATHS` (folders recursively, sorted by path). Any edit to that
    source changes it, and with it every store key."""
    root = Path(root) if root is not None else package_root()
    h = hashlib.sha256()
    for name in CODE_PATHS:
        target = root / name
        for path in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            if "__pycache__" in path.parts:
                continue
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _jsonable(value: Any, strict: bool = True) -> Any:
    """Plain JSON types (tuples -> lists, numpy scalars/arrays -> numbers/lists).

    A NaN or infinity raises StoreError when ``strict`` (settings), and
    becomes None otherwise (results: a metric may be undefined, e.g. the
    mIoU of a split without a class; losses are checked before storing)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, strict) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _jsonable(value.tolist(), strict)
    if isinstance(value, float) and not math.isfinite(value):
        if strict:
            raise StoreError(f"settings must be finite numbers, got {value}")
        return None
    return value


def canonical_json(settings: Mapping[str, Any]) -> str:
    """The key: JSON with sorted keys and no whitespace (same settings, same text)."""
    return json.dumps(_jsonable(settings), sort_keys=True, separators=(",", ":"), allow_nan=False)


def key_hash(settings: Mapping[str, Any]) -> str:
    """16 hex digits of sha256(canonical_json(settings)): names checkpoint folders."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]


class ResultsStore:
    """The SQLite store of one run directory (created on first use).

    ``with ResultsStore(path) as store:`` closes it at the end. Settings are
    any JSON-able mapping; `get` returns the stored result of a ``done`` job
    with exactly these settings, or None. Opening takes the `RunLock` of the
    store's directory (``lock=False``: read without it) and raises `RunLocked`
    if another process holds it; `close` releases it.
    """

    def __init__(self, path: str | os.PathLike, *, lock: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = None
        self.lock = RunLock(self.path.parent).acquire() if lock else None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        try:
            # Autocommit mode: every write below is one explicit transaction.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._schema_version()
        except sqlite3.DatabaseError as e:
            self._raise_if_full(e, "the results store")
            raise StoreError(f"{self.path} is not a results store ({e}); use another --out or remove the file") from None
        if version is None:
            with self._transaction("the results store"):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (_now(),))
        elif version != SCHEMA_VERSION:
            raise StoreError(
                f"the results store {self.path} has schema version {version}; this code reads version "
                f"{SCHEMA_VERSION}. Use another --out directory, or delete the store to start over"
            )

    def _raise_if_full(self, e: BaseException, what: str) -> None:
        """A full disk (SQLITE_FULL, or ENOSPC under it) becomes DiskFullError naming the run directory."""
        from mtl.cli import DiskFullError, is_disk_full

        full = getattr(e, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13) or is_disk_full(e)
        if full:
            raise DiskFullError(self.path.parent, what) from e

    def _schema_version(self) -> int | None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "meta" not in tables or "jobs" not in tables:
            raise StoreError(f"{self.path} is an SQLite file but not a results store (tables: {sorted(tables)})")
        row = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        if row is None:
            raise StoreError(f"{self.path} has no schema version; it is not a results store")
        try:
            return int(row[0])
        except ValueError:
            raise StoreError(f"{self.path} has a bad schema version {row[0]!r}") from None

    class _Tx:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error. A failed COMMIT
        (a full disk) is rolled back too: SQLite's rollback journal restores
        the file, so a row is written whole or not at all."""

        def __init__(self, store: "ResultsStore", what: str):
            self.store, self.db, self.what = store, store._db, what

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type, exc, _tb):
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                    return False
                except sqlite3.Error as e:
                    exc = e
            if self.db.in_transaction:  # SQLite may already have rolled back (SQLITE_FULL does)
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                self.store._raise_if_full(exc, self.what)
                if exc_type is None:
                    raise exc
            return False

    def _transaction(self, what: str = "a row of the results store") -> "ResultsStore._Tx":
        return ResultsStore._Tx(self, what)

    # -- reading ---------------------------------------------------------

    def get(self, settings: Mapping[str, Any]) -> dict | None:
        """The result of the finished job with exactly these settings, or None."""
        row = self._db.execute(
            "SELECT result FROM jobs WHERE key=? AND status='done'", (canonical_json(settings),)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def failure(self, settings: Mapping[str, Any]) -> str | None:
        """The recorded error of a failed job with these settings, or None."""
        row = self._db.execute(
            "SELECT error FROM jobs WHERE key=? AND status='failed'", (canonical_json(settings),)
        ).fetchone()
        return None if row is None else row[0]

    def rows(self) -> Iterator[dict]:
        """Every row as a dict (settings and result decoded), oldest first."""
        cur = self._db.execute(
            "SELECT key, key_hash, kind, status, tasks, size, steps, seed, code_version, result, error, created "
            "FROM jobs ORDER BY rowid"
        )
        names = [d[0] for d in cur.description]
        for values in cur:
            row = dict(zip(names, values))
            row["settings"] = json.loads(row.pop("key"))
            row["result"] = None if row["result"] is None else json.loads(row["result"])
            yield row

    def count(self, status: str = "done") -> int:
        return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status=?", (status,)).fetchone()[0]

    def count_other(self, keys: set[str]) -> int:
        """How many done rows have a key outside ``keys`` (other settings or code versions)."""
        return sum(1 for (k,) in self._db.execute("SELECT key FROM jobs WHERE status='done'") if k not in keys)

    # -- writing ---------------------------------------------------------

    def put(self, settings: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Records a finished job (replacing a failed attempt with the same settings)."""
        text = json.dumps(_jsonable(result, strict=False), sort_keys=True, separators=(",", ":"), allow_nan=False)
        self._write(settings, "done", text, None)

    def put_failed(self, settings: Mapping[str, Any], error: str) -> None:
        """Records a failed job: never returned by `get`."""
        self._write(settings, "failed", None, str(error))

    def _write(self, settings, status, result, error) -> None:
        key = canonical_json(settings)
        s = json.loads(key)
        train = s.get("train", {}) if isinstance(s.get("train"), dict) else {}
        with self._transaction(f"the result of {s.get('kind', 'job')} {'+'.join(s.get('tasks', []))}"):
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (key, key_hash, kind, status, tasks, size, steps, seed, code_version, "
                "result, error, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, key_hash(settings), str(s.get("kind", "")), status, "+".join(s.get("tasks", [])),
                 train.get("size"), train.get("steps"), train.get("seed"), str(s.get("code_version", "")),
                 result, error, _now()),
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
