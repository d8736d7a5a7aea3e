"""Queries for training records (the only SQL of the quota domain)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import Consortium, Institution, TrainingRecord
from storage.types import utcnow


def add_records(session: Session, rows: Iterable[dict], *, source: str, created_by: str) -> int:
    """Insert records (dicts of kind, person, from_institution_id, to_institution_id, start, end);
    one already stored is skipped. Returns how many were new."""
    table = TrainingRecord.__table__
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    new = 0
    for row in rows:
        stmt = insert(table).values(**row, source=source, created_by=created_by, created_at=utcnow()) \
            .on_conflict_do_nothing().returning(table.c.id)
        new += session.execute(stmt).scalar() is not None
    return new


def records_from(session: Session, institution_ids: Sequence[int], *, since: date | None = None) -> list[TrainingRecord]:
    stmt = select(TrainingRecord).where(TrainingRecord.from_institution_id.in_(list(institution_ids)))
    if since is not None:
        stmt = stmt.where(TrainingRecord.end >= since)
    return list(session.scalars(stmt.order_by(TrainingRecord.start, TrainingRecord.id)).unique())


def institutions(session: Session, consortium_code: str | None = None) -> list[Institution]:
    stmt = select(Institution).join(Consortium, Institution.consortium_id == Consortium.id) \
        .order_by(Consortium.code, Institution.is_lead.desc(), Institution.id)
    if consortium_code:
        stmt = stmt.where(Consortium.code == consortium_code)
    return list(session.scalars(stmt).unique())
