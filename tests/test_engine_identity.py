"""Who may do what: unbound users, channel identities, admin commands, audit, intent routing."""

from __future__ import annotations

from sqlalchemy import select

from handlers.intents import IntentKind, route
from storage import repositories as repo
from storage.models import AuditLog, Staff

pytest_plugins = ("engine_support",)


def audit(ctx, action: str) -> list[AuditLog]:
    with ctx.sessions() as session:
        return list(session.scalars(select(AuditLog).where(AuditLog.action == action)))


def test_unbound_telegram_user_is_told_how_to_get_access(chat):
    tg = chat("telegram", "800001")
    for command in ("/refer", "转诊", "提醒", "/status"):
        text = tg.say(command)[0].text
        assert "尚未绑定" in text and "/bind" in text and "管理员" in text, command
        assert "请选择转诊方向" not in text


def test_unknown_wecom_user_is_told_to_ask_for_directory_entry(chat):
    text = chat("wecom", "stranger01").say("/refer")[0].text
    assert "企业微信账号" in text and "人员名录" in text
    assert "/bind" not in text


def test_wecom_user_in_the_directory_is_recognised(chat):
    doctor = chat("wecom", "wangsiyuan")
    doctor.say("/whoami")
    assert "王思远" in doctor.text and "松原吉林油田医院" in doctor.text
    doctor.say("/refer")
    assert "请选择转诊方向" in doctor.text


def test_web_guest_gets_guidance_and_a_menu_without_staff_actions(chat):
    guest = chat("web", "guest-xyz123")
    guest.say("帮助")
    assert "政策问答" in guest.buttons and "发起转诊" not in guest.buttons
    guest.say("/refer")
    assert "未绑定的访客" in guest.text and "身份" in guest.text


def test_menu_offers_the_main_actions_as_buttons_and_they_work(chat):
    doctor = chat("web", "dr_wang_sy")
    doctor.say("菜单")
    assert {"政策问答", "发起转诊", "提醒与配额"} <= set(doctor.buttons)
    assert "邀请人员" not in doctor.buttons
    doctor.press("发起转诊")
    assert "请选择转诊方向" in doctor.text
    admin = chat("web", "admin_sy")
    admin.say("/help")
    assert {"邀请人员", "人员列表"} <= set(admin.buttons)
    admin.press("人员列表")
    assert "dr_wang_sy" in admin.text and "王思远" in admin.text
    assert "dr_li_lc" not in admin.text  # another consortium's staff are not listed
    assert "13800" not in admin.text  # no phone numbers


def test_physician_cannot_use_admin_commands(chat, engine_ctx):
    doctor = chat("web", "dr_wang_sy")
    for command in ("邀请 dr_zhao_sy", "/invite dr_zhao_sy", "/users", "人员列表", "/role dr_zhao_sy admin",
                    "/unbind dr_zhao_sy"):
        text = doctor.say(command)[0].text
        assert "只有管理员" in text, command
        assert "绑定码" not in text
    denied = audit(engine_ctx, "access.denied")
    assert len(denied) == 6 and {e.actor for e in denied} == {"dr_wang_sy"}
    assert audit(engine_ctx, "invite.create") == []
    with engine_ctx.sessions() as session:
        assert repo.get_staff_by_code(session, "dr_zhao_sy").roles == ["physician"]


def test_admin_changes_roles_and_it_is_audited(chat, engine_ctx):
    admin = chat("web", "admin_sy")
    admin.say("角色 dr_zhao_sy 医生 联络员")
    assert "由“医生”改为“医生、联络员”" in admin.text
    entries = audit(engine_ctx, "role_change")
    assert len(entries) == 1 and entries[0].actor == "admin_sy" and entries[0].target == "staff:dr_zhao_sy"
    admin.say("角色 admin_sy 医生")
    assert "不能取消您自己的管理员角色" in admin.text
    admin.say("/role dr_li_lc admin")  # another consortium
    assert "只能管理本医联体的人员" in admin.text
    with engine_ctx.sessions() as session:
        assert repo.get_staff_by_code(session, "dr_li_lc").roles == ["physician"]


def test_admin_unbinds_a_lost_telegram_account(chat, engine_ctx):
    with engine_ctx.sessions.begin() as session:
        code = repo.create_invite(session, repo.get_staff_by_code(session, "dr_wang_sy"), created_by="test")
    tg = chat("telegram", "800100")
    tg.say(f"/bind {code}")
    chat("web", "admin_sy").say("解绑 dr_wang_sy")
    tg.say("/refer")
    assert "尚未绑定" in tg.text
    assert len(audit(engine_ctx, "unbind")) == 1


def test_deactivated_staff_are_treated_as_unbound(chat, engine_ctx):
    with engine_ctx.sessions.begin() as session:
        session.scalar(select(Staff).where(Staff.code == "dr_zhao_sy")).active = False
    text = chat("wecom", "zhaoyiming").say("/refer")[0].text
    assert "尚未登记" in text


def test_routing_of_commands_keywords_and_questions():
    assert route("/bind ABCD2345").kind == IntentKind.BIND and route("/bind ABCD2345").arg == "ABCD2345"
    assert route("/bind@YiLianBot").kind == IntentKind.BIND
    assert route("绑定 ABCD2345").arg == "ABCD2345"
    assert route("转诊").kind == IntentKind.REFER
    assert route("转诊需要什么条件？").kind == IntentKind.ASK  # a sentence is a question
    assert route("取消").kind == IntentKind.CANCEL and route("/cancel").kind == IntentKind.CANCEL
    assert route("帮助").kind == IntentKind.HELP and route("菜单").kind == IntentKind.HELP
    assert route("邀请 dr_wang_sy").kind == IntentKind.INVITE
    assert route("invite a colleague to the meeting").kind == IntentKind.ASK
    assert route("进修").kind == IntentKind.STATUS and route("配额").kind == IntentKind.QUOTA
    assert route("我院进修完成情况").kind == IntentKind.QUOTA and route("/quota").kind == IntentKind.QUOTA
    assert route("下派完成情况怎么考核？").kind == IntentKind.ASK
    assert route("会议").kind == IntentKind.MEETINGS and route("近期会议安排").kind == IntentKind.MEETINGS
    assert route("/ask What is a consortium?").english
    assert not route("/bind ABCD2345").english


# --- policy documents sent in chat -------------------------------------------------------------


def test_only_admins_may_upload_policy_documents_and_uploads_are_indexed(chat, engine_ctx, fresh_context):
    from handlers.engine import ConversationEngine
    from handlers.messages import Attachment, Incoming

    policy = "联络员会议制度\n一、会议安排\n（一）例会。联络员例会每月召开一次。\n".encode()
    doctor = chat("web", "dr_wang_sy")
    replies = doctor.engine.handle(
        Incoming("web", "dr_wang_sy", attachments=(Attachment("联络员会议制度.txt", policy),))
    )
    assert "只有管理员可以上传政策文件" in replies[0].text

    # an admin's file goes into the knowledge base at once (a knowledge base of its own here)
    engine = ConversationEngine(engine_ctx, kb=fresh_context.kb)
    upload = Incoming("web", "admin_sy", attachments=(Attachment("联络员会议制度.txt", policy),))
    assert "✓ 已收录《联络员会议制度》（第 1 版" in engine.handle(upload)[0].text
    assert "每月召开一次" in engine.handle(Incoming("web", "admin_sy", text="联络员例会多久开一次？"))[0].text
    assert "内容与已收录版本（第 1 版）相同" in engine.handle(upload)[0].text
    newer = policy.replace("每月".encode(), "每季度".encode())
    assert "更新《联络员会议制度》为第 2 版" in engine.handle(
        Incoming("web", "admin_sy", attachments=(Attachment("联络员会议制度.txt", newer),))
    )[0].text
    broken = engine.handle(Incoming("web", "admin_sy", attachments=(Attachment("扫描件.pdf", b"not a pdf"),)))
    assert "✗ 扫描件.pdf" in broken[0].text and "知识库未作改动" in broken[0].text
    # another consortium's admin may not replace it
    other = engine.handle(Incoming("web", "admin_dy", attachments=(Attachment("联络员会议制度.txt", policy),)))
    assert "属于其他医联体，您无权替换" in other[0].text
    assert [d.version for d in fresh_context.kb.documents()] == [2]
