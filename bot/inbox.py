"""Accepted inbound messages of every channel (``inbound_messages``): stored before the platform is acknowledged,
processed once, recovered after a crash.

``accept_batch`` is the acknowledgement path: the dedupe claims (the ``processed_updates`` rows of
``claim_update``, shared with the other channels) and the rows are written in one transaction for a
whole batch of callbacks (group commit: under a burst, 200 callbacks cost a handful of
transactions, not 200). A duplicate
delivery (WeCom retries after 5 s, three times in all) finds its claim taken and is only
acknowledged again.

Processing claims a row with a lease (``locked_until``); ``finish`` queues the replies in the
outbox *and* marks the row done in one transaction, so a reply is queued exactly once even if the
row is processed again after a crash (the outbox dedupe keys derive from the row's external id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bot.outbox import enqueue_many
from storage.models import InboundMessage, ProcessedUpdate
from storage.repositories import claim_update
from storage.types import as_utc, utcnow

_T = InboundMessage.__table__
_PU = ProcessedUpdate.__table__


@dataclass(frozen=True)
class NewInbound:
    external_id: str
    user_key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ClaimedInbound:
    id: int
    external_id: str
    user_key: str
    payload: dict[str, Any]
    attempts: int


class InboxStore:
    def __init__(self, sessions: sessionmaker[Session], channel: str) -> None:
        self.sessions = sessions
        self.channel = channel

    def accept_batch(self, items: list[NewInbound], *, lease_s: float,
                     now: datetime | None = None) -> list[int | None]:
        """Store new inbound messages; per item the row id, or None for a duplicate.

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
            ids: dict[str, int] = {}
            if fresh:
                rows = session.execute(
                    insert(_T).returning(_T.c.id, _T.c.external_id),
                    [{"channel": self.channel, "external_id": i.external_id, "user_key": i.user_key,
                      "payload": i.payload, "status": "pending", "attempts": 0,
                      "locked_until": now + timedelta(seconds=lease_s), "created_at": now}
                     for i in fresh.values()],
                )
                ids = {r.external_id: r.id for r in rows}
        out: list[int | None] = []
        for item in items:  # the first of several copies in one batch gets the row
            out.append(ids.pop(item.external_id, None))
        return out

    def _accept_one_by_one(self, session: Session, items: list[NewInbound], lease_s: float,
                           now: datetime) -> list[int | None]:  # pragma: no cover - other databases
        out: list[int | None] = []
        for item in items:
            if not claim_update(session, self.channel, item.external_id, now=now):
                out.append(None)
                continue
            row = InboundMessage(channel=self.channel, external_id=item.external_id, user_key=item.user_key,
                                 payload=item.payload, status="pending", attempts=0,
                                 locked_until=now + timedelta(seconds=lease_s), created_at=now)
            session.add(row)
            session.flush()
            out.append(row.id)
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
                .where(_T.c.channel == self.channel, _T.c.status.in_(("pending", "processing")),
                       _T.c.locked_until <= now)
                .order_by(_T.c.id).limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            condition = (_T.c.id.in_(due.scalar_subquery())
                         & or_(_T.c.status == "pending", _T.c.status == "processing") & (_T.c.locked_until <= now))
            rows = self._claim(session, condition, lease_s, now)
        return sorted(rows, key=lambda r: r.id)

    def _mine(self, row: ClaimedInbound) -> Any:
        return (_T.c.id == row.id) & (_T.c.status == "processing") & (_T.c.attempts == row.attempts)

    def finish(self, row: ClaimedInbound, payloads: list[dict[str, Any]], *, now: datetime | None = None) -> bool:
        """Queue the replies and mark the row done, atomically. False if the claim was lost."""
        now = as_utc(now) if now else utcnow()
        with self.sessions.begin() as session:
            # The message itself is not kept once answered (it may name patients): only its key.
            done = session.execute(update(_T).where(self._mine(row)).values(status="done", processed_at=now,
                                                                             last_error=None, payload={}))
            if done.rowcount != 1:  # another worker took the row over (our lease ran out)
                return False
            enqueue_many(session, self.channel, row.user_key, payloads, f"{self.channel}:{row.external_id}", now=now)
        return True

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
        from sqlalchemy import func

        with self.sessions() as session:
            stmt = select(_T.c.status, func.count()).where(_T.c.channel == self.channel).group_by(_T.c.status)
            return {s: int(n) for s, n in session.execute(stmt)}


__all__ = ["ClaimedInbound", "InboxStore", "NewInbound"]
