"""Meetings of a consortium (联席会议, 理事会, 工作例会 …), who is invited, who answered, and the
ledger that makes every scheduled reminder once-only.

* ``Meeting`` — one meeting, or a series (``repeat``: monthly / quarterly / yearly from
  ``starts_at``, until ``repeat_until``). Occurrences are computed (``handlers.meetings``), not
  stored. ``uid`` and ``sequence`` are the calendar identity of the .ics sent with reminders: the
  UID never changes, every edit or cancellation raises SEQUENCE so that calendar clients update
  the event instead of keeping the old one.
* ``MeetingInvitation`` — an invited member institution; its liaison officers are reminded.
* ``MeetingResponse`` — one staff member's answer (attend / leave) for one occurrence.
* ``ReminderLog`` — one row per scheduled notification (reminders, compliance warnings, quota
  nudges) under a unique key, written in the transaction that queues the notification: a key is
  handled once, across restarts and however many processes run. ``status`` records what happened:
  ``sent``, ``late`` (sent after downtime, with a note) or ``dropped`` (its moment had passed).
* ``SchedulerLease`` — the leader lease: one scheduler process works at a time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.db import Base
from storage.models.directory import Consortium, Institution, Staff
from storage.types import UTCDateTime, utcnow

MEETING_KINDS = ("联席会议", "理事会", "工作例会", "其他")
REPEATS = ("monthly", "quarterly", "yearly")
ANSWERS = ("attend", "leave")


class Meeting(Base):
    __tablename__ = "meetings"
    __table_args__ = (
        CheckConstraint("status IN ('scheduled', 'cancelled')", name="status"),
        CheckConstraint("repeat IS NULL OR repeat IN ('monthly', 'quarterly', 'yearly')", name="repeat"),
        Index("ix_meetings_consortium_starts", "consortium_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consortium_id: Mapped[int] = mapped_column(ForeignKey("consortia.id"))
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(200))
    #: The (first) start, stored in UTC; shown and repeated in Asia/Shanghai.
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_minutes: Mapped[int] = mapped_column(Integer, default=120)
    place: Mapped[str | None] = mapped_column(String(200), nullable=True)
    link: Mapped[str | None] = mapped_column(String(500), nullable=True)
    agenda: Mapped[str | None] = mapped_column(Text, nullable=True)
    repeat: Mapped[str | None] = mapped_column(String(10), nullable=True)
    repeat_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(12), default="scheduled")
    #: Calendar identity (RFC 5545 UID) and revision (SEQUENCE).
    uid: Mapped[str] = mapped_column(String(100), unique=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    organiser_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), nullable=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    consortium: Mapped[Consortium] = relationship(lazy="joined")
    organiser: Mapped[Staff | None] = relationship(lazy="joined")
    invitations: Mapped[list[MeetingInvitation]] = relationship(
        back_populates="meeting", cascade="all, delete-orphan", lazy="selectin")


class MeetingInvitation(Base):
    __tablename__ = "meeting_invitations"
    __table_args__ = (UniqueConstraint("meeting_id", "institution_id", name="uq_meeting_invitations"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)

    meeting: Mapped[Meeting] = relationship(back_populates="invitations")
    institution: Mapped[Institution] = relationship(lazy="joined")


class MeetingResponse(Base):
    __tablename__ = "meeting_responses"
    __table_args__ = (
        UniqueConstraint("meeting_id", "occurrence", "staff_id", name="uq_meeting_responses"),
        CheckConstraint("answer IN ('attend', 'leave')", name="answer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    #: The start of the occurrence answered (UTC).
    occurrence: Mapped[datetime] = mapped_column(UTCDateTime)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    answer: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str | None] = mapped_column(String(20), nullable=True)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReminderLog(Base):
    __tablename__ = "reminder_log"
    __table_args__ = (CheckConstraint("status IN ('sent', 'late', 'dropped')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: e.g. ``meeting:12:2026-03-10T02:00:00Z:1d`` or ``quota:pace:zd-xiapai:7:2026-05``.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(30))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(10))
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SchedulerLease(Base):
    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
