"""Schema management entry point (Alembic once the migrations exist)."""

from __future__ import annotations

from sqlalchemy.engine import Engine


def upgrade(engine: Engine) -> None:
    from storage import models  # noqa: F401  (registers every table on Base.metadata)
    from storage.db import Base

    Base.metadata.create_all(engine)
