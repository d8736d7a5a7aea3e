"""Schema management: Alembic, driven from code.

``upgrade(engine)`` is ``alembic upgrade head`` on the given engine with a ``Config`` built here
(no ``alembic.ini`` is read, whatever the working directory): the revision scripts are found next
to this module, inside the installed package.

Databases created by the project skeleton with ``create_all`` (``documents``/``chunks``/
``knowledge_state`` but no ``alembic_version``) are adopted: the initial revision only creates
tables that are missing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Arbitrary constant: PostgreSQL advisory lock taken while migrating, so that two processes
#: starting at once (web worker + scheduler) do not both try to create the tables.
_PG_LOCK_KEY = 0x59494C49  # "YILI"


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations; no ini file involved."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["skip_logging_config"] = True
    if connection is not None:
        cfg.attributes["connection"] = connection
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database behind ``engine`` to ``revision`` (default: the newest)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
