"""Per-user rate limits: a sustained rate with a burst allowance, and a cap on queued messages.

One policy for every channel (``RatePolicy``): a user may send ``per_minute`` messages a minute on
average and up to ``burst`` back to back (a token bucket, computed as GCRA from the times of the
user's accepted messages, so that the state can live in the database as well as in memory); and at
most ``queue_cap`` of the user's messages may wait unprocessed. A message over either limit gets
one polite notice (``"warn"``) — the first one after the user's last accepted message — and is
otherwise dropped (``"drop"``: not answered, not queued) until the bucket has room again.

Two ways to apply it:

* ``RateLimiter`` keeps the state in process memory; for a channel served by one process, or
  where per-process limits are good enough (the web chat)::

      limiter = RateLimiter(per_minute=20, burst=8)
      match limiter.check("web", user_key):
          case "ok": ...            # handle the message
          case "warn": ...          # answer rate_limit_notice(english) instead
          case "drop": ...          # answer nothing (or an empty 429)

* ``RatePolicy.decide`` is the pure decision on given history; ``bot.inbox.InboxStore.accept_batch``
  uses it on the user's rows in ``inbound_messages``, so that the limit holds across all workers of
  WeCom and Telegram (each callback may reach any worker).

Settings (``RatePolicy.from_settings``): ``YILIAN_RATE_LIMIT_PER_MINUTE`` (20; 0 turns the rate
limit off), ``YILIAN_RATE_LIMIT_BURST`` (8), ``YILIAN_RATE_LIMIT_QUEUE_CAP`` (10; 0 = no cap).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

Decision = Literal["ok", "warn", "drop"]

RATE_LIMITED_ZH = "您发送得太快了，请稍后再试。"
RATE_LIMITED_EN = "You are sending messages too quickly. Please try again in a moment."

_CJK_RE = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
_LATIN_RE = re.compile(r"[A-Za-z]")


def looks_english(text: str | None) -> bool:
    """True for text with Latin letters and no Chinese characters (the user writes English)."""
    return bool(text) and bool(_LATIN_RE.search(text or "")) and not _CJK_RE.search(text or "")


def rate_limit_notice(english: bool = False) -> str:
    """The one notice a user gets when going over the limit."""
    return RATE_LIMITED_EN if english else RATE_LIMITED_ZH


@dataclass(frozen=True)
class RatePolicy:
    #: Sustained messages per minute per user; 0 = no rate limit.
    per_minute: int = 20
    #: Messages a user may send back to back before the sustained rate applies (≥ 1).
    burst: int = 8
    #: Messages of one user that may wait unprocessed; 0 = no cap.
    queue_cap: int = 10

    @classmethod
    def from_settings(cls, settings: Any) -> RatePolicy:
        return cls(per_minute=int(getattr(settings, "rate_limit_per_minute", cls.per_minute)),
                   burst=int(getattr(settings, "rate_limit_burst", cls.burst)),
                   queue_cap=int(getattr(settings, "rate_limit_queue_cap", cls.queue_cap)))

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0 or self.queue_cap > 0

    @property
    def interval_s(self) -> float:
        """Seconds one message costs at the sustained rate."""
        return 60.0 / self.per_minute if self.per_minute > 0 else 0.0

    @property
    def lookback_s(self) -> float:
        """How far back accepted messages matter (older ones cannot change a decision, bar a
        negligible rounding in the bucket's favour of the user)."""
        return max(60.0, 2 * max(1, self.burst) * self.interval_s)

    def conforms(self, accepted: Iterable[float], now: float) -> bool:
        """Whether one more message at ``now`` fits the bucket, given the times (seconds, any
        epoch) of the user's accepted messages: GCRA with emission interval ``60/per_minute`` and
        tolerance ``(burst - 1)`` intervals."""
        if self.per_minute <= 0:
            return True
        t = self.interval_s
        tolerance = (max(1, self.burst) - 1) * t
        tat = float("-inf")  # theoretical arrival time of the next message
        for at in sorted(accepted):
            tat = max(tat, at) + t
        return now >= tat - tolerance - 1e-9

    def decide(self, accepted: Iterable[float], now: float, *, pending: int = 0, warned: bool = False) -> Decision:
        """``ok`` when the message fits the bucket and fewer than ``queue_cap`` of the user's
        messages wait (``pending``); otherwise ``warn`` unless the user has been warned since their
        last accepted message (``warned``), then ``drop``."""
        if self.conforms(accepted, now) and (self.queue_cap <= 0 or pending < self.queue_cap):
            return "ok"
        return "drop" if warned else "warn"


@dataclass
class _UserState:
    accepted: deque[float]
    warned: bool = False


class RateLimiter:
    """In-memory ``RatePolicy`` per ``(channel, user_key)`` (thread-safe). Per process: with several
    workers each has its own allowance — the channels that need a shared one count rows in the
    database instead (``bot.inbox``)."""

    def __init__(self, per_minute: int = 20, burst: int = 8, clock: Callable[[], float] = time.monotonic, *,
                 queue_cap: int = 0, max_users: int = 100_000) -> None:
        self.policy = RatePolicy(per_minute=per_minute, burst=burst, queue_cap=queue_cap)
        self._clock = clock
        self._users: dict[tuple[str, str], _UserState] = {}
        self._lock = threading.Lock()
        self._max_users = max_users
        self._checks = 0

    @classmethod
    def from_settings(cls, settings: Any, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        policy = RatePolicy.from_settings(settings)
        return cls(policy.per_minute, policy.burst, clock, queue_cap=policy.queue_cap)

    def check(self, channel: str, user_key: str, *, pending: int = 0) -> Decision:
        """Count one message of ``user_key`` on ``channel`` and say what to do with it.

        ``pending``: how many of the user's earlier messages are still being handled (for the queue
        cap; callers that handle one message at a time per user pass 0)."""
        if not self.policy.enabled:
            return "ok"
        now = self._clock()
        key = (channel, user_key)
        with self._lock:
            self._checks += 1
            if self._checks % 1000 == 0 or len(self._users) >= self._max_users:
                self._sweep(now)
            state = self._users.get(key)
            if state is None:
                state = self._users[key] = _UserState(deque())
            horizon = now - self.policy.lookback_s
            while state.accepted and state.accepted[0] < horizon:
                state.accepted.popleft()
            decision = self.policy.decide(state.accepted, now, pending=pending, warned=state.warned)
            if decision == "ok":
                state.accepted.append(now)
                state.warned = False
            elif decision == "warn":
                state.warned = True
            return decision

    def reset(self, channel: str | None = None, user_key: str | None = None) -> None:
        """Forget one user (both given), one channel, or everybody."""
        with self._lock:
            if channel is None:
                self._users.clear()
            else:
                for key in [k for k in self._users if k[0] == channel and user_key in (None, k[1])]:
                    del self._users[key]

    def _sweep(self, now: float) -> None:
        horizon = now - self.policy.lookback_s
        for key in [k for k, s in self._users.items() if not s.accepted or s.accepted[-1] < horizon]:
            del self._users[key]

    def __len__(self) -> int:
        return len(self._users)


__all__ = ["RATE_LIMITED_EN", "RATE_LIMITED_ZH", "Decision", "RateLimiter", "RatePolicy", "looks_english",
           "rate_limit_notice"]
