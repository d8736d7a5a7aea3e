"""Telegram channel end to end: the real python-telegram-bot client against a fake Bot API.

The real server application (``bot.server.create_app``) with the Telegram plugin
(``bot.telegram_channel``), the real conversation engine and knowledge base (the sample policies)
and a SQLite file per test. The PTB ``Application`` long-polls a fake Bot API server on loopback
(``tests/telegram_support.py``) — or, in webhook mode, receives updates over HTTP — and its replies
go through the persistent outbox to the fake's ``sendMessage`` / ``sendDocument``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.context import build_context
from handlers.engine import ConversationEngine
from handlers.messages import Choice, Incoming, Reply
from storage import repositories as repo
from storage.models import InboundMessage, OutboxMessage, Staff
from tests.telegram_support import (
    FakeTelegram,
    callback_update,
    document_update,
    fast_options,
    sticker_update,
    telegram_settings,
    text_update,
)

from channel_support import count_rows as _count  # noqa: E402
from channel_support import settled  # noqa: E402

pytest_plugins = ("storage.testing",)  # sqlite_template

REPO = Path(__file__).resolve().parents[1]
QUESTION = "联席会议的目的是讨论什么？"
CITATION = "《德阳市人民医院城市医疗集团工作制度》"
USER = 55501  # a Telegram user id
SECRET = "Test_Webhook-Secret42"
WEBHOOK_PATH = "/telegram/hook-7f3a"


@pytest.fixture
async def fake():
    server = await FakeTelegram().start()
    yield server
    await server.close()


def _context(tmp_path: Path, sqlite_template: Path, api_base: str, **overrides: Any):
    from storage.directory_import import import_directory

    db = tmp_path / "telegram.sqlite3"
    fresh = not db.exists()
    if fresh:
        shutil.copyfile(sqlite_template, db)
    ctx = build_context(telegram_settings(tmp_path / "var", api_base, database_url=f"sqlite:///{db}", **overrides))
    if fresh:
        with ctx.sessions.begin() as session:
            assert import_directory(session, REPO / "storage" / "samples" / "directory.yaml", actor="test").ok
    return ctx


@pytest.fixture
def make_ctx(tmp_path, sqlite_template, fake):
    """Build (and rebuild, for a restart) the context of the process under test."""
    made = []

    def make(**overrides: Any):
        ctx = _context(tmp_path, sqlite_template, fake.url, **overrides)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture(scope="session")
def policy_kb(app_context):
    return app_context.kb


@pytest.fixture
def engine_for(policy_kb):
    return lambda ctx: ConversationEngine(ctx, kb=policy_kb)


class Recording:
    """An engine wrapper keeping every Incoming it was given."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.seen: list[Incoming] = []

    def handle(self, msg: Incoming) -> list[Reply]:
        self.seen.append(msg)
        return self.engine.handle(msg)


@asynccontextmanager
async def serve(ctx: Any, engine: Any, options: Any = None, *, ready: bool = True):
    """The real server app with the Telegram plugin on 127.0.0.1; yields (url, channel)."""
    from aiohttp import web

    from bot.server import create_app
    from bot.telegram import TELEGRAM_CHANNEL_KEY
    from bot.telegram_channel import make_plugin

    plugin = make_plugin(options or fast_options())
    app = create_app(ctx, engine, channels=[plugin], web_chat=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = None
    try:
        stop = await plugin.start(ctx, engine, app)
        channel = app[TELEGRAM_CHANNEL_KEY]
        if ready:
            await channel.wait_ready(5.0)
        yield f"http://127.0.0.1:{port}", channel
    finally:
        if stop is not None:
            await stop()
        await runner.cleanup()




def _invite(ctx: Any, staff_code: str) -> str:
    with ctx.sessions.begin() as session:
        staff = repo.get_staff_by_code(session, staff_code)
        assert staff is not None
        return repo.create_invite(session, staff, created_by="test")


def _bound_staff(ctx: Any, telegram_id: int) -> str | None:
    with ctx.sessions() as session:
        staff = repo.get_staff_by_telegram_id(session, telegram_id)
        return staff.code if staff else None


def _bind_directly(ctx: Any, staff_code: str, telegram_id: int) -> None:
    with ctx.sessions.begin() as session:
        staff = session.scalar(select(Staff).where(Staff.code == staff_code))
        staff.telegram_user_id = telegram_id


# ------------------------------------------------------------------------------------------------


async def test_policy_question_answered_with_its_citation(fake, make_ctx, engine_for):
    ctx = make_ctx()
    async with serve(ctx, engine_for(ctx)) as (_url, channel):
        assert channel.mode == "polling"
        assert fake.calls_of("getMe") and fake.calls_of("deleteWebhook")  # PTB's polling bootstrap
        fake.push(text_update(fake.next_update_id(), USER, QUESTION))
        sent = await fake.wait_sent(USER, 1)
        assert CITATION in sent[0].text and "出处" in sent[0].text
        await settled(channel, ctx)
    assert len(fake.to(USER)) == 1
    # getUpdates was long-polled with the allowed update types, and the offset confirmed the update.
    polls = fake.calls_of("getUpdates")
    assert json.loads(polls[0]["allowed_updates"]) == ["message", "callback_query"]
    assert not fake.queue


async def test_bind_with_an_invite_code(fake, make_ctx, engine_for):
    ctx = make_ctx()
    code = _invite(ctx, "dr_li_lc")  # 李明远, 临沧市人民医院
    async with serve(ctx, engine_for(ctx)) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, "/refer"))  # unbound: guidance only
        guidance = (await fake.wait_sent(USER, 1))[0]
        assert "/bind" in guidance.text and "绑定码" in guidance.text
        fake.push(text_update(fake.next_update_id(), USER, f"/bind {code.lower()}"))
        bound = (await fake.wait_sent(USER, 2))[1]
        assert "李明远" in bound.text and "查看功能菜单" in bound.buttons
        assert bound.callback_data == ["/help"]
        await settled(channel, ctx)
    assert _bound_staff(ctx, USER) == "dr_li_lc"


async def test_two_step_dialog_survives_a_restart(fake, make_ctx, engine_for):
    code = _invite(make_ctx(), "dr_wu_zd")  # 吴承泽, 张店区人民医院
    ctx1 = make_ctx()
    async with serve(ctx1, engine_for(ctx1)) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, "/bind"))
        prompt = (await fake.wait_sent(USER, 1))[0]
        assert "请发送管理员给您的绑定码" in prompt.text
        await settled(channel, ctx1)
    confirmed = fake.calls_of("getUpdates")[-1]  # PTB confirms the offset when it stops
    assert int(confirmed["offset"]) > 1001 and float(confirmed["timeout"]) == 0

    # A new process (new context, new PTB Application) continues the dialog from the database.
    ctx2 = make_ctx()
    async with serve(ctx2, engine_for(ctx2)) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, code))  # just the code, no command
        done = (await fake.wait_sent(USER, 2))[1]
        assert "吴承泽" in done.text
        await settled(channel, ctx2)
    assert _bound_staff(ctx2, USER) == "dr_wu_zd"
    assert len(fake.to(USER)) == 2  # nothing was answered twice across the restart


async def test_a_duplicate_update_is_answered_once(fake, make_ctx, engine_for):
    ctx = make_ctx()
    engine = Recording(engine_for(ctx))
    async with serve(ctx, engine) as (_url, channel):
        update = text_update(fake.next_update_id(), USER, "/help")
        fake.push(update)
        fake.push(update, redeliver=True)  # the same update_id twice in one batch
        await fake.wait_sent(USER, 1)
        await settled(channel, ctx)
        fake.push(update, redeliver=True)  # and once more later (a lost offset confirmation)
        fake.push(text_update(fake.next_update_id(), USER, "/whoami"))
        await fake.wait_sent(USER, 2)
        await settled(channel, ctx)
    # A restart does not bring it back either (the claim is in the database).
    fake.push(update, redeliver=True)
    async with serve(ctx, engine) as (_url, channel):
        await fake.wait_consumed()
        await settled(channel, ctx)
    texts = [s.text for s in fake.to(USER)]
    assert len(texts) == 2 and "未绑定" in texts[1]
    assert [m.text for m in engine.seen] == ["/help", "/whoami"]
    assert _count(ctx, InboundMessage) == 2


async def test_flood_limit_retry_after_then_delivered_exactly_once(fake, make_ctx, engine_for):
    ctx = make_ctx()
    fake.fail_next("429", retry_after=1)
    async with serve(ctx, engine_for(ctx)) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, QUESTION))
        sent = await fake.wait_sent(USER, 1, timeout=15)
        await settled(channel, ctx)
    attempts = fake.calls_of("sendMessage")
    assert len(attempts) == 2 and len(fake.to(USER)) == 1 and CITATION in sent[0].text
    with ctx.sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
    assert row.status == "sent" and row.attempts == 2
    assert [m for m, _ in fake.failed] == ["sendMessage"]
    assert sent[0].at - fake.failed[0][1] >= 0.95  # the retry waited for retry_after


async def test_a_reply_held_by_a_flood_limit_survives_a_restart(fake, make_ctx, engine_for):
    ctx = make_ctx()
    fake.fail_next("429", retry_after=2)
    async with serve(ctx, engine_for(ctx)) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, "/help"))
        await fake.wait_for(lambda: len(fake.calls_of("sendMessage")) == 1)
        await channel.idle()
    assert fake.to(USER) == []  # stopped while the reply waited for the flood limit
    with ctx.sessions() as s:
        assert s.scalars(select(OutboxMessage.status)).all() == ["pending"]
    ctx2 = make_ctx()
    async with serve(ctx2, engine_for(ctx2)) as (_url, channel):
        sent = await fake.wait_sent(USER, 1, timeout=10)
        await settled(channel, ctx2)
    assert len(fake.to(USER)) == 1 and sent[0].buttons  # the help menu, once
    assert len(fake.calls_of("sendMessage")) == 2


async def test_choices_are_inline_keyboards_and_callbacks_drive_the_dialog(fake, make_ctx, engine_for):
    ctx = make_ctx()
    _bind_directly(ctx, "liaison_sun_sy", USER)  # 哈达山卫生院 (基层), 松原 consortium
    async with serve(ctx, engine_for(ctx)) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, "/refer"))
        ask = (await fake.wait_sent(USER, 1))[0]
        assert ask.buttons[:2] == ["上转（转往上级医院）", "下转（转往下级/基层机构）"]
        assert all(len(d.encode()) <= 64 and d.startswith("d:refer:") for d in ask.callback_data)

        press = callback_update(fake.next_update_id(), USER, ask.callback_data[0], message_id=ask.message_id)
        fake.push(press)
        urgency = (await fake.wait_sent(USER, 2))[1]
        assert "紧急" in urgency.text and urgency.buttons[0] == "普通"
        assert press["callback_query"]["id"] in fake.answered  # the spinner was stopped

        fake.push(callback_update(fake.next_update_id(), USER, urgency.callback_data[0]))
        name = (await fake.wait_sent(USER, 3))[2]
        assert "患者姓名" in name.text

        fake.push(text_update(fake.next_update_id(), USER, "取消"))
        assert "已取消转诊登记" in (await fake.wait_sent(USER, 4))[3].text

        # The first button again: the dialog is over, so it is answered as stale, politely.
        fake.push(callback_update(fake.next_update_id(), USER, ask.callback_data[0]))
        stale = (await fake.wait_sent(USER, 5))[4]
        assert "已经结束或已过期" in stale.text
        await settled(channel, ctx)
    assert len(fake.answered) == 3


async def test_malformed_callbacks_get_a_polite_message(fake, make_ctx, engine_for):
    ctx = make_ctx()
    engine = Recording(engine_for(ctx))
    async with serve(ctx, engine) as (_url, channel):
        bad = [callback_update(fake.next_update_id(), USER, data) for data in ("garbage!", "d:refer", None, "  ")]
        for update in bad:
            fake.push(update)
        sent = await fake.wait_sent(USER, 4)
        await settled(channel, ctx)
    assert all("无法识别这个按钮" in s.text for s in sent)
    assert sorted(fake.answered) == sorted(u["callback_query"]["id"] for u in bad)
    assert engine.seen == []  # nothing reached the engine, nothing was misread as a question


async def test_webhook_mode_checks_the_secret_token(fake, make_ctx, engine_for):
    ctx = make_ctx(telegram_webhook_url=f"https://bot.example.org{WEBHOOK_PATH}", telegram_webhook_secret=SECRET)
    async with serve(ctx, engine_for(ctx)) as (url, channel), aiohttp.ClientSession() as http:
        assert channel.mode == "webhook" and not fake.calls_of("getUpdates")
        assert fake.webhooks == [{"url": f"https://bot.example.org{WEBHOOK_PATH}", "secret_token": SECRET,
                                  "allowed_updates": ["message", "callback_query"]}]

        async def post(update: Any, secret: str | None) -> int:
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
            async with http.post(url + WEBHOOK_PATH, json=update, headers=headers) as resp:
                return resp.status

        question = text_update(fake.next_update_id(), USER, QUESTION)
        assert await post(question, None) == 403
        assert await post(question, "wrong-secret") == 403
        assert await post(question, SECRET[:-1]) == 403
        await asyncio.sleep(0.2)
        assert fake.sent == [] and _count(ctx, InboundMessage) == 0

        assert await post(question, SECRET) == 200
        assert await post(question, SECRET) == 200  # Telegram redelivers: acknowledged, not answered again
        sent = await fake.wait_sent(USER, 1)
        assert CITATION in sent[0].text
        async with http.post(url + WEBHOOK_PATH, data=b"{not json", headers={
                "X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}) as resp:
            assert resp.status == 400
        await settled(channel, ctx)
    assert len(fake.to(USER)) == 1


async def test_webhook_duplicate_across_two_workers_is_answered_once(fake, make_ctx, engine_for):
    overrides = {"telegram_webhook_url": f"https://bot.example.org{WEBHOOK_PATH}", "telegram_webhook_secret": SECRET}
    ctx1, ctx2 = make_ctx(**overrides), make_ctx(**overrides)  # one database, two processes
    async with serve(ctx1, engine_for(ctx1)) as (url1, ch1), serve(ctx2, engine_for(ctx2)) as (url2, ch2), \
            aiohttp.ClientSession() as http:
        update = text_update(fake.next_update_id(), USER, "/help")
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        statuses = await asyncio.gather(*(http.post(u + WEBHOOK_PATH, json=update, headers=headers)
                                          for u in (url1, url2, url1, url2)))
        assert [r.status for r in statuses] == [200] * 4
        for r in statuses:
            r.release()
        await fake.wait_sent(USER, 1)
        await settled(ch1, ctx1)
        await settled(ch2, ctx2)
    assert len(fake.to(USER)) == 1


async def test_documents_are_downloaded_within_the_size_limit(fake, make_ctx, engine_for):
    ctx = make_ctx(max_upload_bytes=1000)
    engine = Recording(engine_for(ctx))
    pdf = b"%PDF-1.4 test document" + b"0" * 100
    fake.add_file("F-ok", "制度.pdf", pdf)
    fake.add_file("F-big", "big.pdf", b"x" * 2000)  # over max_upload_bytes; the update omits file_size
    fake.file_sizes["F-huge"] = 25 * 1024 * 1024  # over Telegram's 20 MB getFile limit
    async with serve(ctx, engine) as (_url, channel):
        fake.push(document_update(fake.next_update_id(), USER, "F-ok", "制度.pdf", len(pdf), caption=""))
        fake.push(document_update(fake.next_update_id(), USER, "F-big", "big.pdf", None))  # type: ignore[arg-type]
        fake.push(document_update(fake.next_update_id(), USER, "F-huge", "huge.pdf", 25 * 1024 * 1024))
        fake.push(document_update(fake.next_update_id(), USER, "F-exe", "setup.exe", 10))
        fake.push(sticker_update(fake.next_update_id(), USER))
        sent = await fake.wait_sent(USER, 5)
        await settled(channel, ctx)
    texts = [s.text for s in sent]
    assert len(engine.seen) == 1 and engine.seen[0].attachments[0].data == pdf
    assert engine.seen[0].attachments[0].file_name == "制度.pdf"
    assert "/bind 绑定码" in texts[0]  # an unbound user may not upload: the engine says how to get access
    assert "文件过大" in texts[1] and "文件过大" in texts[2]
    assert "setup.exe" in texts[3] and "目前支持" in texts[4]
    got = [c["file_id"] for c in fake.calls_of("getFile")]
    assert got == ["F-ok", "F-big"]  # the huge one was refused from its reported size alone


class LongEngine:
    """Answers with a long multi-sentence text and a file, to check splitting and documents."""

    def __init__(self) -> None:
        self.sentence = "医联体内上转患者享有优先接诊、优先检查、优先住院的服务。"

    def handle(self, msg: Incoming) -> list[Reply]:
        from handlers.messages import FileReply
        from handlers.replies import fit_replies

        long_text = self.sentence * 300  # about 8700 characters
        return fit_replies([Reply(long_text, choices=(Choice("功能菜单", "/help"),)),
                            Reply("导出的登记表", file=FileReply("登记表.txt", "内容".encode(), "text/plain"))],
                           msg.channel)


async def test_long_replies_are_split_on_sentences_and_files_sent_as_documents(fake, make_ctx):
    ctx = make_ctx()
    engine = LongEngine()
    async with serve(ctx, engine) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, "/export"))
        await fake.wait_for(lambda: any(s.method == "sendDocument" for s in fake.sent))
        await settled(channel, ctx)
    sent = fake.to(USER)
    texts, document = sent[:-1], sent[-1]
    expected = -(-len(engine.sentence * 300) // 4096)  # parts needed at 4096 characters each
    assert len(texts) in (expected, expected + 1)
    assert all(len(s.text) <= 4096 and s.text.endswith("。") for s in texts)  # cut after a sentence
    assert "".join(s.text for s in texts) == engine.sentence * 300
    assert [s.buttons for s in texts] == [[]] * (len(texts) - 1) + [["功能菜单"]]  # keyboard on the last part
    assert document.method == "sendDocument" and document.file_name == "登记表.txt"
    assert document.data == "内容".encode() and document.text == "导出的登记表"


async def test_network_errors_are_retried_and_never_stop_polling(fake, make_ctx, engine_for):
    ctx = make_ctx()
    fake.fail_next("500", method="getUpdates")  # PTB's polling loop waits 1 s and retries
    fake.fail_next("500", method="sendMessage")
    async with serve(ctx, engine_for(ctx)) as (_url, channel):
        fake.push(text_update(fake.next_update_id(), USER, "/help"))
        await fake.wait_sent(USER, 1, timeout=15)
        fake.push(text_update(fake.next_update_id(), USER, "/whoami"))
        await fake.wait_sent(USER, 2)
        await settled(channel, ctx)
    assert len(fake.to(USER)) == 2
    assert len(fake.calls_of("sendMessage")) == 3


async def test_in_groups_only_what_addresses_the_bot_is_answered(fake, make_ctx, engine_for):
    ctx = make_ctx()
    engine = Recording(engine_for(ctx))
    group = -100123456
    async with serve(ctx, engine) as (_url, channel):
        for text in ("大家好，今天开会", "/help@some_other_bot", "/help@Yilian_Test_Bot", f"@yilian_test_bot {QUESTION}"):
            fake.push(text_update(fake.next_update_id(), USER, text, chat_id=group))
        sent = await fake.wait_sent(group, 2)
        await settled(channel, ctx)
    assert [m.text for m in engine.seen] == ["/help@Yilian_Test_Bot", QUESTION]
    assert all(m.user_key == str(USER) for m in engine.seen)  # the person, not the group
    assert CITATION in sent[1].text and fake.to(USER) == []  # answered in the group
    assert _count(ctx, InboundMessage) == 2  # the rest was not even stored


async def test_start_is_retried_until_telegram_answers(fake, make_ctx, engine_for):
    ctx = make_ctx()
    fake.fail_next("500", method="getMe")
    fake.fail_next("500", method="getMe")
    async with serve(ctx, engine_for(ctx), ready=False) as (_url, channel):
        await channel.wait_ready(5.0)
        fake.push(text_update(fake.next_update_id(), USER, "/help"))
        await fake.wait_sent(USER, 1)
        await settled(channel, ctx)
    assert len(fake.calls_of("getMe")) == 3


async def test_a_refused_token_is_logged_and_the_channel_stays_off(fake, make_ctx, engine_for, caplog):
    ctx = make_ctx(telegram_token="999:WrongToken")
    async with serve(ctx, engine_for(ctx), ready=False) as (_url, channel):
        await fake.wait_for(lambda: "refused the bot token" in caplog.text)
        await asyncio.sleep(0.2)  # no further attempts, no polling
        assert not channel.ready and channel._boot.done()
    assert "WrongToken" not in caplog.text  # the token is not logged
    assert fake.sent == [] and fake.calls == []  # the fake records only calls made with its own token


async def test_yilian_serve_starts_the_telegram_plugin_and_stops_cleanly(fake, make_ctx, engine_for):
    """The production wiring: ``bot.server.serve`` finds ``bot.telegram_channel.CHANNEL`` (default
    options, 25 s long polls) because the token is set, and a stop ends the long poll at once."""
    import socket

    from bot.channels import enabled_channels
    from bot.server import serve as serve_forever

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = make_ctx(http_port=port)
    assert [p.name for p in enabled_channels(ctx.settings)] == ["telegram"]
    stop = asyncio.Event()
    task = asyncio.create_task(serve_forever(ctx, engine_for(ctx), stop=stop, install_signal_handlers=False))
    try:
        fake.push(text_update(fake.next_update_id(), USER, "/help"))
        sent = await fake.wait_sent(USER, 1)
        assert sent[0].buttons
    finally:
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 3
    assert float(fake.calls_of("getUpdates")[0]["timeout"]) == 25


async def test_a_started_channel_prunes_old_rows_periodically(fake, make_ctx, engine_for):
    """Old dedupe claims, answered updates and sent replies are deleted by the running channel."""
    from datetime import timedelta

    from storage.models import ProcessedUpdate
    from storage.types import utcnow

    ctx = make_ctx()
    now = utcnow()
    with ctx.sessions.begin() as s:
        for tag, age in (("old", timedelta(days=31)), ("new", timedelta(hours=1))):
            s.add(ProcessedUpdate(channel="telegram", external_id=f"hk-{tag}", at=now - age))
            s.add(InboundMessage(channel="telegram", external_id=f"hk-{tag}", user_key="1", payload={},
                                 status="done", attempts=1, locked_until=now - age, created_at=now - age))
            s.add(OutboxMessage(channel="telegram", recipient="1", payload={"redacted": True}, dedupe_key=f"hk-{tag}",
                                status="sent", attempts=1, next_attempt_at=now - age, created_at=now - age,
                                sent_at=now - age))
    async with serve(ctx, engine_for(ctx), fast_options(housekeeping_interval_s=0.3)) as (_url, channel):
        await fake.wait_for(lambda: channel.housekeeping.runs >= 2)
        assert channel.housekeeping.runs < 10
    for model in (ProcessedUpdate, InboundMessage, OutboxMessage):
        assert _count(ctx, model) == 1, model  # the old row is gone, its recent twin kept
