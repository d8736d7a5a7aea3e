"""Outbound text is safe per channel: what a document or a user wrote is shown, never interpreted.

An uploaded policy may contain ``<a href="…">`` (WeCom text messages render it as a link whose
target the reader cannot see) or markdown (``[x](url)``, ``**``, headings, ``<font>``). Through the
real render path and the fake platform servers: nothing of it arrives live at WeCom's
``message/send``, and Telegram gets plain text (no ``parse_mode``). The only links are the ones our
own code builds.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot.context import build_context
from bot.telegram.render import render_reply as telegram_render
from bot.wecom.render import anchor, escape_markdown, escape_text, render_replies
from handlers.engine import ConversationEngine
from handlers.messages import Choice, Incoming, Reply

from channel_support import serve_telegram  # noqa: E402
from channel_support import settled as _settled  # noqa: E402

pytest_plugins = ("storage.testing",)  # sqlite_template

EVIL_DOC = """# 医联体远程会诊管理办法

## 第一章 总则

第一条 远程会诊申请须通过医联体信息平台提交，详见<a href="http://evil.example/phish">会诊申请入口</a>，并填写[申请表](http://evil.example/form)。

第二条 会诊专家应当在 **24 小时** 内完成会诊意见，<font color="warning">逾期</font>由医务部督办。
"""
QUESTION = "远程会诊申请怎么提交？"
LIVE_TAG = re.compile(r"<\s*/?\s*(a|font)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def evil_kb(tmp_path_factory):
    """A knowledge base whose only policy carries a link and markup in its text."""
    from bot.config import Settings

    ctx = build_context(Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("evil-kb")))
    ctx.kb.ingest_bytes("远程会诊管理办法.md", EVIL_DOC.encode("utf-8"), uploaded_by="test")
    answer = ctx.kb.ask(QUESTION)
    assert not answer.refused and "<a href" in answer.text  # the answer quotes the markup
    yield ctx.kb
    ctx.close()


def _ctx(tmp_path: Path, sqlite_template: Path, settings_fn, api_base: str, **overrides):
    db = tmp_path / "safety.sqlite3"
    shutil.copyfile(sqlite_template, db)
    return build_context(settings_fn(tmp_path / "var", api_base, database_url=f"sqlite:///{db}", **overrides))




# -- WeCom ------------------------------------------------------------------------------------------


def test_wecom_text_escaping_keeps_the_words_and_kills_the_tags():
    text = '详见<a href="http://evil.example/">入口</a>；&lt;a href=x&gt;；年龄<14岁；$userName=zhangsan$'
    out = escape_text(text)
    assert not LIVE_TAG.search(out) and "&lt;a" not in out and "$userName=" not in out
    assert "＜a href=\"http://evil.example/\">入口＜/a>" in out and "年龄<14岁" in out


def test_wecom_markdown_escaping():
    out = escape_markdown("[点我](http://evil.example) **粗体** `代码`\n# 标题\n> 引用\n<font color=\"info\">绿</font>")
    for live in ("[点我](", "**", "`", "\n# ", "\n> ", "<font"):
        assert live not in out
    assert "点我" in out and "标题" in out and "dr_wang_sy 3#楼 a>b" == escape_markdown("dr_wang_sy 3#楼 a>b")


def test_our_own_links_are_the_only_anchors():
    assert anchor("登录", "https://yilian.example/login?c=1&d=2") == \
        '<a href="https://yilian.example/login?c=1&amp;d=2">登录</a>'
    assert anchor("x", "javascript:alert(1)") == "x"
    assert anchor("<b>登录</b>", 'https://a.example/"onclick') == "＜b＞登录＜/b＞"

    @dataclass(frozen=True)
    class LinkReply(Reply):
        links: tuple[tuple[str, str], ...] = ()

    reply = LinkReply(text='点击<a href="http://evil.example">这里</a>登录', links=(("网页登录", "https://yilian.example/login"),))
    [payload] = render_replies([reply])
    content = payload["text"]["content"]
    assert re.findall(r'<a href="([^"]+)"', content) == ["https://yilian.example/login"]
    [tg] = telegram_render(reply)
    assert tg["text"].endswith("网页登录: https://yilian.example/login")


def test_wecom_markdown_choices_escape_labels_and_prompt():
    choices = (Choice("**全部**", "d:x:1"), Choice("[坏](http://evil.example)", "d:x:2"))
    [md] = render_replies([Reply("# 请选择 <font color=\"warning\">科室</font>", choices)], style="markdown")
    content = md["markdown"]["content"]
    assert "<font" not in content and "](" not in content and not content.startswith("#")
    assert content.count("**") == 4  # only our own emphasis of the two labels


async def test_document_link_never_reaches_wecom_live(tmp_path, sqlite_template, evil_kb):
    from tests.wecom_support import FakeWeCom, WeComSender, fast_options, next_msg_id, serve_app, text_xml, \
        wecom_settings

    fake = await FakeWeCom().start()
    ctx = _ctx(tmp_path, sqlite_template, wecom_settings, fake.url)
    try:
        async with serve_app(ctx, ConversationEngine(ctx, kb=evil_kb), fast_options()) as (url, channel), \
                aiohttp.ClientSession() as http:
            assert (await WeComSender(url).post(http, text_xml("stranger01", QUESTION, next_msg_id())))[0] == 200
            await fake.wait_delivered("stranger01", 1)
            await _settled(channel, ctx)
        bodies = [c for c in fake.send_calls if c.get("touser") == "stranger01"]
        assert bodies and all(b["msgtype"] == "text" for b in bodies)
        content = "".join(b["text"]["content"] for b in bodies)
        assert "会诊申请入口" in content and "evil.example/phish" in content  # the words are all there ...
        assert not LIVE_TAG.search(content)  # ... but no live tag
        assert "<a" not in content.lower() and "</a>" not in content.lower()
    finally:
        ctx.close()
        await fake.close()


# -- Telegram ---------------------------------------------------------------------------------------


async def test_document_markup_reaches_telegram_as_plain_text(tmp_path, sqlite_template, evil_kb):

    from tests.telegram_support import FakeTelegram, fast_options, telegram_settings, text_update

    fake = await FakeTelegram().start()
    ctx = _ctx(tmp_path, sqlite_template, telegram_settings, fake.url)
    engine = ConversationEngine(ctx, kb=evil_kb)
    try:
        async with serve_telegram(ctx, engine, fast_options()) as channel:
            fake.push(text_update(fake.next_update_id(), 5151, QUESTION))
            [sent] = await fake.wait_sent(5151, 1)
            await _settled(channel, ctx)
        expected = engine.handle(Incoming(channel="telegram", user_key="5151", text=QUESTION))[0].text
        # no parse mode: Telegram shows the text exactly as the engine wrote it, tags and all
        assert sent.text == expected and '<a href="http' in sent.text and "</a>" in sent.text
        calls = fake.calls_of("sendMessage")
        assert calls and all("parse_mode" not in c for c in calls)
    finally:
        ctx.close()
        await fake.close()
