"""A real browser (Debian's Chromium, headless, driven by Playwright) signs in with a one-time link
from chat and uses the web chat — what a physician does on a laptop."""

from __future__ import annotations

import shutil

import pytest
from aiohttp.test_utils import TestServer

from bot.server import create_app
from storage import repositories as repo

pytest_plugins = ("engine_support",)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (make test installs it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture
async def server(engine_ctx, engine):
    app = create_app(engine_ctx, engine, web_chat=True)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def page():
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        context = await browser.new_context(viewport={"width": 390, "height": 800}, locale="zh-CN")
        yield await context.new_page()
        await browser.close()


async def test_sign_in_with_a_chat_link_and_ask_a_question(server, page, engine, engine_ctx, tmp_path):
    from handlers.messages import Incoming

    with engine_ctx.sessions.begin() as session:
        repo.get_staff_by_code(session, "dr_wang_sy").telegram_user_id = 424242
    base = str(server.make_url("")).rstrip("/")
    engine_ctx.settings.http_port = server.port  # links point at this server
    reply = engine.handle(Incoming(channel="telegram", user_key="424242", text="登录"))[0].text
    link = next(word for word in reply.split() if "/login/" in word)
    assert link.startswith(f"{base}/login/")

    await page.goto(base + "/")
    await page.wait_for_url("**/login")  # not signed in: the login page, not the chat
    assert "登录医联助手" in await page.content()

    await page.goto(link)
    assert "王思远" in await page.inner_text("main")
    await page.click("button:has-text('登录')")
    await page.wait_for_url(base + "/")
    await page.wait_for_selector("text=王思远")
    assert await page.is_hidden("#who")  # no identity picker outside demo mode
    assert await page.is_hidden("#attach")  # physicians do not see the upload button

    await page.fill("#text", "联席会议多久开一次？")
    await page.press("#text", "Enter")
    answer = page.locator(".row.bot .bubble", has_text="出处：《").last
    await answer.wait_for(timeout=20000)
    assert "联席会议" in await answer.inner_text()
    await page.screenshot(path=str(tmp_path / "chat.png"))

    await page.goto(link)  # the link worked once
    assert "登录链接无效" in await page.content()

    await page.goto(base + "/")
    await page.click("#logout")
    await page.wait_for_url("**/login")
