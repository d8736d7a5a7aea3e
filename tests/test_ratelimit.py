"""Per-user rate limits: the policy, the in-memory limiter, the database-backed check on the inbox
(shared by all workers), and both messaging channels end to end (one polite notice, then silence).
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.context import build_context
from bot.inbox import InboxStore, NewInbound
from bot.ratelimit import RATE_LIMITED_EN, RATE_LIMITED_ZH, RateLimiter, RatePolicy, looks_english
from handlers.messages import Incoming, Reply
from storage.db import make_session_factory
from storage.models import InboundMessage, ProcessedUpdate
from storage.types import utcnow

from channel_support import count_rows as _count  # noqa: E402
from channel_support import serve_telegram  # noqa: E402
from channel_support import settled as _settled  # noqa: E402

pytest_plugins = ("storage.testing",)  # db_engine, sqlite_template


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the policy and the in-memory limiter ---------------------------------------------------------


def test_policy_allows_a_burst_then_the_sustained_rate():
    policy = RatePolicy(per_minute=20, burst=8, queue_cap=0)
    accepted: list[float] = []
    decisions = []
    for _ in range(10):  # ten at once
        d = policy.decide(accepted, 0.0)
        decisions.append(d)
        if d == "ok":
            accepted.append(0.0)
    assert decisions[:8] == ["ok"] * 8 and decisions[8] != "ok"
    assert not policy.conforms(accepted, 2.9)  # one message costs 60/20 = 3 s
    assert policy.conforms(accepted, 3.0)
    # steady use at the sustained rate is never limited
    steady = [i * 3.0 for i in range(40)]
    assert all(policy.conforms(steady[:i], steady[i]) for i in range(40))


def test_policy_queue_cap_and_warning_once():
    policy = RatePolicy(per_minute=20, burst=8, queue_cap=10)
    assert policy.decide([], 0.0, pending=9) == "ok"
    assert policy.decide([], 0.0, pending=10) == "warn"
    assert policy.decide([], 0.0, pending=10, warned=True) == "drop"
    assert RatePolicy(per_minute=0, queue_cap=0).decide([0.0] * 100, 0.0, pending=100) == "ok"


def test_policy_from_settings_reads_optional_knobs():
    class S:
        rate_limit_per_minute = 30
        rate_limit_burst = 3

    assert RatePolicy.from_settings(S()) == RatePolicy(per_minute=30, burst=3, queue_cap=10)
    assert RatePolicy.from_settings(object()) == RatePolicy()


def test_limiter_warns_once_then_drops_until_the_window_frees():
    clock = Clock()
    limiter = RateLimiter(per_minute=20, burst=8, clock=clock)
    got = [limiter.check("web", "u1") for _ in range(60)]
    assert got[:8] == ["ok"] * 8 and got[8] == "warn" and set(got[9:]) == {"drop"}
    assert limiter.check("web", "u2") == "ok"  # per user
    assert limiter.check("telegram", "u1") == "ok"  # and per channel
    clock.now += 3.0  # one message's worth of allowance is back
    assert limiter.check("web", "u1") == "ok"
    assert limiter.check("web", "u1") == "warn"  # a new episode: warned again, once
    assert limiter.check("web", "u1") == "drop"
    clock.now += 3600
    assert [limiter.check("web", "u1") for _ in range(8)] == ["ok"] * 8
    limiter.reset("web")
    assert [limiter.check("web", "u1") for _ in range(8)] == ["ok"] * 8


def test_limiter_forgets_idle_users():
    clock = Clock()
    limiter = RateLimiter(per_minute=20, burst=8, clock=clock, max_users=10)
    for i in range(10):
        limiter.check("web", f"u{i}")
    clock.now += 3600
    limiter.check("web", "late")
    assert len(limiter) <= 2


def test_language_of_the_notice():
    assert looks_english("How often do the joint meetings take place?")
    assert not looks_english("联席会议多久开一次？") and not looks_english("转诊 refer") and not looks_english("")


# -- the database-backed check on the inbox (SQLite and PostgreSQL) ---------------------------------


@pytest.fixture
def sessions(db_engine):
    return make_session_factory(db_engine)


def _items(user: str, start: int, n: int) -> list[NewInbound]:
    return [NewInbound(f"m:{user}:{i}", user, {"Content": f"问题{i}"}) for i in range(start, start + n)]


def test_inbox_warns_once_then_drops_and_frees_up_again(sessions):
    inbox = InboxStore(sessions, "wecom", rate_policy=RatePolicy(per_minute=20, burst=8, queue_cap=0))
    now = utcnow()
    ids = inbox.accept_batch(_items("u1", 0, 30), lease_s=60, now=now)  # one burst, one batch
    assert all(ids[:9]) and ids[9:] == [None] * 21
    # separate batches (other workers) see the same history
    assert inbox.accept_batch(_items("u1", 30, 5), lease_s=60, now=now + timedelta(seconds=1)) == [None] * 5
    assert inbox.accept_batch(_items("u2", 0, 1), lease_s=60, now=now)[0] is not None  # others are not limited
    with sessions() as s:
        rows = s.scalars(select(InboundMessage).where(InboundMessage.user_key == "u1")
                         .order_by(InboundMessage.id)).all()
        claims = s.scalar(select(func.count()).select_from(ProcessedUpdate).where(ProcessedUpdate.channel == "wecom"))
    assert [r.external_id for r in rows] == [f"m:u1:{i}" for i in range(8)] + ["rl:m:u1:8"]
    assert claims == 36  # dropped messages keep their dedupe claim: a redelivery is not answered later
    claimed = [inbox.claim(r.id, lease_s=60) for r in rows]
    assert [c.rate_limited for c in claimed] == [False] * 8 + [True]
    # a redelivery of a dropped message stays dropped; three seconds on, one more fits
    later = now + timedelta(seconds=3.5)
    assert inbox.accept_batch(_items("u1", 20, 1), lease_s=60, now=later) == [None]
    assert inbox.accept_batch(_items("u1", 40, 3), lease_s=60, now=later)[0] is not None
    assert inbox.rate_limit_counts == {"warn": 2, "drop": 27}


def test_inbox_queue_cap_counts_unprocessed_messages(sessions):
    inbox = InboxStore(sessions, "telegram", rate_policy=RatePolicy(per_minute=0, queue_cap=3))
    now = utcnow()
    first = inbox.accept_batch(_items("c1", 0, 5), lease_s=60, now=now)
    assert all(first[:4]) and first[4] is None  # three queued, the fourth gets the notice
    for row_id in first[:2]:  # two are answered: room for two more
        row = inbox.claim(row_id, lease_s=60, now=now)
        assert inbox.finish(row, [], now=now)
    later = now + timedelta(hours=2)  # long after: the queue cap holds however old the backlog is
    assert [bool(i) for i in inbox.accept_batch(_items("c1", 10, 4), lease_s=60, now=later)] == \
        [True, True, True, False]  # two accepted, then a new notice (one since the last accepted)


def test_in_a_group_the_limit_is_per_member_not_per_chat(sessions):
    """A Telegram group's messages are stored under the group (replies go there, in order), but
    one member flooding it must not silence the others."""
    inbox = InboxStore(sessions, "telegram", rate_policy=RatePolicy(per_minute=20, burst=8, queue_cap=0))
    now = utcnow()
    flood = [NewInbound(f"g:{i}", "-100500", {"text": "问题"}, sender_key="7001") for i in range(20)]
    ids = inbox.accept_batch(flood, lease_s=60, now=now)
    assert sum(bool(i) for i in ids) == 9  # 8 and the notice
    other = inbox.accept_batch([NewInbound("g:x", "-100500", {"text": "我的问题"}, sender_key="7002")],
                               lease_s=60, now=now)
    assert other[0] is not None
    # the flooding member is limited in their private chat with the bot too
    assert inbox.accept_batch([NewInbound("p:1", "7001", {"text": "私聊"})], lease_s=60, now=now) == [None]


def test_disabled_policy_accepts_everything(sessions):
    inbox = InboxStore(sessions, "wecom", rate_policy=RatePolicy(per_minute=0, queue_cap=0))
    assert all(inbox.accept_batch(_items("u1", 0, 50), lease_s=60))
    assert all(InboxStore(sessions, "web").accept_batch(_items("u1", 0, 50), lease_s=60))


# -- end to end ------------------------------------------------------------------------------------


class Counting:
    """A stand-in engine that answers every message (and counts them)."""

    def __init__(self) -> None:
        self.seen: list[Incoming] = []

    def handle(self, msg: Incoming) -> list[Reply]:
        self.seen.append(msg)
        return [Reply(text=f"收到：{msg.text or msg.choice}")]


def _ctx(tmp_path: Path, sqlite_template: Path, settings_fn, api_base: str):
    db = tmp_path / "rl.sqlite3"
    shutil.copyfile(sqlite_template, db)
    return build_context(settings_fn(tmp_path / "var", api_base, database_url=f"sqlite:///{db}"))




async def test_telegram_flood_from_one_user_gets_one_notice_then_silence(tmp_path, sqlite_template):
    from tests.telegram_support import FakeTelegram, fast_options, telegram_settings, text_update

    fake = await FakeTelegram().start()
    ctx = _ctx(tmp_path, sqlite_template, telegram_settings, fake.url)
    engine = Counting()
    try:
        async with serve_telegram(ctx, engine, fast_options()) as channel:
            for i in range(60):  # 60 updates from one user at once
                fake.push(text_update(fake.next_update_id(), 4242, f"问题 {i}"))
            fake.push(text_update(fake.next_update_id(), 4343, "别人的问题"))
            await fake.wait_consumed()
            await fake.wait_sent(4242, 9)
            await fake.wait_sent(4343, 1)  # the other user is answered too (not held behind the flood)
            await _settled(channel, ctx)
            await asyncio.sleep(0.3)
        sent = [s.text for s in fake.to(4242)]
        assert len(sent) == 9 and sent.count(RATE_LIMITED_ZH) == 1
        assert [m.text for m in engine.seen if m.user_key == "4242"] == [f"问题 {i}" for i in range(8)]
        assert [s.text for s in fake.to(4343)] == ["收到：别人的问题"]
        assert _count(ctx, InboundMessage) == 10  # 8 + the notice + the other user; 51 dropped
    finally:
        ctx.close()
        await fake.close()


async def test_telegram_notice_is_english_for_english_users(tmp_path, sqlite_template):
    from tests.telegram_support import FakeTelegram, fast_options, telegram_settings, text_update

    fake = await FakeTelegram().start()
    ctx = _ctx(tmp_path, sqlite_template, telegram_settings, fake.url)
    try:
        options = fast_options(rate_limit=RatePolicy(per_minute=20, burst=2, queue_cap=10))
        async with serve_telegram(ctx, Counting(), options) as channel:
            for i in range(4):
                update = text_update(fake.next_update_id(), 4444, f"question {i}")
                update["message"]["from"]["language_code"] = "en"
                fake.push(update)
            await fake.wait_sent(4444, 3)
            await _settled(channel, ctx)
        assert [s.text for s in fake.to(4444)][-1] == RATE_LIMITED_EN and len(fake.to(4444)) == 3
    finally:
        ctx.close()
        await fake.close()


async def test_wecom_burst_from_one_user_is_acknowledged_fast_and_limited(tmp_path, sqlite_template):
    from tests.wecom_support import FakeWeCom, WeComSender, fast_options, next_msg_id, serve_app, text_xml, \
        wecom_settings

    fake = await FakeWeCom().start()
    ctx = _ctx(tmp_path, sqlite_template, wecom_settings, fake.url)
    engine = Counting()
    try:
        async with serve_app(ctx, engine, fast_options()) as (url, channel), aiohttp.ClientSession() as http:
            wecom = WeComSender(url)
            results = await asyncio.gather(*(wecom.post(http, text_xml("flooder", f"问题{i}", next_msg_id()))
                                             for i in range(30)))
            assert all(status == 200 for status, _b, _s in results)
            assert max(seconds for _st, _b, seconds in results) < 1.0
            await fake.wait_delivered("flooder", 9)
            await _settled(channel, ctx)
            await asyncio.sleep(0.3)
        texts = [d.text for d in fake.to("flooder")]
        assert len(texts) == 9 and texts.count(RATE_LIMITED_ZH) == 1
        assert len(engine.seen) == 8
    finally:
        ctx.close()
        await fake.close()
