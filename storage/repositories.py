"""Small typed data-access functions used by the handlers.

Conventions: every function takes an open ``Session`` and *flushes* but never commits: the
caller owns the transaction (``with session_factory.begin() as s: ...``). Times are aware UTC;
``now`` parameters exist for tests and default to the current time.

* staff look-ups: ``get_staff_by_code`` / ``get_staff_by_wecom_userid`` / ``get_staff_by_telegram_id``
* invites: ``create_invite`` (returns the plain code, shown once) / ``redeem_invite``
* dialogs: ``get_dialog`` / ``put_dialog`` / ``clear_dialog`` (``DialogExpired`` marker on timeout);
  ``put_dialog_unless_other`` for state any dialog may take over (the last answer's context)
* dedupe: ``claim_update`` (True the first time only, across workers)
* audit: ``record``
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import AuditLog, DialogState, Institution, InviteCode, ProcessedUpdate, Staff
from storage.models.directory import normalize_roles
from storage.privacy import scrub
from storage.types import as_utc, utcnow

# ------------------------------------------------------------------------------------------------
# staff


def get_staff_by_code(session: Session, code: str, *, active_only: bool = True) -> Staff | None:
    return _one_staff(session, Staff.code == code.strip().lower(), active_only)


def get_staff_by_wecom_userid(session: Session, userid: str, *, active_only: bool = True) -> Staff | None:
    return _one_staff(session, Staff.wecom_userid == userid, active_only)


def get_staff_by_telegram_id(session: Session, telegram_user_id: int, *, active_only: bool = True) -> Staff | None:
    return _one_staff(session, Staff.telegram_user_id == int(telegram_user_id), active_only)


def _one_staff(session: Session, condition: Any, active_only: bool) -> Staff | None:
    stmt = select(Staff).where(condition)
    if active_only:
        stmt = stmt.where(Staff.active.is_(True))
    return session.scalars(stmt).unique().one_or_none()


def list_staff(session: Session, *, institution_id: int | None = None, consortium_id: int | None = None,
               role: str | None = None, active_only: bool = True) -> list[Staff]:
    """Staff filtered by institution / consortium / role, ordered by code."""
    stmt = select(Staff).order_by(Staff.code)
    if institution_id is not None:
        stmt = stmt.where(Staff.institution_id == institution_id)
    if consortium_id is not None:
        stmt = stmt.where(Staff.institution_id.in_(select(Institution.id).where(Institution.consortium_id == consortium_id)))
    if active_only:
        stmt = stmt.where(Staff.active.is_(True))
    rows = list(session.scalars(stmt).unique())
    if role is not None:  # JSON containment differs per dialect; the directory is small.
        rows = [s for s in rows if s.has_role(role)]
    return rows


def set_roles(session: Session, staff: Staff, roles: Iterable[str], *, actor: str) -> bool:
    """Replace ``staff.roles``; audited as ``role_change`` when they differ. Returns whether changed."""
    new = normalize_roles(list(roles))
    old = list(staff.roles or [])
    if new == old:
        return False
    staff.roles = new
    record(session, actor, "role_change", target=f"staff:{staff.code}", details={"from": old, "to": new})
    session.flush()
    return True


# ------------------------------------------------------------------------------------------------
# audit


@dataclass(frozen=True)
class AuditOrigin:
    """Where the actions being recorded come from (channel and client address)."""

    channel: str | None = None
    client_address: str | None = None


_ORIGIN: ContextVar[AuditOrigin] = ContextVar("yilian_audit_origin", default=AuditOrigin())


@contextmanager
def audit_origin(channel: str | None, client_address: str | None = None) -> Iterator[None]:
    """Every ``record`` inside the block notes this channel and address.

    A context variable rather than a parameter threaded through every command: the engine sets
    it once per message, and deep helpers (``set_roles``, ``create_invite`` …) need not know.
    """
    token = _ORIGIN.set(AuditOrigin(channel, client_address))
    try:
        yield
    finally:
        _ORIGIN.reset(token)


def record(session: Session, actor: str, action: str, target: str | None = None,
           details: dict[str, Any] | None = None, *, at: datetime | None = None,
           channel: str | None = None, client_address: str | None = None) -> AuditLog:
    """Append one audit entry. ``details`` is scrubbed (phones and ID numbers masked) first.

    ``channel`` and ``client_address`` default to the surrounding ``audit_origin``."""
    origin = _ORIGIN.get()
    entry = AuditLog(
        at=as_utc(at) if at else utcnow(),
        actor=actor,
        action=action,
        target=target,
        details=scrub(details or {}),
        channel=channel or origin.channel,
        client_address=client_address or origin.client_address,
    )
    session.add(entry)
    session.flush()
    return entry


def audit_entries(session: Session, *, action: str | None = None, actor: str | None = None,
                  target: str | None = None, limit: int = 100) -> list[AuditLog]:
    """Newest first."""
    stmt = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(limit)
    if action is not None:
        stmt = stmt.where(AuditLog.action == action)
    if actor is not None:
        stmt = stmt.where(AuditLog.actor == actor)
    if target is not None:
        stmt = stmt.where(AuditLog.target == target)
    return list(session.scalars(stmt))


# ------------------------------------------------------------------------------------------------
# invites

#: No 0/O, 1/I/L: codes are read aloud and typed on phones.
INVITE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
INVITE_LENGTH = 8


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.encode("ascii", "ignore")).hexdigest()


def normalize_invite_code(code: str) -> str:
    """Upper-case, spaces and dashes removed: ``abcd-efgh`` and ``ABCDEFGH`` are the same code."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def create_invite(session: Session, staff: Staff, *, created_by: str, ttl_hours: float = 72,
                  now: datetime | None = None) -> str:
    """Create a one-time code binding a Telegram account to ``staff``; returns the plain code.

    Only its hash is stored, so the code must be handed to the user now. Audited as
    ``invite.create``. ``ttl_hours`` is normally ``Settings.invite_ttl_hours``.
    """
    now = as_utc(now) if now else utcnow()
    while True:
        code = "".join(secrets.choice(INVITE_ALPHABET) for _ in range(INVITE_LENGTH))
        digest = _hash_code(code)
        if session.scalar(select(InviteCode.id).where(InviteCode.code_hash == digest)) is None:
            break
    session.add(InviteCode(code_hash=digest, staff_id=staff.id, created_at=now,
                           expires_at=now + timedelta(hours=ttl_hours), created_by=created_by))
    record(session, created_by, "invite.create", target=f"staff:{staff.code}",
           details={"expires_in_hours": ttl_hours}, at=now)
    session.flush()
    return code


class RedeemError(StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    TELEGRAM_ID_TAKEN = "telegram_id_taken"
    STAFF_INACTIVE = "staff_inactive"


REDEEM_MESSAGES_ZH: dict[RedeemError, str] = {
    RedeemError.UNKNOWN: "邀请码无效，请核对后重新输入，或联系管理员重新获取。",
    RedeemError.EXPIRED: "邀请码已过期，请联系管理员重新生成。",
    RedeemError.USED: "该邀请码已被使用，每个邀请码只能使用一次。如需重新绑定，请联系管理员。",
    RedeemError.TELEGRAM_ID_TAKEN: "您的 Telegram 账号已绑定到其他人员，无法重复绑定。如有疑问请联系管理员。",
    RedeemError.STAFF_INACTIVE: "该邀请码对应的人员已停用，请联系管理员。",
}


@dataclass(frozen=True)
class RedeemResult:
    staff: Staff | None = None
    error: RedeemError | None = None
    #: The staff member was bound to another Telegram account before and has been moved.
    replaced_previous: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message_zh(self) -> str:
        if self.error is not None:
            return REDEEM_MESSAGES_ZH[self.error]
        assert self.staff is not None
        inst = self.staff.institution.name if self.staff.institution else ""
        return f"绑定成功：{self.staff.name}（{inst}，{self.staff.roles_zh}）。"


def redeem_invite(session: Session, code: str, telegram_user_id: int, *,
                  now: datetime | None = None) -> RedeemResult:
    """Bind ``telegram_user_id`` to the invite's staff member; each code works once.

    Errors (``RedeemResult.error``): unknown code, expired, already used, this Telegram account
    already bound to *another* staff member, staff deactivated. Redeeming is race-safe: the code is
    consumed with a conditional UPDATE, and the unique constraint on ``staff.telegram_user_id``
    settles two accounts racing for one id. Success is audited as ``bind``, failures as
    ``bind.failed``.
    """
    now = as_utc(now) if now else utcnow()
    telegram_user_id = int(telegram_user_id)
    actor = f"telegram:{telegram_user_id}"
    normalized = normalize_invite_code(code)

    def fail(error: RedeemError, target: str | None = None) -> RedeemResult:
        record(session, actor, "bind.failed", target=target, details={"reason": error.value}, at=now)
        return RedeemResult(error=error)

    invite = session.scalars(
        select(InviteCode).where(InviteCode.code_hash == _hash_code(normalized))
    ).unique().one_or_none() if normalized else None
    if invite is None:
        return fail(RedeemError.UNKNOWN)
    target = f"staff:{invite.staff.code}"
    if invite.used_at is not None:
        return fail(RedeemError.USED, target)
    if as_utc(invite.expires_at) <= now:
        return fail(RedeemError.EXPIRED, target)
    staff = invite.staff
    if not staff.active:
        return fail(RedeemError.STAFF_INACTIVE, target)
    holder = get_staff_by_telegram_id(session, telegram_user_id, active_only=False)
    if holder is not None and holder.id != staff.id:
        return fail(RedeemError.TELEGRAM_ID_TAKEN, target)

    consumed = session.execute(
        update(InviteCode)
        .where(InviteCode.id == invite.id, InviteCode.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if consumed.rowcount != 1:  # another worker redeemed it a moment ago
        return fail(RedeemError.USED, target)
    session.expire(invite, ["used_at"])

    previous = staff.telegram_user_id
    try:
        with session.begin_nested():
            staff.telegram_user_id = telegram_user_id
            session.flush()
    except IntegrityError:
        session.refresh(staff)
        # The invite stays unused: the race lost is about the Telegram id, not the code.
        session.execute(update(InviteCode).where(InviteCode.id == invite.id).values(used_at=None)
                        .execution_options(synchronize_session=False))
        return fail(RedeemError.TELEGRAM_ID_TAKEN, target)
    replaced = previous is not None and previous != telegram_user_id
    record(session, actor, "bind", target=target,
           details={"channel": "telegram", "telegram_user_id": telegram_user_id, "replaced_previous": replaced},
           at=now)
    return RedeemResult(staff=staff, replaced_previous=replaced)


def unbind_telegram(session: Session, staff: Staff, *, actor: str) -> bool:
    """Remove a Telegram binding (lost phone, staff left). Audited as ``unbind``."""
    if staff.telegram_user_id is None:
        return False
    old = staff.telegram_user_id
    staff.telegram_user_id = None
    record(session, actor, "unbind", target=f"staff:{staff.code}",
           details={"channel": "telegram", "telegram_user_id": old})
    session.flush()
    return True


# ------------------------------------------------------------------------------------------------
# dialog state


@dataclass(frozen=True)
class Dialog:
    """An open dialog: ``dialog`` is its name (e.g. ``referral.create``), ``step`` where it stands."""

    dialog: str
    step: str
    data: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class DialogExpired:
    """The user had an open dialog that timed out; it has now been removed.

    Returned once, so the handler can say so (see ``message_zh``); the next ``get_dialog``
    returns ``None``.
    """

    dialog: str
    step: str
    data: dict[str, Any] = field(default_factory=dict)
    expired_at: datetime | None = None

    message_zh: str = "您之前的操作已超时，请重新开始。"


def get_dialog(session: Session, channel: str, user_key: str | int, *,
               now: datetime | None = None) -> Dialog | DialogExpired | None:
    now = as_utc(now) if now else utcnow()
    table = DialogState.__table__
    # Core select, not ORM: put_dialog writes with a Core upsert, so an ORM object cached in this
    # session's identity map could be stale.
    row = session.execute(
        select(table).where(table.c.channel == channel, table.c.user_key == str(user_key))
    ).mappings().one_or_none()
    if row is None:
        return None
    expires_at = as_utc(row["expires_at"])
    if expires_at <= now:
        session.execute(delete(table).where(table.c.id == row["id"]))
        return DialogExpired(dialog=row["dialog"], step=row["step"], data=dict(row["data"] or {}),
                             expired_at=expires_at)
    return Dialog(dialog=row["dialog"], step=row["step"], data=dict(row["data"] or {}),
                  updated_at=as_utc(row["updated_at"]), expires_at=expires_at)


def put_dialog(session: Session, channel: str, user_key: str | int, dialog: str, step: str,
               data: dict[str, Any] | None = None, *, ttl: timedelta | float = 60,
               now: datetime | None = None) -> Dialog:
    """Create or replace the user's dialog state; ``ttl`` is a timedelta or minutes
    (normally ``Settings.dialog_ttl_minutes``). Each call restarts the timeout."""
    now = as_utc(now) if now else utcnow()
    ttl_delta = ttl if isinstance(ttl, timedelta) else timedelta(minutes=float(ttl))
    values = {"dialog": dialog, "step": step, "data": dict(data or {}),
              "updated_at": now, "expires_at": now + ttl_delta}
    key = {"channel": channel, "user_key": str(user_key)}
    _upsert(session, DialogState, key, values, conflict_cols=["channel", "user_key"])
    return Dialog(dialog=dialog, step=step, data=dict(data or {}), updated_at=now, expires_at=values["expires_at"])


def put_dialog_unless_other(session: Session, channel: str, user_key: str | int, dialog: str, step: str,
                            data: dict[str, Any] | None = None, *, ttl: timedelta | float = 60,
                            now: datetime | None = None) -> bool:
    """Like ``put_dialog``, but never replaces a state of *another* dialog: for a state that any
    real dialog may take over (the last answer's context, ``handlers.followup``) and that is
    written outside the transaction that read the row. Returns whether it was written."""
    now = as_utc(now) if now else utcnow()
    ttl_delta = ttl if isinstance(ttl, timedelta) else timedelta(minutes=float(ttl))
    values = {"dialog": dialog, "step": step, "data": dict(data or {}),
              "updated_at": now, "expires_at": now + ttl_delta}
    key = {"channel": channel, "user_key": str(user_key)}
    table = DialogState.__table__
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(table).values(**key, **values).on_conflict_do_update(
            index_elements=["channel", "user_key"], set_=values, where=table.c.dialog == dialog,
        ).returning(table.c.id)
        return session.execute(stmt).first() is not None
    # pragma: no cover - other databases
    row = session.scalars(select(DialogState).filter_by(**key)).one_or_none()
    if row is None:
        session.add(DialogState(**key, **values))
    elif row.dialog == dialog:
        for k, v in values.items():
            setattr(row, k, v)
    else:
        return False
    session.flush()
    return True


def clear_dialog(session: Session, channel: str, user_key: str | int) -> bool:
    """Remove the user's dialog state; returns whether there was one."""
    result = session.execute(
        delete(DialogState).where(DialogState.channel == channel, DialogState.user_key == str(user_key))
    )
    return bool(result.rowcount)


def purge_expired_dialogs(session: Session, *, now: datetime | None = None) -> int:
    now = as_utc(now) if now else utcnow()
    return int(session.execute(delete(DialogState).where(DialogState.expires_at <= now)).rowcount or 0)


# ------------------------------------------------------------------------------------------------
# update dedupe


def claim_update(session: Session, channel: str, external_id: str | int, *,
                 now: datetime | None = None) -> bool:
    """Claim an inbound update (Telegram ``update_id``, WeCom ``MsgId``) for processing.

    True the first time a ``(channel, external_id)`` is seen, False ever after, also across
    workers: the insert relies on the primary key, so of two concurrent claims exactly one wins
    (on PostgreSQL the second waits for the first transaction and then loses). The claim becomes
    permanent when the caller commits; if the caller rolls back, the update may be claimed again.
    """
    now = as_utc(now) if now else utcnow()
    values = {"channel": channel, "external_id": str(external_id), "at": now}
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # Core statement on the Table (the ORM-enabled insert path does not report rowcount), with
        # RETURNING so that "inserted or not" never depends on driver rowcount semantics.
        table = ProcessedUpdate.__table__
        stmt = insert(table).values(**values).on_conflict_do_nothing(
            index_elements=["channel", "external_id"]
        ).returning(table.c.channel)
        return session.execute(stmt).first() is not None
    try:  # pragma: no cover - other databases
        with session.begin_nested():
            session.add(ProcessedUpdate(**values))
        return True
    except IntegrityError:  # pragma: no cover
        return False


def prune_processed_updates(session: Session, *, older_than: timedelta = timedelta(days=7),
                            now: datetime | None = None) -> int:
    """Forget claims older than ``older_than`` (platforms stop retrying within a day)."""
    now = as_utc(now) if now else utcnow()
    return int(session.execute(delete(ProcessedUpdate).where(ProcessedUpdate.at < now - older_than)).rowcount or 0)


# ------------------------------------------------------------------------------------------------
# helpers


def _upsert(session: Session, model: type, key: dict[str, Any], values: dict[str, Any],
            conflict_cols: list[str]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(model.__table__).values(**key, **values)
        stmt = stmt.on_conflict_do_update(index_elements=conflict_cols, set_=values)
        session.execute(stmt)
        return
    # pragma: no cover - other databases
    row = session.scalars(select(model).filter_by(**key)).one_or_none()
    if row is None:
        session.add(model(**key, **values))
    else:
        for k, v in values.items():
            setattr(row, k, v)
    session.flush()
