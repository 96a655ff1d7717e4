"""The results store: every trained network's losses, with what produced them.

An embedded SQLite database (stdlib `sqlite3`) in the run directory,
``<run dir>/store.sqlite``. One row per finished (or failed) training job:

* ``key``: the canonical JSON of the job's settings (`canonical_json`:
  sorted keys, no spaces). The settings hold everything that can change the
  numbers: the kind of job (``network`` or ``affinity``), the tasks in
  order, the encoder size, the training configuration (steps, batch size,
  optimizer, learning rate, seed, ...), the data (source, resolution, scene
  counts and seed, the dataset's name, which ends with the renderer's
  fingerprint or a fingerprint of a directory's files) and the code version
  (`code_version`: a hash of the package's source). A job is reused only when
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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "SCHEMA_VERSION",
    "STORE_NAME",
    "ResultsStore",
    "StoreError",
    "canonical_json",
    "code_version",
    "key_hash",
]

SCHEMA_VERSION = 1
STORE_NAME = "store.sqlite"
#: The source folders whose .py files make up the code version.
CODE_FOLDERS = ("mtl", "tasks", "grouping")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,          -- canonical JSON of the settings
    key_hash TEXT NOT NULL,        -- sha256 of key, 16 hex digits (checkpoint folder names)
    kind TEXT NOT NULL,            -- 'network' or 'affinity'
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


def package_root() -> Path:
    """The folder holding mtl/, tasks/ and grouping/."""
    return Path(__file__).resolve().parents[1]


def code_version(root: str | os.PathLike | None = None) -> str:
    """12 hex digits: sha256 over the paths and bytes of every .py file in
    mtl/, tasks/ and grouping/ (recursively, sorted by path). Any edit to the
    package's source changes it, and with it every store key."""
    root = Path(root) if root is not None else package_root()
    h = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
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
    with exactly these settings, or None.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: every write below is one explicit transaction.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._schema_version()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a results store ({e}); use another --out or remove the file") from None
        if version is None:
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (_now(),))
        elif version != SCHEMA_VERSION:
            self._db.close()
            raise StoreError(
                f"the results store {self.path} has schema version {version}; this code reads version "
                f"{SCHEMA_VERSION}. Use another --out directory, or delete the store to start over"
            )

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
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type, *_):
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            return False

    def _transaction(self) -> "ResultsStore._Tx":
        return ResultsStore._Tx(self._db)

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
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (key, key_hash, kind, status, tasks, size, steps, seed, code_version, "
                "result, error, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, key_hash(settings), str(s.get("kind", "")), status, "+".join(s.get("tasks", [])),
                 train.get("size"), train.get("steps"), train.get("seed"), str(s.get("code_version", "")),
                 result, error, _now()),
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
