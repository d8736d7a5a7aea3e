"""The scheduler: one leader at a time, a clock you can replace, due work → notifications.

``Scheduler.tick(now)`` is one pass: take (or renew) the leader lease in the database, then queue
what is due at ``now`` — meeting reminders, policy-compliance warnings, quota nudges — each under
its unique key in the reminder ledger, in the same transaction as its outbox rows. A process that
does not hold the lease does nothing; a leader that dies loses the lease after
``scheduler_lease_s`` and another process takes over. Because the ledger, not the process,
remembers what was sent, a restart never repeats a reminder and never loses one that is still
relevant (``handlers.meetings.due_reminders`` decides which are).

``run()`` ticks every ``scheduler_interval_s`` seconds (15 by default: a reminder goes out within
a minute of its moment). It runs inside ``yilian serve`` and alone as ``yilian scheduler``.
Tests call ``tick`` with a simulated clock: a year of reminders in seconds.

Why not APScheduler: its job stores cannot be shared by several processes (its FAQ), and the work
here is not a set of timers but "what is due now", derived from the meetings and records in the
database — a single periodic pass under a lease does that with nothing to keep in sync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from handlers import meeting_service, quota_service
from handlers import meetings as meeting_rules
from handlers import quotas
from storage import meetings as store
from storage.types import utcnow

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"


@dataclass
class TickResult:
    leader: bool
    reminders: int = 0
    warnings: int = 0
    quota: int = 0


class Scheduler:
    def __init__(self, ctx: Any, *, clock: Callable[[], datetime] = utcnow, holder: str | None = None) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.offsets = meeting_rules.parse_offsets(settings.reminder_offsets)
        self.quiet = meeting_rules.QuietHours.parse(settings.quiet_hours)
        self.meeting_rules = meeting_rules.load_meeting_rules(settings.meeting_rules)
        self.quota_rules = quotas.load_rules(settings.quota_rules)
        self.margin = settings.quota_pace_margin
        self.lease = timedelta(seconds=settings.scheduler_lease_s)
        self.interval = settings.scheduler_interval_s

    def tick(self, now: datetime | None = None) -> TickResult:
        now = now or self.clock()
        with self.ctx.sessions.begin() as session:
            if not store.acquire_lease(session, LEASE_NAME, self.holder, now, self.lease):
                return TickResult(leader=False)
        result = TickResult(leader=True)
        router = self.ctx.router
        # Each kind of work in its own transaction: a failure in one does not hold back the others.
        for name, work in (
            ("reminders", lambda s: meeting_service.send_due_reminders(s, router, now, self.offsets, self.quiet)),
            ("warnings", lambda s: meeting_service.send_compliance_warnings(s, router, now, self.meeting_rules,
                                                                            self.quiet)),
            ("quota", lambda s: quota_service.send_quota_reminders(s, router, now, self.quota_rules, self.margin,
                                                                   self.quiet)),
        ):
            try:
                with self.ctx.sessions.begin() as session:
                    setattr(result, name, work(session))
            except Exception:
                log.exception("scheduler work failed; retried at the next tick", extra={"work": name})
        if result.reminders or result.warnings or result.quota:
            log.info("scheduler tick", extra={"reminders": result.reminders, "warnings": result.warnings,
                                              "quota": result.quota})
        return result

    def release(self) -> None:
        with self.ctx.sessions.begin() as session:
            store.release_lease(session, LEASE_NAME, self.holder)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        log.info("scheduler started", extra={"holder": self.holder})
        try:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.tick)
                except Exception:
                    log.exception("scheduler tick failed")
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)
                except TimeoutError:
                    pass
        finally:
            await asyncio.to_thread(self.release)


__all__ = ["LEASE_NAME", "Scheduler", "TickResult"]
