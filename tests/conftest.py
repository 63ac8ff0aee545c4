"""Test fixtures against a real TimescaleDB.

The server is WATTLINE_TEST_DATABASE_URL when set, else the embedded cluster (started on
demand). A template database is migrated once per schema version (its name carries a
hash of sql/ and alembic/), and every test that asks for `db_url` gets a fresh copy of
it, dropped afterwards: tests are isolated and may run background processes freely.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from app import PROJECT_ROOT

SCHEMA_INPUTS = [PROJECT_ROOT / "sql", PROJECT_ROOT / "alembic"]


def _schema_hash() -> str:
    h = hashlib.sha256()
    for root in SCHEMA_INPUTS:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in {".sql", ".py", ".mako"}:
                h.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


class _Dropper:
    """Drops finished test databases on a background thread: DROP DATABASE forces a
    checkpoint, which would otherwise add seconds to every test's teardown."""

    def __init__(self) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            server_url, name = item
            try:
                with psycopg.connect(server_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                pass  # a leftover test database is harmless; the next run retries nothing

    def drop(self, server_url: str, name: str) -> None:
        self.jobs.put((server_url, name))

    def finish(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=300)


@pytest.fixture(scope="session")
def dropper(server_url):  # torn down before the server it drops on
    d = _Dropper()
    yield d
    d.finish()


@pytest.fixture(scope="session")
def server_url():
    """URL of a maintenance database on the test server (superuser); an embedded cluster
    the session had to start is stopped again at its end."""
    url = os.environ.get("WATTLINE_TEST_DATABASE_URL")
    if url:
        yield _with_database(url, "postgres")
        return
    from app.embedded import get_cluster

    cluster = get_cluster()
    was_running = cluster.running()
    cluster.start()
    yield cluster.url("postgres")
    if not was_running:
        cluster.stop()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> str:
    """Name of a migrated template database for the current schema."""
    name = f"wattline_tpl_{_schema_hash()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        # Several test sessions may share the server: one builds the template.
        conn.execute("SELECT pg_advisory_lock(hashtext('wattline-test-template'))")
        try:
            exists = conn.execute(
                "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists or not exists[0]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
                from app import migrate

                migrate.upgrade(url=_with_database(server_url, name))
                # Test databases need no durability of their commits.
                conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
                conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
            # TimescaleDB's per-database scheduler keeps a connection; a template needs none.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('wattline-test-template'))")
    return name


@pytest.fixture
def db_url(server_url: str, template_db: str, dropper: _Dropper, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, migrated database for one test; WATTLINE_DATABASE_URL points at it."""
    name = f"wattline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        # A backend that just closed on the template may take a moment to exit.
        deadline = time.monotonic() + 15
        while True:
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
                break
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (template_db,),
                )
                time.sleep(0.1)
    url = _with_database(server_url, name)
    monkeypatch.setenv("WATTLINE_DATABASE_URL", url)
    from app.settings import get_settings

    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    from app.db import get_engine

    get_engine(url).dispose()
    dropper.drop(server_url, name)


@pytest.fixture
def empty_db_url(server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database with no schema at all, for migration tests."""
    name = f"wattline_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    monkeypatch.setenv("WATTLINE_DATABASE_URL", url)
    from app.settings import get_settings

    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(db_url: str):
    """An autocommit psycopg connection to the test's database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def fixtures_dir() -> Path:
    """Reference files: MyEMS's own import templates (copied from the shared reference
    folder into tests/fixtures/myems) and the URDB tariff fixture."""
    return PROJECT_ROOT / "tests" / "fixtures"
