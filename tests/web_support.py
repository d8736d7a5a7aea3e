"""Web test helpers: a browser with its own cookie jar, the app fixtures, sign-in by chat link.

Used as a pytest plugin (``pytest_plugins``) by the web tests.
"""

from __future__ import annotations

import re

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app
from storage import repositories as repo


class Browser:
    """One browser: its own cookie jar, and the CSRF token the page would hold."""

    def __init__(self, client: TestClient, http: aiohttp.ClientSession | None = None) -> None:
        self.client = client
        self.http = http
        self.csrf: str | None = None

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def request(self, method: str, path: str, **kw) -> aiohttp.ClientResponse:
        if self.http is None:
            return await self.client.request(method, path, **kw)
        return await self.http.request(method, self.url(path), **kw)

    async def demo_login(self, who: str) -> None:
        res = await self.request("POST", "/api/demo/login", json={"as": who})
        assert res.status == 200, await res.text()
        self.csrf = (await res.json())["csrf"]

    async def refresh_csrf(self) -> dict:
        info = await (await self.request("GET", "/api/session")).json()
        self.csrf = info.get("csrf")
        return info

    async def say(self, payload: dict | None = None, **fields) -> tuple[int, dict]:
        headers = {"X-CSRF-Token": self.csrf} if self.csrf else {}
        res = await self.request("POST", "/api/chat", json={**(payload or {}), **fields}, headers=headers)
        return res.status, (await res.json() if res.content_type == "application/json" else {})


@pytest.fixture
async def demo_client(engine_ctx, engine):
    engine_ctx.settings.demo = True
    app = create_app(engine_ctx, engine, web_chat=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


@pytest.fixture
def bound_telegram(engine_ctx) -> str:
    """A Telegram account bound to dr_wang_sy (as ``/bind CODE`` would have done)."""
    with engine_ctx.sessions.begin() as session:
        repo.get_staff_by_code(session, "dr_wang_sy").telegram_user_id = 555000111
    return "555000111"


@pytest.fixture
async def client(engine_ctx, engine):
    """Production mode: no picker; sign-in only through the server's own paths."""
    app = create_app(engine_ctx, engine, web_chat=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


def login_link_for(engine, user_key: str, channel: str = "telegram") -> str:
    from handlers.messages import Incoming

    reply = engine.handle(Incoming(channel=channel, user_key=user_key, text="/login"))[0].text
    match = re.search(r"https?://\S+/login/(\S+)", reply)
    assert match, reply
    return match.group(1)


async def sign_in_with_link(browser: Browser, token: str) -> aiohttp.ClientResponse:
    page = await browser.request("GET", f"/login/{token}")
    html = await page.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf, html
    return await browser.request("POST", f"/login/{token}", data={"csrf": csrf.group(1)}, allow_redirects=False)
