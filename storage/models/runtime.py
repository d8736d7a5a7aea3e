"""State shared by all bot workers: open dialogs and already-processed updates.

Keeping these in the database (not in process memory) means a restart or a second worker picks
up a half-finished dialog, and a Telegram/WeCom retry of the same update is handled once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base
from storage.types import UTCDateTime, utcnow


class DialogState(Base):
    __tablename__ = "dialog_state"
    __table_args__ = (UniqueConstraint("channel", "user_key", name="uq_dialog_state_channel_user_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``telegram``, ``wecom``, ``web``, ``cli`` ...
    channel: Mapped[str] = mapped_column(String(20))
    #: The user within the channel (Telegram user id, WeCom userid, web session id).
    user_key: Mapped[str] = mapped_column(String(100))
    dialog: Mapped[str] = mapped_column(String(50))
    step: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ProcessedUpdate(Base):
    """One row per inbound update already claimed by some worker (Telegram update_id, WeCom MsgId)."""

    __tablename__ = "processed_updates"

    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
