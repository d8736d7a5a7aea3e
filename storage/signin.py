"""Web sign-in: one-time login links, browser sessions and the first admin's password.

The browser never names who it is. It holds a random session token in a cookie; the server looks
the token's hash up here. A session is made in one of three ways, each proving identity through
something the server already trusts:

* ``link`` — a one-time token created in a *private* chat with the bot (``/login``), i.e. by a
  channel account the server has identified (signed WeCom callback, bound Telegram chat);
* ``wecom_oauth`` — WeCom's web authorisation tells the server the member's userid;
* ``password`` — an argon2 password, only for admins (the first admin, before any channel works);
* ``demo`` — the identity picker of demo mode (loopback only, no channel configured).

Secrets are stored hashed (SHA-256: they are long random values, so no slow hash is needed;
passwords use argon2). Every sign-in, failure and sign-out is audited.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import LoginToken, Staff, WebSession
from storage.models.directory import ROLE_ADMIN
from storage.repositories import record
from storage.types import as_utc, utcnow

LOGIN_TOKEN_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=12)
#: A session not used for this long ends even before ``SESSION_TTL``.
SESSION_IDLE = timedelta(hours=2)
#: ``last_seen_at`` is written at most this often (a write per request would be wasteful).
_TOUCH_EVERY = timedelta(minutes=1)
MIN_PASSWORD_LENGTH = 12


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "ignore")).hexdigest()


# ------------------------------------------------------------------------------------------------
# one-time login links


def create_login_token(session: Session, staff: Staff, *, via: str, ttl: timedelta = LOGIN_TOKEN_TTL,
                       now: datetime | None = None) -> str:
    """A single-use, short-lived token for ``staff``; returns the plain token (shown once)."""
    now = as_utc(now) if now else utcnow()
    token = secrets.token_urlsafe(32)
    session.add(LoginToken(token_hash=_hash(token), staff_id=staff.id, created_via=via, created_at=now,
                           expires_at=now + ttl))
    record(session, staff.code, "login_link.create", target=f"staff:{staff.code}",
           details={"expires_in_minutes": int(ttl.total_seconds() // 60)}, at=now)
    session.flush()
    return token


def peek_login_token(session: Session, token: str, *, now: datetime | None = None) -> Staff | None:
    """The staff member a still-valid token belongs to, without using it up (for the confirm page)."""
    now = as_utc(now) if now else utcnow()
    row = session.scalars(select(LoginToken).where(LoginToken.token_hash == _hash(token))).unique().one_or_none()
    if row is None or row.used_at is not None or as_utc(row.expires_at) <= now or not row.staff.active:
        return None
    return row.staff


def redeem_login_token(session: Session, token: str, *, now: datetime | None = None,
                       audit: bool = True) -> Staff | None:
    """Use the token up (race-safe: a conditional UPDATE); the staff member, or None.

    ``audit=False`` leaves a failure unrecorded (the web layer's flood limit: an anonymous client
    past its allowance must not write audit rows at will)."""
    now = as_utc(now) if now else utcnow()
    staff = peek_login_token(session, token, now=now)
    if staff is None:
        if audit:
            record(session, "web:anonymous", "login.failed",
                   details={"method": "link", "reason": "invalid token"}, at=now)
        return None
    used = session.execute(
        update(LoginToken)
        .where(LoginToken.token_hash == _hash(token), LoginToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if used.rowcount != 1:
        return None
    return staff


# ------------------------------------------------------------------------------------------------
# sessions


@dataclass(frozen=True)
class NewSession:
    token: str  # goes into the cookie; only its hash is stored
    csrf_token: str
    session_id: int


def create_session(session: Session, staff: Staff | None, *, method: str, client_address: str | None = None,
                   user_agent: str | None = None, ttl: timedelta = SESSION_TTL,
                   now: datetime | None = None) -> NewSession:
    now = as_utc(now) if now else utcnow()
    token = secrets.token_urlsafe(32)
    row = WebSession(token_hash=_hash(token), staff_id=staff.id if staff else None,
                     csrf_token=secrets.token_urlsafe(24), method=method, client_address=client_address,
                     user_agent=(user_agent or "")[:300] or None, created_at=now, last_seen_at=now,
                     expires_at=now + ttl)
    session.add(row)
    session.flush()
    actor = staff.code if staff else f"web:guest-{row.id}"
    record(session, actor, "login", target=f"staff:{staff.code}" if staff else None,
           details={"method": method}, at=now, channel="web", client_address=client_address)
    return NewSession(token=token, csrf_token=row.csrf_token, session_id=row.id)


def get_session(session: Session, token: str | None, *, now: datetime | None = None) -> WebSession | None:
    """The live session a cookie names (not expired, idle, revoked, nor of a deactivated person)."""
    if not token or len(token) > 200:
        return None
    now = as_utc(now) if now else utcnow()
    row = session.scalars(select(WebSession).where(WebSession.token_hash == _hash(token))).unique().one_or_none()
    if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= now:
        return None
    if as_utc(row.last_seen_at) + SESSION_IDLE <= now:
        return None
    if row.staff_id is not None and (row.staff is None or not row.staff.active):
        return None
    if as_utc(row.last_seen_at) + _TOUCH_EVERY <= now:
        row.last_seen_at = now
        session.flush()
    return row


def revoke_session(session: Session, token: str | None, *, now: datetime | None = None) -> bool:
    row = get_session(session, token, now=now)
    if row is None:
        return False
    now = as_utc(now) if now else utcnow()
    row.revoked_at = now
    actor = row.staff.code if row.staff else f"web:guest-{row.id}"
    record(session, actor, "logout", details={"sessions": 1}, at=now, channel="web")
    session.flush()
    return True


def revoke_staff_sessions(session: Session, staff: Staff, *, actor: str, now: datetime | None = None) -> int:
    """End every session of ``staff`` (``yilian users logout``, ``/unbind``) and void the login links
    they have not used yet (a link asked for from a lost phone would otherwise still sign its
    finder in); returns how many sessions were live."""
    now = as_utc(now) if now else utcnow()
    result = session.execute(
        update(WebSession)
        .where(WebSession.staff_id == staff.id, WebSession.revoked_at.is_(None), WebSession.expires_at > now)
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    links = session.execute(
        update(LoginToken)
        .where(LoginToken.staff_id == staff.id, LoginToken.used_at.is_(None), LoginToken.expires_at > now)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    record(session, actor, "logout", target=f"staff:{staff.code}",
           details={"sessions": result.rowcount, "unused_links": links.rowcount}, at=now)
    session.flush()
    return result.rowcount


def prune_expired(session: Session, *, keep: timedelta = timedelta(days=30), now: datetime | None = None) -> int:
    """Delete login tokens and sessions that ended more than ``keep`` ago (their audit entries stay)."""
    from sqlalchemy import delete, or_

    now = as_utc(now) if now else utcnow()
    cutoff = now - keep
    tokens = session.execute(delete(LoginToken).where(LoginToken.expires_at < cutoff)
                             .execution_options(synchronize_session=False)).rowcount
    sessions = session.execute(
        delete(WebSession).where(or_(WebSession.expires_at < cutoff, WebSession.revoked_at < cutoff))
        .execution_options(synchronize_session=False)
    ).rowcount
    return tokens + sessions


# ------------------------------------------------------------------------------------------------
# passwords (admins only)


class PasswordRefused(ValueError):
    """The password cannot be set (not an admin, too short); the message says why, in Chinese."""


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def set_password(session: Session, staff: Staff, password: str, *, actor: str) -> None:
    if not staff.has_role(ROLE_ADMIN):
        raise PasswordRefused(f"只有管理员可以设置网页密码；{staff.name}（{staff.code}）请通过企业微信或 Telegram 中的 /login 登录。")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRefused(f"密码太短：至少 {MIN_PASSWORD_LENGTH} 个字符。")
    staff.password_hash = _hasher().hash(password)
    record(session, actor, "password.set", target=f"staff:{staff.code}")
    session.flush()


def check_password(session: Session, code: str, password: str, *, client_address: str | None = None) -> Staff | None:
    """The admin whose code and password match, else None (audited either way, without the password)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    staff = session.scalars(select(Staff).where(Staff.code == code.strip().lower())).unique().one_or_none()
    ok = False
    if staff is not None and staff.active and staff.password_hash and staff.has_role(ROLE_ADMIN):
        try:
            ok = _hasher().verify(staff.password_hash, password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        # Spend the same time as a real check so that timing does not reveal which codes exist.
        _hasher().hash(password or "x")
    if not ok:
        record(session, f"web:{code[:40]}", "login.failed", details={"method": "password"}, channel="web",
               client_address=client_address)
        return None
    return staff


__all__ = [
    "LOGIN_TOKEN_TTL", "MIN_PASSWORD_LENGTH", "SESSION_TTL", "NewSession", "PasswordRefused", "check_password",
    "create_login_token", "create_session", "get_session", "peek_login_token", "redeem_login_token",
    "prune_expired", "revoke_session", "revoke_staff_sessions", "set_password",
]
