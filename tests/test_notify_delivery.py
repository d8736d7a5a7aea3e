"""Notifications delivered for real: queued by ``bot.notify.ChannelNotifier`` in the outbox, sent by
the channels' running senders to the fake WeCom API and the fake Bot API (real wechatpy-signed
callbacks, real PTB polling, real SQLite), settled after a press (``update_template_card``,
``editMessageReplyMarkup``), escalated by ``yilian serve``'s loop, and listed in the web inbox of
the signed-in staff member only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from bot.channels import ChannelPlugin
from handlers.engine import ConversationEngine
from handlers.messages import Choice, Outgoing, Reply
from handlers.notifications import notify
from storage import referrals as store
from storage import repositories as repo
from storage.models import Institution, Notification, OutboxMessage, Referral
from storage.types import utcnow
from tests import telegram_support as tgs
from tests import wecom_support as wxs

from channel_support import serve_telegram, settled
from web_support import Browser, login_link_for, sign_in_with_link

pytest_plugins = ("engine_support", "web_support")

ADMIN_TG = 88_801  # admin_zd (秦文博, 张店区人民医院), WeCom userid qinwenbo
LIAISON_TG = 88_802  # liaison_ma_zd (马晓燕, 张店区人民医院), WeCom userid maxiaoyan
PATIENT = "张三丰"


# ------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
async def wx():
    server = await wxs.FakeWeCom().start()
    yield server
    await server.close()


@pytest.fixture
async def tg():
    server = await tgs.FakeTelegram().start()
    yield server
    await server.close()


def wecom_values(api_base: str) -> dict:
    return dict(wecom_corp_id=wxs.CORP_ID, wecom_agent_id=wxs.AGENT_ID, wecom_secret=wxs.SECRET,
                wecom_token=wxs.TOKEN, wecom_aes_key=wxs.AES_KEY, wecom_api_base=api_base)


def telegram_values(api_base: str) -> dict:
    return dict(telegram_token=tgs.TOKEN, telegram_api_base=api_base)


@pytest.fixture
def make_ctx(tmp_path, directory_template):
    """A context on a private copy of the sample directory; several calls share one database
    (several workers)."""
    from engine_support import context_on_copy

    made = []

    def make(**overrides):
        ctx = context_on_copy(directory_template, tmp_path / "var", web_chat=False, **overrides)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def _submitted_referral(ctx, *, overdue: bool) -> tuple[int, str]:
    """dr_liu_zd (沣水中心卫生院) → 张店区人民医院, submitted; due an hour ago or in a day."""
    now = utcnow()
    with ctx.sessions.begin() as s:
        sender = repo.get_staff_by_code(s, "dr_liu_zd")
        receiver = s.scalar(select(Institution).where(Institution.name == "张店区人民医院"))
        r = store.create_referral(s, sender=sender, actor_channel="wecom", now=now - timedelta(hours=30),
                                  direction="up", to_institution_id=receiver.id, patient_name=PATIENT,
                                  patient_sex="男", patient_age=66, diagnosis="社区获得性肺炎", history="发热3天",
                                  reason="疑难病例", urgency="routine")
        due = now - timedelta(hours=1) if overdue else now + timedelta(days=1)
        store.apply_transition(s, r, "submitted", actor=sender.code, channel="wecom", now=now - timedelta(hours=30),
                               submitted_at=now - timedelta(hours=30), due_at=due)
        return r.id, r.number


def _bind(ctx, code: str, telegram_id: int | None = None, last_channel: str | None = None) -> None:
    with ctx.sessions.begin() as s:
        staff = repo.get_staff_by_code(s, code)
        if telegram_id is not None:
            staff.telegram_user_id = telegram_id
        staff.last_channel = last_channel


def _notice_rows(ctx) -> list[OutboxMessage]:
    with ctx.sessions() as s:
        return list(s.scalars(select(OutboxMessage).where(OutboxMessage.dedupe_key.like("notice:%"))
                              .order_by(OutboxMessage.id)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wecom_plugin() -> ChannelPlugin:
    from bot.wecom import setup_wecom

    return ChannelPlugin(name="wecom", enabled=lambda s: s.wecom_enabled,
                         setup_routes=lambda app, c, e: setup_wecom(app, c, e, options=wxs.fast_options()) and None)


async def _until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------------
# routing (ChannelNotifier)


def test_channels_in_order_last_used_first_and_none_without_accounts(make_ctx):
    ctx = make_ctx(**wecom_values("http://127.0.0.1:9/cgi-bin/"), **telegram_values("http://127.0.0.1:9/bot"))
    _bind(ctx, "liaison_ma_zd", LIAISON_TG, last_channel=None)
    reply = Reply("【新的转诊申请】", choices=(Choice("接收", "r:accept:1"),))
    with ctx.sessions.begin() as s:
        ma = repo.get_staff_by_code(s, "liaison_ma_zd")
        assert ctx.router.route(s, ma, Outgoing(ma.id, reply), "k-default") == ["wecom", "telegram"]
        ma.last_channel = "telegram"
        assert ctx.router.route(s, ma, Outgoing(ma.id, reply), "k-tg") == ["telegram", "wecom"]
        ma.last_channel = "web"  # the web is not a chat channel: the default order
        assert ctx.router.route(s, ma, Outgoing(ma.id, reply), "k-web") == ["wecom", "telegram"]
        nobody = repo.get_staff_by_code(s, "dr_liu_zd")
        nobody.wecom_userid = None  # no WeCom account, no Telegram bound
        delivery = notify(s, ctx.router, [Outgoing(nobody.id, Reply("只在网页"), dedupe_key="k-none")])
        assert delivery.channels == {nobody.id: []} and [p.code for p in delivery.unreached] == ["dr_liu_zd"]
    rows = _notice_rows(ctx)
    assert [(r.channel, r.recipient, r.dedupe_key) for r in rows] == [
        ("wecom", "maxiaoyan", "notice:k-default:wecom:0"),
        ("telegram", str(LIAISON_TG), "notice:k-default:telegram:0"),
        ("telegram", str(LIAISON_TG), "notice:k-tg:telegram:0"), ("wecom", "maxiaoyan", "notice:k-tg:wecom:0"),
        ("wecom", "maxiaoyan", "notice:k-web:wecom:0"), ("telegram", str(LIAISON_TG), "notice:k-web:telegram:0"),
    ]
    assert rows[0].payload["msgtype"] == "template_card" and rows[1].payload["keyboard"] == [[["接收", "r:accept:1"]]]


def test_only_channels_this_deployment_runs_are_used(make_ctx):
    # WeCom credentials without the agent id: the WeCom channel does not run, so nothing waits for it
    values = {**wecom_values("http://127.0.0.1:9/cgi-bin/"), "wecom_agent_id": None}
    ctx = make_ctx(**values, **telegram_values("http://127.0.0.1:9/bot"))
    _bind(ctx, "liaison_ma_zd", LIAISON_TG, last_channel="wecom")
    long_key = "referral:1:new:" + "x" * 240  # longer than the outbox key column
    with ctx.sessions.begin() as s:
        ma = repo.get_staff_by_code(s, "liaison_ma_zd")
        assert ctx.router.route(s, ma, Outgoing(ma.id, Reply("通知")), long_key) == ["telegram"]
    (row,) = _notice_rows(ctx)
    assert row.channel == "telegram" and len(row.dedupe_key) <= 200 and row.dedupe_key.endswith(":telegram:0")

    bare = make_ctx()  # no chat channel configured at all: the web inbox only
    with bare.sessions.begin() as s:
        ma = repo.get_staff_by_code(s, "liaison_ma_zd")
        assert bare.router.route(s, ma, Outgoing(ma.id, Reply("通知")), "k-bare") == []
    assert len(_notice_rows(bare)) == 1  # still only the one above (same database)


# ------------------------------------------------------------------------------------------------
# `yilian serve`: the escalation loop, delivery through both channels


async def test_serve_escalates_an_overdue_referral_to_wecom_and_telegram_and_survives_failures(
        make_ctx, wx, tg, app_context, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    broken_rules = tmp_path / "missing-rules.yaml"
    ctx = make_ctx(**wecom_values(wx.url), **telegram_values(tg.url), http_port=_free_port(),
                   referral_escalation_interval_s=0.05, referral_rules=broken_rules)
    _bind(ctx, "admin_zd", ADMIN_TG, last_channel="telegram")
    referral_id, number = _submitted_referral(ctx, overdue=True)
    engine = ConversationEngine(ctx, kb=app_context.kb)

    from bot.server import serve
    from bot.telegram_channel import make_plugin

    stop = asyncio.Event()
    up = asyncio.Event()
    task = asyncio.create_task(serve(ctx, engine, stop=stop, install_signal_handlers=False, started=lambda _u: up.set(),
                                     channels=[make_plugin(tgs.fast_options()), _wecom_plugin()]))
    try:
        await asyncio.wait_for(up.wait(), 10)

        def failures() -> int:
            return sum(r.getMessage() == "referral escalation failed; retried at the next interval"
                       for r in caplog.records)

        # the rules file is missing: every round fails, is logged, and the loop goes on
        await _until(lambda: failures() >= 3, what="three logged failures")
        assert not tg.sent and not wx.delivered
        ctx.settings.referral_rules = None  # the operator fixes it; the next round escalates

        (sent,) = await tg.wait_sent(ADMIN_TG, 1)
        (card,) = await wx.wait_delivered("qinwenbo", 1)
        assert "超时未处理" in sent.text and number in sent.text and "张*丰" in sent.text
        assert sent.buttons == ["接收", "拒绝", "查看详情"]
        assert sent.callback_data[0] == f"r:accept:{referral_id}"
        assert card.msgtype == "template_card"
        assert [b["key"] for b in card.body["template_card"]["button_list"]][:2] == [f"r:accept:{referral_id}",
                                                                                     f"r:reject:{referral_id}"]
        await asyncio.sleep(0.3)  # several more rounds: the referral escalates once
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)

    assert len(tg.to(ADMIN_TG)) == 1 and len(wx.to("qinwenbo")) == 1
    everything = "\n".join(s.text for s in tg.sent) + "\n".join(str(d.body) for d in wx.delivered)
    assert PATIENT not in everything
    rows = _notice_rows(ctx)
    assert [(r.channel, r.status) for r in rows] == [("telegram", "sent"), ("wecom", "sent")]  # last used first
    with ctx.sessions() as s:
        kept = s.scalars(select(Notification)).all()
        assert [(n.kind, n.channels) for n in kept] == [("referral.escalated", ["telegram", "wecom"])]
        assert s.get(Referral, referral_id).escalated_at is not None


def test_two_workers_escalate_a_referral_once(make_ctx):
    from bot.server import escalate_referrals

    first, second = make_ctx(), make_ctx()  # one database, two processes' contexts
    _submitted_referral(first, overdue=True)
    _submitted_referral(first, overdue=False)  # not due yet
    results: list[int] = []
    barrier = threading.Barrier(2)

    def work(ctx) -> None:
        barrier.wait()
        results.append(escalate_referrals(ctx))

    threads = [threading.Thread(target=work, args=(c,)) for c in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1]
    with first.sessions() as s:
        assert [n.kind for n in s.scalars(select(Notification))] == ["referral.escalated"]
    assert escalate_referrals(second) == 0


# ------------------------------------------------------------------------------------------------
# settling a pressed notification


async def test_wecom_click_updates_the_card_once_and_a_used_code_is_a_harmless_permanent_failure(
        make_ctx, wx, app_context):
    ctx = make_ctx(**wecom_values(wx.url))
    referral_id, number = _submitted_referral(ctx, overdue=False)
    engine = ConversationEngine(ctx, kb=app_context.kb)
    wx.card_update_failures = ["45009"]  # WeCom is busy the first time: retried
    async with wxs.serve_app(ctx, engine, wxs.fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = wxs.WeComSender(url)
        click = wxs.card_click_xml("maxiaoyan", f"r:accept:{referral_id}", "yl-task-1", response_code="RC-first")
        assert (await wecom.post(http, click))[0] == 200
        await wx.wait_for(lambda: wx.card_updates)
        await settled(channel, ctx)
        assert len(wx.card_update_calls) == 2  # busy, then done
        update = wx.card_updates[0]
        assert update["userids"] == ["maxiaoyan"] and update["agentid"] == wxs.AGENT_ID
        assert update["response_code"] == "RC-first" and update["button"] == {"replace_name": "已接收"}
        assert any("已接收" in d.text for d in wx.to("maxiaoyan"))
        # the physician is told through the router, on WeCom
        await wx.wait_for(lambda: any(number in d.text and "已接收" in d.text for d in wx.to("liuqingyuan")))

        # the same card clicked again, its response code used up: refused, not retried, and the
        # answer (who handled it) still arrives
        again = wxs.card_click_xml("maxiaoyan", f"r:accept:{referral_id}", "yl-task-1", response_code="RC-first",
                                   create_time=int(time.time()) + 10)
        before = len(wx.to("maxiaoyan"))
        assert (await wecom.post(http, again))[0] == 200
        await wx.wait_for(lambda: len(wx.to("maxiaoyan")) > before)
        await settled(channel, ctx)
    assert "已由马晓燕处理" in wx.to("maxiaoyan")[-1].text
    assert len(wx.card_update_refusals) == 1 and len(wx.card_updates) == 1
    with ctx.sessions() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.payload["msgtype"].as_string()
                                                     == "update_template_card")
                         .order_by(OutboxMessage.id)).all()
        assert [(r.status, r.attempts) for r in rows] == [("sent", 2), ("sent", 1)]
        assert rows[0].last_error is None and "card not updated" in rows[1].last_error
        assert "errcode 40099" in rows[1].last_error


async def test_telegram_press_removes_the_keyboard_and_a_second_press_is_harmless(make_ctx, tg, app_context):
    ctx = make_ctx(**telegram_values(tg.url))
    _bind(ctx, "liaison_ma_zd", LIAISON_TG)
    referral_id, number = _submitted_referral(ctx, overdue=False)
    engine = ConversationEngine(ctx, kb=app_context.kb)
    async with serve_telegram(ctx, engine, tgs.fast_options()) as channel:
        tg.push(tgs.callback_update(tg.next_update_id(), LIAISON_TG, f"r:accept:{referral_id}", message_id=4242))
        first = (await tg.wait_sent(LIAISON_TG, 1))[-1]
        assert number in first.text and "已接收" in first.text
        await tg.wait_for(lambda: tg.edited == [(LIAISON_TG, 4242)])
        await settled(channel, ctx)

        # the old message pressed again (its keyboard is gone elsewhere, e.g. another device)
        tg.push(tgs.callback_update(tg.next_update_id(), LIAISON_TG, f"r:reject:{referral_id}", message_id=4242))
        late = (await tg.wait_sent(LIAISON_TG, 2))[-1]
        assert "已由马晓燕处理" in late.text
        await tg.wait_for(lambda: tg.edit_refused == [(LIAISON_TG, 4242)])
        await settled(channel, ctx)
    calls = tg.calls_of("editMessageReplyMarkup")
    assert len(calls) == 2 and all(not c.get("reply_markup") for c in calls)  # no keyboard: removed
    with ctx.sessions() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.payload["kind"].as_string() == "edit_markup")).all()
        assert [(r.status, r.attempts) for r in rows] == [("sent", 1), ("sent", 1)]  # not retried, not failed


# ------------------------------------------------------------------------------------------------
# the web inbox


async def test_the_web_inbox_is_the_signed_in_staff_members_own(client, engine, engine_ctx):
    anonymous = Browser(client)
    assert (await anonymous.request("GET", "/api/inbox")).status == 401
    assert (await anonymous.request("POST", "/api/inbox/read")).status == 401

    with engine_ctx.sessions.begin() as s:
        ma = repo.get_staff_by_code(s, "liaison_ma_zd")
        liu = repo.get_staff_by_code(s, "dr_liu_zd")
        ma.telegram_user_id, liu.telegram_user_id = LIAISON_TG, 88_803
        notify(s, None, [Outgoing(ma.id, Reply("【新的转诊申请】ZD-2026-000007", choices=(Choice("接收", "r:accept:7"),)),
                                  kind="referral.new", dedupe_key="inbox-ma"),
                         Outgoing(liu.id, Reply("您的转诊 ZD-2026-000007 已接收"), kind="referral.accepted",
                                  dedupe_key="inbox-liu")])

    liaison, physician = (Browser(client, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
                          for _ in range(2))
    try:
        for browser, user in ((liaison, str(LIAISON_TG)), (physician, "88803")):
            res = await sign_in_with_link(browser, login_link_for(engine, user))
            assert res.status == 303, await res.text()
            await browser.refresh_csrf()

        # whose inbox is the session's word: a query naming someone else changes nothing
        res = await liaison.request("GET", "/api/inbox?staff=dr_liu_zd&staff_id=1")
        data = await res.json()
        assert res.status == 200 and data["unread"] == 1
        (item,) = data["items"]
        assert item["kind"] == "referral.new" and item["text"] == "【新的转诊申请】ZD-2026-000007"
        assert item["choices"] == [{"label": "接收", "value": "r:accept:7"}]
        assert item["channels"] == [] and item["read"] is False and item["created_at"]

        assert (await liaison.request("POST", "/api/inbox/read")).status == 403  # no CSRF token
        ok = await liaison.request("POST", "/api/inbox/read", headers={"X-CSRF-Token": liaison.csrf})
        assert ok.status == 200
        assert (await (await liaison.request("GET", "/api/inbox")).json())["unread"] == 0

        theirs = await (await physician.request("GET", "/api/inbox")).json()
        assert [i["text"] for i in theirs["items"]] == ["您的转诊 ZD-2026-000007 已接收"]
        assert theirs["unread"] == 1  # the liaison reading hers left the physician's alone
    finally:
        await liaison.http.close()
        await physician.http.close()


def test_the_page_polls_the_inbox_and_answers_through_the_chat_api():
    page = (Path(__file__).resolve().parents[1] / "bot" / "static" / "index.html").read_text(encoding="utf-8")
    assert 'id="bell"' in page and 'id="badge"' in page and 'id="inbox"' in page
    assert 'fetch("api/inbox"' in page and "setInterval(pollInbox, 20000)" in page
    assert '"api/inbox/read", { method: "POST"' in page and '"X-CSRF-Token": csrf' in page
    assert "send({ choice: String(c.value) }" in page  # a notification's button is a chat choice
