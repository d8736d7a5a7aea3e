"""Two-way referrals (双向转诊): the record, its timeline, its attachments, and the web inbox.

* ``Referral`` — one patient sent from one member institution to another. ``status`` follows the
  lifecycle of ``handlers.referral.rules.TRANSITIONS`` (draft → submitted → accepted | rejected →
  arrived → completed; cancelled by the sender before acceptance); it changes only through
  ``storage.referrals.apply_transition``, which writes a ``ReferralEvent`` in the same transaction.
* ``ReferralEvent`` — every state change: who (staff code), when, from which channel, and a note
  (e.g. the reason of a rejection). Append-only.
* ``ReferralAttachment`` — photos or PDFs of results sent during the wizard. A file belongs to the
  dialog that received it (``owner_key``) until the referral is submitted, then to the referral.
* ``Notification`` — the web inbox: every notification addressed to a staff member is kept here,
  whether or not a chat channel reached them (someone without WeCom or Telegram still sees it).

Patient identifiers (ID number, phone) are stored as entered, for the receiving hospital; every
chat message, list, log line and export for the medical affairs office shows them masked
(``storage.privacy``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.db import Base
from storage.models.directory import Institution, Staff
from storage.types import UTCDateTime, utcnow

REFERRAL_STATUSES: tuple[str, ...] = ("draft", "submitted", "accepted", "rejected", "arrived", "completed",
                                      "cancelled")
DIRECTIONS: tuple[str, ...] = ("up", "down")
URGENCIES: tuple[str, ...] = ("routine", "urgent", "emergency")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (
        CheckConstraint(_in("status", REFERRAL_STATUSES), name="status"),
        CheckConstraint(_in("direction", DIRECTIONS), name="direction"),
        CheckConstraint(_in("urgency", URGENCIES), name="urgency"),
        Index("ix_referrals_to_status", "to_institution_id", "status"),
        Index("ix_referrals_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: What users see and type, e.g. ``ZD-2026-000123`` (consortium prefix, year, sequence).
    number: Mapped[str] = mapped_column(String(30), unique=True)
    status: Mapped[str] = mapped_column(String(12), default="draft")
    direction: Mapped[str] = mapped_column(String(4))
    from_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    to_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    to_department: Mapped[str | None] = mapped_column(String(100), nullable=True)
    sender_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    sender_department: Mapped[str | None] = mapped_column(String(100), nullable=True)

    patient_name: Mapped[str] = mapped_column(String(50))
    patient_sex: Mapped[str] = mapped_column(String(4))
    patient_age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: ISO date (YYYY-MM-DD) when the birth date was given instead of (or as well as) the age.
    patient_birth_date: Mapped[str | None] = mapped_column(String(10), nullable=True)
    patient_id_number: Mapped[str | None] = mapped_column(String(18), nullable=True)
    patient_phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    #: Where the patient lives (town, street or community), used to suggest a downward receiver.
    patient_area: Mapped[str | None] = mapped_column(String(100), nullable=True)

    diagnosis: Mapped[str] = mapped_column(Text)
    history: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    #: The criterion chosen from the consortium's list (None for a reason in free text).
    reason_code: Mapped[str | None] = mapped_column(String(50), nullable=True)
    urgency: Mapped[str] = mapped_column(String(10), default="routine")
    green_channel: Mapped[bool] = mapped_column(Boolean, default=False)

    #: Why the receiver declined (required for ``rejected``).
    reject_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Who accepted or rejected it.
    handled_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: When an unanswered submission escalates to the receiving institution's admin.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    from_institution: Mapped[Institution] = relationship(foreign_keys=[from_institution_id], lazy="joined")
    to_institution: Mapped[Institution] = relationship(foreign_keys=[to_institution_id], lazy="joined")
    sender: Mapped[Staff] = relationship(foreign_keys=[sender_id], lazy="joined")
    handled_by: Mapped[Staff | None] = relationship(foreign_keys=[handled_by_id])
    events: Mapped[list[ReferralEvent]] = relationship(back_populates="referral", order_by="ReferralEvent.id")
    attachments: Mapped[list[ReferralAttachment]] = relationship(back_populates="referral",
                                                                 order_by="ReferralAttachment.id")

    def __repr__(self) -> str:
        return f"Referral(number={self.number!r}, status={self.status!r})"


class ReferralEvent(Base):
    __tablename__ = "referral_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id", ondelete="CASCADE"), index=True)
    #: None for the creation of the record.
    from_status: Mapped[str | None] = mapped_column(String(12), nullable=True)
    to_status: Mapped[str] = mapped_column(String(12))
    #: Staff code, or ``system`` (escalation) / ``cli``.
    actor: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(20), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    referral: Mapped[Referral] = relationship(back_populates="events")


class ReferralAttachment(Base):
    __tablename__ = "referral_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id", ondelete="CASCADE"), nullable=True,
                                                    index=True)
    #: ``channel:user_key`` of the wizard that received the file, until the referral is submitted.
    owner_key: Mapped[str | None] = mapped_column(String(130), nullable=True, index=True)
    file_name: Mapped[str] = mapped_column(String(200))
    mime_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    referral: Mapped[Referral | None] = relationship(back_populates="attachments")


class Notification(Base):
    """One notification for one staff member (the web inbox), with where it was delivered."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    #: Unique: the same notification is never kept (or sent) twice.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    text: Mapped[str] = mapped_column(Text)
    #: ``[[label, value], ...]`` — the buttons it carries.
    choices: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: The chat channels it was queued for (``[]``: the web inbox only).
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
