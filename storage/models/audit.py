"""Append-only audit trail of security-relevant actions.

Write it through ``storage.repositories.record`` (which scrubs phone and ID numbers from
``details``), never by constructing rows by hand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base
from storage.types import UTCDateTime, utcnow


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: Staff code, or ``"system"`` / ``"cli"``.
    actor: Mapped[str] = mapped_column(String(100), index=True)
    #: e.g. ``bind``, ``role_change``, ``document.ingest``, ``document.remove``, ``referral.view``.
    action: Mapped[str] = mapped_column(String(50), index=True)
    target: Mapped[str | None] = mapped_column(String(300), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Where the action came from: ``telegram``, ``wecom``, ``web``, ``cli``, ``system``.
    channel: Mapped[str | None] = mapped_column(String(20), nullable=True)
    #: The client's network address (web requests), when known.
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def __repr__(self) -> str:
        return f"AuditLog(at={self.at!r}, actor={self.actor!r}, action={self.action!r}, target={self.target!r})"
