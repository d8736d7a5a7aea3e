"""Dialogs: /bind (inline, two-step, across a restart), re-asks, cancel, expiry, stale buttons,
the referral entry and the admin invite."""

from __future__ import annotations

import threading

from sqlalchemy import select

from handlers.engine import ConversationEngine
from handlers.messages import Incoming
from storage import repositories as repo
from storage.models import AuditLog, Institution, Staff

pytest_plugins = ("engine_support",)


def invite_code(ctx, staff_code: str, *, ttl_hours: float = 72, now=None) -> str:
    with ctx.sessions.begin() as session:
        staff = repo.get_staff_by_code(session, staff_code)
        return repo.create_invite(session, staff, created_by="test", ttl_hours=ttl_hours, now=now)


def telegram_id_of(ctx, staff_code: str) -> int | None:
    with ctx.sessions() as session:
        return session.scalar(select(Staff.telegram_user_id).where(Staff.code == staff_code))


def open_dialog(ctx, channel: str, user: str):
    with ctx.sessions.begin() as session:
        return repo.get_dialog(session, channel, user)


# --- /bind ------------------------------------------------------------------------------------


def test_bind_with_the_code_inline(chat, engine_ctx):
    code = invite_code(engine_ctx, "dr_wang_sy")
    tg = chat("telegram", "424242")
    tg.say(f"/bind {code.lower()}")
    assert "绑定成功" in tg.text and "王思远" in tg.text
    assert telegram_id_of(engine_ctx, "dr_wang_sy") == 424242
    # Now bound: a referral is allowed and the code cannot be used again.
    tg.say("转诊")
    assert "请选择转诊方向" in tg.text
    other = chat("telegram", "434343")
    other.say(f"/bind {code}")
    assert "已被使用" in other.text


def test_bind_two_step_survives_a_restart_between_steps(engine_ctx, app_context, directory_template, clock):
    from engine_support import context_on_copy

    code = invite_code(engine_ctx, "liaison_sun_sy")
    first = ConversationEngine(engine_ctx, kb=app_context.kb, clock=clock)
    replies = first.handle(Incoming("telegram", "900001", text="/bind"))
    assert "请发送管理员给您的绑定码" in replies[0].text

    # "Restart": a brand-new context (new DB engine and sessions) and engine on the same database.
    data_dir = engine_ctx.settings.data_dir
    engine_ctx.close()
    restarted_ctx = context_on_copy(directory_template, data_dir)
    try:
        second = ConversationEngine(restarted_ctx, kb=app_context.kb, clock=clock)
        replies = second.handle(Incoming("telegram", "900001", text=code))
        assert "绑定成功" in replies[0].text and "孙晓禾" in replies[0].text
        assert telegram_id_of(restarted_ctx, "liaison_sun_sy") == 900001
        assert open_dialog(restarted_ctx, "telegram", "900001") is None
    finally:
        restarted_ctx.close()


def test_mistyped_code_is_asked_again_with_what_is_expected(chat, engine_ctx):
    code = invite_code(engine_ctx, "dr_zhao_sy")
    tg = chat("telegram", "900002")
    tg.say("/bind")
    tg.say("我不知道")
    assert "不是有效的绑定码格式" in tg.text and "8 位" in tg.text
    assert "请发送管理员给您的绑定码" in tg.text  # the question is repeated
    tg.say("ABCD2345")  # right shape, but no such code
    assert "没有找到这个绑定码" in tg.text
    tg.say(code)
    assert "绑定成功" in tg.text


def test_unknown_expired_and_used_codes_get_distinct_messages(chat, engine_ctx, clock):
    from datetime import timedelta

    expired = invite_code(engine_ctx, "dr_wang_sy", ttl_hours=1, now=clock.now - timedelta(hours=2))
    used = invite_code(engine_ctx, "dr_zhao_sy")
    chat("telegram", "900010").say(f"/bind {used}")

    unknown_text = chat("telegram", "900011").say("/bind ABCD2345")[0].text
    expired_text = chat("telegram", "900012").say(f"/bind {expired}")[0].text
    used_text = chat("telegram", "900013").say(f"/bind {used}")[0].text
    assert "没有找到" in unknown_text
    assert "已过期" in expired_text
    assert "已被使用" in used_text
    assert len({unknown_text, expired_text, used_text}) == 3
    # An expired or used code ends the dialog (retyping cannot help); an unknown one is re-asked.
    assert open_dialog(engine_ctx, "telegram", "900012") is None
    assert open_dialog(engine_ctx, "telegram", "900013") is None
    assert open_dialog(engine_ctx, "telegram", "900011").dialog == "bind"


def test_cancel_always_exits(chat, engine_ctx):
    tg = chat("telegram", "900020")
    tg.say("/bind")
    tg.say("取消")
    assert "已取消绑定" in tg.text
    assert open_dialog(engine_ctx, "telegram", "900020") is None
    tg.say("/cancel")
    assert "没有进行中的操作" in tg.text

    doctor = chat("web", "dr_wang_sy")
    doctor.say("转诊")
    doctor.press("下转")
    doctor.say("/cancel")
    assert "已取消转诊登记" in doctor.text
    assert open_dialog(engine_ctx, "web", "dr_wang_sy") is None


def test_expired_dialog_is_announced_and_the_late_answer_not_misread(chat, engine_ctx, clock):
    code = invite_code(engine_ctx, "dr_wang_sy")
    tg = chat("telegram", "900030")
    tg.say("/bind")
    clock.advance(minutes=engine_ctx.settings.dialog_ttl_minutes + 1)
    tg.say(code)
    assert "已超过 60 分钟未继续，已自动结束" in tg.text and "/bind" in tg.text
    assert "出处" not in tg.text  # not treated as a policy question
    assert telegram_id_of(engine_ctx, "dr_wang_sy") is None
    tg.say(f"/bind {code}")  # starting again works
    assert "绑定成功" in tg.text


def test_a_dialog_button_pressed_after_the_dialog_ended_is_answered_as_stale(chat):
    doctor = chat("web", "dr_wang_sy")
    doctor.say("转诊")
    buttons_of_first_step = list(doctor.last)
    doctor.say("取消")
    doctor.last = buttons_of_first_step
    doctor.press("上转")
    assert "已经结束或已过期" in doctor.text


def test_help_inside_a_dialog_repeats_the_question(chat, engine_ctx):
    tg = chat("telegram", "900040")
    tg.say("/bind")
    tg.say("帮助")
    assert "您正在进行绑定" in tg.text and "请发送管理员给您的绑定码" in tg.text
    assert open_dialog(engine_ctx, "telegram", "900040").dialog == "bind"


# --- referral entry ----------------------------------------------------------------------------


def _to_receiver_step(talker, direction: str) -> None:
    """Answer the wizard's steps before the receiving institution."""
    talker.say(direction)
    for answer in ("普通", "李四", "男", "60", "跳过", "跳过", *(("跳过",) if "下" in direction else ()),
                   "高血压", "无"):
        talker.say(answer)
    talker.say("慢性病" if "下" in direction else "疑难")


def test_referral_receivers_are_suggested_from_the_users_consortium(chat, engine_ctx):
    liaison = chat("web", "liaison_sun_sy")  # 哈达山卫生院 (基层), 松原 consortium
    liaison.say("/refer")
    assert liaison.buttons[:2] == ["上转（转往上级医院）", "下转（转往下级/基层机构）"]
    _to_receiver_step(liaison, "上转")
    assert "请选择接收机构" in liaison.text
    assert liaison.buttons[0] == "松原吉林油田医院"  # the lead hospital first
    with engine_ctx.sessions() as session:
        songyuan = {i.name for i in session.scalars(select(Institution)) if i.consortium.code == "songyuan"}
    assert set(liaison.buttons) <= songyuan and "哈达山卫生院" not in liaison.buttons
    assert not any("疾病预防控制" in b or "妇幼保健计划生育" in b for b in liaison.buttons)
    liaison.press("松原吉林油田医院")
    assert "科室" in liaison.text
    liaison.press("不指定")
    liaison.press("完成")
    text = liaison.text
    assert "方向：上转" in text and "接收：松原吉林油田医院" in text and "转出：哈达山卫生院" in text
    assert "138" not in text  # no phone numbers
    assert open_dialog(engine_ctx, "web", "liaison_sun_sy").step == "confirm"


def test_referral_receiver_can_be_typed_and_typos_are_re_asked(chat, engine_ctx):
    doctor = chat("web", "dr_wang_sy")
    doctor.say("转诊")
    doctor.say("横着转")
    assert "没有找到“横着转”这个转诊方向" in doctor.text
    assert "上转（转往上级医院）" in doctor.buttons  # the step is offered again
    _to_receiver_step(doctor, "我要下转")
    assert "请选择接收机构" in doctor.text
    doctor.say("临沧市人民医院")  # another consortium's hospital is not offered
    assert "没有找到“临沧市人民医院”这个接收机构" in doctor.text
    doctor.say("卫生所")
    assert "对应多个接收机构" in doctor.text
    doctor.say("哈达山")
    doctor.press("不指定")
    doctor.press("完成")
    assert "接收：哈达山卫生院" in doctor.text and "方向：下转" in doctor.text


def test_upward_referral_from_the_lead_hospital_says_there_is_no_higher_level(chat):
    doctor = chat("web", "dr_wang_sy")  # 松原吉林油田医院: the consortium's lead (三级) hospital
    doctor.say("转诊")
    _to_receiver_step(doctor, "上转")
    assert "已是松原吉林油田医院城市医疗集团内级别最高的医院" in doctor.text
    assert "上级医院）" not in doctor.text  # no pretending that the members are higher-level


def test_admin_only_roles_cannot_start_a_referral(chat):
    text = chat("web", "admin_sy").say("转诊")[0].text
    assert "只有已绑定的医生或联络员可以发起转诊" in text


# --- admin invite --------------------------------------------------------------------------------


def test_admin_invites_in_two_steps_and_the_code_binds(chat, engine_ctx):
    admin = chat("web", "admin_sy")
    admin.say("/invite")
    assert "请输入要邀请的人员代码" in admin.text
    admin.say("dr_zhao")
    assert "您是不是要找：dr_zhao_sy" in admin.text
    admin.say("赵一鸣")  # by name also works
    assert "已为 赵一鸣" in admin.text and "有效期至" in admin.text
    code = admin.text.split("/bind ", 1)[1].split("即可", 1)[0].strip()
    tg = chat("telegram", "900050")
    tg.say(f"/bind {code}")
    assert "绑定成功" in tg.text and "赵一鸣" in tg.text
    with engine_ctx.sessions() as session:
        actions = [e.action for e in session.scalars(select(AuditLog).order_by(AuditLog.id))]
    assert "invite.create" in actions and actions[-1] == "bind"


def test_admin_can_only_invite_staff_of_their_own_consortium(chat):
    text = chat("web", "admin_lc").say("邀请 dr_wang_sy")[0].text
    assert "只能管理本医联体的人员" in text
    assert "绑定码" not in text


def test_concurrent_messages_from_many_users_are_all_answered(engine):
    results: dict[int, str] = {}

    def run(i: int) -> None:
        user = str(910000 + i)
        engine.handle(Incoming("telegram", user, text="/bind"))
        results[i] = engine.handle(Incoming("telegram", user, text="帮助"))[-1].text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 12
    assert all("请发送管理员给您的绑定码" in text for text in results.values())
