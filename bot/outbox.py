"""The persistent outbox: every outgoing message is a row first, and a sender loop delivers it.

Why: a reply must survive the platform or the network being down for a while, a crash of the
worker that produced it, and several workers running at once — and must still arrive once, in
order. The pieces:

* ``enqueue`` / ``enqueue_many`` write rows in the caller's transaction (``dedupe_key`` is unique,
  so enqueueing the same reply or notification twice is harmless).
* ``OutboxStore.claim`` hands due rows to one worker at a time: on PostgreSQL with
  ``FOR UPDATE SKIP LOCKED``, on SQLite with one conditional ``UPDATE … RETURNING`` (SQLite runs
  writers one after another). A claim is a lease (``next_attempt_at`` = its expiry): a worker that
  dies mid-send loses the row to another worker after ``lease_s``.
* Order per recipient: a row is only claimable when no older row to the same recipient is still
  pending or being sent, so parts of a multi-part answer go out one after the other, in order,
  and at most one message per recipient is in flight anywhere. That also makes the per-recipient
  pacing (``per_minute`` sends in any rolling minute) exact across workers.
* ``OutboxSender`` is the loop: claim, send through the channel's ``Transport``, record the result
  (only the claim's holder can: results are matched on ``claim_token``), back off on retryable
  errors (``DeliveryError(retryable=True)``), give up on permanent ones or when a row is older
  than ``max_age_s``.

A transport sees ``OutboxItem.attempts`` (1 on the first try) so that it can ask the platform to
drop duplicates on retries (WeCom ``enable_duplicate_check``): a send that reached the platform but
whose answer was lost is then not delivered twice.

Once a row is sent (or given up), its message body is dropped (``redacted_payload``): replies carry
one-time binding codes, login links and quotes about patients, and the row itself is kept for a
month as a delivery record only. Old rows are deleted by the channels' ``bot.inbox.Housekeeping``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bot import metrics
from bot.logging_setup import request_id_of_outbox_key, request_scope
from bot.patience import through_outage
from storage.models import OutboxMessage
from storage.types import as_utc, utcnow

log = logging.getLogger(__name__)

_T = OutboxMessage.__table__


# ------------------------------------------------------------------------------------------------
# writing


def enqueue(session: Session, channel: str, recipient: str, payload: Mapping[str, Any], dedupe_key: str, *,
            not_before: datetime | None = None, now: datetime | None = None) -> bool:
    """Queue one message in the caller's transaction; False if ``dedupe_key`` was queued before."""
    now = as_utc(now) if now else utcnow()
    values = {
        "channel": channel,
        "recipient": str(recipient),
        "payload": dict(payload),
        "dedupe_key": dedupe_key,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": as_utc(not_before) if not_before else now,
        "created_at": now,
    }
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(_T).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(_T.c.id)
        return session.execute(stmt).scalar() is not None
    # pragma: no cover - other databases
    if session.scalar(select(_T.c.id).where(_T.c.dedupe_key == dedupe_key)) is not None:
        return False
    session.add(OutboxMessage(**values))
    session.flush()
    return True


def enqueue_many(session: Session, channel: str, recipient: str, payloads: Sequence[Mapping[str, Any]],
                 key_prefix: str, *, now: datetime | None = None) -> int:
    """Queue the parts of one answer, in order, with keys ``{key_prefix}:0``, ``:1`` …

    Returns how many were new (0 when the answer had been queued already)."""
    now = as_utc(now) if now else utcnow()
    return sum(enqueue(session, channel, recipient, p, f"{key_prefix}:{i}", now=now) for i, p in enumerate(payloads))


def redacted_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a sent or failed row keeps of its payload: the message type only, no content."""
    kept = {k: payload[k] for k in ("msgtype", "kind") if isinstance(payload.get(k), str)}
    return {**kept, "redacted": True}


# ------------------------------------------------------------------------------------------------
# claiming and recording results


@dataclass(frozen=True)
class OutboxItem:
    id: int
    channel: str
    recipient: str
    payload: dict[str, Any]
    dedupe_key: str
    #: 1 on the first attempt; > 1 means an earlier attempt may or may not have been delivered.
    attempts: int
    claim_token: str
    created_at: datetime

    @property
    def is_retry(self) -> bool:
        return self.attempts > 1


class OutboxStore:
    """Synchronous database operations on the outbox (run them in a thread from async code)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def claim(self, limit: int, *, lease_s: float, per_minute: int | None = None,
              channels: Iterable[str] | None = None, now: datetime | None = None) -> list[OutboxItem]:
        """Claim up to ``limit`` due rows (at most one per recipient), oldest first."""
        now = as_utc(now) if now else utcnow()
        token = uuid.uuid4().hex
        o = _T.alias("o")
        earlier = _T.alias("earlier")
        recent = _T.alias("recent")
        due = and_(o.c.status.in_(("pending", "sending")), o.c.next_attempt_at <= now)
        blocked_by_earlier = (
            select(earlier.c.id)
            .where(earlier.c.channel == o.c.channel, earlier.c.recipient == o.c.recipient,
                   earlier.c.id < o.c.id, earlier.c.status.in_(("pending", "sending")))
            .exists()
        )
        candidates = select(o.c.id).where(due, ~blocked_by_earlier)
        if channels is not None:
            candidates = candidates.where(o.c.channel.in_(list(channels)))
        if per_minute:
            sent_last_minute = (
                select(func.count())
                .select_from(recent)
                .where(recent.c.channel == o.c.channel, recent.c.recipient == o.c.recipient,
                       recent.c.status == "sent", recent.c.sent_at > now - timedelta(seconds=60))
                .scalar_subquery()
            )
            candidates = candidates.where(sent_last_minute < per_minute)
        candidates = candidates.order_by(o.c.id).limit(limit)
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True, of=o)
            stmt = (
                update(_T)
                .where(_T.c.id.in_(candidates.scalar_subquery()),
                       _T.c.status.in_(("pending", "sending")), _T.c.next_attempt_at <= now)
                .values(status="sending", claim_token=token, attempts=_T.c.attempts + 1,
                        next_attempt_at=now + timedelta(seconds=lease_s))
                .returning(_T.c.id, _T.c.channel, _T.c.recipient, _T.c.payload, _T.c.dedupe_key,
                           _T.c.attempts, _T.c.created_at)
            )
            rows = session.execute(stmt).all()
        items = [
            OutboxItem(r.id, r.channel, r.recipient, dict(r.payload or {}), r.dedupe_key, r.attempts, token,
                       as_utc(r.created_at))
            for r in rows
        ]
        return sorted(items, key=lambda i: i.id)

    def _finish(self, item: OutboxItem, **values: Any) -> bool:
        with self.sessions.begin() as session:
            result = session.execute(
                update(_T).where(_T.c.id == item.id, _T.c.claim_token == item.claim_token, _T.c.status == "sending")
                .values(claim_token=None, **values)
            )
            ok = result.rowcount == 1
        if not ok:
            log.warning("outbox row %s: claim lost before its result was recorded", item.id)
        return ok

    def mark_sent(self, item: OutboxItem, *, note: str | None = None, now: datetime | None = None) -> bool:
        """Record the delivery; the message body is not kept (``redacted_payload``)."""
        return self._finish(item, status="sent", sent_at=as_utc(now) if now else utcnow(),
                            last_error=(note[:500] if note else None), payload=redacted_payload(item.payload))

    def mark_retry(self, item: OutboxItem, delay_s: float, error: str, *, now: datetime | None = None) -> bool:
        now = as_utc(now) if now else utcnow()
        return self._finish(item, status="pending", next_attempt_at=now + timedelta(seconds=delay_s),
                            last_error=error[:500])

    def mark_failed(self, item: OutboxItem, error: str) -> bool:
        """Give the row up for good; its message body is not kept either."""
        return self._finish(item, status="failed", last_error=error[:500], payload=redacted_payload(item.payload))

    def next_due(self, channels: Iterable[str] | None = None) -> datetime | None:
        """When the earliest pending or leased row becomes claimable (None: nothing queued)."""
        stmt = select(func.min(_T.c.next_attempt_at)).where(_T.c.status.in_(("pending", "sending")))
        if channels is not None:
            stmt = stmt.where(_T.c.channel.in_(list(channels)))
        with self.sessions() as session:
            value = session.scalar(stmt)
        return as_utc(value) if value else None

    def counts(self, channel: str | None = None) -> dict[str, int]:
        stmt = select(_T.c.status, func.count()).group_by(_T.c.status)
        if channel is not None:
            stmt = stmt.where(_T.c.channel == channel)
        with self.sessions() as session:
            return {status: int(n) for status, n in session.execute(stmt)}

    def prune(self, *, older_than: timedelta = timedelta(days=30), now: datetime | None = None,
              channel: str | None = None) -> int:
        """Delete sent and failed rows older than ``older_than`` (of one channel, or of all)."""
        now = as_utc(now) if now else utcnow()
        stmt = delete(_T).where(_T.c.status.in_(("sent", "failed")), _T.c.created_at < now - older_than)
        if channel is not None:
            stmt = stmt.where(_T.c.channel == channel)
        with self.sessions.begin() as session:
            return int(session.execute(stmt).rowcount or 0)


# ------------------------------------------------------------------------------------------------
# sending


class DeliveryError(Exception):
    """A send failed. ``retryable``: try again later (network, 5xx, rate limit, expired token);
    otherwise the message can never be delivered as it is (bad recipient, invalid content)."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Transport(Protocol):
    async def send(self, item: OutboxItem) -> str | None:
        """Deliver ``item``; return an optional note to keep (e.g. a partial-failure warning),
        raise ``DeliveryError`` on failure."""
        ...


@dataclass
class OutboxOptions:
    #: Idle polling period (the sender is also woken at once by ``wake()``).
    poll_interval_s: float = 1.0
    batch_size: int = 20
    #: How long a claim lasts; longer than the transport's own timeout.
    lease_s: float = 60.0
    #: Sends per recipient in any rolling minute (WeCom drops beyond 30).
    per_minute: int = 25
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    #: A message still undelivered after this long is given up (status ``failed``).
    max_age_s: float = 24 * 3600.0
    max_attempts: int = 200
    #: Rows sent/failed longer ago than this are deleted (by the channel's ``bot.inbox.Housekeeping``).
    keep_days: float = 30.0


@dataclass
class OutboxSender:
    store: OutboxStore
    transports: Mapping[str, Transport]
    options: OutboxOptions = field(default_factory=OutboxOptions)

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def channels(self) -> list[str]:
        return list(self.transports)

    def wake(self) -> None:
        """New rows were queued: look now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="outbox-sender")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop claiming; let sends in flight finish (up to ``timeout_s``), then cancel."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            task.cancel()

    async def run_once(self) -> int:
        """Claim one batch and send it; returns how many rows were claimed."""
        opts = self.options
        items = await asyncio.to_thread(
            self.store.claim, opts.batch_size, lease_s=opts.lease_s, per_minute=opts.per_minute,
            channels=self.channels,
        )
        if items:
            await asyncio.gather(*(self._deliver(item) for item in items))
        return len(items)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self.run_once()
            except Exception:  # the database hiccuped: log and retry after a pause
                log.exception("outbox sender: claim failed")
                claimed = 0
            if self._stopping:
                break
            if claimed:
                continue
            timeout = self.options.poll_interval_s
            try:
                due = await asyncio.to_thread(self.store.next_due, self.channels)
            except Exception:
                due = None
            if due is not None:
                timeout = min(timeout, max(0.0, (due - utcnow()).total_seconds()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass

    async def _deliver(self, item: OutboxItem) -> None:
        with request_scope(request_id_of_outbox_key(item.dedupe_key)):  # the message it answers
            await self._deliver_item(item)

    async def _deliver_item(self, item: OutboxItem) -> None:
        transport = self.transports[item.channel]
        try:
            note = await transport.send(item)
        except DeliveryError as exc:
            await self._failed(item, exc)
            return
        except Exception as exc:  # a transport bug must not kill the loop; treat as transient
            log.exception("outbox row %s: unexpected error from the %s transport", item.id, item.channel)
            await self._failed(item, DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True))
            return
        await self._record_sent(item, note)
        metrics.MESSAGES_OUT.labels(item.channel).inc()
        log.info("outbox row %s sent", item.id,
                 extra={"channel": item.channel, "recipient": item.recipient, "attempts": item.attempts})

    async def _record_sent(self, item: OutboxItem, note: str | None) -> None:
        """``mark_sent``, tried again while the database is unreachable (a PostgreSQL restart
        takes seconds): the message has gone out, and a row left "sending" would be sent a second
        time once its lease ran out. Gives up (and logs it) with half the lease left."""
        await through_outage(lambda: self.store.mark_sent(item, note=note),
                             what=f"outbox row {item.id}: recording its delivery", gave_up="it may be sent again",
                             budget_s=self.options.lease_s / 2, max_delay_s=2.0)

    def backoff_s(self, attempts: int, retry_after_s: float | None = None) -> float:
        opts = self.options
        delay = min(opts.backoff_max_s, opts.backoff_base_s * (2 ** max(0, attempts - 1)))
        delay *= random.uniform(0.8, 1.2)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay

    async def _failed(self, item: OutboxItem, exc: DeliveryError) -> None:
        error = str(exc) or type(exc).__name__
        too_old = (utcnow() - item.created_at).total_seconds() > self.options.max_age_s
        if not exc.retryable or too_old or item.attempts >= self.options.max_attempts:
            reason = "permanent error" if not exc.retryable else "gave up after retries"
            log.error("outbox row %s failed (%s): %s", item.id, reason, error,
                      extra={"channel": item.channel, "recipient": item.recipient, "attempts": item.attempts})
            await asyncio.to_thread(self.store.mark_failed, item, error)
            metrics.OUTBOX_FAILED.labels(item.channel).inc()
            return
        delay = self.backoff_s(item.attempts, exc.retry_after_s)
        log.warning("outbox row %s: attempt %s failed (%s); retrying in %.1fs", item.id, item.attempts, error, delay,
                    extra={"channel": item.channel, "recipient": item.recipient})
        await asyncio.to_thread(self.store.mark_retry, item, delay, error)
        metrics.OUTBOX_RETRIES.labels(item.channel).inc()


__all__ = [
    "DeliveryError",
    "OutboxItem",
    "OutboxOptions",
    "OutboxSender",
    "OutboxStore",
    "Transport",
    "enqueue",
    "enqueue_many",
    "redacted_payload",
]
