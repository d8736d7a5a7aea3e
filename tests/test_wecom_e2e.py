"""WeCom channel end to end, over real HTTP on loopback.

The real server application (``bot.server.create_app``) with the WeCom channel and the real
conversation engine and knowledge base (the sample policies) receives callbacks encrypted and
signed as WeCom sends them; a fake WeCom API (``tests/wecom_support.py``) serves ``gettoken`` and
``media/get`` and records every ``message/send``. Databases are SQLite files in tmp.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select, update

from bot.context import build_context
from handlers.engine import ConversationEngine
from handlers.messages import Incoming, Reply
from storage.models import InboundMessage, OutboxMessage
from storage.types import utcnow
from tests.wecom_support import (
    FakeWeCom,
    WeComSender,
    card_click_xml,
    fast_options,
    message_xml,
    next_msg_id,
    serve_app,
    text_xml,
    wecom_settings,
)

from channel_support import count_rows as _count  # noqa: E402
from channel_support import settled  # noqa: E402

pytest_plugins = ("storage.testing",)  # sqlite_template

REPO = Path(__file__).resolve().parents[1]
QUESTION = "联席会议的目的是讨论什么？"
CITATION = "《德阳市人民医院城市医疗集团工作制度》"
BOUND_USER = "limingyuan"  # 李明远, physician, in storage/samples/directory.yaml


@pytest.fixture
async def fake():
    server = await FakeWeCom().start()
    yield server
    await server.close()


def _context(tmp_path: Path, sqlite_template: Path, api_base: str, **overrides):
    from storage.directory_import import import_directory

    db = tmp_path / "wecom.sqlite3"
    fresh = not db.exists()
    if fresh:
        shutil.copyfile(sqlite_template, db)
    settings = wecom_settings(tmp_path / "var", api_base, database_url=f"sqlite:///{db}", **overrides)
    ctx = build_context(settings)
    if fresh:
        with ctx.sessions.begin() as session:
            assert import_directory(session, REPO / "storage" / "samples" / "directory.yaml", actor="test").ok
    return ctx


@pytest.fixture
def make_ctx(tmp_path, sqlite_template, fake):
    """Build (and rebuild, for a restart) the context of the process under test."""
    made = []

    def make(**overrides):
        ctx = _context(tmp_path, sqlite_template, fake.url, **overrides)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture(scope="session")
def policy_kb(request, tmp_path_factory):
    """The knowledge base with the sample policies, built once per session (indexing takes
    seconds): the shared ``app_context``'s when conftest provides one, else our own."""
    try:
        return request.getfixturevalue("app_context").kb
    except pytest.FixtureLookupError:
        from knowledge.samples import sample_policies

        ctx = build_context(wecom_settings(tmp_path_factory.mktemp("wecom-kb"), "http://127.0.0.1:9/"))
        for path, consortium in sample_policies():
            ctx.kb.ingest_path(path, uploaded_by="test", consortium=consortium)
        return ctx.kb


@pytest.fixture
def engine_for(policy_kb):
    """The real engine on a test context, sharing the session's knowledge base."""
    return lambda ctx: ConversationEngine(ctx, kb=policy_kb)


class Recording:
    """The real engine, with every Incoming it was given kept for inspection."""

    def __init__(self, engine):
        self.engine = engine
        self.seen: list[Incoming] = []

    def handle(self, msg: Incoming) -> list[Reply]:
        self.seen.append(msg)
        return self.engine.handle(msg)


async def _settled(channel, fake: FakeWeCom, ctx, timeout: float = 10.0) -> None:
    await settled(channel, ctx, timeout)


# ------------------------------------------------------------------------------------------------


async def test_url_verification(fake, make_ctx, engine_for):
    ctx = make_ctx()
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, _channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        started = time.perf_counter()
        status, body = await wecom.verify_url(http, "echo-5f3a9c")
        assert (status, body) == (200, "echo-5f3a9c")  # the plain echostr, no quotes or newline
        assert time.perf_counter() - started < 1.0
        assert (await wecom.verify_url(http, "echo", bad_signature=True))[0] == 403
        assert (await wecom.verify_url(http, "echo", timestamp=int(time.time()) - 3600))[0] == 403


async def test_policy_question_answered_once_although_delivered_three_times(fake, make_ctx, engine_for):
    ctx = make_ctx()
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        xml = text_xml(BOUND_USER, QUESTION, next_msg_id())
        first = await wecom.post(http, xml)
        # WeCom's retries: the same message, encrypted and signed afresh; two arrive together
        retries = await asyncio.gather(wecom.post(http, xml), wecom.post(http, xml))
        for status, body, seconds in (first, *retries):
            assert (status, body) == (200, "")
            assert seconds < 1.0
        [reply] = await fake.wait_delivered(BOUND_USER, 1)
        await _settled(channel, fake, ctx)
        assert len(fake.to(BOUND_USER)) == 1
        assert reply.msgtype == "text"
        assert "协作内容" in reply.text and CITATION in reply.text and "出处" in reply.text
        assert _count(ctx, InboundMessage) == 1
        assert _count(ctx, OutboxMessage, OutboxMessage.status == "sent") == 1


async def test_unknown_user_gets_the_unbound_answer_and_can_still_ask(fake, make_ctx, engine_for):
    ctx = make_ctx()
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        assert (await wecom.post(http, text_xml("stranger01", "转诊", next_msg_id())))[0] == 200
        [guidance] = await fake.wait_delivered("stranger01", 1)
        assert "尚未登记" in guidance.text
        assert (await wecom.post(http, text_xml("stranger01", QUESTION, next_msg_id())))[0] == 200
        answers = await fake.wait_delivered("stranger01", 2)
        assert CITATION in answers[1].text


async def test_api_failing_then_recovering_delivers_exactly_once(fake, make_ctx, engine_for):
    ctx = make_ctx()
    # 500, rate limited, expired token, then "delivered but the answer was lost", then healthy
    fake.failures = ["500", "45009", "expire", "lost"]
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        assert (await wecom.post(http, text_xml(BOUND_USER, QUESTION, next_msg_id())))[0] == 200
        await fake.wait_for(lambda: not fake.failures and len(fake.send_calls) >= 5)
        await _settled(channel, fake, ctx)
        delivered = fake.to(BOUND_USER)
        assert len(delivered) == 1 and CITATION in delivered[0].text
        # the first attempt is plain; every retry asks WeCom to drop duplicates
        assert "enable_duplicate_check" not in fake.send_calls[0]
        assert all(c.get("enable_duplicate_check") == 1 for c in fake.send_calls[1:])
        assert fake.token_fetches == 2  # refetched once, after 42001
        with ctx.sessions() as s:
            row = s.scalars(select(OutboxMessage)).one()
        # 5 calls in 4 attempts: the call refused with 42001 was repeated at once with a new token
        assert row.status == "sent" and row.attempts == 4 and len(fake.send_calls) == 5


async def test_long_answer_arrives_as_several_messages_in_order(fake, make_ctx, engine_for):
    ctx = make_ctx()
    sentences = [f"第{i:02d}条：成员单位应当按照协议落实双向转诊、远程会诊和人员培训等各项工作要求。" for i in range(1, 60)]
    long_text = "".join(sentences)
    assert len(long_text.encode("utf-8")) >= 5000

    class LongAnswers(Recording):
        def handle(self, msg):
            if msg.text == "长篇说明":
                self.seen.append(msg)
                return [Reply(long_text)]
            return super().handle(msg)

    async with serve_app(ctx, LongAnswers(engine_for(ctx)), fast_options()) as (url, channel), \
            aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        assert (await wecom.post(http, text_xml(BOUND_USER, "长篇说明", next_msg_id())))[0] == 200
        await fake.wait_for(lambda: "".join(d.text for d in fake.to(BOUND_USER)) == long_text)
        await _settled(channel, fake, ctx)
        parts = fake.to(BOUND_USER)
        assert len(parts) >= 3
        assert all(len(p.text.encode("utf-8")) <= 2048 for p in parts)
        assert all(p.text.endswith("。") for p in parts)  # cut on sentence boundaries
        assert "".join(p.text for p in parts) == long_text  # all of it, in order


async def test_restart_with_messages_in_the_outbox_delivers_all_once(fake, make_ctx, engine_for):
    ctx = make_ctx()
    fake.down = "500"  # WeCom unreachable while the first process runs
    users = ["limingyuan", "zhangyunfan", "wuchengze"]
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        for user in users:
            assert (await wecom.post(http, text_xml(user, QUESTION, next_msg_id())))[0] == 200
        assert (await wecom.post(http, text_xml(BOUND_USER, "转诊", next_msg_id())))[0] == 200
        await fake.wait_for(lambda: len({c["touser"] for c in fake.send_calls}) == len(users))
    # the process has stopped: nothing delivered, everything still queued
    assert fake.delivered == []
    queued = _count(ctx, OutboxMessage, OutboxMessage.status == "pending")
    assert queued == len(users) + 1
    ctx.close()

    # A crash leftover as well: a worker died while sending (its claim's lease has run out) ...
    ctx2 = make_ctx()
    with ctx2.sessions.begin() as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.recipient == "wuchengze")
                  .values(status="sending", claim_token="dead-worker", next_attempt_at=utcnow() - timedelta(seconds=1)))
    # ... and a message acknowledged to WeCom but never processed.
    from bot.wecom.inbound import dedupe_key, parse_plaintext
    from bot.inbox import InboxStore, NewInbound

    fields = parse_plaintext(text_xml("heliping", QUESTION, next_msg_id()))
    InboxStore(ctx2.sessions, "wecom").accept_batch([NewInbound(dedupe_key(fields), "heliping", fields)],
                                                    lease_s=-1)

    fake.down = None
    async with serve_app(ctx2, engine_for(ctx2), fast_options()) as (url, channel):
        await fake.wait_for(lambda: all(fake.to(u) for u in [*users, "heliping"]) and len(fake.to(BOUND_USER)) == 2)
        await _settled(channel, fake, ctx2)
    for user in [*users, "heliping"]:
        answers = [d for d in fake.to(user) if CITATION in d.text]
        assert len(answers) == 1, user
    # the physician's two replies arrive in the order the messages were sent
    first, second = fake.to(BOUND_USER)
    assert CITATION in first.text and second.msgtype == "template_card"
    assert _count(ctx2, OutboxMessage, OutboxMessage.status != "sent") == 0


async def test_bad_signature_or_stale_timestamp_is_403_and_nothing_is_processed(fake, make_ctx, engine_for, caplog):
    ctx = make_ctx()
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        xml = text_xml(BOUND_USER, QUESTION, next_msg_id())
        with caplog.at_level("WARNING", logger="bot.wecom.channel"):
            assert (await wecom.post(http, xml, bad_signature=True))[0] == 403
            assert (await wecom.post(http, xml, timestamp=int(time.time()) - 3600))[0] == 403
            assert (await wecom.post(http, xml, timestamp=int(time.time()) + 3600))[0] == 403
            encrypted, body = wecom.envelope(xml)
            assert (await wecom.post_raw(http, body, {"timestamp": str(int(time.time())), "nonce": "n"}))[0] == 403
        assert sum("rejected (403)" in r.getMessage() for r in caplog.records) == 4
        await asyncio.sleep(0.2)
        await channel.idle()
        assert _count(ctx, InboundMessage) == 0 and _count(ctx, OutboxMessage) == 0
        assert fake.send_calls == []


async def test_malformed_body_is_400(fake, make_ctx, engine_for):
    ctx = make_ctx()
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        q = wecom.signed_query("whatever")
        assert (await wecom.post_raw(http, b"this is not XML", q))[0] == 400
        assert (await wecom.post_raw(http, "<xml><Foo>1</Foo></xml>", q))[0] == 400
        assert (await wecom.post_raw(http, b"\xff\xfe<xml>", q))[0] == 400
        # correctly signed, but the Encrypt value is not a WeCom ciphertext
        garbage = "QUJDREVGR0hJSktMTU5PUA=="
        body = f"<xml><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>"
        assert (await wecom.post_raw(http, body, wecom.signed_query(garbage)))[0] == 400
        # decrypts, but the plaintext is not a WeCom message
        encrypted, body = wecom.envelope("no xml inside")
        assert (await wecom.post_raw(http, body, wecom.signed_query(encrypted)))[0] == 400
        assert _count(ctx, InboundMessage) == 0


async def test_file_message_is_downloaded_and_handed_to_the_engine(fake, make_ctx, engine_for):
    ctx = make_ctx(max_upload_bytes=64 * 1024)
    policy = "转诊管理办法\n第一条 为规范双向转诊工作，制定本办法。\n".encode("utf-8")
    fake.media["MEDIA-POLICY"] = ("双向转诊管理办法.txt", policy, "text/plain")
    fake.media["MEDIA-BIG"] = ("大文件.pdf", b"%PDF-1.4\n" + b"0" * (70 * 1024), "application/pdf")
    fake.media["MEDIA-EXE"] = ("setup.exe", b"MZ....", "application/octet-stream")
    # this process's own (empty) knowledge base: the admin's file is really ingested into it
    engine = Recording(ConversationEngine(ctx))
    async with serve_app(ctx, engine, fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        admin = "duanzhiqiang"
        # the file name comes from media/get's Content-Disposition
        assert (await wecom.post(http, message_xml(admin, "file", msg_id=next_msg_id(), MediaId="MEDIA-POLICY")))[0] == 200
        await fake.wait_delivered(admin, 1)
        [incoming] = engine.seen
        assert incoming.user_key == admin and incoming.channel == "wecom"
        [attachment] = incoming.attachments
        assert attachment.file_name == "双向转诊管理办法.txt" and attachment.data == policy
        assert "已收录《双向转诊管理办法》" in fake.to(admin)[0].text
        assert [d.title for d in ctx.kb.documents()] == ["双向转诊管理办法"]

        # larger than max_upload_bytes: refused without keeping the bytes, with a note
        assert (await wecom.post(http, message_xml(admin, "file", msg_id=next_msg_id(), MediaId="MEDIA-BIG")))[0] == 200
        notes = await fake.wait_delivered(admin, 2)
        assert "文件过大" in notes[1].text
        # a type the knowledge base cannot read
        assert (await wecom.post(http, message_xml(admin, "file", msg_id=next_msg_id(), MediaId="MEDIA-EXE")))[0] == 200
        notes = await fake.wait_delivered(admin, 3)
        assert "暂不支持" in notes[2].text and "setup.exe" in notes[2].text
        # a type known from the message itself is refused before downloading
        downloads = len(fake.media_calls)
        assert (await wecom.post(http, message_xml(admin, "file", msg_id=next_msg_id(), MediaId="MEDIA-X",
                                                   FileName="视频.mp4")))[0] == 200
        notes = await fake.wait_delivered(admin, 4)
        assert "视频.mp4" in notes[3].text and len(fake.media_calls) == downloads
        # a media_id WeCom no longer knows (they expire after 3 days)
        assert (await wecom.post(http, message_xml(admin, "file", msg_id=next_msg_id(), MediaId="MEDIA-GONE",
                                                   FileName="旧文件.pdf")))[0] == 200
        notes = await fake.wait_delivered(admin, 5)
        assert "下载失败" in notes[4].text
        assert len(engine.seen) == 1  # only the readable file reached the engine


async def test_voice_and_unsupported_types(fake, make_ctx, engine_for):
    ctx = make_ctx()
    engine = Recording(engine_for(ctx))
    async with serve_app(ctx, engine, fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        user = BOUND_USER
        # voice with WeCom's speech recognition: handled as the text it carries
        voice = message_xml(user, "voice", msg_id=next_msg_id(), MediaId="V1", Format="amr",
                            Recognition="联席会议的目的是讨论什么")
        assert (await wecom.post(http, voice))[0] == 200
        [answer] = await fake.wait_delivered(user, 1)
        assert CITATION in answer.text and engine.seen[0].text == "联席会议的目的是讨论什么"
        others = [
            message_xml(user, "voice", msg_id=next_msg_id(), MediaId="V2", Format="amr"),
            message_xml(user, "video", msg_id=next_msg_id(), MediaId="V3", ThumbMediaId="T"),
            message_xml(user, "location", msg_id=next_msg_id(), Location_X="23.1", Location_Y="113.3", Scale=15,
                        Label="广州市"),
            message_xml(user, "image", msg_id=next_msg_id(), PicUrl="http://127.0.0.1/x.jpg", MediaId="I1"),
        ]
        for xml in others:
            assert (await wecom.post(http, xml))[0] == 200
        notes = await fake.wait_delivered(user, 5)
        assert "语音" in notes[1].text and "文字" in notes[1].text
        for note in notes[2:]:
            assert note.text.startswith("抱歉，暂时无法处理这类消息") and "文字消息" in note.text
        assert len(engine.seen) == 1  # none of them reached the engine
        # events that need no answer are acknowledged and dropped
        enter = message_xml(user, "event", Event="enter_agent", EventKey="")
        assert (await wecom.post(http, enter))[:2] == (200, "")
        await _settled(channel, fake, ctx)
        assert len(fake.to(user)) == 5


async def test_choices_as_template_card_and_clicks_drive_the_dialog(fake, make_ctx, engine_for):
    ctx = make_ctx()
    engine = Recording(engine_for(ctx))
    async with serve_app(ctx, engine, fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        assert (await wecom.post(http, text_xml(BOUND_USER, "转诊", next_msg_id())))[0] == 200
        [card_msg] = await fake.wait_delivered(BOUND_USER, 1)
        assert card_msg.msgtype == "template_card"
        card = card_msg.body["template_card"]
        assert card["card_type"] == "button_interaction" and "转诊方向" in card["main_title"]["title"]
        assert 1 <= len(card["button_list"]) <= 6
        assert all(len(b["text"]) <= 10 for b in card["button_list"])
        up = next(b for b in card["button_list"] if b["text"].startswith("上转"))
        click = card_click_xml(BOUND_USER, up["key"], card["task_id"])
        # WeCom retries the event too: same user, time, key and task → one click
        for _ in range(3):
            assert (await wecom.post(http, click))[0] == 200
        await fake.wait_delivered(BOUND_USER, 2)
        await _settled(channel, fake, ctx)
        clicks = [m for m in engine.seen if m.choice is not None]
        assert [m.choice for m in clicks] == [up["key"]]
        next_step = fake.to(BOUND_USER)[1]
        assert len(fake.to(BOUND_USER)) == 2 and "转诊方向" not in next_step.text


async def test_callback_for_another_agent_is_ignored(fake, make_ctx, engine_for):
    ctx = make_ctx()
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), aiohttp.ClientSession() as http:
        wecom = WeComSender(url)
        xml = text_xml(BOUND_USER, QUESTION, next_msg_id()).replace("<AgentID>1000002</AgentID>",
                                                                    "<AgentID>1000099</AgentID>")
        assert (await wecom.post(http, xml))[:2] == (200, "")
        await channel.idle()
        assert _count(ctx, InboundMessage) == 0


async def test_serve_discovers_the_wecom_plugin(fake, make_ctx, engine_for):
    """``yilian serve`` builds its app from ``bot.channels.enabled_channels``: WeCom is among them
    when configured, and its callback answers on the shared HTTP port."""
    from aiohttp import web

    from bot.channels import enabled_channels
    from bot.server import CHANNELS_KEY, create_app

    ctx = make_ctx()
    plugins = enabled_channels(ctx.settings)
    assert "wecom" in [p.name for p in plugins]
    app = create_app(ctx, engine_for(ctx), channels=[p for p in plugins if p.name == "wecom"], web_chat=False)
    assert "wecom" in app[CHANNELS_KEY]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        async with aiohttp.ClientSession() as http:
            assert await WeComSender(url).verify_url(http, "hello") == (200, "hello")
            assert (await WeComSender(url).post(http, text_xml("stranger02", QUESTION, next_msg_id())))[0] == 200
        await fake.wait_delivered("stranger02", 1)
    finally:
        await runner.cleanup()


def _old_and_new_rows(ctx, channel: str) -> None:
    """A week-old dedupe claim, an answered inbound row and a month-old sent outbox row, each
    with a recent twin that must survive."""
    from storage.models import ProcessedUpdate

    now = utcnow()
    with ctx.sessions.begin() as s:
        for tag, age in (("old", timedelta(days=31)), ("new", timedelta(hours=1))):
            s.add(ProcessedUpdate(channel=channel, external_id=f"hk-{tag}", at=now - age))
            s.add(InboundMessage(channel=channel, external_id=f"hk-{tag}", user_key="u", payload={}, status="done",
                                 attempts=1, locked_until=now - age, created_at=now - age))
            s.add(OutboxMessage(channel=channel, recipient="u", payload={"redacted": True}, dedupe_key=f"hk-{tag}",
                                status="sent", attempts=1, next_attempt_at=now - age, created_at=now - age,
                                sent_at=now - age))


async def test_a_started_channel_prunes_old_rows_periodically(fake, make_ctx, engine_for):
    from storage.models import ProcessedUpdate

    ctx = make_ctx()
    _old_and_new_rows(ctx, "wecom")
    async with serve_app(ctx, engine_for(ctx), fast_options(housekeeping_interval_s=0.3)) as (url, channel):
        await fake.wait_for(lambda: channel.housekeeping.runs >= 1)
        assert channel.housekeeping.last == {"processed_updates": 1, "inbound": 1, "outbox": 1}
        for model in (ProcessedUpdate, InboundMessage, OutboxMessage):
            assert _count(ctx, model) == 1, model  # the recent twin is kept
        await fake.wait_for(lambda: channel.housekeeping.runs >= 2)  # and again after the interval
    # production default: once an hour per process
    async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel):
        await fake.wait_for(lambda: channel.housekeeping.runs == 1)
        await asyncio.sleep(0.5)  # several recovery ticks
        assert channel.housekeeping.runs == 1 and channel.housekeeping.interval_s == 3600


async def test_one_request_id_follows_a_message_from_callback_to_send(fake, make_ctx, engine_for):
    """JSON log lines of the callback, the processing and the outbox send share one request id,
    which reveals neither the message id nor the user."""
    import io
    import json
    import logging

    from bot.logging_setup import _Formatter, request_id_for

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(_Formatter(as_json=True))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        ctx = make_ctx()
        async with serve_app(ctx, engine_for(ctx), fast_options()) as (url, channel), \
                aiohttp.ClientSession() as http:
            msg_id = next_msg_id()
            assert (await WeComSender(url).post(http, text_xml(BOUND_USER, QUESTION, msg_id)))[0] == 200
            await fake.wait_delivered(BOUND_USER, 1)
            await _settled(channel, fake, ctx)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    with ctx.sessions() as session:
        [key] = session.scalars(select(InboundMessage.external_id))
    rid = request_id_for("wecom", key)
    mine = [line for line in lines if line.get("request_id") == rid]
    said = {line["msg"] for line in mine}
    assert "wecom message processed" in said
    assert any(m.startswith("outbox row") and m.endswith("sent") for m in said)
    assert str(msg_id) not in rid and BOUND_USER not in rid
