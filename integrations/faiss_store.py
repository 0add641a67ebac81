"""A FAISS collection's id/payload store: the source of truth, in SQLite (``store.sqlite``).

Table ``points``: string id <-> int64 id (``iid``, the SQLite rowid FAISS stores), payload JSON and the
float32 vector; table ``meta``: the collection's model id, h, k, d, index spec, normalisation and a
generation counter that every write bumps (the index file records the generation it was written at).
``path=None`` keeps the store in memory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csr_adapter.filters import check_filter, check_value
from csr_adapter.integrations.base import BackendError, CollectionMismatchError, Point, make_private_dir

STORE_FILE = "store.sqlite"
BATCH = 900  # ids per statement, under SQLite's bound-parameter limit
SCROLL_PAGE = 2048


class FaissIndexError(BackendError):
    """A FAISS collection's store is missing/corrupt, cannot be trained, or was built differently."""


class DimensionMismatchError(CollectionMismatchError, FaissIndexError, ValueError):
    """Vectors whose dimension differs from the collection's."""


class ModelMismatchError(CollectionMismatchError, FaissIndexError):
    """The collection was built with another model."""


def _json_path(key: str) -> str:
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"bad filter key {key!r}")
    return "$" + "".join('."' + part.replace('"', '""') + '"' for part in key.split("."))


def filter_sql(filter: dict[str, Any] | None) -> tuple[str, list[Any]]:
    """SQL ``WHERE`` clause for a payload filter: ``{key: value}`` equality, a list value = any of;
    dotted keys reach nested fields; a payload array matches if any element does (as in Qdrant)."""
    if not check_filter(filter):  # the grammar every backend shares, so a filter valid here is valid on all
        return "1", []
    clauses, args = [], []
    for key, value in filter.items():
        values = check_value(key, value)
        path, marks = _json_path(key), ",".join("?" * len(values))
        clauses.append(
            f"(json_extract(payload, ?) IN ({marks}) OR (json_type(payload, ?) = 'array' AND EXISTS "
            f"(SELECT 1 FROM json_each(payload, ?) WHERE value IN ({marks}))))"
        )
        args += [path, *values, path, path, *values]
    return " AND ".join(clauses), args


class PointStore:
    """Points and meta of one FAISS collection (``path/store.sqlite``, or memory when ``path`` is None)."""

    def __init__(self, path: Path | None, lock: threading.RLock | None = None) -> None:
        self.path = path
        self.lock = lock or threading.RLock()
        self.db = self._open()

    @staticmethod
    def remove_files(path: Path) -> None:
        for name in (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm"):
            (path / name).unlink(missing_ok=True)

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._create_tables(db)
            return db
        file = self.path / STORE_FILE
        try:
            make_private_dir(self.path)
            db = sqlite3.connect(file, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._create_tables(db)
        except sqlite3.DatabaseError as exc:
            raise FaissIndexError(f"{file}: not a readable payload store, or not writable here ({exc})") from None
        except OSError as exc:
            raise FaissIndexError(f"{self.path}: cannot create the FAISS collection ({exc})") from None
        return db

    @staticmethod
    def _create_tables(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS points (iid INTEGER PRIMARY KEY AUTOINCREMENT, "
            "id TEXT UNIQUE NOT NULL, payload TEXT NOT NULL, vector BLOB NOT NULL)"
        )

    def close(self) -> None:
        self.db.close()

    # -- meta --------------------------------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values: Any) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])

    def generation(self) -> int:
        return int(self.get_meta().get("generation", 0))

    def _bump(self) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES ('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    # -- writes ------------------------------------------------------------------------------------
    def _transaction(self, sql: str, rows: Iterable[tuple]) -> None:
        """Run ``sql`` over ``rows`` and bump the generation, all or nothing."""
        try:
            self.db.execute("BEGIN")
            self.db.executemany(sql, rows)
            self._bump()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def upsert(self, ids: Sequence[str], payloads: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace ``ids`` (payloads as JSON text, float32 rows); their iids stay the same."""
        self._transaction(
            "INSERT INTO points (id, payload, vector) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
            "SET payload = excluded.payload, vector = excluded.vector",
            [(i, pl, v.tobytes()) for i, pl, v in zip(ids, payloads, vectors)],
        )

    def delete(self, iids: Sequence[int]) -> None:
        self._transaction("DELETE FROM points WHERE iid = ?", [(i,) for i in iids])

    # -- reads -------------------------------------------------------------------------------------
    def _where_in(self, sql: str, values: Sequence[Any]) -> Iterator[tuple]:
        """Rows of ``sql`` (its ``{marks}`` an ``IN`` list) for ``values``, a statement per :data:`BATCH`."""
        for start in range(0, len(values), BATCH):
            chunk = list(values[start:start + BATCH])
            yield from self.db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk).fetchall()

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def iter_vectors(self) -> Iterable[tuple[int, np.ndarray]]:
        for iid, blob in self.db.execute("SELECT iid, vector FROM points ORDER BY iid"):
            yield iid, np.frombuffer(blob, dtype=np.float32)

    def iids(self, ids: Sequence[str]) -> dict[str, int]:
        """The int64 ids of the stored ``ids`` (unknown ids absent)."""
        return dict(self._where_in("SELECT id, iid FROM points WHERE id IN ({marks})", ids))

    def rows(self, iids: Sequence[int]) -> dict[int, tuple[str, dict]]:
        """``iid -> (id, payload)`` for the stored ``iids``."""
        found = self._where_in("SELECT iid, id, payload FROM points WHERE iid IN ({marks})", [int(i) for i in iids])
        return {iid: (pid, json.loads(payload)) for iid, pid, payload in found}

    def allowed(self, filter: dict[str, Any] | None) -> np.ndarray | None:
        """The iids whose payload matches ``filter`` (None: no filter, everything is allowed)."""
        if not filter:
            return None
        where, args = filter_sql(filter)
        rows = self.db.execute(f"SELECT iid FROM points WHERE {where}", args).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def exact(self, q: np.ndarray, iids: np.ndarray, top_k: int) -> list[tuple[float, str, dict]]:
        """The best ``top_k`` of ``iids`` by exact inner product with ``q``: ``(score, id, payload)``."""
        sql = "SELECT iid, id, payload, vector FROM points WHERE iid IN ({marks})"
        scored = [(float(np.dot(np.frombuffer(blob, np.float32), q)), iid, pid, payload)
                  for iid, pid, payload, blob in self._where_in(sql, [int(i) for i in iids])]
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [(s, pid, json.loads(pl)) for s, _, pid, pl in scored[:top_k]]

    def score_ids(self, q: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        """Exact inner product of ``q`` with the stored vectors of ``ids`` (ids not stored are absent)."""
        with self.lock:
            rows = self._where_in("SELECT id, vector FROM points WHERE id IN ({marks})", [str(i) for i in ids])
            return {pid: float(np.dot(np.frombuffer(blob, np.float32), q)) for pid, blob in rows}

    def get(self, ids: Sequence[str]) -> list[Point]:
        """Stored points for ``ids``, in the given order, with their vectors; unknown ids are skipped."""
        ids = [str(i) for i in ids]
        with self.lock:
            rows = self._where_in("SELECT id, payload, vector FROM points WHERE id IN ({marks})", ids)
            found = {pid: Point(pid, json.loads(payload), dense=np.frombuffer(blob, np.float32).copy())
                     for pid, payload, blob in rows}
        return [found[i] for i in ids if i in found]

    def scroll(self, fields: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored ``(id, payload)``, payload cut to ``fields`` (all when None), in insertion order."""
        last = 0
        while True:
            with self.lock:
                rows = self.db.execute(
                    f"SELECT iid, id, payload FROM points WHERE iid > ? ORDER BY iid LIMIT {SCROLL_PAGE}", (last,)
                ).fetchall()
            if not rows:
                return
            for _, pid, payload in rows:
                data = json.loads(payload)
                yield pid, data if fields is None else {f: data[f] for f in fields if f in data}
            last = rows[-1][0]

    def ids(self) -> list[str]:
        """All point ids, in insertion order."""
        with self.lock:
            return [r[0] for r in self.db.execute("SELECT id FROM points ORDER BY iid")]
