"""The only SQL of referrals: numbers, creation, state changes with their events, queries, the
web inbox.

``apply_transition`` is the single place a referral's ``status`` changes: it is a conditional
``UPDATE … WHERE status = <expected>``, so two liaison officers pressing 接收 at the same moment
(on two workers) cannot both succeed — the second finds the row changed and is told who handled
it. Each change writes a ``ReferralEvent`` and an audit row in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pypinyin import Style, lazy_pinyin
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import repositories as repo
from storage.models import (
    ROLE_ADMIN,
    ROLE_LIAISON,
    Consortium,
    Institution,
    Notification,
    Referral,
    ReferralAttachment,
    ReferralEvent,
    Staff,
)
from storage.types import utcnow


def referral_prefix(consortium: Consortium) -> str:
    """The consortium's prefix, or the initials of the first two Han characters of its name
    (张店区人民医院医疗集团 → ZD), or the first letters of its code."""
    if consortium.referral_prefix:
        return consortium.referral_prefix.upper()
    han = [ch for ch in consortium.name if "\u4e00" <= ch <= "\u9fff"][:2]
    if len(han) == 2:
        initials = "".join(lazy_pinyin("".join(han), style=Style.FIRST_LETTER)).upper()
        if initials.isalpha() and len(initials) == 2:
            return initials
    return (consortium.code[:2] or "YL").upper()


def _next_number(session: Session, prefix: str, year: int) -> str:
    head = f"{prefix}-{year}-"
    last = session.scalar(select(func.max(Referral.number)).where(Referral.number.like(f"{head}%")))
    seq = int(last[len(head):]) + 1 if last and last[len(head):].isdigit() else 1
    return f"{head}{seq:06d}"


def create_referral(session: Session, *, sender: Staff, actor_channel: str | None, now: datetime | None = None,
                    **fields: Any) -> Referral:
    """A new referral in ``draft`` with its number and creation event (numbers are unique: a
    concurrent creation of the same number is retried with the next one)."""
    now = now or utcnow()
    prefix = referral_prefix(sender.institution.consortium)
    for _ in range(20):
        number = _next_number(session, prefix, now.year)
        referral = Referral(number=number, status="draft", sender_id=sender.id,
                            from_institution_id=sender.institution_id, sender_department=sender.department,
                            created_at=now, updated_at=now, **fields)
        try:
            with session.begin_nested():
                session.add(referral)
                session.flush()
        except IntegrityError:
            continue
        session.add(ReferralEvent(referral_id=referral.id, from_status=None, to_status="draft", actor=sender.code,
                                  channel=actor_channel, at=now))
        repo.record(session, sender.code, "referral.create", target=number,
                    details={"to_institution_id": fields.get("to_institution_id")})
        return referral
    raise RuntimeError("could not allocate a referral number")


class StaleTransition(Exception):
    """The referral was changed by someone else first (its status is no longer the expected one)."""

    def __init__(self, referral: Referral) -> None:
        super().__init__(referral.number)
        self.referral = referral


def apply_transition(session: Session, referral: Referral, to_status: str, *, actor: str,
                     channel: str | None, note: str | None = None, now: datetime | None = None,
                     **values: Any) -> None:
    """Move ``referral`` from its current status to ``to_status`` (raises ``StaleTransition``
    when another worker moved it first), with an event and an audit row."""
    now = now or utcnow()
    expected = referral.status
    result = session.execute(
        update(Referral).where(Referral.id == referral.id, Referral.status == expected)
        .values(status=to_status, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(referral)
    if result.rowcount != 1:
        raise StaleTransition(referral)
    session.add(ReferralEvent(referral_id=referral.id, from_status=expected, to_status=to_status, actor=actor,
                              channel=channel, note=note, at=now))
    repo.record(session, actor, "referral.transition", target=referral.number,
                details={"from": expected, "to": to_status})
    session.flush()


def get_by_number(session: Session, number: str) -> Referral | None:
    return session.scalar(select(Referral).where(Referral.number == number.strip().upper()))


def get(session: Session, referral_id: int) -> Referral | None:
    return session.get(Referral, referral_id)


def list_referrals(session: Session, *, status: str | None = None, sender_id: int | None = None,
                   to_institution_id: int | None = None, institution_ids: Iterable[int] | None = None,
                   since: datetime | None = None, limit: int | None = None) -> list[Referral]:
    stmt = select(Referral).order_by(Referral.id.desc())
    if status:
        stmt = stmt.where(Referral.status == status)
    if sender_id is not None:
        stmt = stmt.where(Referral.sender_id == sender_id)
    if to_institution_id is not None:
        stmt = stmt.where(Referral.to_institution_id == to_institution_id)
    if institution_ids is not None:
        ids = list(institution_ids)
        stmt = stmt.where(or_(Referral.from_institution_id.in_(ids), Referral.to_institution_id.in_(ids)))
    if since is not None:
        stmt = stmt.where(Referral.created_at >= since)
    if limit:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt).unique())


def due_for_escalation(session: Session, now: datetime, limit: int = 100) -> list[Referral]:
    stmt = (select(Referral).where(Referral.status == "submitted", Referral.escalated_at.is_(None),
                                   Referral.due_at <= now).order_by(Referral.due_at).limit(limit))
    return list(session.scalars(stmt).unique())


def claim_escalation(session: Session, referral: Referral, now: datetime) -> bool:
    """Mark ``referral`` escalated, once (False when another worker did it first)."""
    result = session.execute(update(Referral).where(Referral.id == referral.id, Referral.escalated_at.is_(None),
                                                    Referral.status == "submitted")
                             .values(escalated_at=now).execution_options(synchronize_session=False))
    return result.rowcount == 1


def liaisons_of(session: Session, institution_id: int) -> list[Staff]:
    return repo.list_staff(session, institution_id=institution_id, role=ROLE_LIAISON)


def admins_for(session: Session, institution: Institution) -> list[Staff]:
    """The institution's own admins, else its consortium's."""
    own = repo.list_staff(session, institution_id=institution.id, role=ROLE_ADMIN)
    return own or repo.list_staff(session, consortium_id=institution.consortium_id, role=ROLE_ADMIN)


def institutions_of(session: Session, consortium_id: int) -> list[Institution]:
    stmt = select(Institution).where(Institution.consortium_id == consortium_id).order_by(Institution.id)
    return list(session.scalars(stmt).unique())


# ------------------------------------------------------------------------------------------------
# attachments


def add_draft_attachment(session: Session, owner_key: str, file_name: str, data: bytes,
                         mime_type: str | None) -> ReferralAttachment:
    row = ReferralAttachment(owner_key=owner_key, file_name=file_name[:200], data=data, size=len(data),
                             mime_type=mime_type)
    session.add(row)
    session.flush()
    return row


def draft_attachments(session: Session, owner_key: str) -> list[ReferralAttachment]:
    stmt = select(ReferralAttachment).where(ReferralAttachment.owner_key == owner_key,
                                            ReferralAttachment.referral_id.is_(None)).order_by(ReferralAttachment.id)
    return list(session.scalars(stmt))


def attach_drafts(session: Session, owner_key: str, referral: Referral, ids: Sequence[int]) -> int:
    if not ids:
        return 0
    result = session.execute(update(ReferralAttachment)
                             .where(ReferralAttachment.owner_key == owner_key, ReferralAttachment.id.in_(list(ids)),
                                    ReferralAttachment.referral_id.is_(None))
                             .values(referral_id=referral.id, owner_key=None)
                             .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


# ------------------------------------------------------------------------------------------------
# web inbox


@dataclass(frozen=True)
class InboxItem:
    id: int
    kind: str
    text: str
    choices: list[Any]
    channels: list[str]
    created_at: datetime
    read: bool


def add_notification(session: Session, staff_id: int, kind: str, dedupe_key: str, text: str,
                     choices: list[list[str]], channels: list[str], now: datetime | None = None) -> bool:
    """Keep one notification (False when ``dedupe_key`` was kept before: nothing is sent again)."""
    if session.scalar(select(Notification.id).where(Notification.dedupe_key == dedupe_key)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(Notification(staff_id=staff_id, kind=kind, dedupe_key=dedupe_key, text=text,
                                     choices=choices, channels=channels, created_at=now or utcnow()))
            session.flush()
    except IntegrityError:  # another worker kept it at the same moment
        return False
    return True


def set_notification_channels(session: Session, dedupe_key: str, channels: list[str]) -> None:
    session.execute(update(Notification).where(Notification.dedupe_key == dedupe_key).values(channels=channels))


def inbox(session: Session, staff_id: int, *, limit: int = 50, unread_only: bool = False) -> list[InboxItem]:
    stmt = select(Notification).where(Notification.staff_id == staff_id).order_by(Notification.id.desc()).limit(limit)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    return [InboxItem(n.id, n.kind, n.text, list(n.choices or []), list(n.channels or []), n.created_at,
                      n.read_at is not None) for n in session.scalars(stmt)]


def mark_read(session: Session, staff_id: int, now: datetime | None = None) -> int:
    result = session.execute(update(Notification).where(Notification.staff_id == staff_id,
                                                        Notification.read_at.is_(None))
                             .values(read_at=now or utcnow()))
    return int(result.rowcount or 0)


__all__ = [
    "InboxItem", "StaleTransition", "add_draft_attachment", "add_notification", "admins_for", "apply_transition",
    "attach_drafts", "claim_escalation", "create_referral", "draft_attachments", "due_for_escalation", "get",
    "get_by_number", "inbox", "institutions_of", "liaisons_of", "list_referrals", "mark_read", "referral_prefix",
    "set_notification_channels",
]
