"""Notifications reach other people's chat channels through the outbox: WeCom and Telegram when
configured and the person has an account there (the channel they last used first), the web inbox
always; one notification is queued once however often it is asked for."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from handlers.engine import ConversationEngine
from handlers.messages import Choice, Outgoing, Reply
from handlers.notifications import notify
from storage import repositories as repo
from storage.models import Notification, OutboxMessage

pytest_plugins = ("engine_support",)

AES_KEY = "a" * 43
CHANNELS = dict(telegram_token="123456:TEST", wecom_corp_id="corp", wecom_agent_id=1000002, wecom_secret="s",
                wecom_token="t", wecom_aes_key=AES_KEY)


@pytest.fixture
def channel_ctx(tmp_path, directory_template):
    from engine_support import context_on_copy

    ctx = context_on_copy(directory_template, tmp_path / "var", **CHANNELS)
    yield ctx
    ctx.close()


def _outbox(ctx):
    with ctx.sessions() as s:
        return [(m.channel, m.recipient, m.payload, m.dedupe_key) for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]


def test_a_notification_goes_to_wecom_and_telegram_last_used_first_and_once(channel_ctx):
    reply = Reply("【新的转诊申请】…", choices=(Choice("接收", "r:accept:1"), Choice("拒绝", "r:reject:1")))
    with channel_ctx.sessions.begin() as s:
        staff = repo.get_staff_by_code(s, "liaison_ma_zd")
        staff.telegram_user_id = 770001
        staff.last_channel = "telegram"
        sid = staff.id
    for _ in range(2):
        with channel_ctx.sessions.begin() as s:
            delivery = notify(s, channel_ctx.router, [Outgoing(sid, reply, kind="referral.new", dedupe_key="k1")])
    assert delivery.repeated == 1  # the second call sent nothing
    rows = _outbox(channel_ctx)
    assert [(c, r) for c, r, _, _ in rows] == [("telegram", "770001"), ("wecom", "maxiaoyan")]
    tg, wecom = rows[0][2], rows[1][2]
    assert [b[0] for row in tg["keyboard"] for b in row] == ["接收", "拒绝"]
    assert wecom["msgtype"] == "template_card"
    assert [b["text"] for b in wecom["template_card"]["button_list"]] == ["接收", "拒绝"]
    with channel_ctx.sessions() as s:
        kept = s.scalars(select(Notification)).one()
        assert kept.channels == ["telegram", "wecom"] and kept.staff_id == sid


def test_without_a_chat_account_only_the_web_inbox_has_it(channel_ctx):
    with channel_ctx.sessions.begin() as s:
        staff = repo.get_staff_by_code(s, "liaison_ma_zd")
        staff.wecom_userid = None
        delivery = notify(s, channel_ctx.router, [Outgoing(staff.id, Reply("x"), dedupe_key="k2")])
        assert [p.code for p in delivery.unreached] == ["liaison_ma_zd"]
    assert _outbox(channel_ctx) == []


def test_a_submitted_referral_notifies_the_receiving_liaison_over_wecom(channel_ctx, app_context, clock, chat):
    engine = ConversationEngine(channel_ctx, kb=app_context.kb, clock=clock)
    doc = chat("wecom", "liuqingyuan", on=engine)
    for text in ("转诊", "上转", "普通", "张三丰", "男", "66", "跳过", "13912345678", "肺炎", "无", "疑难"):
        doc.say(text)
    doc.press("张店区人民医院")
    doc.press("不指定")
    doc.press("完成")
    doc.press("提交")
    assert "转诊已提交" in doc.text and "马晓燕" in doc.text and "网页消息中心" not in doc.text
    rows = [r for r in _outbox(channel_ctx) if r[3].startswith("notice:")]
    assert [(c, r) for c, r, _, _ in rows] == [("wecom", "maxiaoyan")]
    body = str(rows[0][2])
    assert "张*丰" in body and "张三丰" not in body and "13912345678" not in body

    liaison = chat("wecom", "maxiaoyan", on=engine)
    liaison.last = [Reply("", choices=tuple(Choice(b["text"], b["key"])
                                            for b in rows[0][2]["template_card"]["button_list"]))]
    liaison.press("接收")
    assert "已接收" in liaison.text and liaison.last[0].settle == "已接收"
    to_sender = [r for r in _outbox(channel_ctx) if r[1] == "liuqingyuan" and r[3].startswith("notice:")]
    assert len(to_sender) == 1 and "已接收" in str(to_sender[0][2])


def test_the_server_escalation_job_runs_on_a_context(channel_ctx):
    from bot.server import escalate_referrals

    assert escalate_referrals(channel_ctx) == 0  # nothing is overdue; the job itself works
