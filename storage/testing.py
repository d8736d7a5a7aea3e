"""Database fixtures for tests (imported by test modules only; needs pytest).

Use in a test module::

    from storage.testing import db_engine, session, sqlite_template  # noqa: F401  (fixtures)

``db_engine`` is parametrised over a fresh migrated SQLite file per test and a PostgreSQL
schema private to this test session (``YILIAN_TEST_PG_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). The PostgreSQL variant is marked
``postgres`` and skipped, with the reason, when the server cannot be reached. Between tests the
PostgreSQL tables are emptied; the schema is dropped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from storage.db import Base, init_db, make_engine, make_session_factory

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    return os.environ.get("YILIAN_TEST_PG_URL", DEFAULT_PG_URL)


def pg_unavailable_reason(url: str | None = None) -> str | None:
    """None if PostgreSQL answers at ``url``, else a human-readable reason."""
    url = url or pg_url()
    try:
        engine = make_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "skip"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable at {url}: {first_line}"
    return None


@contextmanager
def pg_schema_engine(url: str | None = None, prefix: str = "yl_test") -> Iterator[Engine]:
    """An engine whose ``search_path`` is a brand-new schema, dropped afterwards."""
    url = url or pg_url()
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def empty_all_tables(engine: Engine) -> None:
    from storage import models  # noqa: F401

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; tests get copies of it (migrating once is faster)."""
    path = tmp_path_factory.mktemp("sqlite_template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    init_db(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_session_engine() -> Iterator[Engine]:
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg_schema_engine() as engine:
        init_db(engine)
        yield engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[Engine]:
    """A migrated, empty database: SQLite file or PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path / "test.sqlite3"
        shutil.copyfile(sqlite_template, path)
        engine = make_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
    else:
        engine = request.getfixturevalue("pg_session_engine")
        empty_all_tables(engine)
        yield engine
        empty_all_tables(engine)


@pytest.fixture
def session(db_engine: Engine) -> Iterator[Session]:
    """A session on ``db_engine``; the test decides when to commit."""
    factory = make_session_factory(db_engine)
    with factory() as s:
        yield s


@pytest.fixture
def fresh_pg_engine() -> Iterator[Engine]:
    """An engine on a new, empty (unmigrated) PostgreSQL schema; skipped without PostgreSQL."""
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg_schema_engine(prefix="yl_fresh") as engine:
        yield engine
