"""Queries for meetings, answers, the reminder ledger and the scheduler lease (the only SQL of
these domains; rules live in ``handlers.meetings``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import (
    Consortium,
    Institution,
    Meeting,
    MeetingInvitation,
    MeetingResponse,
    ReminderLog,
    SchedulerLease,
    Staff,
)
from storage.types import as_utc, utcnow


def create_meeting(session: Session, *, consortium: Consortium, kind: str, title: str, starts_at: datetime,
                   institution_ids: Sequence[int], created_by: str, organiser_id: int | None = None,
                   place: str | None = None, link: str | None = None, agenda: str | None = None,
                   repeat: str | None = None, repeat_until: datetime | None = None,
                   duration_minutes: int = 120, now: datetime | None = None) -> Meeting:
    now = now or utcnow()
    meeting = Meeting(consortium_id=consortium.id, kind=kind, title=title, starts_at=as_utc(starts_at),
                      duration_minutes=duration_minutes, place=place, link=link, agenda=agenda, repeat=repeat,
                      repeat_until=repeat_until, status="scheduled", uid=uuid.uuid4().hex, sequence=0,
                      organiser_id=organiser_id, created_by=created_by, created_at=now, updated_at=now)
    meeting.invitations = [MeetingInvitation(institution_id=i) for i in dict.fromkeys(institution_ids)]
    session.add(meeting)
    session.flush()
    return meeting


def find_meeting(session: Session, id_or_title: str) -> Meeting | None:
    """By id, else by exact title (the most recent meeting of that title)."""
    text = id_or_title.strip()
    if text.isdigit():
        return session.get(Meeting, int(text))
    return session.scalars(select(Meeting).where(Meeting.title == text).order_by(Meeting.id.desc())).first()


def list_meetings(session: Session, *, consortium_id: int | None = None, include_cancelled: bool = True) -> list[Meeting]:
    stmt = select(Meeting).order_by(Meeting.starts_at, Meeting.id)
    if consortium_id is not None:
        stmt = stmt.where(Meeting.consortium_id == consortium_id)
    if not include_cancelled:
        stmt = stmt.where(Meeting.status == "scheduled")
    return list(session.scalars(stmt).unique())


def liaisons_of(session: Session, institution_ids: Sequence[int]) -> dict[int, list[Staff]]:
    found: dict[int, list[Staff]] = {i: [] for i in institution_ids}
    if not institution_ids:
        return found
    for s in session.scalars(select(Staff).where(Staff.institution_id.in_(institution_ids), Staff.active.is_(True))
                             .order_by(Staff.code)).unique():
        if s.has_role("liaison"):
            found[s.institution_id].append(s)
    return found


def admins_of(session: Session, consortium_id: int) -> list[Staff]:
    rows = session.scalars(select(Staff).join(Institution, Staff.institution_id == Institution.id)
                           .where(Institution.consortium_id == consortium_id, Staff.active.is_(True))
                           .order_by(Staff.code)).unique()
    return [s for s in rows if s.has_role("admin")]


def set_response(session: Session, meeting_id: int, occurrence: datetime, staff_id: int, answer: str,
                 channel: str | None, now: datetime | None = None) -> None:
    now = now or utcnow()
    row = session.scalar(select(MeetingResponse).where(MeetingResponse.meeting_id == meeting_id,
                                                       MeetingResponse.occurrence == as_utc(occurrence),
                                                       MeetingResponse.staff_id == staff_id))
    if row is None:
        session.add(MeetingResponse(meeting_id=meeting_id, occurrence=as_utc(occurrence), staff_id=staff_id,
                                    answer=answer, channel=channel, answered_at=now))
    else:
        row.answer, row.channel, row.answered_at = answer, channel, now
    session.flush()


def responses(session: Session, meeting_id: int, occurrence: datetime) -> dict[int, str]:
    rows = session.execute(select(MeetingResponse.staff_id, MeetingResponse.answer)
                           .where(MeetingResponse.meeting_id == meeting_id,
                                  MeetingResponse.occurrence == as_utc(occurrence)))
    return {staff_id: answer for staff_id, answer in rows}


# ------------------------------------------------------------------------------------------------
# the reminder ledger


def handled_keys(session: Session, prefix: str, since: datetime) -> set[str]:
    return set(session.scalars(select(ReminderLog.key).where(ReminderLog.key.like(f"{prefix}%"),
                                                             ReminderLog.due_at >= as_utc(since))))


def log_once(session: Session, key: str, kind: str, due_at: datetime, status: str, *, recipients: int = 0,
             now: datetime | None = None) -> bool:
    """Record ``key`` as handled; False if it was handled before (by anyone): do nothing then."""
    values = {"key": key, "kind": kind, "due_at": as_utc(due_at), "status": status, "recipients": recipients,
              "handled_at": now or utcnow()}
    table = ReminderLog.__table__
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.id)
        return session.execute(stmt).scalar() is not None
    try:  # pragma: no cover - other databases
        with session.begin_nested():
            session.add(ReminderLog(**values))
        return True
    except IntegrityError:
        return False


def set_recipients(session: Session, key: str, recipients: int) -> None:
    session.execute(update(ReminderLog).where(ReminderLog.key == key).values(recipients=recipients))


# ------------------------------------------------------------------------------------------------
# the leader lease


def acquire_lease(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the lease ``name`` for ``holder`` until ``now + ttl``; False while another
    holder's lease runs. One conditional UPDATE (or the first INSERT) decides: two processes can
    never both hold it."""
    now = as_utc(now)
    result = session.execute(update(SchedulerLease)
                             .where(SchedulerLease.name == name,
                                    (SchedulerLease.holder == holder) | (SchedulerLease.expires_at < now))
                             .values(holder=holder, expires_at=now + ttl, acquired_at=now))
    if result.rowcount:
        return True
    if session.get(SchedulerLease, name) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(SchedulerLease(name=name, holder=holder, expires_at=now + ttl, acquired_at=now))
        return True
    except IntegrityError:
        return False


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(update(SchedulerLease).where(SchedulerLease.name == name, SchedulerLease.holder == holder)
                    .values(expires_at=utcnow() - timedelta(seconds=1)))
