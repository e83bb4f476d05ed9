"""One connection to the server, reopened on the next call after it was lost, and error translation.

Pooler-safe: the connection is in autocommit mode and every statement that needs anything from an earlier
one (a setting, a lock, a snapshot) runs with it inside one explicit transaction; statements are never
prepared server-side (``prepare_threshold=None``), since a transaction pooler hands each transaction to
any of its server connections. A lost connection, a serialization failure, a deadlock, a statement or
lock timeout or a server shutting down is a ``TransientStoreError`` (the pipeline retries it); a
transaction that fails is rolled back whole. Messages never hold the password.

Trace sites (src/sparky/crashpoints.py), for the fault tests: ``store_transient <sqlstate|lost>`` when the
server fails a statement in a way worth retrying, ``store_unreachable`` when a store that was reachable
cannot be connected to again (the server is down or restarting).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.types import TypeInfo

from ...crashpoints import crashpoint
from ...errors import StoreError, TransientStoreError
from .. import redact

if TYPE_CHECKING:
    from .store import AdvisoryLock

# SQLSTATE classes and codes worth retrying: connection exceptions, serialization failure, deadlock,
# lock not available, statement timeout / cancel, server shutting down or starting, too many connections.
_TRANSIENT_CLASSES = ("08",)
_TRANSIENT_CODES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "25P03"}
CONNECT_TIMEOUT = 10


def secrets_of(url: str) -> list[str]:
    """The passwords a URL holds (in its user part or a ``password=`` parameter), to keep out of messages."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        found += [value for name, value in parse_qsl(parts.query) if name.lower() in ("password", "sslpassword")]
    except ValueError:
        pass
    return [secret for secret in found if secret]


def is_transient(error: BaseException) -> bool:
    if isinstance(error, (psycopg.InterfaceError, pg_errors.ConnectionTimeout)):
        return True
    if not isinstance(error, psycopg.Error):
        return False
    state = error.sqlstate or ""
    if state in _TRANSIENT_CODES or state.startswith(_TRANSIENT_CLASSES):
        return True
    return isinstance(error, psycopg.OperationalError) and not state  # the connection dropped: no SQLSTATE


class Connection:
    """The store's connection: ``transaction()`` yields a cursor inside BEGIN … COMMIT and turns failures
    into store errors; a lost connection is reopened by the next ``transaction()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display = redact(url)
        self._secrets = secrets_of(url)
        self._conn: psycopg.Connection | None = None
        self._mutex = threading.RLock()  # one transaction at a time on this connection
        self.vector_schema: str | None = None
        self._ever_connected = False
        self.lock: "AdvisoryLock | None" = None  # the ingester's lock while held: confirmed before each write

    def describe(self, error: BaseException) -> str:
        """One line about a driver error, with any password blanked out."""
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def connect(self, application: str = "sparky") -> psycopg.Connection:
        """A new autocommit connection (``StoreError`` when the server refuses or cannot be reached), named
        ``application`` on the server unless the URL names it."""
        options: dict = {} if "application_name=" in self.url else {"application_name": application}
        if "connect_timeout=" not in self.url:
            options["connect_timeout"] = CONNECT_TIMEOUT
        try:
            conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=None, **options)
        except psycopg.Error as exc:
            raise StoreError(f"{self.display}: cannot connect to the PostgreSQL store ({self.describe(exc)})") from None
        return conn

    def _live(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            conn = self.connect()
            if self.vector_schema is not None:
                try:
                    register_vector_type(conn, self.vector_schema)
                except psycopg.Error as exc:
                    conn.close()
                    raise self._translate(exc, "read") from None
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._conn = None

    def use_vector_schema(self, schema: str) -> None:
        """Register the pgvector type (living in ``schema``) on this and every later connection."""
        self.vector_schema = schema
        if self._conn is not None and not self._conn.closed:
            register_vector_type(self._conn, schema)

    @contextmanager
    def transaction(self, what: str = "write", single: bool = False) -> Iterator[psycopg.Cursor]:
        """BEGIN … COMMIT around the block (``single``: one autocommit statement); any failure rolls the
        whole transaction back. A write under the ingester's lock first confirms the lock is still held."""
        with self._mutex:
            try:
                conn = self._live()
            except StoreError as exc:
                if self._ever_connected:  # the server went away mid-run: worth retrying
                    crashpoint("store_unreachable")
                    raise TransientStoreError(str(exc)) from None
                raise
            self._ever_connected = True
            if what == "write" and self.lock is not None:
                self.lock.confirm()
            try:
                if single:
                    with conn.cursor() as cur:
                        yield cur
                else:
                    with conn.transaction(), conn.cursor() as cur:
                        yield cur
            except psycopg.Error as exc:
                if conn.closed or conn.broken:
                    self._drop()
                error = self._translate(exc, what)
                if isinstance(error, TransientStoreError):
                    crashpoint("store_transient", exc.sqlstate or "lost")
                raise error from None

    @contextmanager
    def statement(self, what: str = "read") -> Iterator[psycopg.Cursor]:
        """A cursor for one statement on its own (autocommit: no BEGIN, no COMMIT), failures translated."""
        with self.transaction(what, single=True) as cur:
            yield cur

    def _translate(self, error: psycopg.Error, what: str) -> StoreError:
        detail = self.describe(error)
        if is_transient(error):
            return TransientStoreError(f"{self.display}: the PostgreSQL store is unreachable or busy ({detail}); "
                                       "worth retrying")
        verb = "write" if what == "write" else "read"
        return StoreError(f"{self.display}: cannot {verb} the memory store ({detail})")

    def close(self) -> None:
        with self._mutex:
            self._drop()


def register_vector_type(conn: psycopg.Connection, schema: str) -> None:
    """pgvector's adapters on ``conn``, for the type in ``schema`` (``register_vector`` looks it up by bare
    name, which fails when the extension's schema is not on the search path)."""
    from pgvector.psycopg.vector import register_vector_info

    info = TypeInfo.fetch(conn, f'"{schema}".vector')
    register_vector_info(conn, info)
