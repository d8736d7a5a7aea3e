"""The persistent outbox on SQLite and PostgreSQL: claims, order, leases, pacing, dedupe.

The PostgreSQL variants run in a private schema at 127.0.0.1:5432 (db ``test``) and are skipped
with the reason when the server cannot be reached (``storage.testing.db_engine``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.outbox import DeliveryError, OutboxItem, OutboxOptions, OutboxSender, OutboxStore, enqueue, enqueue_many
from storage.db import make_session_factory
from storage.models import OutboxMessage
from storage.types import utcnow

pytest_plugins = ("storage.testing",)  # db_engine: SQLite file and PostgreSQL schema


@pytest.fixture
def sessions(db_engine):
    return make_session_factory(db_engine)


def _queue(sessions, plan: dict[str, int]) -> None:
    with sessions.begin() as s:
        for part in range(max(plan.values())):
            for user, n in plan.items():
                if part < n:
                    enqueue(s, "wecom", user, {"msgtype": "text", "text": {"content": f"{user}-{part}"}},
                            f"t:{user}:{part}")


def _part(item: OutboxItem) -> int:
    return int(item.payload["text"]["content"].rsplit("-", 1)[1])


def test_enqueue_is_idempotent_per_dedupe_key(sessions):
    with sessions.begin() as s:
        assert enqueue(s, "wecom", "u1", {"msgtype": "text"}, "k1") is True
        assert enqueue(s, "wecom", "u1", {"msgtype": "text"}, "k1") is False
        assert enqueue_many(s, "wecom", "u1", [{"a": 1}, {"a": 2}], "answer:9") == 2
        assert enqueue_many(s, "wecom", "u1", [{"a": 1}, {"a": 2}], "answer:9") == 0
    with sessions() as s:
        assert len(s.scalars(select(OutboxMessage)).all()) == 3


def test_one_message_in_flight_per_recipient_and_parts_in_order(sessions):
    store = OutboxStore(sessions)
    _queue(sessions, {"a": 3, "b": 2})
    first = store.claim(10, lease_s=30)
    assert sorted((i.recipient, _part(i)) for i in first) == [("a", 0), ("b", 0)]
    assert store.claim(10, lease_s=30) == []  # both recipients have a message in flight
    a0 = next(i for i in first if i.recipient == "a")
    assert store.mark_retry(a0, 60, "HTTP 500")  # a's head waits for its retry; a-1 must not overtake
    b0 = next(i for i in first if i.recipient == "b")
    assert store.mark_sent(b0)
    [b1] = store.claim(10, lease_s=30)
    assert (b1.recipient, _part(b1)) == ("b", 1)
    assert store.mark_failed(b1, "bad user")  # given up: does not block what follows (nothing)
    later = utcnow() + timedelta(seconds=61)
    [retry] = store.claim(10, lease_s=30, now=later)
    assert (retry.recipient, _part(retry), retry.attempts, retry.is_retry) == ("a", 0, 2, True)
    store.mark_sent(retry)
    assert [_part(i) for i in store.claim(10, lease_s=30, now=later)] == [1]


def test_expired_lease_is_reclaimed_and_the_old_holder_cannot_record(sessions):
    store = OutboxStore(sessions)
    _queue(sessions, {"a": 1})
    [held] = store.claim(5, lease_s=30)
    assert store.claim(5, lease_s=30) == []
    [taken_over] = store.claim(5, lease_s=30, now=utcnow() + timedelta(seconds=31))  # the holder died
    assert taken_over.id == held.id and taken_over.attempts == 2
    assert store.mark_sent(held) is False  # the dead worker's late result is ignored
    assert store.mark_sent(taken_over) is True
    assert store.counts() == {"sent": 1}


def test_pacing_per_recipient_per_minute(sessions):
    store = OutboxStore(sessions)
    _queue(sessions, {"a": 4, "b": 1})
    now = utcnow()
    for item in store.claim(5, lease_s=30, per_minute=2, channels=["wecom"], now=now):  # a-0, b-0
        store.mark_sent(item, now=now)
    [a1] = store.claim(5, lease_s=30, per_minute=2, now=now)
    store.mark_sent(a1, now=now)
    # a has had 2 messages in the last minute: its third waits; b is not held up by a
    assert store.claim(5, lease_s=30, per_minute=2, now=now + timedelta(seconds=30)) == []
    [third] = store.claim(5, lease_s=30, per_minute=2, now=now + timedelta(seconds=61))
    assert (third.recipient, _part(third)) == ("a", 2)
    assert store.claim(5, lease_s=30, channels=["telegram"], now=now + timedelta(seconds=61)) == []


def test_concurrent_workers_send_each_message_once_in_order(sessions):
    """Four workers (threads, own connections) drain 60 messages to 6 recipients."""
    store = OutboxStore(sessions)
    plan = {f"user{i}": 10 for i in range(6)}
    _queue(sessions, plan)
    sent: dict[str, list[int]] = defaultdict(list)
    claimed_ids: list[int] = []
    in_flight: set[str] = set()
    guard = threading.Lock()
    problems: list[str] = []

    def worker() -> None:
        idle = 0
        while idle < 5:
            items = store.claim(3, lease_s=30)
            if not items:
                idle += 1
                time.sleep(0.005)
                continue
            idle = 0
            for item in items:
                with guard:
                    if item.recipient in in_flight:
                        problems.append(f"two messages in flight to {item.recipient}")
                    in_flight.add(item.recipient)
                    claimed_ids.append(item.id)
                    sent[item.recipient].append(_part(item))
                time.sleep(0.001)  # "sending"
                with guard:
                    in_flight.discard(item.recipient)
                assert store.mark_sent(item)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert problems == []
    assert len(claimed_ids) == len(set(claimed_ids)) == 60
    assert {user: parts for user, parts in sent.items()} == {user: list(range(10)) for user in plan}
    assert store.counts() == {"sent": 60}


def _down_first(failures: dict, real, statement: str):
    """``real``, failing as a database that is down while ``failures["left"]`` > 0."""
    from sqlalchemy.exc import OperationalError

    def flaky(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError(statement, {}, ConnectionError("server closed the connection"))
        return real(*args, **kwargs)

    return flaky


class FlakyTransport:
    def __init__(self, failures: list[DeliveryError]):
        self.failures = failures
        self.calls: list[tuple[int, int]] = []

    async def send(self, item: OutboxItem) -> str | None:
        self.calls.append((item.id, item.attempts))
        if self.failures:
            raise self.failures.pop(0)
        return None


async def test_sender_retries_transient_errors_and_gives_up_on_permanent_ones(sessions):
    store = OutboxStore(sessions)
    _queue(sessions, {"a": 2, "b": 1})
    transport = FlakyTransport([DeliveryError("HTTP 500", retryable=True),
                                DeliveryError("errcode 40003 invalid userid", retryable=False)])
    sender = OutboxSender(store, {"wecom": transport},
                          OutboxOptions(poll_interval_s=0.02, backoff_base_s=0.01, backoff_max_s=0.02))
    await sender.start()
    deadline = time.monotonic() + 10
    while store.counts().get("pending", 0) + store.counts().get("sending", 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await sender.stop()
    counts = store.counts()
    assert counts == {"sent": 2, "failed": 1}
    with sessions() as s:
        failed = s.scalars(select(OutboxMessage).where(OutboxMessage.status == "failed")).one()
    assert "40003" in failed.last_error


async def test_a_sent_message_is_recorded_once_the_database_is_back_and_not_sent_again(sessions, monkeypatch):
    """The database restarts between the send and its record: the record is retried, instead of
    the row staying "sending" until its lease runs out and the message going out a second time."""
    store = OutboxStore(sessions)
    _queue(sessions, {"a": 2})
    failures = {"left": 3}
    monkeypatch.setattr(store, "mark_sent", _down_first(failures, store.mark_sent, "UPDATE outbox_messages"))
    transport = FlakyTransport([])
    # a short lease: without the retry, the row would be claimed and sent again within the test
    sender = OutboxSender(store, {"wecom": transport}, OutboxOptions(poll_interval_s=0.02, lease_s=3.0))
    await sender.start()
    deadline = time.monotonic() + 10
    while store.counts() != {"sent": 2} and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(3.5)  # past the lease: nothing is claimed again
    await sender.stop()
    assert store.counts() == {"sent": 2} and failures["left"] == 0
    assert [attempts for _, attempts in transport.calls] == [1, 1]


def test_backoff_grows_and_is_capped():
    sender = OutboxSender(OutboxStore(None), {}, OutboxOptions(backoff_base_s=2, backoff_max_s=60))  # type: ignore[arg-type]
    assert 1.6 <= sender.backoff_s(1) <= 2.4
    assert 12.8 <= sender.backoff_s(4) <= 19.2
    assert sender.backoff_s(30) <= 72
    assert sender.backoff_s(1, retry_after_s=30) >= 30


# ------------------------------------------------------------------------------------------------
# accepted inbound messages (the acknowledgement path and crash recovery)


def test_inbox_accepts_each_message_once_and_recovers_abandoned_ones(sessions):
    from bot.inbox import InboxStore, NewInbound

    inbox = InboxStore(sessions, "wecom")
    msg = NewInbound("msg:1", "u1", {"MsgType": "text", "Content": "你好"})
    other = NewInbound("msg:2", "u2", {"MsgType": "text", "Content": "在吗"})
    first, dup_in_batch, second = inbox.accept_batch([msg, msg, other], lease_s=30)
    assert first is not None and second is not None and dup_in_batch is None
    assert inbox.accept_batch([msg], lease_s=30) == [None]  # WeCom's retry

    row = inbox.claim(first, lease_s=30)
    assert row is not None and inbox.claim(first, lease_s=30) is None
    assert inbox.claim_due(10, lease_s=30) == []  # msg:2 is still within its acceptance lease
    reply = [{"msgtype": "text", "text": {"content": "您好"}}]
    assert inbox.finish(row, reply)
    assert inbox.finish(row, reply) is False  # already done: nothing queued twice

    later = utcnow() + timedelta(seconds=31)
    [abandoned] = inbox.claim_due(10, lease_s=30, now=later)  # its worker died before processing it
    assert abandoned.external_id == "msg:2" and abandoned.attempts == 1
    # ... and the worker that picked it up dies too: a third takes over, the second's result is void
    [again] = inbox.claim_due(10, lease_s=30, now=later + timedelta(seconds=31))
    assert again.external_id == "msg:2" and again.attempts == 2
    assert inbox.finish(abandoned, reply) is False
    assert inbox.finish(again, reply) and inbox.counts() == {"done": 2}
    with sessions() as s:
        keys = sorted(s.scalars(select(OutboxMessage.dedupe_key)))
    assert keys == ["wecom:msg:1:0", "wecom:msg:2:0"]


def test_answered_messages_are_not_kept_and_old_rows_are_pruned(sessions):
    from bot.inbox import InboxStore, NewInbound

    inbox = InboxStore(sessions, "wecom")
    [row_id] = inbox.accept_batch([NewInbound("msg:9", "u9", {"Content": "患者张三，身份证110101199003071234"})],
                                  lease_s=30)
    row = inbox.claim(row_id, lease_s=30)
    assert inbox.finish(row, [])
    with sessions() as s:
        from storage.models import InboundMessage

        assert s.scalars(select(InboundMessage.payload)).one() == {}
    assert inbox.prune(now=utcnow() + timedelta(days=6)) == 0
    assert inbox.prune(now=utcnow() + timedelta(days=8)) == 1


async def test_replies_are_queued_as_soon_as_the_database_is_back(sessions, monkeypatch):
    """A database restart while the replies are being queued: they are queued when it answers
    again (seconds), not after the message's lease has run out."""
    from bot.inbox import InboxStore, NewInbound

    inbox = InboxStore(sessions, "wecom")
    [row_id] = inbox.accept_batch([NewInbound("msg:db", "u1", {"MsgType": "text", "Content": "你好"})], lease_s=60)
    row = inbox.claim(row_id, lease_s=60)
    failures = {"left": 3}
    monkeypatch.setattr(inbox, "finish", _down_first(failures, inbox.finish, "UPDATE inbound_messages"))
    reply = [{"msgtype": "text", "text": {"content": "您好"}}]
    started = time.monotonic()
    assert await inbox.finish_patiently(row, reply, budget_s=5, first_delay_s=0.05) is True
    assert time.monotonic() - started < 2 and failures["left"] == 0
    with sessions() as s:
        assert list(s.scalars(select(OutboxMessage.dedupe_key))) == ["wecom:msg:db:0"]
    # still down after the budget: left to the recovery loop, nothing queued
    [other] = inbox.accept_batch([NewInbound("msg:db2", "u2", {"MsgType": "text", "Content": "在吗"})], lease_s=60)
    failures["left"] = 100
    assert await inbox.finish_patiently(inbox.claim(other, lease_s=60), reply, budget_s=0.3, first_delay_s=0.05) is None
    with sessions() as s:
        assert len(list(s.scalars(select(OutboxMessage.dedupe_key)))) == 1


async def test_a_live_worker_keeps_its_messages_and_a_dead_ones_are_taken_over(sessions):
    """Leases are short (a dead worker's messages are answered soon) because a live worker
    renews the leases of what it holds, however long its backlog."""
    from bot.inbox import InboxStore, LeaseKeeper, NewInbound

    inbox = InboxStore(sessions, "wecom")
    held, dropped = inbox.accept_batch([NewInbound("msg:held", "u1", {"MsgType": "text", "Content": "a"}),
                                        NewInbound("msg:dropped", "u2", {"MsgType": "text", "Content": "b"})],
                                       lease_s=0.6)
    keeper = LeaseKeeper(inbox, lease_s=0.6)
    task = asyncio.create_task(keeper.run())
    try:
        with keeper.holding(held):
            await asyncio.sleep(1.5)  # well past the first lease: renewed twice meanwhile
            taken = inbox.claim_due(10, lease_s=30)
            assert [r.external_id for r in taken] == ["msg:dropped"]  # the one nobody renewed
        await asyncio.sleep(1.0)  # no longer held (its worker stopped renewing): up for grabs
        assert [r.external_id for r in inbox.claim_due(10, lease_s=30)] == ["msg:held"]
    finally:
        task.cancel()
    assert inbox.renew([held, dropped], lease_s=30) == 2  # renewing what another now holds just extends it
