"""The local web chat and the health endpoints, driven over real HTTP on 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app
from handlers.engine import ConversationEngine

pytest_plugins = ("engine_support",)

STATIC = Path(__file__).resolve().parents[1] / "bot" / "static" / "index.html"


@pytest.fixture
async def client(engine_ctx, engine):
    app = create_app(engine_ctx, engine, web_chat=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def post(client: TestClient, payload) -> tuple[int, dict]:
    res = await client.post("/api/chat", json=payload)
    return res.status, await res.json()


async def test_page_is_served_self_contained_and_in_chinese(client):
    res = await client.get("/")
    assert res.status == 200
    html = await res.text()
    assert 'lang="zh-CN"' in html and "医联助手" in html and "发送" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no CDN or external assets
    assert "viewport" in html  # mobile-friendly
    assert "default-src 'self'" in res.headers["Content-Security-Policy"]


def test_page_never_renders_server_text_as_html():
    script = STATIC.read_text(encoding="utf-8")
    assert "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script, sink


async def test_identities_list_staff_without_contact_data(client):
    res = await client.get("/api/identities")
    people = (await res.json())["identities"]
    assert people[0]["code"] == "guest" and people[0]["name"] == "未绑定访客"
    wang = next(p for p in people if p["code"] == "dr_wang_sy")
    assert wang == {"code": "dr_wang_sy", "name": "王思远", "roles": "医生", "institution": "松原吉林油田医院",
                    "consortium": "松原吉林油田医院城市医疗集团", "consortium_code": "songyuan"}
    body = await res.text()
    assert "13800" not in body and "phone" not in body and "wecom" not in body


async def test_guest_asks_a_policy_question(client):
    status, data = await post(client, {"as": "guest", "session": "abcdef123", "text": "双向转诊的流程是什么？"})
    assert status == 200
    assert "出处：《" in data["replies"][0]["text"]


async def test_choices_round_trip_through_the_api(client):
    status, data = await post(client, {"as": "dr_wang_sy", "text": "/refer"})
    assert status == 200
    choices = data["replies"][0]["choices"]
    assert [c["label"] for c in choices] == ["上转（转往上级医院）", "下转（转往下级/基层机构）"]
    status, data = await post(client, {"as": "dr_wang_sy", "choice": choices[1]["value"]})
    receivers = data["replies"][0]["choices"]
    assert "请选择接收机构" in data["replies"][0]["text"] and receivers
    status, data = await post(client, {"as": "dr_wang_sy", "choice": receivers[0]["value"]})
    assert f"接收机构：{receivers[0]['label']}" in data["replies"][0]["text"]


async def test_guest_sessions_do_not_share_dialog_state(client):
    await post(client, {"as": "guest", "session": "browserA1", "text": "/refer"})
    _, data = await post(client, {"as": "guest", "session": "browserB2", "text": "取消"})
    assert "没有进行中的操作" in data["replies"][0]["text"]


async def test_markup_in_messages_comes_back_as_plain_json_text(client):
    evil = "<img src=x onerror=alert(1)>"
    await post(client, {"as": "dr_wang_sy", "text": "/refer"})
    res = await client.post("/api/chat", json={"as": "dr_wang_sy", "text": evil})  # a typo'd step answer
    assert res.content_type == "application/json"
    data = await res.json()
    assert f"没有找到“{evil}”" in data["replies"][0]["text"]  # echoed as data; the page inserts it as text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "请求格式不正确"),
        (b"[1, 2]", "JSON 对象"),
        (b'{"as": "nobody_here", "text": "hi"}', "没有找到这个身份"),
        (b'{"as": "dr_wang_sy", "text": "   "}', "请输入消息内容"),
        (b'{"text": "hi"}', "请先选择一个聊天身份"),
        (b'{"as": "guest", "session": "<bad>", "text": "hi"}', "会话编号格式不正确"),
    ],
)
async def test_bad_requests_get_a_polite_chinese_400(client, raw, message):
    res = await client.post("/api/chat", data=raw, headers={"Content-Type": "application/json"})
    assert res.status == 400
    assert message in (await res.json())["error"]


async def test_health_and_readiness(client):
    res = await client.get("/healthz")
    assert res.status == 200
    res = await client.get("/readyz")
    assert res.status == 200 and (await res.json())["ready"] is True


async def test_not_ready_while_the_knowledge_base_is_not_loaded(engine_ctx):
    app = create_app(engine_ctx, ConversationEngine(engine_ctx), web_chat=False)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        res = await c.get("/readyz")
        assert res.status == 503
        assert "loading" in (await res.json())["reason"]
        assert (await c.get("/")).status == 404  # web chat switched off
        assert (await c.get("/healthz")).status == 200


async def test_not_ready_when_the_knowledge_base_has_no_documents(fresh_context):
    engine = ConversationEngine(fresh_context)
    engine.kb  # noqa: B018 - load it (empty)
    async with TestClient(TestServer(create_app(fresh_context, engine), host="127.0.0.1")) as c:
        res = await c.get("/readyz")
        assert res.status == 503 and "no documents" in (await res.json())["reason"]


async def test_not_ready_when_the_database_is_unreachable(tmp_path, app_context):
    from bot.config import Settings
    from bot.context import build_context

    ctx = build_context(Settings(_env_file=None, data_dir=tmp_path,
                                 database_url=f"sqlite:///{tmp_path}/missing/dir/db.sqlite3"), migrate=False)
    engine = ConversationEngine(ctx, kb=app_context.kb)
    async with TestClient(TestServer(create_app(ctx, engine, web_chat=False), host="127.0.0.1")) as c:
        res = await c.get("/readyz")
        assert res.status == 503 and "database" in (await res.json())["reason"]
    ctx.close()


async def test_web_console_upload_indexes_an_admins_policy_file(engine_ctx, fresh_context):
    import aiohttp

    engine = ConversationEngine(engine_ctx, kb=fresh_context.kb)  # a knowledge base of its own
    app = create_app(engine_ctx, engine, web_chat=True)
    policy = "联络员会议制度\n一、会议安排\n（一）例会。联络员例会每月召开一次。\n".encode()
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        form = aiohttp.FormData()
        form.add_field("as", "admin_sy")
        form.add_field("file", policy, filename="联络员会议制度.txt", content_type="text/plain")
        res = await client.post("/api/upload", data=form)
        assert res.status == 200
        assert "已收录《联络员会议制度》" in (await res.json())["replies"][0]["text"]
        status, data = await post(client, {"as": "admin_sy", "text": "联络员例会多久开一次？"})
        assert "每月召开一次" in data["replies"][0]["text"]

        form = aiohttp.FormData()
        form.add_field("as", "dr_wang_sy")
        form.add_field("file", policy, filename="联络员会议制度.txt")
        res = await client.post("/api/upload", data=form)
        assert "只有管理员可以上传政策文件" in (await res.json())["replies"][0]["text"]

        form = aiohttp.FormData()
        form.add_field("as", "guest")
        form.add_field("file", policy, filename="联络员会议制度.txt")
        res = await client.post("/api/upload", data=form)
        assert res.status == 400 and "管理员身份" in (await res.json())["error"]

        engine_ctx.settings.max_upload_bytes = 100
        form = aiohttp.FormData()
        form.add_field("as", "admin_sy")
        form.add_field("file", b"x" * 1000, filename="big.txt")
        res = await client.post("/api/upload", data=form)
        assert res.status == 413 and "文件过大" in (await res.json())["error"]

        res = await client.post("/api/upload", json={"as": "admin_sy"})
        assert res.status == 400
