"""Defects found by attacking a running server on loopback (security review of issue 7).

Each test reproduces one hole as an outsider or a low-privilege user would use it:

* password guesses sent all at once were each checked, so the 5-per-5-minutes limit let any
  number through (and each guess cost an argon2 hash in the shared worker pool);
* sessions made by the demo identity picker stayed valid after the server was restarted without
  demo mode (same data directory): whoever picked "admin" in the demo stayed admin;
* demo mode served a ``YILIAN_PUBLIC_URL`` (i.e. a reverse proxy) although it is loopback-only;
* ``/start CODE`` in a Telegram group bound the account there, past bind's "private only" rule;
* ``/unbind`` (the lost-phone remedy) and ``yilian users logout`` left the person's web sessions
  or unused login links working;
* every invalid login-link POST wrote an audit row: an anonymous client wrote hundreds a second;
* a refused request's log line carried the path, i.e. a login link's token.
"""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app, demo_mode_problem
from handlers.messages import Incoming
from storage import repositories as repo
from storage import signin
from web_support import Browser, login_link_for, sign_in_with_link

pytest_plugins = ("engine_support", "web_support")


def _set_admin_password(engine_ctx, password: str = "correct horse battery") -> None:
    with engine_ctx.sessions.begin() as session:
        signin.set_password(session, repo.get_staff_by_code(session, "admin_sy"), password, actor="cli")


async def _guess(client: TestClient, code: str, password: str, *, real_ip: str | None = None) -> str:
    """One password attempt as a script would make it (double-submit token chosen by itself)."""
    headers = {"Cookie": "yilian_csrf=chosen-by-the-attacker"}
    if real_ip:
        headers["X-Real-IP"] = real_ip
    res = await client.post("/login/password", data={"csrf": "chosen-by-the-attacker", "code": code,
                                                       "password": password},
                            headers=headers, allow_redirects=False)
    assert res.status == 303
    return res.headers["Location"]


# ------------------------------------------------------------------------------------------------
# password guessing


async def test_password_guesses_sent_at_once_are_all_counted(client, engine_ctx):
    _set_admin_password(engine_ctx)
    results = await asyncio.gather(*[_guess(client, "admin_sy", f"guess number {i:04d}") for i in range(15)])
    checked = [r for r in results if "error=password" in r]
    assert len(checked) <= 5, f"{len(checked)} guesses were checked at once: {results}"
    assert all("error=busy" in r for r in results if r not in checked)
    with engine_ctx.sessions() as session:
        assert len(repo.audit_entries(session, action="login.failed", limit=100)) <= 5


async def test_password_guesses_from_many_addresses_are_limited_per_account(client, engine_ctx):
    """Rotating addresses (IPv6, a botnet, a spoofing proxy) does not buy unlimited guesses."""
    _set_admin_password(engine_ctx)
    results = [await _guess(client, "admin_sy", "wrong wrong wrong", real_ip=f"203.0.113.{i}") for i in range(40)]
    checked = [r for r in results if "error=password" in r]
    assert len(checked) <= 20, len(checked)
    assert "error=busy" in results[-1]
    # another account is not affected
    assert "error=password" in await _guess(client, "admin_lc", "wrong wrong wrong", real_ip="198.51.100.7")


async def test_a_successful_sign_in_does_not_use_up_the_allowance(client, engine_ctx):
    _set_admin_password(engine_ctx)
    for _ in range(6):
        assert await _guess(client, "admin_sy", "correct horse battery") == "/"


# ------------------------------------------------------------------------------------------------
# demo mode


async def test_demo_picker_sessions_end_when_demo_mode_is_off(engine_ctx, engine):
    engine_ctx.settings.demo = True
    async with TestClient(TestServer(create_app(engine_ctx, engine, web_chat=True), host="127.0.0.1")) as demo:
        res = await demo.post("/api/demo/login", json={"as": "admin_sy"})
        assert res.status == 200
        admin_cookie = res.cookies["yilian_session"].value
        res = await demo.post("/api/demo/login", json={"as": "guest"})
        guest_cookie = res.cookies["yilian_session"].value
    engine_ctx.settings.demo = False  # the same data directory, now served for real
    async with TestClient(TestServer(create_app(engine_ctx, engine, web_chat=True), host="127.0.0.1")) as real:
        for cookie in (admin_cookie, guest_cookie):
            info = await (await real.get("/api/session", headers={"Cookie": f"yilian_session={cookie}"})).json()
            assert info["signed_in"] is False, info
            res = await real.post("/api/chat", json={"text": "/users"},
                                  headers={"Cookie": f"yilian_session={cookie}", "X-CSRF-Token": "x"})
            assert res.status == 401


@pytest.mark.parametrize("public_url, refused", [
    ("https://yilian.example.org", True),
    ("http://10.0.0.5:8080", True),
    ("http://localhost:8080", False),
    ("http://127.0.0.1:8080/", False),
    (None, False),
])
def test_demo_mode_refuses_to_be_served_through_a_public_url(public_url, refused):
    from bot.config import Settings

    settings = Settings(_env_file=None, demo=True, public_url=public_url)
    problem = demo_mode_problem(settings)
    assert (problem is not None) == refused, problem
    if refused:
        assert "YILIAN_PUBLIC_URL" in problem


# ------------------------------------------------------------------------------------------------
# Telegram groups


def test_start_with_a_binding_code_in_a_group_does_not_bind(engine, engine_ctx):
    with engine_ctx.sessions.begin() as session:
        code = repo.create_invite(session, repo.get_staff_by_code(session, "dr_wang_sy"), created_by="admin_sy")
    replies = engine.handle(Incoming(channel="telegram", user_key="424242", text=f"/start {code}", private=False))
    text = "\n".join(r.text for r in replies)
    assert "请私聊我" in text and "王思远" not in text, text
    with engine_ctx.sessions() as session:
        assert repo.get_staff_by_code(session, "dr_wang_sy").telegram_user_id is None
    # the same deep link in the private chat binds
    replies = engine.handle(Incoming(channel="telegram", user_key="424242", text=f"/start {code}"))
    assert "王思远" in replies[0].text
    with engine_ctx.sessions() as session:
        assert repo.get_staff_by_code(session, "dr_wang_sy").telegram_user_id == 424242


# ------------------------------------------------------------------------------------------------
# ending access


async def test_unbind_ends_the_persons_web_sessions_and_unused_links(client, engine, engine_ctx, bound_telegram):
    """A lost phone: the finder asked for /login links; the admin's /unbind must stop them all."""
    browser = Browser(client)
    await sign_in_with_link(browser, login_link_for(engine, bound_telegram))
    await browser.refresh_csrf()
    assert (await browser.say(text="/whoami"))[0] == 200
    spare = login_link_for(engine, bound_telegram)  # asked for, not used yet

    reply = engine.handle(Incoming(channel="cli", user_key="admin_sy", text="/unbind dr_wang_sy"))[0].text
    assert "已解除" in reply and "网页" in reply, reply

    assert (await browser.say(text="/whoami"))[0] == 401
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        assert (await Browser(client, http).request("GET", f"/login/{spare}")).status == 404


async def test_cli_logout_also_ends_unused_login_links(client, engine, engine_ctx, bound_telegram):
    spare = login_link_for(engine, bound_telegram)
    with engine_ctx.sessions.begin() as session:
        signin.revoke_staff_sessions(session, repo.get_staff_by_code(session, "dr_wang_sy"), actor="cli")
    assert (await client.get(f"/login/{spare}")).status == 404


# ------------------------------------------------------------------------------------------------
# anonymous writes and logs


async def test_invalid_login_links_cannot_flood_the_audit_log(client, engine, engine_ctx, bound_telegram):
    headers = {"Cookie": "yilian_csrf=t"}
    for i in range(80):
        res = await client.post(f"/login/not-a-real-token-{i}", data={"csrf": "t"}, headers=headers,
                                allow_redirects=False)
        assert res.status in (404, 429)
    with engine_ctx.sessions() as session:
        failed = repo.audit_entries(session, action="login.failed", limit=500)
    assert len(failed) <= 30, len(failed)
    # a real link from the same address still works
    res = await sign_in_with_link(Browser(client), login_link_for(engine, bound_telegram))
    assert res.status == 303 and res.headers["Location"] == "/"


async def test_refused_requests_do_not_log_login_tokens(client, engine, bound_telegram, caplog):
    token = login_link_for(engine, bound_telegram)
    with caplog.at_level(logging.INFO):
        res = await client.get(f"/login/{token}", headers={"Host": "misconfigured.example.org"})
        assert res.status == 421
        res = await client.post(f"/login/{token}", data={"csrf": "x"}, headers={"Origin": "http://evil.example"})
        assert res.status == 403
    # (``serve`` runs without an access log; the test server's own is not ours)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name.startswith("bot."))
    assert "refused" in logged
    assert token not in logged
    assert re.search(r"/login/", logged)


# ------------------------------------------------------------------------------------------------
# Host header


@pytest.mark.parametrize("host", [
    "127.0.0.1:8080 evil.example", "127.0.0.1:8080/evil.example", "[::1]evil.example", "127.0.0.1?.evil.example",
    "localhost:8080#.evil.example", "localhost:", "localhost:80:80", "",
])
async def test_a_malformed_host_is_refused(client, host):
    """Only a well-formed ``name[:port]`` or ``[v6][:port]`` is read as a host name at all."""
    assert (await client.get("/login", headers={"Host": host})).status == 421


@pytest.mark.parametrize("host", ["localhost:8080", "LOCALHOST", "127.0.0.1", "[::1]:8080", "[::1]"])
async def test_well_formed_loopback_hosts_are_served(client, host):
    assert (await client.get("/login", headers={"Host": host})).status == 200
