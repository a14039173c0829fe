"""One connection to the store, SQLite or PostgreSQL, behind the few calls we need.

SQL is written once with ``?`` placeholders and portable types (see
:mod:`antrieb.store.schema`); for PostgreSQL the placeholders become ``%s``. Every
write commits at once: a reader (pandas, Grafana, another process) sees each event as
soon as it is written, and a crash loses at most the event being written.

Example::

    db = connect("postgresql://grafana@localhost/antrieb")   # or a path, or None
    db.upsert("runs", {"run_id": "r1", "status": "running"})
    db.query("SELECT run_id, status FROM runs")
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from antrieb import config
from antrieb.errors import AntriebError, MissingToolError
from antrieb.store.schema import LATEST, MIGRATIONS, PRIMARY_KEYS

_ADVISORY_LOCK = 0x616E7472  # "antr": serialises migrations across processes


class StoreError(AntriebError):
    """The run store cannot be opened, migrated or written (carries the store's URL)."""

    def __init__(self, url: str, problem: str):
        self.url, self.problem = url, problem
        super().__init__(f"run store {redact_url(url)}: {problem}")


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def default_url() -> str:
    """``$ANTRIEB_STORE`` (a ``postgresql://`` URL, a SQLite path or ``off``), else
    ``<cache>/store.sqlite``."""
    return config.setting("STORE") or str(config.cache_dir() / "store.sqlite")


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)


def _norm(value: Any) -> Any:
    """Python values as both dialects store them: flags 0/1, structures as JSON text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return value


class Database:
    """A thread-safe connection (events arrive from many threads); one lock per store."""

    def __init__(self, url: str, conn: Any, dialect: str) -> None:
        self.url, self.conn, self.dialect = url, conn, dialect
        self.lock = threading.RLock()
        self._depth = 0
        self._columns: dict[str, set[str]] = {}  # table -> its columns, read once

    # -- plain SQL --------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: tuple | list = ()) -> None:
        with self.lock:
            try:
                if self.dialect == "postgresql":
                    self.conn.execute(self._sql(sql), params)
                else:
                    self.conn.execute(sql, params)
            except Exception as exc:
                raise StoreError(self.url, f"{type(exc).__name__}: {exc}") from exc

    def rows(self, sql: str, params: tuple | list = ()) -> tuple[list[str], list[tuple]]:
        """Column names and rows of a query."""
        with self.lock:
            try:
                cur = self.conn.execute(self._sql(sql), params)
                names = [d[0] for d in cur.description or []]
                return names, [tuple(r) for r in cur.fetchall()]
            except Exception as exc:
                raise StoreError(self.url, f"{type(exc).__name__}: {exc}") from exc

    def dicts(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        names, rows = self.rows(sql, params)
        return [dict(zip(names, r, strict=True)) for r in rows]

    def query(self, sql: str, params: tuple | list = ()) -> Any:
        """A pandas DataFrame of a query."""
        import pandas as pd

        names, rows = self.rows(sql, params)
        return pd.DataFrame.from_records(rows, columns=names)

    def count(self, table: str) -> int:
        if table not in PRIMARY_KEYS:
            raise StoreError(self.url, f"no table {table!r}")
        return int(self.rows(f"SELECT COUNT(*) FROM {table}")[1][0][0])

    # -- upserts ----------------------------------------------------------------------

    def upsert(self, table: str, row: dict[str, Any], *, update: bool = True) -> None:
        self.upsert_many(table, [row], update=update)

    def upsert_many(self, table: str, rows: list[dict[str, Any]], *,
                    update: bool = True) -> None:
        """Insert rows; a row whose key exists is updated (``update``) or left alone.

        Rows of one call must have the same keys. ``None`` values never overwrite a
        stored value on update: a later, partial event keeps what an earlier one said.
        """
        if not rows:
            return
        key = PRIMARY_KEYS[table]
        # a store older than this antrieb (opened without migrating) keeps what it has
        # tables and columns for: a newer table or field is left out, not an error
        have = self._table_columns(table)
        if not have:
            return
        cols = [c for c in rows[0] if c in have]
        rest = [c for c in cols if c not in key]
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
               f"({', '.join('?' for _ in cols)}) ON CONFLICT ({', '.join(key)}) ")
        if update and rest:
            sql += "DO UPDATE SET " + ", ".join(
                f"{c} = COALESCE(excluded.{c}, {table}.{c})" for c in rest)
        else:
            sql += "DO NOTHING"
        params = [tuple(_norm(r.get(c)) for c in cols) for r in rows]
        try:
            with self.batch():
                if self.dialect == "postgresql":
                    with self.conn.cursor() as cur:
                        cur.executemany(self._sql(sql), params)
                else:
                    self.conn.executemany(sql, params)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(self.url, f"writing {table}: {type(exc).__name__}: "
                             f"{exc}") from exc

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around many writes (an import); nested batches join the
        outer one. Outside a batch every write is its own transaction."""
        with self.lock:
            self._depth += 1
            try:
                if self._depth > 1:
                    yield
                    return
                if self.dialect == "postgresql":
                    with self.conn.transaction():
                        yield
                    return
                self.conn.execute("BEGIN")
                try:
                    yield
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            finally:
                self._depth -= 1

    def close(self) -> None:
        # closing twice or after a broken link: nothing left to save
        with self.lock, contextlib.suppress(Exception):
            self.conn.close()

    # -- schema -----------------------------------------------------------------------

    def version(self) -> int:
        _, rows = self.rows("SELECT MAX(version) FROM schema_version")
        return int(rows[0][0] or 0)

    def _table_columns(self, table: str) -> set[str]:
        """The table's columns; empty if this store has no such table (yet)."""
        if table not in self._columns:
            try:
                names, _ = self.rows(f"SELECT * FROM {table} WHERE 1 = 0")
            except StoreError:
                names = []
            self._columns[table] = set(names)
        return self._columns[table]

    def migrate(self) -> list[int]:
        """Apply the migrations this store lacks; returns the versions applied."""
        applied: list[int] = []
        with self.lock:
            try:
                if self.dialect == "postgresql":
                    applied = self._migrate_postgres()
                else:
                    applied = self._migrate_sqlite()
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(self.url, f"migration failed: {type(exc).__name__}: "
                                 f"{exc}") from exc
            finally:
                self._columns.clear()  # a migration may add columns
        return applied

    def _pending(self, current: int) -> list:
        if current > LATEST:
            raise StoreError(self.url, f"the store has schema version {current}, this "
                             f"antrieb knows up to {LATEST}: upgrade antrieb")
        return [m for m in MIGRATIONS if m.version > current]

    _VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY "
                      "KEY, description TEXT, applied_at DOUBLE PRECISION)")

    def _migrate_sqlite(self) -> list[int]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes
        try:
            conn.execute(self._VERSION_TABLE)
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            pending = self._pending(int(current or 0))
            for m in pending:
                for stmt in m.statements:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                             (m.version, m.description, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [m.version for m in pending]

    def _migrate_postgres(self) -> list[int]:
        conn = self.conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            conn.execute(self._VERSION_TABLE)
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            pending = self._pending(int(current or 0))
            for m in pending:
                for stmt in m.statements:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_version VALUES (%s, %s, %s)",
                             (m.version, m.description, time.time()))
        return [m.version for m in pending]


def connect(url: str | None = None, *, migrate: bool = True) -> Database:
    """Open the store at ``url`` (default :func:`default_url`), migrated to the latest
    schema. Raises :class:`StoreError` with the reason when it cannot."""
    url = url or default_url()
    if url == "off":
        raise StoreError(url, "the store is switched off (ANTRIEB_STORE=off)")
    if is_postgres(url):
        try:
            import psycopg
        except ImportError as exc:
            raise MissingToolError("psycopg: pip install 'psycopg[binary]'") from exc
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except Exception as exc:
            raise StoreError(url, f"cannot connect: {exc}") from exc
        db = Database(url, conn, "postgresql")
    else:
        path = _sqlite_path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we say BEGIN/COMMIT ourselves where it matters
            conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: safe against a crashed process
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(str(path), f"cannot open: {exc}") from exc
        db = Database(str(path), conn, "sqlite")
    if migrate:
        try:
            db.migrate()
        except BaseException:
            db.close()
            raise
    return db
