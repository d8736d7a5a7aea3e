"""Web sign-in: one-time login links and browser sessions.

Both store only the SHA-256 of their secret (a leaked database leaks no usable link or cookie).
A login token is handed out in a private chat (``/login``) and turns into a session once; a
session is what the browser's cookie names. Sessions expire, and ``revoked_at`` ends them early
(``yilian users logout STAFF`` or the page's 退出 button).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.db import Base
from storage.models.directory import Staff
from storage.types import UTCDateTime, utcnow


class LoginToken(Base):
    __tablename__ = "login_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    #: The channel the link was asked for from (``telegram``, ``wecom``, ``cli``).
    created_via: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    staff: Mapped[Staff] = relationship(lazy="joined")


class WebSession(Base):
    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: None for a demo-mode guest (policy questions only).
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), nullable=True,
                                                 index=True)
    #: Sent back by the page with every state-changing request (``X-CSRF-Token``).
    csrf_token: Mapped[str] = mapped_column(String(64))
    #: How the visitor signed in: ``link``, ``wecom_oauth``, ``password`` or ``demo``.
    method: Mapped[str] = mapped_column(String(20))
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    staff: Mapped[Staff | None] = relationship(lazy="joined")
