"""Referrals end to end through the real chat channels (issue 9, "Tests that must exist").

* a whole upward referral over the fake Telegram Bot API with real PTB polling: the physician
  dr_liu_zd (沣水中心卫生院, 张店 consortium) answers every step with buttons (callback queries)
  and typed text, submits and gets ``ZD-<year>-000001``; the receiving liaison liaison_ma_zd
  (张店区人民医院) gets 接收/拒绝 buttons, presses 接收 (the keyboard is removed), the physician is
  told 已接收, a second press is answered 已由…处理;
* the same over signed, encrypted WeCom callbacks (liuqingyuan → maxiaoyan): the notification is
  a template card, the liaison's click a ``template_card_event``; a rejection asks the reason and
  tells the physician 已拒绝 with it; a later click is told who handled it and the card is updated;
* a restart in the middle of the wizard (and another one between the notification and the
  liaison's click: its buttons stay valid);
* privacy: the full ID number and phone typed by the physician reach neither chat (every request
  the fake servers recorded) nor any log record — physician on Telegram, liaison on WeCom, the
  liaison opening the full record too.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.context import build_context
from bot.ratelimit import RatePolicy
from handlers.engine import ConversationEngine
from storage.models import Referral, Staff
from tests import telegram_support as tgs
from tests import wecom_support as wxs

from channel_support import settled

pytest_plugins = ("storage.testing",)  # sqlite_template

REPO = Path(__file__).resolve().parents[1]
DIRECTORY = REPO / "storage" / "samples" / "directory.yaml"

DOCTOR_TG, LIAISON_TG = 77_701, 77_702  # Telegram ids of dr_liu_zd and liaison_ma_zd
DOCTOR_WX, LIAISON_WX = "liuqingyuan", "maxiaoyan"  # their WeCom userids (samples/directory.yaml)
ID_NUMBER = "110101195803071233"  # valid checksum, a man born 1958-03-07
PHONE = "13912345678"
MASKED_ID, MASKED_PHONE = "110***********1233", "139****5678"
PATIENT = "张三丰"
REJECT_REASON = "床位已满，建议转市中心医院"


# ------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
async def tg():
    server = await tgs.FakeTelegram().start()
    yield server
    await server.close()


@pytest.fixture
async def wx():
    server = await wxs.FakeWeCom().start()
    yield server
    await server.close()


@pytest.fixture
def engine_for(app_context):
    """The real engine on a test context, answering from the session's knowledge base."""
    return lambda ctx: ConversationEngine(ctx, kb=app_context.kb)


@pytest.fixture
def make_ctx(tmp_path, sqlite_template):
    """``make(telegram=…, wecom=…)`` builds the context of one process on this test's database
    (called again, it is the next process after a restart: same database, nothing else shared)."""
    made = []

    def make(*, telegram: tgs.FakeTelegram | None = None, wecom: wxs.FakeWeCom | None = None, **overrides: Any):
        from bot.config import Settings
        from storage.directory_import import import_directory

        db = tmp_path / "referrals.sqlite3"
        fresh = not db.exists()
        if fresh:
            shutil.copyfile(sqlite_template, db)
        values: dict[str, Any] = dict(data_dir=tmp_path / "var", web_chat=False, database_url=f"sqlite:///{db}")
        if telegram is not None:
            values.update(telegram_token=tgs.TOKEN, telegram_api_base=telegram.url)
        if wecom is not None:
            values.update(wecom_corp_id=wxs.CORP_ID, wecom_agent_id=wxs.AGENT_ID, wecom_secret=wxs.SECRET,
                          wecom_token=wxs.TOKEN, wecom_aes_key=wxs.AES_KEY, wecom_api_base=wecom.url)
        values.update(overrides)
        ctx = build_context(Settings(_env_file=None, **values))
        if fresh:
            with ctx.sessions.begin() as session:
                assert import_directory(session, DIRECTORY, actor="test").ok
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def _bind_telegram(ctx: Any, staff_code: str, telegram_id: int) -> None:
    with ctx.sessions.begin() as session:
        session.scalar(select(Staff).where(Staff.code == staff_code)).telegram_user_id = telegram_id


def _no_rate_limit() -> RatePolicy:
    return RatePolicy(per_minute=0, queue_cap=0)  # a test types fast (tests/test_ratelimit.py has the limit)


def _tg_options():
    return tgs.fast_options(rate_limit=_no_rate_limit())


def _wx_options():
    return wxs.fast_options(rate_limit=_no_rate_limit())


# ------------------------------------------------------------------------------------------------
# running the server (the real bot.server.create_app) with one or both channels


class Running:
    """One running process: its context and channels, waited on together."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.channels: list[Any] = []
        self.url = ""

    async def settled(self) -> None:
        for channel in self.channels:
            await settled(channel, self.ctx)
        for channel in self.channels:  # a reply of one channel may have queued a notice for the other
            await settled(channel, self.ctx)


@asynccontextmanager
async def serve(ctx: Any, engine: Any, *, telegram: bool = False, wecom: bool = False):
    from aiohttp import web

    from bot.channels import ChannelPlugin
    from bot.server import create_app
    from bot.telegram import TELEGRAM_CHANNEL_KEY
    from bot.telegram_channel import make_plugin
    from bot.wecom import WECOM_CHANNEL_KEY, setup_wecom

    plugins = []
    if wecom:
        options = _wx_options()
        plugins.append(ChannelPlugin(name="wecom", enabled=lambda s: s.wecom_enabled,
                                     setup_routes=lambda app, c, e: setup_wecom(app, c, e, options=options) and None))
    tg_plugin = make_plugin(_tg_options()) if telegram else None
    if tg_plugin is not None:
        plugins.append(tg_plugin)
    app = create_app(ctx, engine, channels=plugins, web_chat=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    running = Running(ctx)
    running.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    stop = None
    try:
        if wecom:
            running.channels.append(app[WECOM_CHANNEL_KEY])
        if tg_plugin is not None:
            stop = await tg_plugin.start(ctx, engine, app)
            channel = app[TELEGRAM_CHANNEL_KEY]
            await channel.wait_ready(5.0)
            running.channels.append(channel)
        yield running
    finally:
        if stop is not None:
            await stop()
        await runner.cleanup()


# ------------------------------------------------------------------------------------------------
# talking: a person in a Telegram chat, a person in WeCom


def _pick_button(labels: list[str], wanted: str) -> int:
    """Index of the button labelled ``wanted`` (exactly, else the first label containing it)."""
    for i, label in enumerate(labels):
        if label == wanted:
            return i
    for i, label in enumerate(labels):
        if wanted in label:
            return i
    raise AssertionError(f"no button {wanted!r} among {labels}")


class TgPerson:
    """Someone in a private Telegram chat with the bot (the fake Bot API, real PTB polling)."""

    def __init__(self, fake: tgs.FakeTelegram, chat_id: int) -> None:
        self.fake, self.chat_id = fake, chat_id
        self.server: Running | None = None

    @property
    def received(self) -> list[tgs.Sent]:
        return self.fake.to(self.chat_id)

    @property
    def text(self) -> str:
        return "\n".join(s.text for s in self.received)

    async def _send(self, update: dict[str, Any]) -> list[tgs.Sent]:
        assert self.server is not None
        before = len(self.received)
        self.fake.push(update)
        await self.fake.wait_sent(self.chat_id, before + 1)  # taken by the poller and answered …
        await self.server.settled()  # … completely (several parts, notices for others)
        return self.received[before:]

    async def say(self, text: str) -> list[tgs.Sent]:
        return await self._send(tgs.text_update(self.fake.next_update_id(), self.chat_id, text))

    def last_keyboard(self) -> tgs.Sent:
        for sent in reversed(self.received):
            if sent.keyboard:
                return sent
        raise AssertionError(f"no message with buttons in chat {self.chat_id}")

    async def press(self, label: str, message: tgs.Sent | None = None) -> list[tgs.Sent]:
        """Press the button ``label`` of ``message`` (default: the latest message with buttons)."""
        message = message or self.last_keyboard()
        data = message.callback_data[_pick_button(message.buttons, label)]
        return await self._send(tgs.callback_update(self.fake.next_update_id(), self.chat_id, data,
                                                    message_id=message.message_id, message_text=message.text))


def _cards(delivered: list[wxs.Delivered]) -> list[wxs.Delivered]:
    return [d for d in delivered if d.msgtype == "template_card"]


class WxPerson:
    """Someone in WeCom: messages and card clicks arrive at the server as WeCom callbacks."""

    def __init__(self, fake: wxs.FakeWeCom, userid: str) -> None:
        self.fake, self.userid = fake, userid
        self.server: Running | None = None
        self.http: aiohttp.ClientSession | None = None
        self._clicks = 0

    @property
    def received(self) -> list[wxs.Delivered]:
        return self.fake.to(self.userid)

    @property
    def text(self) -> str:
        return "\n".join(d.text for d in self.received)

    async def _post(self, xml: str) -> list[wxs.Delivered]:
        assert self.server is not None and self.http is not None
        before = len(self.received)
        status, _body, _t = await wxs.WeComSender(self.server.url).post(self.http, xml)
        assert status == 200
        await self.fake.wait_delivered(self.userid, before + 1)
        await self.server.settled()
        return self.received[before:]

    async def say(self, text: str) -> list[wxs.Delivered]:
        return await self._post(wxs.text_xml(self.userid, text, wxs.next_msg_id()))

    async def click(self, label: str, card: wxs.Delivered | None = None) -> list[wxs.Delivered]:
        """Click the button ``label`` of ``card`` (default: the latest card received)."""
        card = card or _cards(self.received)[-1]
        body = card.body["template_card"]
        buttons = body["button_list"]
        key = buttons[_pick_button([b["text"] for b in buttons], label)]["key"]
        # WeCom tells clicks apart by user, time, key and card: a later click has a later time
        self._clicks += 1
        created = int(datetime.now().timestamp()) + self._clicks
        return await self._post(wxs.card_click_xml(self.userid, key, body["task_id"], create_time=created))


# ------------------------------------------------------------------------------------------------
# checks


def _number_of(text: str) -> str:
    """The referral number in ``text``: the first referral of the 张店 consortium this year."""
    found = re.search(r"ZD-(\d{4})-(\d{6})", text)
    assert found, text
    years = {str(datetime.now().year), str(datetime.now(timezone.utc).year)}
    assert found.group(1) in years and found.group(2) == "000001", found.group(0)
    return found.group(0)


def _telegram_bodies(fake: tgs.FakeTelegram) -> str:
    """Every request the bot made to the Bot API (all methods, all parameters) and what was shown."""
    calls = [f"{method} {json.dumps(params, ensure_ascii=False, default=str)}" for method, params in fake.calls]
    return "\n".join(calls + [s.text for s in fake.sent])


def _wecom_bodies(fake: wxs.FakeWeCom) -> str:
    """Every message/send and update_template_card body the fake WeCom received."""
    return "\n".join(json.dumps(b, ensure_ascii=False, default=str) for b in [*fake.send_calls, *fake.card_updates])


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Each captured record as logged (message) and as a handler sees it (args, extras)."""
    return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)


def _assert_no_identifiers(*haystacks: str) -> None:
    for haystack in haystacks:
        assert ID_NUMBER not in haystack, "the full ID number left the database"
        assert PHONE not in haystack, "the full phone number left the database"


def _referral(ctx: Any) -> Referral:
    with ctx.sessions() as s:
        r = s.scalars(select(Referral)).one()
        s.expunge(r)
        return r


def _capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # the production level, every logger (ours and the libraries')


def _check_router_wired(ctx: Any) -> None:
    """The channels need ``AppContext.router`` (``bot.notify.ChannelNotifier``) to reach other people."""
    from bot.notify import ChannelNotifier  # fails (ImportError) until bot/notify.py exists

    assert isinstance(ctx.router, ChannelNotifier)


# ------------------------------------------------------------------------------------------------
# the physician's answers


async def _tg_wizard_until_phone(doctor: TgPerson) -> None:
    direction = (await doctor.say("转诊"))[-1]
    assert "转诊方向" in direction.text and direction.buttons[:2] == ["上转（转往上级医院）", "下转（转往下级/基层机构）"]
    urgency = (await doctor.press("上转"))[-1]
    assert "紧急" in urgency.text and urgency.buttons[0] == "普通"
    assert "姓名" in (await doctor.press("普通"))[-1].text  # routine: no green-channel question
    sex = (await doctor.say(PATIENT))[-1]
    assert "性别" in sex.text and sex.buttons[:2] == ["男", "女"]
    assert "年龄" in (await doctor.press("男"))[-1].text
    assert "身份证号" in (await doctor.say("66岁"))[-1].text
    assert "电话" in (await doctor.say(ID_NUMBER))[-1].text
    assert "初步诊断" in (await doctor.say(PHONE))[-1].text  # upward: no home-area question


async def _tg_wizard_from_diagnosis(doctor: TgPerson) -> None:
    assert "病史" in (await doctor.say("社区获得性肺炎"))[-1].text
    reason = (await doctor.say("发热咳嗽3天，口服头孢无好转"))[-1]
    assert "转诊理由" in reason.text and any("疑难复杂" in b for b in reason.buttons)
    receiver = (await doctor.press("疑难复杂"))[-1]
    assert "接收机构" in receiver.text and "张店区人民医院" in receiver.buttons
    department = (await doctor.press("张店区人民医院"))[-1]
    assert "科室" in department.text and "内科" in department.buttons
    assert "附件" in (await doctor.press("内科"))[-1].text
    summary = "\n".join(s.text for s in await doctor.press("完成"))
    assert "请核对" in summary and PATIENT in summary and MASKED_ID in summary and MASKED_PHONE in summary
    assert "提交" in doctor.last_keyboard().buttons


async def _wx_wizard_until_phone(doctor: WxPerson) -> None:
    first = await doctor.say("转诊")
    assert "转诊方向" in "\n".join(d.text for d in first) and _cards(first)
    await doctor.click("上转")  # a template_card_event, like the liaison's
    assert "紧急" in doctor.text
    for text, next_question in (("普通", "姓名"), (PATIENT, "性别"), ("男", "年龄"), ("66", "身份证号"),
                                (ID_NUMBER, "电话"), (PHONE, "初步诊断")):
        got = "\n".join(d.text for d in await doctor.say(text))
        assert next_question in got, (text, got)


async def _wx_wizard_from_diagnosis(doctor: WxPerson) -> None:
    for text, next_question in (("社区获得性肺炎", "病史"), ("发热3天", "转诊理由"), ("疑难", "接收机构"),
                                ("张店区人民医院", "科室"), ("内科", "附件")):
        got = "\n".join(d.text for d in await doctor.say(text))
        assert next_question in got, (text, got)
    summary = "\n".join(d.text for d in await doctor.say("完成"))
    assert "请核对" in summary and MASKED_ID in summary and MASKED_PHONE in summary


# ------------------------------------------------------------------------------------------------
# 1. Telegram: submit, accept, a second press


async def test_upward_referral_over_telegram_accepted_by_the_receiving_liaison(tg, make_ctx, engine_for, caplog):
    _capture_logs(caplog)
    ctx = make_ctx(telegram=tg)
    _check_router_wired(ctx)
    _bind_telegram(ctx, "dr_liu_zd", DOCTOR_TG)
    _bind_telegram(ctx, "liaison_ma_zd", LIAISON_TG)
    doctor, liaison = TgPerson(tg, DOCTOR_TG), TgPerson(tg, LIAISON_TG)
    async with serve(ctx, engine_for(ctx), telegram=True) as server:
        doctor.server = liaison.server = server
        await _tg_wizard_until_phone(doctor)
        await _tg_wizard_from_diagnosis(doctor)
        assert liaison.received == []  # nothing is sent before the physician submits

        done = "\n".join(s.text for s in await doctor.press("提交"))
        assert "转诊已提交" in done and "马晓燕" in done
        number = _number_of(done)

        [notice] = liaison.received  # the receiving liaison's notification, with its buttons
        assert notice.buttons[:2] == ["接收", "拒绝"]
        assert number in notice.text and "张*丰" in notice.text and PATIENT not in notice.text
        assert all(len(d.encode()) <= 64 for d in notice.callback_data)

        answer = "\n".join(s.text for s in await liaison.press("接收", notice))
        assert "已接收" in answer and number in answer
        assert (LIAISON_TG, notice.message_id) in tg.edited  # the pressed notification lost its keyboard
        told = [s.text for s in doctor.received if number in s.text and "已接收" in s.text]
        assert told and "马晓燕" in told[-1]
        assert _referral(ctx).status == "accepted"

        again = "\n".join(s.text for s in await liaison.press("接收", notice))  # the old message, pressed again
        assert "已由马晓燕处理" in again
        assert _referral(ctx).status == "accepted"
        assert len([s for s in doctor.received if "已接收" in s.text]) == len(told)  # told once

    _assert_no_identifiers(_telegram_bodies(tg), _logged(caplog))
    assert PATIENT not in liaison.text  # the liaison's chat shows the name masked


# ------------------------------------------------------------------------------------------------
# 2. WeCom: submit, reject with a reason, a later click


async def test_upward_referral_over_wecom_rejected_with_a_reason(wx, make_ctx, engine_for, caplog):
    _capture_logs(caplog)
    ctx = make_ctx(wecom=wx)
    _check_router_wired(ctx)
    doctor, liaison = WxPerson(wx, DOCTOR_WX), WxPerson(wx, LIAISON_WX)
    async with serve(ctx, engine_for(ctx), wecom=True) as server, aiohttp.ClientSession() as http:
        for person in (doctor, liaison):
            person.server, person.http = server, http
        await _wx_wizard_until_phone(doctor)
        await _wx_wizard_from_diagnosis(doctor)
        assert liaison.received == []

        done = "\n".join(d.text for d in await doctor.click("提交"))
        assert "转诊已提交" in done and "马晓燕" in done
        number = _number_of(done)

        notice = liaison.received
        [card] = _cards(notice)
        assert [b["text"] for b in card.body["template_card"]["button_list"]][:2] == ["接收", "拒绝"]
        shown = "\n".join(json.dumps(d.body, ensure_ascii=False) for d in notice)
        assert number in shown and "张*丰" in shown and PATIENT not in shown

        ask = "\n".join(d.text for d in await liaison.click("拒绝", card))
        assert "理由" in ask and number in ask
        assert _referral(ctx).status == "submitted"  # nothing happens before the reason is given
        confirmed = "\n".join(d.text for d in await liaison.say(REJECT_REASON))
        assert "已拒绝" in confirmed and REJECT_REASON in confirmed
        await wx.wait_for(lambda: any(f"已拒绝：{REJECT_REASON}" in d.text for d in doctor.received))
        told = [d.text for d in doctor.received if "已拒绝" in d.text]
        assert len(told) == 1 and number in told[0] and "马晓燕" in told[0]
        r = _referral(ctx)
        assert r.status == "rejected" and r.reject_reason == REJECT_REASON

        # the card still shows 接收: clicking it now is answered with who handled it, the card updated
        updates = len(wx.card_updates)
        late = "\n".join(d.text for d in await liaison.click("接收", card))
        assert "已由马晓燕处理" in late
        [update] = wx.card_updates[updates:]
        assert update["userids"] == [LIAISON_WX] and update["button"]["replace_name"] == "已拒绝"
        assert _referral(ctx).status == "rejected"

    _assert_no_identifiers(_wecom_bodies(wx), _logged(caplog))
    assert PATIENT not in "\n".join(json.dumps(d.body, ensure_ascii=False) for d in liaison.received)


# ------------------------------------------------------------------------------------------------
# 3. a restart in the middle


async def test_a_restart_in_the_middle_of_the_wizard_and_before_the_liaisons_click(wx, make_ctx, engine_for, caplog):
    _capture_logs(caplog)
    doctor, liaison = WxPerson(wx, DOCTOR_WX), WxPerson(wx, LIAISON_WX)
    ctx = make_ctx(wecom=wx)
    _check_router_wired(ctx)
    async with serve(ctx, engine_for(ctx), wecom=True) as server, aiohttp.ClientSession() as http:
        for person in (doctor, liaison):
            person.server, person.http = server, http
        await _wx_wizard_until_phone(doctor)
    ctx.close()  # the process is gone: only the database remains

    ctx2 = make_ctx(wecom=wx)
    async with serve(ctx2, engine_for(ctx2), wecom=True) as server, aiohttp.ClientSession() as http:
        for person in (doctor, liaison):
            person.server, person.http = server, http
        await _wx_wizard_from_diagnosis(doctor)  # where the physician was: the diagnosis is asked
        summary = doctor.text[doctor.text.rindex("请核对"):]
        assert PATIENT in summary and "66岁" in summary and "内科" in summary  # answers given before the restart
        done = "\n".join(d.text for d in await doctor.click("提交"))
        number = _number_of(done)
        [card] = _cards(liaison.received)
    ctx2.close()

    ctx3 = make_ctx(wecom=wx)  # another restart: the notification's buttons still work
    async with serve(ctx3, engine_for(ctx3), wecom=True) as server, aiohttp.ClientSession() as http:
        for person in (doctor, liaison):
            person.server, person.http = server, http
        answer = "\n".join(d.text for d in await liaison.click("接收", card))
        assert "已接收" in answer and number in answer
        assert wx.card_updates and wx.card_updates[-1]["button"]["replace_name"] == "已接收"
        await wx.wait_for(lambda: any("已接收" in d.text and number in d.text for d in doctor.received))
    r = _referral(ctx3)
    assert r.status == "accepted" and r.patient_id_number == ID_NUMBER and r.patient_phone == PHONE
    assert [d.text.count("转诊已提交") for d in doctor.received].count(1) == 1  # submitted once
    _assert_no_identifiers(_wecom_bodies(wx), _logged(caplog))


# ------------------------------------------------------------------------------------------------
# 4. privacy across both channels


async def test_identifiers_typed_by_the_physician_reach_no_chat_and_no_log(tg, wx, make_ctx, engine_for, caplog):
    """The physician on Telegram, the liaison on WeCom (no Telegram account): the notice crosses
    channels, the liaison opens the full record and accepts, the physician is told; the full ID
    number and phone are in no request either fake server received and in no log record."""
    _capture_logs(caplog)
    ctx = make_ctx(telegram=tg, wecom=wx)
    _check_router_wired(ctx)
    _bind_telegram(ctx, "dr_liu_zd", DOCTOR_TG)
    doctor, liaison = TgPerson(tg, DOCTOR_TG), WxPerson(wx, LIAISON_WX)
    async with serve(ctx, engine_for(ctx), telegram=True, wecom=True) as server, aiohttp.ClientSession() as http:
        doctor.server = liaison.server = server
        liaison.http = http
        await _tg_wizard_until_phone(doctor)
        await _tg_wizard_from_diagnosis(doctor)
        number = _number_of("\n".join(s.text for s in await doctor.press("提交")))

        [card] = _cards(liaison.received)
        full = "\n".join(d.text for d in await liaison.click("查看详情", card))
        assert number in full and PATIENT in full  # the liaison may see the record …
        assert MASKED_ID in full and MASKED_PHONE in full  # … with the identifiers masked
        await liaison.click("接收", card)
        await tg.wait_for(lambda: any("已接收" in s.text and number in s.text for s in doctor.received))

    assert any(r.getMessage() == "notification queued" for r in caplog.records)  # the logs were captured
    _assert_no_identifiers(_telegram_bodies(tg), _wecom_bodies(wx), _logged(caplog))
