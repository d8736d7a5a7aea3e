"""A whole upward referral through the fake Bot API with real PTB polling, with a restart of the
server in the middle of the wizard; the receiving liaison's Telegram chat gets 接收/拒绝 buttons,
rejects with a reason, the keyboard of the pressed message is removed and the physician is told
已拒绝 with the reason."""

from __future__ import annotations

from bot.ratelimit import RatePolicy
from tests.telegram_support import callback_update, fast_options, text_update

from test_telegram_e2e import _bind_directly, engine_for, fake, make_ctx, policy_kb, serve  # noqa: F401
from channel_support import settled

pytest_plugins = ("storage.testing",)

DOCTOR, LIAISON = 66601, 66602  # dr_liu_zd (沣水中心卫生院) → liaison_ma_zd (张店区人民医院)
ID_NUMBER, PHONE = "110101195803071233", "13912345678"


async def _say(fake, channel, ctx, text):
    before = len(fake.to(DOCTOR))
    fake.push(text_update(fake.next_update_id(), DOCTOR, text))
    sent = await fake.wait_sent(DOCTOR, before + 1)
    await settled(channel, ctx)
    return fake.to(DOCTOR)[-1] if len(fake.to(DOCTOR)) > before else sent[-1]


async def test_referral_over_telegram_survives_a_restart_and_is_rejected_with_a_reason(fake, make_ctx, engine_for):
    ctx = make_ctx()
    _bind_directly(ctx, "dr_liu_zd", DOCTOR)
    _bind_directly(ctx, "liaison_ma_zd", LIAISON)
    options = fast_options(rate_limit=RatePolicy(per_minute=0, queue_cap=0))  # a test types fast
    async with serve(ctx, engine_for(ctx), options) as (_url, channel):
        for text in ("转诊", "上转", "普通", "张三丰", "男"):
            await _say(fake, channel, ctx, text)
        assert "年龄" in fake.to(DOCTOR)[-1].text
    # the process stops in the middle of the wizard; a new one continues where the physician was
    ctx2 = make_ctx()
    async with serve(ctx2, engine_for(ctx2), options) as (_url, channel):
        for text in ("66", ID_NUMBER, PHONE, "社区获得性肺炎", "发热3天", "疑难", "张店区人民医院", "内科", "完成"):
            await _say(fake, channel, ctx2, text)
        assert "请核对" in fake.to(DOCTOR)[-1].text
        done = await _say(fake, channel, ctx2, "提交")
        assert "转诊已提交" in done.text and "ZD-" in done.text

        notice = (await fake.wait_sent(LIAISON, 1))[-1]
        assert notice.buttons[:2] == ["接收", "拒绝"] and "张*丰" in notice.text
        reject = dict(zip(notice.buttons, notice.callback_data))["拒绝"]
        fake.push(callback_update(fake.next_update_id(), LIAISON, reject, message_id=notice.message_id))
        ask = (await fake.wait_sent(LIAISON, 2))[-1]
        assert "理由" in ask.text
        fake.push(text_update(fake.next_update_id(), LIAISON, "床位已满，建议转市中心医院"))
        await fake.wait_sent(LIAISON, 3)
        await settled(channel, ctx2)
        await fake.wait_for(lambda: any("已拒绝：床位已满" in s.text for s in fake.to(DOCTOR)))

        # pressing 接收 on the old notification now: told who handled it, keyboard removed
        accept = dict(zip(notice.buttons, notice.callback_data))["接收"]
        fake.push(callback_update(fake.next_update_id(), LIAISON, accept, message_id=notice.message_id))
        late = (await fake.wait_sent(LIAISON, 4))[-1]
        assert "已由马晓燕处理" in late.text
        await fake.wait_for(lambda: (LIAISON, notice.message_id) in fake.edited)
        await settled(channel, ctx2)

    everything = "\n".join(s.text for s in fake.sent if s.chat_id == LIAISON)
    assert ID_NUMBER not in everything and PHONE not in everything and "张三丰" not in everything
