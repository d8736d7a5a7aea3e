"""Alembic environment for YiLian Assistant.

Runs in three ways:

* programmatically (``storage.migrate.upgrade(engine)``): the caller puts an open
  ``Connection`` in ``config.attributes["connection"]``; nothing is read from disk but the
  revision scripts;
* from the command line: ``alembic -c storage/migrations/alembic.ini upgrade head`` uses
  ``config.attributes["url"]``, else ``sqlalchemy.url`` from the ini file, else the application
  settings (``YILIAN_DATABASE_URL`` / the default SQLite file);
* offline (``--sql``) with the same URL resolution.

SQLite cannot ALTER most things, so migrations are rendered and run in batch mode there.
"""

from __future__ import annotations

import logging
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from storage import models  # noqa: F401  (registers every table on Base.metadata)
from storage.db import Base, make_engine
from storage.types import UTCDateTime

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("alembic.env")


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    from bot.config import load_settings

    return load_settings().resolved_database_url


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our TypeDecorators as plain SQLAlchemy types so revisions never import app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure_kwargs(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "render_item": render_item,
    }


def run_migrations_offline() -> None:
    url = _url()
    dialect_name = url.split(":", 1)[0].split("+", 1)[0]
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **_configure_kwargs(dialect_name))
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    context.configure(connection=connection, **_configure_kwargs(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run_with(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
