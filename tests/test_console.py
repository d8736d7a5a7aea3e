"""The admin console (/admin): who may open what, and the jobs admins do there.

Everyone signs in the real way (a one-time link asked for in a private chat). One table says,
per page and action and per role, what must happen; the rules themselves live in
``storage.access`` (``CONSOLE_PAGES``, ``CONSOLE_ACTIONS``).
"""

from __future__ import annotations

import json
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app
from storage import access
from storage import repositories as repo
from tests.test_referral_export import ID_NUMBER, PHONE, make_referral, validate_r4
from web_support import Browser, login_link_for, sign_in_with_link

pytest_plugins = ("engine_support", "web_support")

ACCOUNTS = {"admin": ("admin_zd", 71001), "liaison": ("liaison_ma_zd", 71002), "physician": ("dr_liu_zd", 71003),
            "other_liaison": ("liaison_xu_zd", 71004)}

# page → (admin, liaison, physician): 200 shown, 403 refused, 303 sent back to the chat
PAGES = {
    "documents": (200, 403, 303),
    "hittest": (200, 403, 303),
    "referrals": (200, 200, 303),
    "meetings": (200, 200, 303),
    "quotas": (200, 200, 303),
    "people": (200, 403, 303),
    "audit": (200, 403, 303),
}
HEADINGS = {"documents": "文档", "hittest": "命中测试", "referrals": "转诊", "meetings": "会议", "quotas": "配额",
            "people": "人员", "audit": "审计"}


@pytest.fixture
async def console(engine_ctx, engine):
    with engine_ctx.sessions.begin() as session:
        for code, telegram_id in ACCOUNTS.values():
            repo.get_staff_by_code(session, code).telegram_user_id = telegram_id
    app = create_app(engine_ctx, engine, web_chat=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def _signed_in(console, engine, role: str) -> Browser:
    browser = Browser(console)
    res = await sign_in_with_link(browser, login_link_for(engine, str(ACCOUNTS[role][1])))
    assert res.status in (302, 303), await res.text()
    return browser


async def _csrf(browser: Browser, path: str = "/admin/documents") -> str:
    html = await (await browser.request("GET", path)).text()
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def _confirm(browser: Browser, preview_html: str) -> str:
    """Press 确认 on an upload preview page."""
    csrf = re.search(r'name="csrf" value="([^"]+)"', preview_html).group(1)
    token = re.search(r'name="token" value="([^"]+)"', preview_html).group(1)
    return await (await browser.request("POST", "/admin/documents/confirm", data={"csrf": csrf, "token": token})).text()


# action → the request that uses it (with a valid CSRF token added); admins may, liaison officers
# get 403, physicians are sent back to the chat
ACTIONS = {
    "document.upload": ("POST", "/admin/documents/confirm", {"token": "none"}),
    "document.delete": ("POST", "/admin/documents/delete", {"title": "不存在的文件"}),
    "document.rollback": ("POST", "/admin/documents/rollback", {"title": "不存在的文件", "version": "1"}),
    "referral.export": ("GET", "/admin/referrals/export.csv", None),
    "audit.export": ("GET", "/admin/audit/export.csv", None),
    "quota.import": ("POST", "/admin/quotas/import", None),
    "meeting.manage": ("GET", "/admin/meetings/new", None),
    "people.manage": ("POST", "/admin/people/dr_liu_zd/roles", {"role_physician": "on"}),
}


def test_the_table_covers_every_console_page_and_action_and_the_rules_agree():
    assert set(PAGES) == set(access.CONSOLE_PAGES) and set(HEADINGS) == set(PAGES)
    assert set(ACTIONS) == set(access.CONSOLE_ACTIONS)


@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_action_by_role(console, engine, action):
    method, path, data = ACTIONS[action]
    for role, expected in (("liaison", {403}), ("physician", {303}), ("admin", {200, 303, 400, 404})):
        browser = await _signed_in(console, engine, role)
        html = await (await browser.request("GET", "/admin/documents")).text()  # admins: a form with the token
        token = re.search(r'name="csrf" value="([^"]+)"', html)
        body = {**(data or {}), "csrf": token.group(1) if token else ""}
        kwargs = {"data": body} if method == "POST" and path != "/admin/quotas/import" else {}
        res = await browser.request(method, path, allow_redirects=False, **kwargs)
        assert res.status in expected, (action, role, res.status)


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_page_by_role(console, engine, page):
    for column, role in enumerate(("admin", "liaison", "physician")):
        browser = await _signed_in(console, engine, role)
        res = await browser.request("GET", f"/admin/{page}", allow_redirects=False)
        assert res.status == PAGES[page][column], (page, role, res.status)
        if res.status == 200:
            html = await res.text()
            assert f"<h1>{HEADINGS[page]}</h1>" in html
        if res.status == 303:
            assert res.headers["Location"].startswith("/")  # back to the chat


async def test_signed_out_visitors_are_sent_to_sign_in(console):
    res = await console.get("/admin/documents", allow_redirects=False)
    assert res.status == 303 and res.headers["Location"].startswith("/login")


async def test_actions_need_an_admin_and_the_session_csrf_token(console, engine):
    liaison = await _signed_in(console, engine, "liaison")
    res = await liaison.request("GET", "/admin/referrals/export.csv", allow_redirects=False)
    assert res.status == 403
    res = await liaison.request("POST", "/admin/documents/delete", data={"title": "x", "csrf": "x"},
                                allow_redirects=False)
    assert res.status == 403
    admin = await _signed_in(console, engine, "admin")
    res = await admin.request("POST", "/admin/documents/delete",
                              data={"title": "德阳市人民医院城市医疗集团工作制度", "confirm": "yes", "csrf": "forged"},
                              allow_redirects=False)
    assert res.status == 403 and "页面已过期" in await res.text()


@pytest.fixture
async def own_kb_console(engine_ctx, clock):
    """The console over a knowledge base of this test's own (the shared one stays untouched)."""
    from handlers.engine import ConversationEngine

    with engine_ctx.sessions.begin() as session:
        for code, telegram_id in ACCOUNTS.values():
            repo.get_staff_by_code(session, code).telegram_user_id = telegram_id
    engine = ConversationEngine(engine_ctx, clock=clock)
    async with TestClient(TestServer(create_app(engine_ctx, engine, web_chat=True), host="127.0.0.1")) as client:
        yield client, engine


async def test_upload_a_new_version_shows_in_the_hit_test_and_in_chat_then_delete(own_kb_console):
    console, engine = own_kb_console
    admin = await _signed_in(console, engine, "admin")
    csrf = await _csrf(admin)
    policy = "张店区远程会诊管理办法\n\n第一条 远程会诊由核心医院远程医疗中心统一安排，每周二、周四下午开展。\n"
    form = {"csrf": csrf}
    import aiohttp

    data = aiohttp.FormData(form)
    data.add_field("file", policy.encode("utf-8"), filename="张店区远程会诊管理办法.txt", content_type="text/plain")
    res = await admin.request("POST", "/admin/documents/upload", data=data)
    html = await res.text()
    assert res.status == 200 and "上传预览" in html and "这是一份新文件" in html and "1 条条款" in html
    question = "远程会诊每周哪天开展？"
    before = await (await admin.request("GET", "/admin/hittest", params={"q": question})).text()
    assert "每周二、周四下午" not in before  # nothing is served before 确认
    html = await _confirm(admin, html)
    assert "已收录" in html and "张店区远程会诊管理办法" in html

    hit = await (await admin.request("GET", "/admin/hittest", params={"q": question})).text()
    assert "每周二、周四下午" in hit and "可回答概率" in hit

    # a new version replaces the old one at once, in the hit test and in the chat
    data = aiohttp.FormData({"csrf": csrf})
    data.add_field("file", policy.replace("每周二、周四下午", "每周三上午").encode("utf-8"),
                   filename="张店区远程会诊管理办法.txt", content_type="text/plain")
    html = await (await admin.request("POST", "/admin/documents/upload", data=data)).text()
    assert "将替换当前版本 v1" in html and "修改 1 条" in html and "新增 0 条" in html
    html = await _confirm(admin, html)
    assert "已更新为新版本" in html and "v2" in html
    hit = await (await admin.request("GET", "/admin/hittest", params={"q": question})).text()
    assert "每周三上午" in hit and "每周二、周四下午" not in hit
    from handlers.messages import Incoming

    [reply] = engine.handle(Incoming(channel="telegram", user_key=str(ACCOUNTS["physician"][1]), text=question))
    assert "每周三上午" in reply.text

    # 回滚: the history lists both versions; rolling back to v1 serves v1's text again (as v3)
    title = "张店区远程会诊管理办法"
    history = await (await admin.request("GET", "/admin/documents/history", params={"title": title})).text()
    assert "v1" in history and "v2" in history and "回滚" in history
    confirm = await (await admin.request("POST", "/admin/documents/rollback",
                                         data={"csrf": csrf, "title": title, "version": "1"})).text()
    assert "确认" in confirm and "第 1 版" in confirm
    html = await (await admin.request("POST", "/admin/documents/rollback",
                                      data={"csrf": csrf, "title": title, "version": "1", "confirm": "yes"})).text()
    assert "已回滚到第 1 版" in html and "v3" in html
    hit = await (await admin.request("GET", "/admin/hittest", params={"q": question})).text()
    assert "每周二、周四下午" in hit and "每周三上午" not in hit

    # delete asks for confirmation first, then the clauses are gone
    confirm = await (await admin.request("POST", "/admin/documents/delete",
                                         data={"csrf": csrf, "title": "张店区远程会诊管理办法"})).text()
    assert "确认" in confirm and "张店区远程会诊管理办法" in confirm
    html = await (await admin.request("POST", "/admin/documents/delete",
                                      data={"csrf": csrf, "title": "张店区远程会诊管理办法", "confirm": "yes"})).text()
    assert "已删除" in html
    [reply] = engine.handle(Incoming(channel="telegram", user_key=str(ACCOUNTS["physician"][1]), text=question))
    assert "每周二、周四下午" not in reply.text and "每周三上午" not in reply.text
    with engine._ctx.sessions() as session:
        actions = [e.action for e in repo.audit_entries(session, target="张店区远程会诊管理办法")]
    assert {"document.ingest", "document.update", "document.rollback", "document.remove"} <= set(actions)


async def test_a_wrong_file_gets_a_clear_message_and_changes_nothing(own_kb_console):
    import aiohttp

    console, engine = own_kb_console
    admin = await _signed_in(console, engine, "admin")
    before = await (await admin.request("GET", "/admin/documents")).text()
    data = aiohttp.FormData({"csrf": await _csrf(admin)})
    data.add_field("file", b"%PDF-1.7 broken", filename="坏文件.pdf", content_type="application/pdf")
    res = await admin.request("POST", "/admin/documents/upload", data=data)
    assert res.status == 400 and "未收录" in await res.text()
    after = await (await admin.request("GET", "/admin/documents")).text()
    assert before.count("<tr>") == after.count("<tr>")


async def test_referrals_are_scoped_masked_and_exported(console, engine, engine_ctx):
    with engine_ctx.sessions.begin() as session:
        make_referral(session, "dr_liu_zd", "张店区人民医院", patient_name="张三丰")
    admin = await _signed_in(console, engine, "admin")
    html = await (await admin.request("GET", "/admin/referrals")).text()
    assert "张*丰" in html and "张三丰" not in html  # masked in the list
    assert "导出CSV" in html and "导出FHIR" in html
    csv_res = await admin.request("GET", "/admin/referrals/export.csv")
    assert csv_res.status == 200 and csv_res.content_type == "text/csv"
    csv_text = await csv_res.text()
    assert "张店区人民医院" in csv_text
    fhir_res = await admin.request("GET", "/admin/referrals/export.fhir")
    bundle = json.loads(await fhir_res.text())
    validate_r4(bundle)
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]
    with engine_ctx.sessions() as session:
        exports = repo.audit_entries(session, action="referral.export")
    assert {e.details["format"] for e in exports} >= {"csv", "fhir"} and exports[0].actor == "admin_zd"

    # the detail: masked, with its timeline; 查看完整信息 unmasks it and is audited
    number = re.search(r"/admin/referrals/([A-Z]+-\d+-\d+)", html).group(1)
    detail = await (await admin.request("GET", f"/admin/referrals/{number}")).text()
    assert "时间线" in detail and "张*丰" in detail and ID_NUMBER not in detail and PHONE not in detail
    csrf = re.search(r'name="csrf" value="([^"]+)"', detail).group(1)
    full = await (await admin.request("POST", f"/admin/referrals/{number}", data={"csrf": csrf})).text()
    assert "张三丰" in full and ID_NUMBER in full and PHONE in full
    with engine_ctx.sessions() as session:
        [seen] = repo.audit_entries(session, action="referral.view_full")
    assert seen.actor == "admin_zd" and seen.target == number and seen.channel == "web"

    # the receiving institution's liaison officer sees it, read-only; another institution's does not
    receiving = await _signed_in(console, engine, "liaison")
    html = await (await receiving.request("GET", "/admin/referrals")).text()
    assert "张店区人民医院" in html and "导出CSV" not in html and "只读" in html
    other = await _signed_in(console, engine, "other_liaison")
    html = await (await other.request("GET", "/admin/referrals")).text()
    assert "暂无转诊记录" in html
    assert (await other.request("GET", f"/admin/referrals/{number}")).status == 404


async def test_quota_page_draws_progress_for_the_liaisons_institution_only(console, engine):
    liaison = await _signed_in(console, engine, "liaison")
    html = await (await liaison.request("GET", "/admin/quotas")).text()
    assert "<svg" in html and "<h1>配额</h1>" in html  # a bar per rule, drawn inline (no script, no CDN)
    with engine._ctx.sessions() as session:
        inst = repo.get_staff_by_code(session, "liaison_ma_zd").institution.name
        others = [i.name for i in repo.get_staff_by_code(session, "admin_zd").institution.consortium.institutions
                  if i.name != inst]
    assert f"<td>{inst}" in html
    assert all(f"<td>{name}" not in html for name in others)


async def test_quota_import_names_bad_lines_and_stores_a_good_file(console, engine, engine_ctx):
    import aiohttp

    admin = await _signed_in(console, engine, "admin")
    csrf = await _csrf(admin, "/admin/quotas")
    header = "kind,person,from_institution,to_institution,start,end\n"
    bad = header + "进修,王医生,湖田卫生院,张店区人民医院,2026-03-01,2026-04-15\n下派,李医生,不存在的医院,湖田卫生院,2026-05-01,2026-04-01\n"
    data = aiohttp.FormData({"csrf": csrf})
    data.add_field("file", bad.encode("utf-8"), filename="records.csv", content_type="text/csv")
    res = await admin.request("POST", "/admin/quotas/import", data=data)
    html = await res.text()
    assert res.status == 400 and "<td>3</td>" in html and "整份文件都没有导入" in html
    from storage.models import TrainingRecord

    with engine_ctx.sessions() as session:
        assert session.query(TrainingRecord).count() == 0

    good = header + "进修,王医生,湖田卫生院,张店区人民医院,2026-03-01,2026-04-15\n"
    data = aiohttp.FormData({"csrf": csrf})
    data.add_field("file", good.encode("utf-8"), filename="records.csv", content_type="text/csv")
    html = await (await admin.request("POST", "/admin/quotas/import", data=data)).text()
    assert "已导入 1 条" in html and "<h1>配额</h1>" in html
    with engine_ctx.sessions() as session:
        assert session.query(TrainingRecord).count() == 1
        assert repo.audit_entries(session, action="quota.import")[0].channel == "web"


async def test_admin_schedules_and_cancels_a_meeting_and_liaisons_are_told(console, engine, engine_ctx):
    from storage.models import Meeting, Notification

    admin = await _signed_in(console, engine, "admin")
    form = await (await admin.request("GET", "/admin/meetings/new")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    # a mistake keeps what was typed and says what is wrong
    res = await admin.request("POST", "/admin/meetings/new", data={
        "csrf": csrf, "kind": "理事会", "title": "第一季度理事会", "at": "2020-01-01T09:00", "place": "三楼会议室"})
    html = await res.text()
    assert res.status == 400 and 'value="第一季度理事会"' in html and "三楼会议室" in html
    # the message stands next to the time field
    assert re.search(r'name="at"[^\n]*</label> <span class="field-error" role="alert">会议时间已过', html)
    with engine_ctx.sessions() as session:
        assert session.query(Meeting).count() == 0
    html = await (await admin.request("POST", "/admin/meetings/new", data={
        "csrf": csrf, "kind": "理事会", "title": "第一季度理事会", "at": "2030-01-15T09:00", "place": "三楼会议室",
        "repeat": "quarterly"})).text()
    assert "已安排" in html and "第一季度理事会" in html and "即将召开" in html
    with engine_ctx.sessions() as session:
        meeting = session.query(Meeting).one()
        codes = {s.id: s.code for s in repo.list_staff(session)}
        told = {codes[n.staff_id] for n in session.query(Notification).filter_by(kind="meeting_invite")}
    assert "liaison_ma_zd" in told  # the invited institutions' liaison officers are told at once

    # 修改: the form comes filled in; a change is announced to the same people
    form = await (await admin.request("GET", f"/admin/meetings/{meeting.id}/edit")).text()
    assert "<h1>修改会议</h1>" in form and 'value="三楼会议室"' in form and "2030-01-15T09:00" in form
    html = await (await admin.request("POST", f"/admin/meetings/{meeting.id}/edit", data={
        "csrf": csrf, "title": "第一季度理事会", "at": "2030-01-15T14:30", "place": "五楼报告厅"})).text()
    assert "已修改" in html and "五楼报告厅" in html
    with engine_ctx.sessions() as session:
        updated = {codes[n.staff_id] for n in session.query(Notification).filter_by(kind="meeting_update")}
        assert session.get(Meeting, meeting.id).sequence == 1
    assert updated == told

    html = await (await admin.request("POST", f"/admin/meetings/{meeting.id}/cancel",
                                      data={"csrf": csrf, "title": "第一季度理事会"})).text()
    assert "确认" in html
    html = await (await admin.request("POST", f"/admin/meetings/{meeting.id}/cancel",
                                      data={"csrf": csrf, "title": "第一季度理事会", "confirm": "yes"})).text()
    assert "已取消" in html
    with engine_ctx.sessions() as session:
        assert session.get(Meeting, meeting.id).status == "cancelled"
        cancelled = {codes[n.staff_id] for n in session.query(Notification).filter_by(kind="meeting_cancel")}
    assert cancelled == told  # the cancellation reaches the same people

    # the liaison officer sees meetings read-only (the test client has one cookie jar: admin is out now)
    liaison = await _signed_in(console, engine, "liaison")
    html = await (await liaison.request("GET", "/admin/meetings")).text()
    assert "第一季度理事会" in html and "取消会议" not in html and "新建会议" not in html
    assert (await liaison.request("GET", "/admin/meetings/new", allow_redirects=False)).status == 403


async def test_admin_invites_changes_roles_and_revokes_and_every_step_is_audited(console, engine, engine_ctx):
    admin = await _signed_in(console, engine, "admin")
    csrf = await _csrf(admin, "/admin/people")
    html = await (await admin.request("POST", "/admin/people/dr_liu_zd/invite", data={"csrf": csrf})).text()
    code = re.search(r"/bind ([A-Z0-9]+)", html).group(1)
    assert "一次性绑定码" in html and len(code) == 8
    html = await (await admin.request("POST", "/admin/people/dr_liu_zd/roles",
                                      data={"csrf": csrf, "role_physician": "on", "role_liaison": "on"})).text()
    assert "角色已改为" in html and "联络员" in html
    html = await (await admin.request("POST", "/admin/people/dr_liu_zd/roles", data={"csrf": csrf})).text()
    assert "至少要保留一个角色" in html
    html = await (await admin.request("POST", "/admin/people/admin_zd/roles",
                                      data={"csrf": csrf, "role_physician": "on"})).text()
    assert "不能取消自己的管理员角色" in html
    html = await (await admin.request("POST", "/admin/people/dr_liu_zd/revoke", data={"csrf": csrf})).text()
    assert "已撤销" in html
    # another consortium's staff member cannot be touched
    html = await (await admin.request("POST", "/admin/people/dr_wang_sy/invite", data={"csrf": csrf})).text()
    assert "不属于本医联体" in html
    with engine_ctx.sessions() as session:
        person = repo.get_staff_by_code(session, "dr_liu_zd")
        assert person.telegram_user_id is None and set(person.roles) == {"physician", "liaison"}
        mine = [e for e in repo.audit_entries(session, actor="admin_zd")
                if e.action in ("invite.create", "role_change", "unbind")]
    assert {e.action for e in mine} == {"invite.create", "role_change", "unbind"}
    assert {e.channel for e in mine} == {"web"} and all(e.target == "staff:dr_liu_zd" for e in mine)


async def test_referral_filters_and_the_audit_export(console, engine, engine_ctx):
    from datetime import timedelta

    from storage.types import utcnow

    with engine_ctx.sessions.begin() as session:
        make_referral(session, "dr_liu_zd", "张店区人民医院", patient_name="赵一", now=utcnow() - timedelta(days=40))
        make_referral(session, "dr_liu_zd", "张店区人民医院", patient_name="钱二", status="accepted")
    admin = await _signed_in(console, engine, "admin")
    html = await (await admin.request("GET", "/admin/referrals")).text()
    assert "共 2 条" in html
    since = (utcnow() - timedelta(days=7)).strftime("%Y-%m-%d")
    html = await (await admin.request("GET", "/admin/referrals", params={"since": since})).text()
    assert "共 1 条" in html and "钱*" in html and "赵*" not in html
    html = await (await admin.request("GET", "/admin/referrals", params={"status": "submitted"})).text()
    assert "共 1 条" in html and "赵*" in html
    csv_text = await (await admin.request("GET", "/admin/referrals/export.csv", params={"since": since})).text()
    assert csv_text.count("\n") == 2  # the header and the one referral of the filter

    res = await admin.request("GET", "/admin/audit/export.csv", params={"action": "referral.export"})
    text = await res.text()
    assert res.status == 200 and res.content_type == "text/csv" and "referral.export" in text
    assert "张店区人民医院" not in text  # no referral content in the audit export
    with engine_ctx.sessions() as session:
        assert repo.audit_entries(session, action="audit.export")[0].actor == "admin_zd"
