"""The referral wizard end to end at the engine: every step, bad input, back, edit, restart,
submission, the receiving liaison's accept / reject, and who may see the record."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from handlers.engine import ConversationEngine
from handlers.messages import Attachment, Incoming
from storage.models import AuditLog, Notification, Referral, ReferralEvent

pytest_plugins = ("engine_support",)

# A valid 18-digit ID number (checksum computed by GB 11643) of a man born 1958-03-07.
VALID_ID = "110101195803071233"


def _walk_to_summary(doc, *, urgency="普通"):
    doc.say("转诊")
    assert "转诊方向" in doc.text
    doc.press("上转")
    assert "紧急" in doc.text
    doc.press(urgency)
    if urgency != "普通":
        doc.press("否")
    doc.say("张三丰")
    doc.press("男")
    doc.say("66岁")
    doc.say(VALID_ID)
    doc.say("13912345678")
    doc.say("社区获得性肺炎")
    doc.say("发热咳嗽3天，口服头孢无好转")
    doc.press("疑难复杂")
    assert "接收机构" in doc.text
    doc.press("张店区人民医院")
    assert "科室" in doc.text
    doc.press("内科")
    assert "附件" in doc.text or "PDF" in doc.text
    doc.press("完成")
    assert "请核对" in doc.text
    return doc


def test_a_whole_upward_referral_reaches_the_receiving_liaison(chat, engine_ctx):
    doc = _walk_to_summary(chat("cli", "dr_liu_zd"))
    summary = doc.text
    assert "张三丰" in summary and "139****5678" in summary and "110***********1233" in summary
    assert VALID_ID not in summary and "13912345678" not in summary
    doc.press("提交")
    assert "转诊已提交" in doc.text and "ZD-" in doc.text
    assert "马晓燕" in doc.text  # the receiving liaison named
    with engine_ctx.sessions() as s:
        r = s.scalars(select(Referral)).one()
        assert r.status == "submitted" and r.direction == "up" and r.to_department == "内科"
        assert [e.to_status for e in r.events] == ["draft", "submitted"]
        note = s.scalars(select(Notification)).one()
        assert note.staff.code if hasattr(note, "staff") else True
        assert "张*丰" in note.text and "张三丰" not in note.text
        assert [c[0] for c in note.choices][:2] == ["接收", "拒绝"]
        number = r.number

    liaison = chat("cli", "liaison_ma_zd")
    liaison.say("待处理转诊")
    assert number in liaison.text
    liaison.press(number)
    assert "接收" in liaison.buttons
    liaison.press("接收")
    assert "已接收" in liaison.text
    assert liaison.last[0].settle == "已接收"
    # a second press (or a colleague's) is told who handled it
    other = chat("cli", "admin_zd")
    from handlers.referral.service import encode_action
    with engine_ctx.sessions() as s:
        rid = s.scalars(select(Referral.id)).one()
    again = other.engine.handle(Incoming(channel="cli", user_key="admin_zd", choice=encode_action("accept", rid)))
    assert "已由马晓燕处理" in again[0].text
    with engine_ctx.sessions() as s:
        texts = [n.text for n in s.scalars(select(Notification).order_by(Notification.id))]
    assert any("已接收" in t and number in t for t in texts)  # the sender was told


def test_reject_needs_a_reason_and_tells_the_sender(chat, engine_ctx):
    _walk_to_summary(chat("cli", "dr_liu_zd")).press("提交")
    liaison = chat("cli", "liaison_ma_zd")
    liaison.say("待处理转诊")
    liaison.press("ZD-")
    liaison.press("拒绝")
    assert "理由" in liaison.text
    liaison.say("床位紧张，请转往市中心医院")
    assert "已拒绝" in liaison.text
    with engine_ctx.sessions() as s:
        r = s.scalars(select(Referral)).one()
        assert r.status == "rejected" and r.reject_reason == "床位紧张，请转往市中心医院"
        assert any("已拒绝：床位紧张" in n.text for n in s.scalars(select(Notification)))


def test_bad_input_is_asked_again_and_back_goes_one_step(chat):
    doc = chat("cli", "dr_liu_zd")
    doc.say("转诊")
    doc.say("横着转")
    assert "没有找到" in doc.text
    doc.say("上转")
    doc.say("普通")
    doc.say("张3")
    assert "姓名" in doc.text
    doc.say("李四")
    doc.say("男")
    doc.say("两百岁")
    assert "年龄" in doc.text
    doc.say("1958-03-07")
    doc.say("110101195803071235")  # wrong check digit
    assert "身份证号无效" in doc.text
    doc.say("上一步")
    assert "年龄" in doc.text
    doc.say("66")
    doc.say("跳过")
    doc.say("12345")
    assert "电话号码格式不对" in doc.text
    doc.say("跳过")
    assert "初步诊断" in doc.text


def test_an_id_number_of_the_other_sex_is_refused(chat):
    doc = chat("cli", "dr_liu_zd")
    for text in ("转诊", "上转", "普通", "王芳", "女", "66"):
        doc.say(text)
    doc.say(VALID_ID)
    assert "性别" in doc.text and "不一致" in doc.text


def test_a_restart_in_the_middle_continues_where_the_physician_was(chat, engine_ctx, app_context, clock):
    doc = chat("cli", "dr_liu_zd")
    for text in ("转诊", "上转", "普通", "王芳"):
        doc.say(text)
    assert "性别" in doc.text
    restarted = ConversationEngine(engine_ctx, kb=app_context.kb, clock=clock)  # a new process
    again = chat("cli", "dr_liu_zd", on=restarted)
    again.say("女")
    assert "年龄" in again.text


def test_edit_a_field_from_the_summary(chat, engine_ctx):
    doc = _walk_to_summary(chat("cli", "dr_liu_zd"))
    doc.press("修改")
    doc.press("初步诊断")
    assert "初步诊断" in doc.text
    doc.say("重症肺炎")
    assert "请核对" in doc.text and "重症肺炎" in doc.text
    doc.press("提交")
    with engine_ctx.sessions() as s:
        assert s.scalars(select(Referral.diagnosis)).one() == "重症肺炎"


def test_emergency_upward_referrals_say_to_call_first(chat):
    doc = chat("cli", "dr_liu_zd")
    for text in ("转诊", "上转"):
        doc.say(text)
    doc.press("急诊")
    assert doc.text.startswith("⚠") and "电话" in doc.text


def test_partial_institution_name_offers_the_matches_as_buttons(chat):
    doc = chat("cli", "dr_wu_zd")  # 张店区人民医院 → downward
    for text in ("转诊", "下转", "普通", "赵六", "男", "70", "跳过", "跳过", "跳过", "高血压", "无", "慢性病"):
        doc.say(text)
    doc.say("卫生院")
    assert "对应多个" in doc.text
    assert any("卫生院" in b for b in doc.buttons)


def test_non_clinical_institutions_are_not_offered(chat):
    doc = chat("cli", "dr_zhao_sy")
    for text in ("转诊", "上转", "普通", "赵六", "男", "70", "跳过", "跳过", "高血压", "无", "疑难"):
        doc.say(text)
    doc.say("疾病预防控制中心")
    assert "没有找到" in doc.text


def test_a_physician_of_another_hospital_is_denied_the_record(chat, engine_ctx):
    _walk_to_summary(chat("cli", "dr_liu_zd")).press("提交")
    with engine_ctx.sessions() as s:
        number = s.scalars(select(Referral.number)).one()
    colleague = chat("cli", "dr_wu_zd")  # physician at the receiving hospital, not its liaison
    colleague.say(number)
    assert "无权查看" in colleague.text and "张三丰" not in colleague.text
    outsider = chat("cli", "dr_li_lc")
    outsider.say(number)
    assert "无权查看" in outsider.text
    sender = chat("cli", "dr_liu_zd")
    sender.say(number)
    assert "张三丰" in sender.text and "撤销转诊" in sender.buttons
    with engine_ctx.sessions() as s:
        actions = [a.action for a in s.scalars(select(AuditLog).where(AuditLog.target.like(f"%{number}%")))]
    assert "referral.view" in actions and "access.denied" in actions


def test_the_sender_can_cancel_before_acceptance(chat, engine_ctx):
    _walk_to_summary(chat("cli", "dr_liu_zd")).press("提交")
    sender = chat("cli", "dr_liu_zd")
    sender.say("我的转诊")
    sender.press("ZD-")
    sender.press("撤销转诊")
    assert "已撤销" in sender.text
    with engine_ctx.sessions() as s:
        assert s.scalars(select(Referral.status)).one() == "cancelled"
        assert s.scalars(select(ReferralEvent.to_status).order_by(ReferralEvent.id)).all()[-1] == "cancelled"


def test_attachments_are_kept_with_the_referral(chat, engine_ctx, engine):
    doc = chat("cli", "dr_liu_zd")
    for text in ("转诊", "上转", "普通", "李四", "男", "60", "跳过", "跳过", "肺结节", "体检发现", "需上级医院"):
        doc.say(text)
    doc.press("张店区人民医院")
    doc.press("不指定")
    assert "附件" in doc.text
    got = engine.handle(Incoming(channel="cli", user_key="dr_liu_zd",
                                 attachments=(Attachment("ct.pdf", b"%PDF-1.4 ...", "application/pdf"),
                                              Attachment("notes.exe", b"MZ", None))))
    text = "\n".join(r.text for r in got)
    assert "notes.exe" in text and "已收到 1 个附件" in text
    doc.last = got
    doc.press("完成")
    assert "ct.pdf" in doc.text
    doc.press("提交")
    with engine_ctx.sessions() as s:
        r = s.scalars(select(Referral)).one()
        assert [a.file_name for a in r.attachments] == ["ct.pdf"]


def test_escalation_tells_the_receiving_admin_once(chat, engine_ctx, clock):
    from datetime import timedelta

    from handlers.referral.rules import load_rules
    from handlers.referral.service import escalate_due

    _walk_to_summary(chat("cli", "dr_liu_zd")).press("提交")
    with engine_ctx.sessions.begin() as s:
        assert escalate_due(s, None, now=clock.now + timedelta(hours=1), rules=load_rules()) == 0
    with engine_ctx.sessions.begin() as s:
        assert escalate_due(s, None, now=clock.now + timedelta(hours=25), rules=load_rules()) == 1
    with engine_ctx.sessions.begin() as s:
        assert escalate_due(s, None, now=clock.now + timedelta(hours=26), rules=load_rules()) == 0
        escalated = [n for n in s.scalars(select(Notification)) if n.kind == "referral.escalated"]
        assert len(escalated) == 1 and "超时" in escalated[0].text


def test_a_reason_in_own_words_that_contains_an_option_is_kept_whole(chat, engine_ctx):
    _walk_to_summary(chat("cli", "dr_liu_zd")).press("提交")
    liaison = chat("cli", "liaison_ma_zd")
    liaison.say("待处理转诊")
    liaison.press("ZD-")
    liaison.press("拒绝")
    liaison.say("床位已满，建议转市中心医院")
    with engine_ctx.sessions() as s:
        assert s.scalars(select(Referral.reject_reason)).one() == "床位已满，建议转市中心医院"


def test_identifiers_typed_into_free_text_are_masked_in_every_view(chat, engine_ctx):
    doc = chat("cli", "dr_liu_zd")
    for text in ("转诊", "上转", "普通", "李四", "男", "60", "跳过", "跳过", "肺结节",
                 f"家属电话13900001111，身份证{VALID_ID}", "需上级医院"):
        doc.say(text)
    doc.press("张店区人民医院")
    doc.press("不指定")
    doc.press("完成")
    doc.press("提交")
    with engine_ctx.sessions() as s:
        number = s.scalars(select(Referral.number)).one()
        notices = "\n".join(n.text for n in s.scalars(select(Notification)))
    doc.say(number)
    assert "139****1111" in doc.text
    for shown in (doc.text, notices):
        assert "13900001111" not in shown and VALID_ID not in shown
