"""The admin console in a real browser (Debian's Chromium, headless, Playwright): an admin signs in
with a one-time link from chat, uploads a new version of a policy and sees the hit test and the
chat answer change, rolls it back, exports referrals, views the quota chart; a liaison officer sees only their
institution; a physician gets no console. Screenshots at 390 px and 1280 px are written under
``var/screenshots/`` for review."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from bot.server import create_app
from storage import repositories as repo
from tests.test_referral_export import make_referral

pytest_plugins = ("engine_support",)

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "var" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (make test installs it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")

ACCOUNTS = {"admin_zd": 81001, "liaison_ma_zd": 81002, "dr_liu_zd": 81003}


@pytest.fixture
async def server(engine_ctx, clock):
    from handlers.engine import ConversationEngine

    with engine_ctx.sessions.begin() as session:
        for code, telegram_id in ACCOUNTS.items():
            repo.get_staff_by_code(session, code).telegram_user_id = telegram_id
        make_referral(session, "dr_liu_zd", "张店区人民医院", patient_name="李四海")
    engine = ConversationEngine(engine_ctx, clock=clock)  # a knowledge base of this test's own
    srv = TestServer(create_app(engine_ctx, engine, web_chat=True), host="127.0.0.1")
    await srv.start_server()
    engine_ctx.settings.http_port = srv.port  # sign-in links point at this server
    yield srv, engine
    await srv.close()


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield chromium
        await chromium.close()


async def _page(browser, width: int):
    context = await browser.new_context(viewport={"width": width, "height": 900}, locale="zh-CN",
                                        accept_downloads=True)
    return await context.new_page()


async def _sign_in(page, engine, code: str) -> None:
    from handlers.messages import Incoming

    reply = engine.handle(Incoming(channel="telegram", user_key=str(ACCOUNTS[code]), text="登录"))[0].text
    link = next(word for word in reply.split() if "/login/" in word)
    await page.goto(link)
    await page.click("button:has-text('登录')")
    await page.wait_for_load_state()


async def test_admin_uploads_a_new_version_and_sees_it_everywhere(server, browser, tmp_path):
    srv, engine = server
    base = str(srv.make_url("")).rstrip("/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = await _page(browser, 1280)
    await _sign_in(page, engine, "admin_zd")
    await page.goto(base + "/")
    await page.click("#console")  # the chat shows admins the way to the console
    await page.wait_for_selector("h1:has-text('文档')")

    policy = tmp_path / "张店区远程会诊管理办法.txt"
    for version, when in ((1, "每周二下午"), (2, "每周四上午")):
        policy.write_text(f"张店区远程会诊管理办法\n\n第一条 远程会诊{when}开展，由核心医院统一安排。\n", encoding="utf-8")
        await page.set_input_files("input[type=file]", str(policy))
        await page.click("button:has-text('上传')")
        await page.wait_for_selector("h1:has-text('上传预览')")
        await page.click("button:has-text('确认')")
        await page.wait_for_selector("text=张店区远程会诊管理办法")
        await page.wait_for_selector(f"text=v{version}")
    await page.screenshot(path=str(SHOTS / "console-documents-1280.png"), full_page=True)

    await page.click("nav >> text=命中测试")
    await page.fill("input[name=q]", "远程会诊什么时候开展？")
    await page.click("button:has-text('测试')")
    await page.wait_for_selector("pre.answer")
    answer = await page.inner_text("pre.answer")
    assert "每周四上午" in answer and "每周二下午" not in answer
    from handlers.messages import Incoming

    [reply] = engine.handle(Incoming(channel="telegram", user_key=str(ACCOUNTS["dr_liu_zd"]), text="远程会诊什么时候开展？"))
    assert "每周四上午" in reply.text

    # roll back to v1: history, 回滚, 确认; the hit test quotes v1 again
    await page.click("nav >> text=文档")
    await page.click("text=历史")
    await page.wait_for_selector("h1:has-text('版本历史')")
    await page.click("button:has-text('回滚')")
    await page.click("button:has-text('确认')")
    await page.wait_for_selector("text=已回滚到第 1 版")
    await page.goto(base + "/admin/hittest?q=" + "远程会诊什么时候开展？")
    assert "每周二下午" in await page.inner_text("pre.answer")

    await page.click("nav >> text=转诊")
    await page.wait_for_selector("h1:has-text('转诊')")
    assert "李*海" in await page.inner_text("main") and "李四海" not in await page.inner_text("main")
    async with page.expect_download() as download:
        await page.click("text=导出CSV")
    saved = tmp_path / "referrals.csv"
    await (await download.value).save_as(saved)
    assert "张店区人民医院" in saved.read_text(encoding="utf-8")
    async with page.expect_download() as download:
        await page.click("text=导出FHIR")
    fhir = tmp_path / "referrals.json"
    await (await download.value).save_as(fhir)
    assert '"resourceType": "Bundle"' in fhir.read_text(encoding="utf-8")

    await page.click("nav >> text=配额")
    await page.wait_for_selector("h1:has-text('配额')")
    assert await page.locator("svg").count() > 0
    await page.screenshot(path=str(SHOTS / "console-quotas-1280.png"), full_page=True)


async def test_liaison_sees_their_institution_and_a_physician_no_console(server, browser):
    srv, engine = server
    base = str(srv.make_url("")).rstrip("/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = await _page(browser, 390)
    await _sign_in(page, engine, "liaison_ma_zd")
    await page.goto(base + "/admin/referrals")
    main = await page.inner_text("main")
    assert "张店区人民医院" in main and "导出CSV" not in main
    nav = await page.inner_text("nav")
    assert "转诊" in nav and "文档" not in nav and "审计" not in nav
    await page.screenshot(path=str(SHOTS / "console-referrals-390.png"), full_page=True)
    res = await page.goto(base + "/admin/documents")
    assert res.status == 403

    doctor = await _page(browser, 390)
    await _sign_in(doctor, engine, "dr_liu_zd")
    await doctor.goto(base + "/")
    await doctor.wait_for_selector("#me:has-text('刘')")
    assert await doctor.is_hidden("#console")  # no console link for physicians
    await doctor.goto(base + "/admin")
    assert doctor.url.startswith(base + "/?") or doctor.url == base + "/"  # back to the chat
    await doctor.screenshot(path=str(SHOTS / "console-physician-390.png"))
