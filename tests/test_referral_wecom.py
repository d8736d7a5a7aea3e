"""A whole upward referral through signed, encrypted WeCom callbacks to the real server: the
physician answers every step in WeCom, the receiving liaison gets a template card with 接收/拒绝,
clicks 接收, the card is updated, the physician is told; a second click is told who handled it.
Identifiers typed by the physician never reach the liaison's messages or the logs."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.wecom_support import WeComSender, card_click_xml, fast_options, next_msg_id, serve_app, text_xml

from test_wecom_e2e import engine_for, fake, make_ctx, policy_kb  # noqa: F401 - fixtures
from bot.ratelimit import RatePolicy
from channel_support import settled

pytest_plugins = ("storage.testing",)

SENDER, RECEIVER = "liuqingyuan", "maxiaoyan"  # dr_liu_zd (沣水中心卫生院) → liaison_ma_zd (张店区人民医院)
ID_NUMBER, PHONE = "110101195803071233", "13912345678"


async def _say(wecom, http, fake, user, text, count):
    assert (await wecom.post(http, text_xml(user, text, next_msg_id())))[0] == 200
    return (await fake.wait_delivered(user, count))[-1]


def _card_buttons(delivered):
    card = delivered.body["template_card"]
    return card, {b["text"]: b["key"] for b in card["button_list"]}


async def test_upward_referral_from_wecom_to_the_receiving_liaison(fake, make_ctx, engine_for, caplog):
    caplog.set_level(logging.INFO)
    ctx = make_ctx()
    # a physician types fast in a test: no per-user rate limit here (tests/test_ratelimit.py has it)
    options = fast_options(rate_limit=RatePolicy(per_minute=0, queue_cap=0))
    async with serve_app(ctx, engine_for(ctx), options) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        n = 0
        for text in ("转诊", "上转", "普通", "张三丰", "男", "66", ID_NUMBER, PHONE, "社区获得性肺炎", "发热3天", "疑难",
                     "张店区人民医院", "内科", "完成"):
            n += 1
            await _say(wecom, http, fake, SENDER, text, n)
            await settled(channel, ctx)
            n = len(fake.to(SENDER))
        summary = "\n".join(d.text for d in fake.to(SENDER)[-2:])
        assert "请核对" in summary and "139****5678" in summary
        last = await _say(wecom, http, fake, SENDER, "提交", n + 1)
        await settled(channel, ctx)
        done = "\n".join(d.text for d in fake.to(SENDER)[n:])
        assert "转诊已提交" in done and "ZD-" in done and "马晓燕" in done

        notice = (await fake.wait_delivered(RECEIVER, 1))[-1]
        card, keys = _card_buttons(notice)
        assert "接收" in keys and "拒绝" in keys
        click = card_click_xml(RECEIVER, keys["接收"], card["task_id"])
        assert (await wecom.post(http, click))[0] == 200
        await settled(channel, ctx)
        await fake.wait_for(lambda: fake.card_updates)
        assert fake.card_updates[0]["button"]["replace_name"] == "已接收"
        assert fake.card_updates[0]["userids"] == [RECEIVER]
        await fake.wait_for(lambda: any("已接收" in d.text for d in fake.to(SENDER)))

        again = card_click_xml(RECEIVER, keys["接收"], card["task_id"], create_time=int(notice_time()) + 5)
        assert (await wecom.post(http, again))[0] == 200
        await settled(channel, ctx)
        await fake.wait_for(lambda: any("已由马晓燕处理" in d.text for d in fake.to(RECEIVER)))

    receiver_text = "\n".join(str(d.body) for d in fake.to(RECEIVER))
    assert ID_NUMBER not in receiver_text and PHONE not in receiver_text and "张三丰" not in receiver_text
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert ID_NUMBER not in logged and PHONE not in logged


def notice_time() -> float:
    import time

    return time.time()
