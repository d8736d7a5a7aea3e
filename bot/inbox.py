"""Accepted inbound messages of every channel (``inbound_messages``): stored before the platform is acknowledged,
processed once, recovered after a crash.

``accept_batch`` is the acknowledgement path: the dedupe claims (the ``processed_updates`` rows of
``claim_update``, shared with the other channels) and the rows are written in one transaction for a
whole batch of callbacks (group commit: under a burst, 200 callbacks cost a handful of
transactions, not 200). A duplicate
delivery (WeCom retries after 5 s, three times in all) finds its claim taken and is only
acknowledged again.

Per-user rate limits (``bot.ratelimit.RatePolicy``) are decided in the same transaction from the
user's rows in this table, so that they hold across all workers (any callback may reach any
worker). A message over the limit is stored as a *notice row* — external id ``rl:<key>``,
``ClaimedInbound.rate_limited``: the channel answers it with the polite "too fast" text instead of
running the engine — the first time after the user's last accepted message, and is dropped
otherwise (only its dedupe claim is kept, so a redelivery is not answered later either). On SQLite
the check and the insert run under the database's write lock; on PostgreSQL, workers accepting the
same user's messages at the very same moment may each let one more through.

Processing claims a row with a lease (``locked_until``); ``finish`` queues the replies in the
outbox *and* marks the row done in one transaction, so a reply is queued exactly once even if the
row is processed again after a crash (the outbox dedupe keys derive from the row's external id).

``Housekeeping`` deletes what is no longer needed (old dedupe claims, answered inbound rows, sent
and failed outbox rows); each channel runs it from its recovery loop, at most once an hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bot import metrics
from bot.outbox import OutboxStore, enqueue_many
from bot.patience import through_outage
from bot.ratelimit import Decision, RatePolicy
from storage.models import InboundMessage, ProcessedUpdate
from storage.repositories import claim_update, prune_processed_updates
from storage.types import as_utc, utcnow

log = logging.getLogger(__name__)

_T = InboundMessage.__table__
_PU = ProcessedUpdate.__table__

#: External id prefix of a row that stands for a message over its user's rate limit.
RATE_LIMIT_PREFIX = "rl:"
_ACTIVE = ("pending", "processing")


@dataclass(frozen=True)
class NewInbound:
    external_id: str
    user_key: str  # where replies go (the chat)
    payload: dict[str, Any]
    #: who sent it, when not ``user_key`` (a group member): rate limits count by this
    sender_key: str | None = None

    @property
    def person(self) -> str:
        return self.sender_key or self.user_key


@dataclass(frozen=True)
class ClaimedInbound:
    id: int
    external_id: str
    user_key: str
    payload: dict[str, Any]
    attempts: int

    @property
    def rate_limited(self) -> bool:
        """The message was over its user's rate limit: answer the notice, not the message."""
        return self.external_id.startswith(RATE_LIMIT_PREFIX)


@dataclass
class _UserHistory:
    #: Creation times of the user's accepted messages, in seconds relative to "now".
    accepted: list[float] = field(default_factory=list)
    pending: int = 0
    warned: bool = False


class InboxStore:
    def __init__(self, sessions: sessionmaker[Session], channel: str, *,
                 rate_policy: RatePolicy | None = None) -> None:
        self.sessions = sessions
        self.channel = channel
        #: None (or a disabled policy): every new message is accepted.
        self.rate_policy = rate_policy
        #: Messages of this process answered with the notice / dropped by the rate limit.
        self.rate_limit_counts: dict[str, int] = {"warn": 0, "drop": 0}

    def accept_batch(self, items: list[NewInbound], *, lease_s: float,
                     now: datetime | None = None) -> list[int | None]:
        """Store new inbound messages; per item the row id, or None for a duplicate or a message
        dropped by the rate limit (a message answered with the rate-limit notice gets the id of
        its notice row).

        The dedupe claims are the ``processed_updates`` rows that ``claim_update`` writes (same
        table, same keys), inserted here with one statement for the whole batch: a burst of
        callbacks then costs a handful of statements instead of two per callback."""
        now = as_utc(now) if now else utcnow()
        if not items:
            return []
        with self.sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - other databases
                return self._accept_one_by_one(session, items, lease_s, now)
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            keys = list(dict.fromkeys(item.external_id for item in items))
            claimed = set(session.scalars(
                insert(_PU).on_conflict_do_nothing(index_elements=["channel", "external_id"])
                .returning(_PU.c.external_id),
                [{"channel": self.channel, "external_id": k, "at": now} for k in keys],
            ))
            fresh: dict[str, NewInbound] = {}
            for item in items:
                if item.external_id in claimed and item.external_id not in fresh:
                    fresh[item.external_id] = item
            decisions = self._rate_decisions(session, list(fresh.values()), now)
            rows_in = {key: self._row(item, decisions.get(key, "ok"), lease_s, now)
                       for key, item in fresh.items() if decisions.get(key) != "drop"}
            ids: dict[str, int] = {}
            if rows_in:
                key_of = {row["external_id"]: key for key, row in rows_in.items()}
                rows = session.execute(insert(_T).returning(_T.c.id, _T.c.external_id), list(rows_in.values()))
                ids = {key_of[r.external_id]: r.id for r in rows}
        if ids:
            metrics.MESSAGES_IN.labels(self.channel).inc(len(ids))
        # the first of several copies in one batch gets the row
        return [ids.pop(item.external_id, None) for item in items]

    def _accept_one_by_one(self, session: Session, items: list[NewInbound], lease_s: float,
                           now: datetime) -> list[int | None]:  # pragma: no cover - other databases
        fresh = [item for item in items if claim_update(session, self.channel, item.external_id, now=now)]
        decisions = self._rate_decisions(session, fresh, now)
        ids: dict[str, int] = {}
        for item in fresh:
            decision = decisions.get(item.external_id, "ok")
            if decision == "drop":
                continue
            row = InboundMessage(**self._row(item, decision, lease_s, now))
            session.add(row)
            session.flush()
            ids[item.external_id] = row.id
        return [ids.pop(item.external_id, None) for item in items]

    def _row(self, item: NewInbound, decision: Decision, lease_s: float, now: datetime) -> dict[str, Any]:
        external_id = RATE_LIMIT_PREFIX + item.external_id if decision == "warn" else item.external_id
        return {"channel": self.channel, "external_id": external_id, "user_key": item.user_key,
                "sender_key": item.sender_key, "payload": item.payload, "status": "pending", "attempts": 0,
                "locked_until": now + timedelta(seconds=lease_s), "created_at": now}

    def _histories(self, session: Session, users: list[str], since: datetime, now: datetime) -> dict[str, _UserHistory]:
        """Per user: accepted messages since ``since``, unprocessed messages, and whether a notice
        was queued after the last accepted message."""
        out: dict[str, _UserHistory] = {}
        person = func.coalesce(_T.c.sender_key, _T.c.user_key)
        cols = (_T.c.id, person.label("person"), _T.c.external_id, _T.c.status, _T.c.created_at)
        for start in range(0, len(users), 200):
            # Both parts use the (status, locked_until) index: unprocessed rows, and rows done
            # recently (a done row's locked_until is when it was finished, after its creation).
            # ``channel || ''`` keeps SQLite from walking all of the channel's rows by the
            # (channel, external_id) index instead.
            base = select(*cols).where((_T.c.channel + "") == self.channel,
                                       person.in_(users[start : start + 200]))
            stmt = union_all(base.where(_T.c.status.in_(_ACTIVE)),
                             base.where(_T.c.status == "done", _T.c.locked_until >= since))
            for r in sorted(session.execute(stmt), key=lambda r: r.id):
                h = out.setdefault(r.person, _UserHistory())
                if r.external_id.startswith(RATE_LIMIT_PREFIX):
                    h.warned = True
                    continue
                h.warned = False
                if r.status in _ACTIVE:
                    h.pending += 1
                created = as_utc(r.created_at)
                if created >= since:
                    h.accepted.append((created - now).total_seconds())
        return out

    def _rate_decisions(self, session: Session, fresh: list[NewInbound], now: datetime) -> dict[str, Decision]:
        """The messages (by external id) that are over their user's limit: ``warn`` or ``drop``.
        Decided in arrival order, a batch's earlier messages counting for the later ones."""
        policy = self.rate_policy
        if policy is None or not policy.enabled or not fresh:
            return {}
        histories = self._histories(session, sorted({item.person for item in fresh}),
                                    now - timedelta(seconds=policy.lookback_s), now)
        out: dict[str, Decision] = {}
        for item in fresh:
            h = histories.setdefault(item.person, _UserHistory())
            decision = policy.decide(h.accepted, 0.0, pending=h.pending, warned=h.warned)
            if decision == "ok":
                h.accepted.append(0.0)
                h.pending += 1
                h.warned = False
                continue
            out[item.external_id] = decision
            h.warned = True
            self.rate_limit_counts[decision] += 1
            log.info("%s message %s is over its user's rate limit: %s", self.channel, item.external_id,
                     "notice queued" if decision == "warn" else "dropped", extra={"user": item.person})
        return out

    def _claim(self, session: Session, condition: Any, lease_s: float, now: datetime) -> list[ClaimedInbound]:
        stmt = (
            update(_T).where(condition)
            .values(status="processing", attempts=_T.c.attempts + 1, locked_until=now + timedelta(seconds=lease_s))
            .returning(_T.c.id, _T.c.external_id, _T.c.user_key, _T.c.payload, _T.c.attempts)
        )
        return [ClaimedInbound(r.id, r.external_id, r.user_key, dict(r.payload or {}), r.attempts)
                for r in session.execute(stmt)]

    def claim(self, row_id: int, *, lease_s: float, now: datetime | None = None) -> ClaimedInbound | None:
        """Claim a row this worker has just accepted (its lease is not waited for)."""
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            rows = self._claim(session, (_T.c.id == row_id) & (_T.c.status == "pending"), lease_s, now)
        return rows[0] if rows else None

    def claim_due(self, limit: int, *, lease_s: float, now: datetime | None = None) -> list[ClaimedInbound]:
        """Rows left behind: pending or processing with an expired lease (a worker died)."""
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            due = (
                select(_T.c.id)
                .where(_T.c.channel == self.channel, _T.c.status.in_(_ACTIVE), _T.c.locked_until <= now)
                .order_by(_T.c.id).limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            condition = (_T.c.id.in_(due.scalar_subquery())
                         & or_(_T.c.status == "pending", _T.c.status == "processing") & (_T.c.locked_until <= now))
            rows = self._claim(session, condition, lease_s, now)
        return sorted(rows, key=lambda r: r.id)

    def renew(self, row_ids: list[int], *, lease_s: float, now: datetime | None = None) -> int:
        """Extend the leases of rows this worker still holds (pending or processing, lease not yet
        run out: a row whose lease ran out may be another worker's by now, and stays so)."""
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            result = session.execute(update(_T).where(
                _T.c.id.in_(row_ids), _T.c.status.in_(_ACTIVE), _T.c.locked_until > now,
            ).values(locked_until=now + timedelta(seconds=lease_s)))
            return int(result.rowcount or 0)

    def _mine(self, row: ClaimedInbound) -> Any:
        return (_T.c.id == row.id) & (_T.c.status == "processing") & (_T.c.attempts == row.attempts)

    def finish(self, row: ClaimedInbound, payloads: list[dict[str, Any]], *, now: datetime | None = None) -> bool:
        """Queue the replies and mark the row done, atomically. False if the claim was lost."""
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            # The message itself is not kept once answered (it may name patients): only its key.
            # locked_until = now: the lease is over, and the rate limit finds recent rows by it.
            done = session.execute(update(_T).where(self._mine(row)).values(
                status="done", processed_at=now, locked_until=now, last_error=None, payload={}))
            if done.rowcount != 1:  # another worker took the row over (our lease ran out)
                return False
            enqueue_many(session, self.channel, row.user_key, payloads, f"{self.channel}:{row.external_id}", now=now)
        return True

    async def finish_patiently(self, row: ClaimedInbound, payloads: list[dict[str, Any]], *,
                               budget_s: float, first_delay_s: float = 0.2) -> bool | None:
        """``finish``, tried again while the database is unreachable (a PostgreSQL restart takes
        seconds): the replies already made are queued as soon as it is back, instead of the
        message waiting for its lease to run out and being answered a second time from scratch.
        True: queued; False: the claim was lost; None: still failing after ``budget_s`` (keep it
        well inside the lease), the recovery loop takes the message up again later."""
        done, queued = await through_outage(
            lambda: self.finish(row, payloads), what=f"{self.channel} message {row.external_id}: queueing its replies",
            gave_up="left for recovery", budget_s=budget_s, first_delay_s=first_delay_s)
        return queued if done else None

    def retry(self, row: ClaimedInbound, delay_s: float, error: str, *, now: datetime | None = None) -> None:
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            session.execute(update(_T).where(self._mine(row)).values(
                status="pending", locked_until=now + timedelta(seconds=delay_s), last_error=error[:500]))

    def prune(self, *, older_than: timedelta = timedelta(days=7), now: datetime | None = None) -> int:
        """Delete processed rows older than ``older_than`` (repeats are still caught by the
        ``processed_updates`` claims while those are kept)."""
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            result = session.execute(delete(_T).where(_T.c.channel == self.channel, _T.c.status == "done",
                                                      _T.c.created_at < now - older_than))
            return int(result.rowcount or 0)

    def counts(self) -> dict[str, int]:
        with self.sessions() as session:
            stmt = select(_T.c.status, func.count()).where(_T.c.channel == self.channel).group_by(_T.c.status)
            return {s: int(n) for s, n in session.execute(stmt)}


class LeaseKeeper:
    """Keeps the leases of the messages this worker holds alive, so that the lease can be short.

    A message is leased to the worker that accepted it until it is answered; if that worker dies,
    another takes the message over once the lease runs out. A short lease makes that quick, but
    a live worker with a backlog (or a slow engine call) must not lose its messages meanwhile:
    while it holds them (``holding``), they are renewed every third of the lease.
    """

    def __init__(self, inbox: InboxStore, lease_s: float) -> None:
        self.inbox = inbox
        self.lease_s = lease_s
        self._held: dict[int, int] = {}

    @contextmanager
    def holding(self, row_id: int) -> Iterator[None]:
        self._held[row_id] = self._held.get(row_id, 0) + 1
        try:
            yield
        finally:
            left = self._held.pop(row_id, 1) - 1
            if left > 0:
                self._held[row_id] = left

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            ids = list(self._held)
            if not ids:
                continue
            try:
                await asyncio.to_thread(self.inbox.renew, ids, lease_s=self.lease_s)
            except Exception as exc:  # noqa: BLE001 - the database is away: the leases may lapse
                log.warning("%s: could not renew %d leases (%s)", self.inbox.channel, len(ids), type(exc).__name__)


@dataclass
class Housekeeping:
    """Periodic deletion of a channel's finished state: dedupe claims (``processed_updates``, all
    channels) older than ``keep_updates_days``, answered inbound rows older than
    ``keep_inbound_days`` and sent or failed outbox rows older than ``keep_outbox_days``.

    ``await maybe_run()`` from a loop that ticks often: it runs at once the first time, then at
    most every ``interval_s`` (per process; several workers doing it is harmless). Each step is one
    indexed ``DELETE``, cheap when there is nothing to delete."""

    sessions: sessionmaker[Session]
    channel: str
    keep_updates_days: float = 7.0
    keep_inbound_days: float = 7.0
    keep_outbox_days: float = 30.0
    interval_s: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    #: Rows deleted by the last run, and how many runs so far (tests, status pages).
    last: dict[str, int] = field(default_factory=dict)
    runs: int = 0

    def __post_init__(self) -> None:
        self._next_at: float | None = None

    def due(self) -> bool:
        return self._next_at is None or self.clock() >= self._next_at

    def run(self, now: datetime | None = None) -> dict[str, int]:
        """Prune now (synchronous; call it in a thread from async code)."""
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            updates = prune_processed_updates(session, older_than=timedelta(days=self.keep_updates_days), now=now)
        inbound = InboxStore(self.sessions, self.channel).prune(older_than=timedelta(days=self.keep_inbound_days),
                                                                now=now)
        outbox = OutboxStore(self.sessions).prune(older_than=timedelta(days=self.keep_outbox_days), now=now,
                                                  channel=self.channel)
        self.last = {"processed_updates": updates, "inbound": inbound, "outbox": outbox}
        self.runs += 1
        if updates or inbound or outbox:
            log.info("%s housekeeping: old rows deleted", self.channel, extra=self.last)
        return self.last

    async def maybe_run(self) -> dict[str, int] | None:
        """Prune if due; None when it was not (errors are logged, and retried next interval)."""
        if not self.due():
            return None
        self._next_at = self.clock() + self.interval_s
        try:
            return await asyncio.to_thread(self.run)
        except Exception:
            log.exception("%s housekeeping failed", self.channel)
            return None


__all__ = ["RATE_LIMIT_PREFIX", "ClaimedInbound", "Housekeeping", "InboxStore", "LeaseKeeper", "NewInbound"]
