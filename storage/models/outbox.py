"""Delivery state shared by all workers of a messaging channel (WeCom first, others later).

* ``OutboxMessage`` — every message the system sends goes through this table: it is written in the
  same transaction as the work that produced it and sent by a sender loop that claims due rows
  (``bot/outbox.py``). A reply is therefore never lost when the platform or the network is down,
  and the unique ``dedupe_key`` keeps the same reply (or notification) from being queued twice.
* ``InboundMessage`` — an inbound update accepted (and acknowledged) but perhaps not processed
  yet; a worker that dies between the acknowledgement and the reply leaves a row that another
  worker (or the restarted one) picks up.
* ``ChannelToken`` — a platform access token (WeCom ``access_token``) with its expiry, shared by
  all processes so that they do not each fetch their own (WeCom limits ``gettoken`` calls).

The ``channel`` column uses the names of ``handlers.messages.Channel`` (``wecom``, ``telegram`` ...);
``payload`` is whatever that channel's transport understands (for WeCom: a ``message/send`` body
without ``touser``/``agentid``) while the row waits to be sent; a sent or failed row keeps no
message body (``{"msgtype"|"kind": …, "redacted": true}``), an answered inbound row none at all
(``{}``). An inbound row whose ``external_id`` starts with ``rl:`` stands for a message over its
user's rate limit (it is answered with a notice, see ``bot/inbox.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base
from storage.types import UTCDateTime, utcnow

OUTBOX_STATUSES = ("pending", "sending", "sent", "failed")
INBOUND_STATUSES = ("pending", "processing", "done", "failed")


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status"),
        Index("ix_outbox_messages_due", "status", "next_attempt_at"),
        Index("ix_outbox_messages_recipient", "channel", "recipient", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    #: The platform address: WeCom userid, Telegram chat id ...
    recipient: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Unique per message, e.g. ``wecom:in:<msgid>:0`` or ``notice:referral:42:accepted``.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    #: pending → sending (claimed by a worker) → sent | back to pending (retry) | failed (given up).
    status: Mapped[str] = mapped_column(String(10), default="pending")
    #: Send attempts so far (incremented when a worker claims the row).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: When the row may next be claimed: the retry time of a pending row, the lease expiry of a
    #: row being sent (a worker that died mid-send loses its claim then).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: Random token of the current claim; results are only recorded by the claim's holder.
    claim_token: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def __repr__(self) -> str:
        return (f"OutboxMessage(id={self.id!r}, channel={self.channel!r}, recipient={self.recipient!r}, "
                f"status={self.status!r}, attempts={self.attempts!r})")


class InboundMessage(Base):
    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("channel", "external_id", name="uq_inbound_messages_channel_external_id"),
        CheckConstraint("status IN ('pending', 'processing', 'done', 'failed')", name="status"),
        Index("ix_inbound_messages_due", "status", "locked_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    #: The platform's id of the update (WeCom MsgId, or the event key built from its fields).
    external_id: Mapped[str] = mapped_column(String(200))
    user_key: Mapped[str] = mapped_column(String(100))
    #: Who sent it, when that is not ``user_key`` (a member writing in a group chat, whose replies
    #: go to the group): per-user rate limits count by sender.
    sender_key: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: The decoded update (for WeCom: the fields of the decrypted XML); ``{}`` once answered.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: A processing claim's lease expiry (a pending row is due at once).
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ChannelToken(Base):
    __tablename__ = "channel_tokens"

    #: e.g. ``wecom:<corp_id>:<agent_id>``.
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    token: Mapped[str] = mapped_column(String(1000))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
