"""The web chat and the health endpoints, driven over real HTTP on 127.0.0.1.

Who speaks is always the signed-in session's staff member: these tests drive the demo picker
(``YILIAN_DEMO``) and the real sign-in paths of ``bot.webauth`` and check that no request field can
name another person.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app
from handlers.engine import ConversationEngine
from storage import repositories as repo
from web_support import Browser, login_link_for, sign_in_with_link

pytest_plugins = ("engine_support", "web_support")

STATIC = Path(__file__).resolve().parents[1] / "bot" / "static" / "index.html"


# ------------------------------------------------------------------------------------------------
# the page


async def test_page_is_served_self_contained_and_in_chinese(demo_client):
    res = await demo_client.get("/")
    assert res.status == 200
    html = await res.text()
    assert 'lang="zh-CN"' in html and "医联助手" in html and "发送" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no CDN or external assets
    assert "viewport" in html  # mobile-friendly
    assert "default-src 'self'" in res.headers["Content-Security-Policy"]
    assert res.headers["Referrer-Policy"] == "same-origin"


def test_page_never_renders_server_text_as_html():
    script = STATIC.read_text(encoding="utf-8")
    assert "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script, sink


async def test_demo_mode_says_so_and_offers_the_picker(demo_client):
    info = await (await demo_client.get("/api/session")).json()
    assert info == {"signed_in": False, "demo": True}
    html = await (await demo_client.get("/")).text()
    assert "演示模式" in html
    res = await demo_client.get("/api/identities")
    people = (await res.json())["identities"]
    assert people[0]["code"] == "guest" and people[0]["name"] == "未绑定访客"
    wang = next(p for p in people if p["code"] == "dr_wang_sy")
    assert wang == {"code": "dr_wang_sy", "name": "王思远", "roles": "医生", "institution": "松原吉林油田医院",
                    "consortium": "松原吉林油田医院城市医疗集团", "consortium_code": "songyuan"}
    body = await res.text()
    assert "13800" not in body and "phone" not in body and "wecom" not in body


async def test_without_demo_mode_there_is_no_picker_and_no_way_in_without_signing_in(client):
    res = await client.get("/", allow_redirects=False)
    assert res.status == 303 and res.headers["Location"] == "/login"
    login = await (await client.get("/login")).text()
    assert "登录医联助手" in login and "演示模式" not in login and "/login" in login
    assert (await client.get("/api/identities")).status == 404
    assert (await client.post("/api/demo/login", json={"as": "admin_sy"})).status == 404
    for path in ("/api/chat", "/api/upload"):
        res = await client.post(path, json={"as": "admin_sy", "text": "/users"})
        assert res.status == 401 and "请先登录" in (await res.json())["error"], path


# ------------------------------------------------------------------------------------------------
# chatting as the session's person


async def test_guest_asks_a_policy_question(demo_client):
    browser = Browser(demo_client)
    await browser.demo_login("guest")
    status, data = await browser.say(text="双向转诊的流程是什么？")
    assert status == 200
    assert "出处：《" in data["replies"][0]["text"]


async def test_choices_round_trip_through_the_api(demo_client):
    browser = Browser(demo_client)
    await browser.demo_login("dr_wang_sy")
    status, data = await browser.say(text="/refer")
    assert status == 200
    choices = data["replies"][0]["choices"]
    assert [c["label"] for c in choices] == ["上转（转往上级医院）", "下转（转往下级/基层机构）"]
    status, data = await browser.say(choice=choices[1]["value"])
    urgency = data["replies"][0]["choices"]
    assert "紧急" in data["replies"][0]["text"] and [c["label"] for c in urgency][0] == "普通"
    status, data = await browser.say(choice=urgency[0]["value"])
    assert "患者姓名" in data["replies"][0]["text"]


async def test_guest_sessions_do_not_share_dialog_state(demo_client):
    a = Browser(demo_client)
    await a.demo_login("dr_wang_sy")
    await a.say(text="/refer")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        b = Browser(demo_client, http)
        await b.demo_login("guest")
        _, data = await b.say(text="取消")
        assert "没有进行中的操作" in data["replies"][0]["text"]
        _, data = await b.say(text="/whoami")
        assert "王思远" not in data["replies"][0]["text"]


async def test_a_field_naming_someone_else_is_ignored_everywhere(demo_client, engine_ctx):
    """The old API trusted ``{"as": "admin_sy"}``: a physician made himself admin that way."""
    browser = Browser(demo_client)
    await browser.demo_login("dr_wang_sy")
    status, data = await browser.say(**{"as": "admin_sy", "text": "/role dr_wang_sy 医生 管理员"})
    assert status == 200 and "只有管理员" in data["replies"][0]["text"]
    _, data = await browser.say(**{"as": "admin_sy", "user": "admin_sy", "text": "/whoami"})
    assert "王思远" in data["replies"][0]["text"]
    form = aiohttp.FormData()
    form.add_field("as", "admin_sy")
    form.add_field("file", b"policy text", filename="x.txt")
    res = await browser.request("POST", "/api/upload", data=form, headers={"X-CSRF-Token": browser.csrf})
    assert res.status == 403 and "只有管理员" in (await res.json())["error"]
    with engine_ctx.sessions() as session:
        assert repo.get_staff_by_code(session, "dr_wang_sy").roles == ["physician"]


async def test_markup_in_messages_comes_back_as_plain_json_text(demo_client):
    evil = "<img src=x onerror=alert(1)>"
    browser = Browser(demo_client)
    await browser.demo_login("dr_wang_sy")
    await browser.say(text="/refer")
    status, data = await browser.say(text=evil)  # a typo'd step answer
    assert f"没有找到“{evil}”" in data["replies"][0]["text"]  # echoed as data; the page inserts it as text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "请求格式不正确"),
        (b"[1, 2]", "JSON 对象"),
        (b'{"text": "   "}', "请输入消息内容"),
        (b'{"text": 5}', "消息内容应为文字"),
    ],
)
async def test_bad_requests_get_a_polite_chinese_400(demo_client, raw, message):
    browser = Browser(demo_client)
    await browser.demo_login("dr_wang_sy")
    res = await demo_client.post("/api/chat", data=raw, headers={"Content-Type": "application/json",
                                                                   "X-CSRF-Token": browser.csrf})
    assert res.status == 400
    assert message in (await res.json())["error"]


async def test_unknown_demo_identity_is_refused_politely(demo_client):
    res = await demo_client.post("/api/demo/login", json={"as": "nobody_here"})
    assert res.status == 400 and "没有找到这个身份" in (await res.json())["error"]


# ------------------------------------------------------------------------------------------------
# cross-site requests and DNS rebinding


async def test_state_changes_need_the_sessions_csrf_token(demo_client):
    browser = Browser(demo_client)
    await browser.demo_login("admin_sy")
    token, browser.csrf = browser.csrf, None
    status, data = await browser.say(text="/role dr_wang_sy 医生 管理员")
    assert status == 403 and "刷新" in data["error"]
    browser.csrf = "forged" + token
    status, _ = await browser.say(text="/users")
    assert status == 403


async def test_a_foreign_origin_is_refused_even_as_text_plain(demo_client, engine_ctx):
    browser = Browser(demo_client)
    await browser.demo_login("admin_sy")
    res = await demo_client.post(
        "/api/chat", data='{"text": "/role dr_wang_sy 医生 管理员"}',
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example", "X-CSRF-Token": browser.csrf},
    )
    assert res.status == 403 and "跨站" in (await res.json())["error"]
    res = await demo_client.post("/api/chat", json={"text": "/users"},
                                 headers={"Origin": "null", "X-CSRF-Token": browser.csrf})
    assert res.status == 403
    with engine_ctx.sessions() as session:
        assert repo.get_staff_by_code(session, "dr_wang_sy").roles == ["physician"]
    own = str(demo_client.make_url("")).rstrip("/")
    res = await demo_client.post("/api/chat", json={"text": "/whoami"},
                                 headers={"Origin": own, "X-CSRF-Token": browser.csrf})
    assert res.status == 200


async def test_a_foreign_host_is_refused_but_health_checks_answer(demo_client, engine_ctx):
    for path in ("/", "/api/session", "/login"):
        res = await demo_client.get(path, headers={"Host": "rebind.evil.example:8080"})
        assert res.status == 421, path
    assert (await demo_client.get("/healthz", headers={"Host": "10.1.2.3"})).status == 200
    assert (await demo_client.get("/", headers={"Host": "localhost:8080"})).status == 200


async def test_the_public_url_host_is_accepted(engine_ctx, engine):
    engine_ctx.settings.public_url = "https://yilian.example.org"
    app = create_app(engine_ctx, engine, web_chat=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        res = await c.get("/login", headers={"Host": "yilian.example.org"})
        assert res.status == 200
        assert (await c.get("/login", headers={"Host": "other.example.org"})).status == 421


# ------------------------------------------------------------------------------------------------
# sign-in: one-time link from a private chat


async def test_login_link_from_chat_signs_in_once(client, engine, engine_ctx, bound_telegram):
    token = login_link_for(engine, bound_telegram)
    browser = Browser(client)
    page = await browser.request("GET", f"/login/{token}")
    assert page.status == 200 and "王思远" in await page.text()
    page = await browser.request("GET", f"/login/{token}")  # a link preview does not use it up
    assert page.status == 200
    res = await sign_in_with_link(browser, token)
    assert res.status == 303 and res.headers["Location"] == "/"
    cookie = res.cookies["yilian_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    info = await browser.refresh_csrf()
    assert info["signed_in"] and info["user"]["code"] == "dr_wang_sy"
    _, data = await browser.say(text="/whoami")
    assert "王思远" in data["replies"][0]["text"]

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        other = Browser(client, http)
        page = await other.request("GET", f"/login/{token}")
        assert page.status == 404 and "已使用" in await page.text()
    with engine_ctx.sessions() as session:
        login = repo.audit_entries(session, action="login", limit=1)[0]
        assert login.actor == "dr_wang_sy" and login.channel == "web" and login.client_address == "127.0.0.1"
        assert login.details["method"] == "link"


async def test_login_link_expires(client, engine, clock, bound_telegram, engine_ctx):
    token = login_link_for(engine, bound_telegram)
    from datetime import timedelta

    from storage.models import LoginToken
    with engine_ctx.sessions.begin() as session:  # as if it was asked for 11 minutes ago
        for row in session.query(LoginToken):
            row.expires_at = row.expires_at - timedelta(minutes=11)
    browser = Browser(client)
    page = await browser.request("GET", f"/login/{token}")
    assert page.status == 404 and "已过期" in await page.text()


async def test_login_link_post_needs_the_pages_csrf_token(client, engine, bound_telegram):
    token = login_link_for(engine, bound_telegram)
    res = await client.post(f"/login/{token}", data={"csrf": "guess"}, allow_redirects=False)
    assert res.status == 303 and "error=expired" in res.headers["Location"]
    assert (await client.get(f"/login/{token}")).status == 200  # still unused


async def test_sessions_can_be_revoked_from_the_cli(client, engine, engine_ctx, bound_telegram):
    from storage import signin

    browser = Browser(client)
    await sign_in_with_link(browser, login_link_for(engine, bound_telegram))
    await browser.refresh_csrf()
    assert (await browser.say(text="/whoami"))[0] == 200
    with engine_ctx.sessions.begin() as session:
        assert signin.revoke_staff_sessions(session, repo.get_staff_by_code(session, "dr_wang_sy"), actor="cli") == 1
    status, data = await browser.say(text="/whoami")
    assert status == 401 and "请先登录" in data["error"]


async def test_logout_ends_the_session(client, engine, bound_telegram):
    browser = Browser(client)
    await sign_in_with_link(browser, login_link_for(engine, bound_telegram))
    await browser.refresh_csrf()
    res = await browser.request("POST", "/logout", headers={"X-CSRF-Token": browser.csrf})
    assert res.status == 200
    assert (await browser.say(text="/whoami"))[0] == 401


async def test_deactivated_staff_lose_their_session(client, engine, engine_ctx, bound_telegram):
    browser = Browser(client)
    await sign_in_with_link(browser, login_link_for(engine, bound_telegram))
    await browser.refresh_csrf()
    with engine_ctx.sessions.begin() as session:
        repo.get_staff_by_code(session, "dr_wang_sy").active = False
    assert (await browser.say(text="/whoami"))[0] == 401


async def test_web_actions_are_audited_with_channel_and_address(client, engine, engine_ctx, chat):
    admin = chat("telegram", "777000001")
    with engine_ctx.sessions.begin() as session:
        repo.get_staff_by_code(session, "admin_sy").telegram_user_id = 777000001
    token = login_link_for(engine, "777000001")
    browser = Browser(client)
    await sign_in_with_link(browser, token)
    await browser.refresh_csrf()
    status, data = await browser.say(text="/role dr_wang_sy 医生 联络员")
    assert status == 200 and "改为" in data["replies"][0]["text"]
    with engine_ctx.sessions() as session:
        entry = repo.audit_entries(session, action="role_change", limit=1)[0]
        assert entry.actor == "admin_sy" and entry.channel == "web" and entry.client_address == "127.0.0.1"
    admin.say("/users")  # the Telegram side is recorded as such
    with engine_ctx.sessions() as session:
        assert repo.audit_entries(session, action="login_link.create", limit=1)[0].channel == "telegram"


# ------------------------------------------------------------------------------------------------
# sign-in: admin password


async def _password_login(client: TestClient, code: str, password: str) -> aiohttp.ClientResponse:
    page = await (await client.get("/login")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return await client.post("/login/password", data={"csrf": csrf, "code": code, "password": password},
                             allow_redirects=False)


async def test_the_first_admin_signs_in_with_a_password(client, engine_ctx):
    from storage import signin

    with engine_ctx.sessions.begin() as session:
        signin.set_password(session, repo.get_staff_by_code(session, "admin_sy"), "correct horse battery", actor="cli")
        with pytest.raises(signin.PasswordRefused, match="只有管理员"):
            signin.set_password(session, repo.get_staff_by_code(session, "dr_wang_sy"), "x" * 20, actor="cli")
        with pytest.raises(signin.PasswordRefused, match="太短"):
            signin.set_password(session, repo.get_staff_by_code(session, "admin_sy"), "short", actor="cli")
        assert "correct horse" not in repo.get_staff_by_code(session, "admin_sy").password_hash

    res = await _password_login(client, "admin_sy", "wrong password here")
    assert res.status == 303 and "error=password" in res.headers["Location"]
    assert "不正确" in await (await client.get(res.headers["Location"])).text()
    res = await _password_login(client, "admin_sy", "correct horse battery")
    assert res.status == 303 and res.headers["Location"] == "/"
    browser = Browser(client)
    info = await browser.refresh_csrf()
    assert info["user"]["code"] == "admin_sy" and info["user"]["is_admin"]
    with engine_ctx.sessions() as session:
        failed = repo.audit_entries(session, action="login.failed", limit=5)
        assert failed and all("correct horse" not in str(e.details) for e in failed)


async def test_password_guessing_is_slowed_down(client, engine_ctx):
    for _ in range(5):
        res = await _password_login(client, "admin_sy", "guess guess guess")
        assert "error=password" in res.headers["Location"]
    res = await _password_login(client, "admin_sy", "guess guess guess")
    assert "error=busy" in res.headers["Location"]


# ------------------------------------------------------------------------------------------------
# uploads from the web console


async def test_web_console_upload_indexes_an_admins_policy_file(demo_client, engine_ctx, fresh_context):
    engine = ConversationEngine(engine_ctx, kb=fresh_context.kb)  # a knowledge base of its own
    app = create_app(engine_ctx, engine, web_chat=True)
    policy = "联络员会议制度\n一、会议安排\n（一）例会。联络员例会每月召开一次。\n".encode()

    def form(data: bytes, name: str = "联络员会议制度.txt") -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("file", data, filename=name, content_type="text/plain")
        return f

    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        admin = Browser(client)
        await admin.demo_login("admin_sy")
        res = await admin.request("POST", "/api/upload", data=form(policy), headers={"X-CSRF-Token": admin.csrf})
        assert res.status == 200
        assert "已收录《联络员会议制度》" in (await res.json())["replies"][0]["text"]
        status, data = await admin.say(text="联络员例会多久开一次？")
        assert "每月召开一次" in data["replies"][0]["text"]

        engine_ctx.settings.max_upload_bytes = 100
        res = await admin.request("POST", "/api/upload", data=form(b"x" * 1000, "big.txt"),
                                  headers={"X-CSRF-Token": admin.csrf})
        assert res.status == 413 and "文件过大" in (await res.json())["error"]
        res = await admin.request("POST", "/api/upload", json={"x": 1}, headers={"X-CSRF-Token": admin.csrf})
        assert res.status == 400

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            doctor = Browser(client, http)
            await doctor.demo_login("dr_wang_sy")
            res = await doctor.request("POST", "/api/upload", data=form(policy),
                                       headers={"X-CSRF-Token": doctor.csrf})
            assert res.status == 403 and "只有管理员" in (await res.json())["error"]
        res = await client.post("/api/upload", data=form(policy), cookies={})
        assert res.status in (401, 403)


async def test_upload_identity_is_checked_before_the_body_is_read(client):
    """An anonymous 20 MB upload is refused from its headers alone."""
    reader_started = False

    async def body():
        nonlocal reader_started
        reader_started = True
        for _ in range(320):
            yield b"x" * 65536

    res = await client.post("/api/upload", data=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert res.status == 401


# ------------------------------------------------------------------------------------------------
# health


async def test_health_and_readiness(demo_client):
    res = await demo_client.get("/healthz")
    assert res.status == 200
    res = await demo_client.get("/readyz")
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


async def _sign_in_through_proxy(client, engine, bound_telegram, forwarded_for: str) -> None:
    token = login_link_for(engine, bound_telegram)
    page = await (await client.get(f"/login/{token}")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    await client.post(f"/login/{token}", data={"csrf": csrf}, headers={"X-Real-IP": forwarded_for},
                      allow_redirects=False)


def _last_login_address(engine_ctx) -> str | None:
    with engine_ctx.sessions() as session:
        return repo.audit_entries(session, action="login", limit=1)[0].client_address


async def test_the_audit_address_comes_from_a_trusted_proxy_only(client, engine, engine_ctx, bound_telegram):
    await _sign_in_through_proxy(client, engine, bound_telegram, "203.0.113.9")
    assert _last_login_address(engine_ctx) == "203.0.113.9"
    engine_ctx.settings.trusted_proxies = []  # the peer (127.0.0.1) is not a proxy of ours any more
    await _sign_in_through_proxy(client, engine, bound_telegram, "203.0.113.9")
    assert _last_login_address(engine_ctx) == "127.0.0.1"


async def test_a_flood_from_one_browser_gets_one_notice_then_silence(demo_client, engine_ctx):
    browser = Browser(demo_client)
    await browser.demo_login("guest")
    statuses, notices = [], 0
    for i in range(30):
        status, data = await browser.say(text="取消" if i % 2 else "帮助")
        statuses.append(status)
        notices += sum("发送得太快" in r["text"] for r in data.get("replies", [])) if isinstance(data, dict) else 0
    assert statuses[:8] == [200] * 8  # a burst is fine
    assert 429 in statuses and notices == 1, (str(statuses), notices)


def test_ended_sign_in_state_is_swept(engine_ctx):
    from datetime import timedelta

    from bot.server import sweep_expired
    from storage import signin
    from storage.models import LoginToken, WebSession
    from storage.types import utcnow

    long_ago = utcnow() - timedelta(days=40)
    with engine_ctx.sessions.begin() as session:
        staff = repo.get_staff_by_code(session, "dr_wang_sy")
        signin.create_login_token(session, staff, via="telegram", now=long_ago)
        signin.create_session(session, staff, method="link", now=long_ago)
        live = signin.create_session(session, staff, method="link")
    assert sweep_expired(engine_ctx)["signin"] == 2
    with engine_ctx.sessions() as session:
        assert session.query(LoginToken).count() == 0
        assert [s.id for s in session.query(WebSession)] == [live.session_id]


async def test_the_web_inbox_shows_only_the_signed_in_staff_members_notifications(demo_client):
    from handlers.messages import Choice, Outgoing, Reply
    from handlers.notifications import notify
    from storage import repositories as repo

    browser = Browser(demo_client)
    anonymous = await browser.request("GET", "/api/inbox")
    assert anonymous.status == 401
    await browser.demo_login("liaison_ma_zd")
    from bot.webchat import WEB_CTX_KEY

    ctx = demo_client.app[WEB_CTX_KEY]
    with ctx.sessions.begin() as s:
        mine = repo.get_staff_by_code(s, "liaison_ma_zd")
        other = repo.get_staff_by_code(s, "dr_liu_zd")
        notify(s, None, [Outgoing(mine.id, Reply("【新的转诊申请】ZD-2026-000001", choices=(Choice("接收", "r:accept:1"),)),
                                  dedupe_key="web-1"),
                         Outgoing(other.id, Reply("not yours"), dedupe_key="web-2")])
    res = await browser.request("GET", "/api/inbox")
    data = await res.json()
    assert res.status == 200 and data["unread"] == 1
    assert [i["text"] for i in data["items"]] == ["【新的转诊申请】ZD-2026-000001"]
    assert data["items"][0]["choices"] == [{"label": "接收", "value": "r:accept:1"}]
    refused = await browser.request("POST", "/api/inbox/read")  # no CSRF token
    assert refused.status == 403
    ok = await browser.request("POST", "/api/inbox/read", headers={"X-CSRF-Token": browser.csrf})
    assert ok.status == 200
    assert (await (await browser.request("GET", "/api/inbox")).json())["unread"] == 0


async def test_ready_but_degraded_while_the_vector_index_fails(engine_ctx, app_context, monkeypatch):
    """Issue 12: a vector store outage keeps workers in the load balancer (answers fall back to
    the lexical index; tests/test_chroma_server.py stops a real server) and says so."""
    kb = app_context.kb

    def unreachable(*_a, **_k):
        raise ConnectionError("chroma down")

    monkeypatch.setattr(kb._vectors, "query", unreachable)
    try:
        assert "出处" in kb.ask("联席会议多久开一次？").text
        app = create_app(engine_ctx, ConversationEngine(engine_ctx, kb=kb), web_chat=False)
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            res = await c.get("/readyz")
            body = await res.json()
            assert res.status == 200 and body["ready"] is True and "lexical" in body["degraded"]
    finally:
        monkeypatch.undo()
        kb.ask("联席会议多久开一次？")  # the shared knowledge base notices the index is back
    assert kb.degraded is None
