"""Signing in to the web pages through WeCom's web authorisation, against a fake WeCom on loopback."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app
from handlers.engine import ConversationEngine
from storage import repositories as repo
from wecom_support import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, FakeWeCom

pytest_plugins = ("engine_support",)


@pytest.fixture
async def fake_wecom():
    fake = await FakeWeCom().start()
    yield fake
    await fake.close()


@pytest.fixture
async def client(directory_template, tmp_path, fake_wecom, app_context):
    from engine_support import context_on_copy

    ctx = context_on_copy(directory_template, tmp_path / "var", web_chat=True, wecom_corp_id=CORP_ID,
                          wecom_agent_id=AGENT_ID, wecom_secret=SECRET, wecom_token=TOKEN, wecom_aes_key=AES_KEY,
                          wecom_api_base=fake_wecom.url, wecom_oauth_base="https://open.weixin.example/")
    app = create_app(ctx, ConversationEngine(ctx, kb=app_context.kb), web_chat=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        c.ctx = ctx
        yield c
    ctx.close()


async def start(client: TestClient) -> str:
    res = await client.get("/auth/wecom", allow_redirects=False)
    assert res.status == 302
    target = urlsplit(res.headers["Location"])
    assert target.netloc == "open.weixin.example" and target.path == "/connect/oauth2/authorize"
    assert target.fragment == "wechat_redirect"
    query = parse_qs(target.query)
    assert query["appid"] == [CORP_ID] and query["scope"] == ["snsapi_base"] and query["agentid"] == [str(AGENT_ID)]
    assert query["redirect_uri"][0].endswith("/auth/wecom/callback")
    state = query["state"][0]
    assert state.isalnum() and len(state) <= 128
    return state


async def test_a_wecom_member_signs_in_and_chats_as_themselves(client, fake_wecom):
    login_page = await (await client.get("/login")).text()
    assert "企业微信授权登录" in login_page
    state = await start(client)
    fake_wecom.oauth_codes["CODE-1"] = "wangsiyuan"
    res = await client.get(f"/auth/wecom/callback?code=CODE-1&state={state}", allow_redirects=False)
    assert res.status == 303 and res.headers["Location"] == "/"
    info = await (await client.get("/api/session")).json()
    assert info["user"]["code"] == "dr_wang_sy" and info["user"]["name"] == "王思远"
    res = await client.post("/api/chat", json={"text": "/whoami"}, headers={"X-CSRF-Token": info["csrf"]})
    assert "王思远" in (await res.json())["replies"][0]["text"]
    with client.ctx.sessions() as session:
        entry = repo.audit_entries(session, action="login", limit=1)[0]
    assert entry.details["method"] == "wecom_oauth" and entry.channel == "web"


async def test_a_forged_state_or_a_reused_code_does_not_sign_in(client, fake_wecom):
    state = await start(client)
    fake_wecom.oauth_codes["CODE-2"] = "gaomingzhe"
    res = await client.get("/auth/wecom/callback?code=CODE-2&state=attackerstate", allow_redirects=False)
    assert res.status == 303 and "error=wecom" in res.headers["Location"]
    res = await client.get(f"/auth/wecom/callback?code=CODE-2&state={state}", allow_redirects=False)
    assert res.headers["Location"] == "/"  # the real one works
    await client.post("/logout", headers={"X-CSRF-Token": (await (await client.get("/api/session")).json())["csrf"]})
    state = await start(client)
    res = await client.get(f"/auth/wecom/callback?code=CODE-2&state={state}", allow_redirects=False)
    assert "error=wecom" in res.headers["Location"]  # codes work once
    assert (await (await client.get("/api/session")).json())["signed_in"] is False


async def test_a_member_outside_the_directory_is_told_whom_to_ask(client, fake_wecom):
    state = await start(client)
    fake_wecom.oauth_codes["CODE-3"] = "someone_else"
    res = await client.get(f"/auth/wecom/callback?code=CODE-3&state={state}", allow_redirects=False)
    assert "error=unknown" in res.headers["Location"]
    page = await (await client.get(res.headers["Location"])).text()
    assert "不在医联体人员名录中" in page
