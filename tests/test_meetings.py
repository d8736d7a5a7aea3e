"""Meeting rules and interfaces (issue 10): offsets and quiet hours as configured, recurrence in
Beijing time, the .ics (VALARM with ACTION and TRIGGER, stable UID, SEQUENCE raised by an edit,
METHOD:CANCEL), stale reminders dropped, compliance warnings once per period, the lease, and
``yilian meetings add/list/attendance``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from icalendar import Calendar
from sqlalchemy import select

from conftest import cli_runner
from handlers import meeting_service
from handlers.messages import Incoming
from handlers import meetings as rules
from storage import meetings as store
from storage.models import Meeting, Notification, ReminderLog, Staff

pytest_plugins = ("engine_support",)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=rules.CHINA_TZ).astimezone(timezone.utc)


def info(**kw) -> rules.MeetingInfo:
    base = dict(id=1, kind="理事会", title="理事会", starts_at=local(2027, 1, 31, 9), uid="u1", consortium="zhangdian")
    return rules.MeetingInfo(**{**base, **kw})


def test_settings_values_parse_and_bad_ones_are_refused():
    assert rules.parse_offsets("7d,1d,2h") == [timedelta(days=7), timedelta(days=1), timedelta(hours=2)]
    assert rules.parse_offsets("30m, 1h") == [timedelta(hours=1), timedelta(minutes=30)]
    with pytest.raises(ValueError):
        rules.parse_offsets("7 days")
    quiet = rules.QuietHours.parse("22:00-07:30")
    assert quiet.contains(local(2027, 1, 1, 23)) and quiet.contains(local(2027, 1, 2, 7, 29))
    assert not quiet.contains(local(2027, 1, 2, 7, 30)) and not quiet.contains(local(2027, 1, 1, 21, 59))
    assert quiet.ends_after(local(2027, 1, 1, 23)) == local(2027, 1, 2, 7, 30)
    assert rules.QuietHours.parse("") is None


def test_a_monthly_series_stays_at_its_local_hour_and_the_31st_falls_back():
    starts = rules.occurrences(info(repeat="monthly"), local(2027, 1, 1), local(2027, 5, 1))
    assert [s.astimezone(rules.CHINA_TZ).strftime("%m-%d %H:%M") for s in starts] == \
        ["01-31 09:00", "02-28 09:00", "03-31 09:00", "04-30 09:00"]
    quarterly = rules.occurrences(info(repeat="quarterly"), local(2027, 1, 1), local(2028, 1, 1))
    assert len(quarterly) == 4
    assert rules.occurrences(info(cancelled=True), local(2027, 1, 1), local(2028, 1, 1)) == []


def test_after_a_long_downtime_only_the_latest_reminder_goes_and_none_once_begun():
    offsets = rules.parse_offsets("7d,1d,2h")
    m = info()
    # back 90 minutes before the start: 7d and 1d were missed, the 2h one is due → only it, late
    due = rules.due_reminders([m], offsets, local(2027, 1, 31, 7, 30), set())
    assert [(d.offset, d.late) for d in due] == [(timedelta(hours=2), True)]
    assert set(due[0].superseded) == {timedelta(days=7), timedelta(days=1)}
    assert "补发" in rules.reminder_text(due[0], local(2027, 1, 31, 7, 30))
    # back after the start: nothing at all
    assert rules.due_reminders([m], offsets, local(2027, 1, 31, 9, 1), set()) == []
    # on time: within the minute, no note
    on_time = rules.due_reminders([m], offsets, local(2027, 1, 30, 9, 0, 30), set())
    assert [(d.offset, d.late) for d in on_time] == [(timedelta(days=1), False)]
    handled = {on_time[0].key}
    assert rules.due_reminders([m], offsets, local(2027, 1, 30, 9, 1), handled) == []


def test_quiet_hours_hold_a_reminder_unless_the_meeting_would_begin_first():
    quiet = rules.QuietHours.parse("22:00-07:30")
    offsets = [timedelta(hours=2)]
    early = info(starts_at=local(2027, 1, 31, 7, 0))  # 2h before = 05:00, quiet until 07:30 > start
    assert rules.due_reminders([early], offsets, local(2027, 1, 31, 5, 0), set(), quiet)
    later = info(starts_at=local(2027, 1, 31, 9, 0))  # 07:00 is quiet; 07:30 is still in time
    assert rules.due_reminders([later], offsets, local(2027, 1, 31, 7, 0), set(), quiet) == []
    sent = rules.due_reminders([later], offsets, local(2027, 1, 31, 7, 30), set(), quiet)
    assert sent and not sent[0].late


def test_the_ics_has_alarms_a_stable_uid_and_a_cancellation_replaces_the_event():
    m = info(place="三楼会议室", agenda="年度计划")
    event = Calendar.from_ical(rules.ics(m, m.starts_at)).walk("VEVENT")[0]
    alarm = event.walk("VALARM")[0]
    assert alarm["ACTION"] == "DISPLAY" and alarm.decoded("TRIGGER") == -timedelta(hours=2)
    assert event.decoded("DTSTART") == m.starts_at and str(event["LOCATION"]) == "三楼会议室"
    cancelled = Calendar.from_ical(rules.ics(info(sequence=1), m.starts_at, method="CANCEL"))
    again = cancelled.walk("VEVENT")[0]
    assert str(cancelled["METHOD"]) == "CANCEL" and str(again["STATUS"]) == "CANCELLED"
    assert str(again["UID"]) == str(event["UID"]) and int(again["SEQUENCE"]) == 1 > int(event["SEQUENCE"])
    assert not again.walk("VALARM")


def test_an_edit_notifies_the_invitees_with_a_higher_sequence_and_cancel_removes_the_buttons(engine_ctx):
    now = local(2027, 1, 1, 10)
    with engine_ctx.sessions.begin() as s:
        m = meeting_service.add_meeting(s, None, consortium_code="zhangdian", kind="联席会议", title="联席会",
                                        at="2027-03-01 09:00", actor="test", now=now)
        meeting_service.edit_meeting(s, None, m, actor="test", now=now, place="新会议室")
        meeting_service.cancel_meeting(s, None, m, actor="test", now=now)
        assert m.sequence == 2 and m.status == "cancelled"
        xu = s.scalar(select(Staff).where(Staff.code == "liaison_xu_zd"))
        kinds = [(n.kind, bool(n.choices)) for n in s.scalars(select(Notification).where(Notification.staff_id == xu.id)
                                                              .order_by(Notification.id))]
    assert kinds == [("meeting_invite", True), ("meeting_update", True), ("meeting_cancel", False)]
    with pytest.raises(meeting_service.MeetingError):
        with engine_ctx.sessions.begin() as s:
            meeting_service.add_meeting(s, None, consortium_code="zhangdian", kind="茶话会", title="x",
                                        at="2027-03-01 09:00", actor="test", now=now)


def test_a_required_meeting_not_scheduled_warns_the_admins_once(engine_ctx):
    rule_set = rules.load_meeting_rules()
    with engine_ctx.sessions.begin() as s:
        assert meeting_service.send_compliance_warnings(s, None, local(2027, 2, 1, 10), rule_set, None) == 0
        assert meeting_service.send_compliance_warnings(s, None, local(2027, 3, 5, 10), rule_set, None) == 1
        assert meeting_service.send_compliance_warnings(s, None, local(2027, 3, 6, 10), rule_set, None) == 0
        admin = s.scalar(select(Staff).where(Staff.code == "admin_zd"))
        texts = [n.text for n in s.scalars(select(Notification).where(Notification.staff_id == admin.id))]
    assert len(texts) == 1 and "理事会" in texts[0] and "2027-Q1" in texts[0] and "每季度至少" in texts[0]
    with engine_ctx.sessions.begin() as s:  # a council scheduled in Q2 silences Q2's warning
        meeting_service.add_meeting(s, None, consortium_code="zhangdian", kind="理事会", title="二季度理事会",
                                    at="2027-06-20 09:00", actor="test", now=local(2027, 4, 1))
        assert meeting_service.send_compliance_warnings(s, None, local(2027, 6, 5, 10), rule_set, None) == 0


def test_only_one_scheduler_holds_the_lease_until_it_expires(engine_ctx):
    now = local(2027, 1, 1)
    ttl = timedelta(seconds=60)
    with engine_ctx.sessions.begin() as s:
        assert store.acquire_lease(s, "scheduler", "a", now, ttl)
        assert not store.acquire_lease(s, "scheduler", "b", now + timedelta(seconds=30), ttl)
        assert store.acquire_lease(s, "scheduler", "a", now + timedelta(seconds=30), ttl)  # renewed
        assert not store.acquire_lease(s, "scheduler", "b", now + timedelta(seconds=80), ttl)
        assert store.acquire_lease(s, "scheduler", "b", now + timedelta(seconds=91), ttl)


def test_meetings_cli_add_list_and_attendance(engine_ctx, chat):
    run = cli_runner(engine_ctx.settings.resolved_data_dir)
    when = (datetime.now(rules.CHINA_TZ) + timedelta(days=10)).strftime("%Y-%m-%d 09:30")
    added = run("meetings", "add", "--type", "理事会", "--title", "季度理事会", "--at", when, "--consortium",
                "zhangdian", "--institutions", "湖田卫生院", "张店区人民医院", "--place", "三楼",
                "--repeat", "quarterly")
    assert added.exit_code == 0, added.output
    listed = json.loads(run("meetings", "list", "--json").output)
    assert listed[0]["title"] == "季度理事会" and listed[0]["repeat"] == "quarterly"
    assert sorted(listed[0]["institutions"]) == ["张店区人民医院", "湖田卫生院"]
    bad = run("meetings", "add", "--type", "理事会", "--title", "x", "--at", "明天", "--consortium", "zhangdian")
    assert bad.exit_code == 2 and "YYYY-MM-DD HH:MM" in bad.output
    # the liaison answers from the chat list's button
    xu = chat("web", "liaison_xu_zd")
    xu.say("会议")
    assert "季度理事会" in xu.text
    xu.press("请假")
    assert "已记录：请假" in xu.text
    report = json.loads(run("meetings", "attendance", "季度理事会", "--json").output)
    answers = {r["staff_code"]: r["answer"] for r in report["invitees"]}
    assert answers == {"liaison_xu_zd": "leave", "liaison_ma_zd": "none"}
    assert {"staff_code", "name", "institution", "answer"} == set(report["invitees"][0])
    organiser = chat("web", "admin_zd").say("出席情况 季度理事会")[0].text
    assert "请假 1" in organiser and "未回复 1" in organiser and "徐静怡：请假" in organiser
    assert "没有找到会议" in chat("web", "admin_dy").say("出席情况 季度理事会")[0].text  # another consortium's
    # a physician of a non-invited institution cannot answer for it
    with engine_ctx.sessions() as s:
        m = s.scalars(select(Meeting)).one()
        occ = rules.next_occurrence(rules.MeetingInfo.of(m), datetime.now(timezone.utc))
    outsider = chat("web", "dr_liu_zd")  # 沣水中心卫生院, not invited
    reply = outsider.engine.handle(Incoming(channel="web", user_key="dr_liu_zd",
                                            choice=meeting_service.encode_action("attend", m.id, occ)))
    assert "不在这个会议的邀请名单" in reply[0].text
    physician = chat("web", "dr_wu_zd")  # 张店区人民医院 is invited, but its liaison answers for it
    physician.say("会议")
    assert "季度理事会" in physician.text and not physician.last[0].choices
    reply = physician.engine.handle(Incoming(channel="web", user_key="dr_wu_zd",
                                             choice=meeting_service.encode_action("attend", m.id, occ)))
    assert "联络员" in reply[0].text


async def test_yilian_serve_runs_the_scheduler_under_the_lease(engine_ctx, app_context):
    """The server's scheduler (enabled here; the suite disables it elsewhere) takes the lease and
    sends a reminder due within the minute."""
    import asyncio

    from aiohttp.test_utils import TestServer

    from bot.server import create_app
    from handlers.engine import ConversationEngine
    from storage.models import SchedulerLease

    settings = engine_ctx.settings
    settings.scheduler_enabled, settings.scheduler_interval_s, settings.reminder_offsets = True, 0.1, "30m"
    settings.quiet_hours = ""
    now = datetime.now(timezone.utc)
    with engine_ctx.sessions.begin() as s:
        meeting_service.add_meeting(s, None, consortium_code="zhangdian", kind="工作例会", title="周例会",
                                    at=(now + timedelta(minutes=30, seconds=2)).astimezone(rules.CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S"),
                                    actor="test", now=now)
    server = TestServer(create_app(engine_ctx, ConversationEngine(engine_ctx, kb=app_context.kb), web_chat=False,
                                   warm_up=True))
    await server.start_server()
    try:
        for _ in range(100):
            with engine_ctx.sessions() as s:
                logged = s.scalars(select(ReminderLog).where(ReminderLog.kind == "meeting_reminder")).all()
                if logged:
                    break
            await asyncio.sleep(0.1)
        assert [r.status for r in logged] == ["sent"] and logged[0].recipients == 2  # both 张店 liaisons
        assert logged[0].handled_at - logged[0].due_at < timedelta(seconds=60)
        with engine_ctx.sessions() as s:
            assert s.get(SchedulerLease, "scheduler").expires_at > datetime.now(timezone.utc)
    finally:
        await server.close()
    with engine_ctx.sessions() as s:  # a stopped server gives the lease up at once
        assert s.get(SchedulerLease, "scheduler").expires_at <= datetime.now(timezone.utc)


def test_an_admin_schedules_a_meeting_in_chat_and_the_liaisons_are_invited(chat, engine_ctx):
    admin = chat("web", "admin_zd")
    admin.say("安排会议")
    admin.press("联席会议")
    admin.say("双向转诊联席会议")
    admin.say("2020-01-01 09:00")
    assert "已经过去" in admin.text
    when = (datetime.now(rules.CHINA_TZ) + timedelta(days=20)).strftime("%Y-%m-%d 14:30")
    admin.say(when)
    admin.say("https://meet.example.org/zd")
    admin.say("湖田卫生院、不存在卫生院")
    assert "不存在卫生院" in admin.text
    admin.say("湖田卫生院、张店区人民医院")
    admin.press("每季度")
    assert "邀请 湖田卫生院、张店区人民医院" in admin.text and "每季度" in admin.text
    admin.press("保存并通知")
    assert "已安排会议" in admin.text and "2 家机构" in admin.text
    with engine_ctx.sessions() as s:
        m = s.scalars(select(Meeting)).one()
        assert (m.link, m.place, m.repeat, m.organiser.code) == ("https://meet.example.org/zd", None, "quarterly",
                                                                 "admin_zd")
        xu = s.scalar(select(Staff).where(Staff.code == "liaison_xu_zd"))
        invite = s.scalar(select(Notification).where(Notification.staff_id == xu.id))
        assert "【会议通知】联席会议：双向转诊联席会议" in invite.text and invite.choices
    assert "只有管理员" in chat("web", "liaison_xu_zd").say("安排会议")[0].text


def test_meetings_cli_edit_and_cancel(engine_ctx):
    run = cli_runner(engine_ctx.settings.resolved_data_dir)
    when = (datetime.now(rules.CHINA_TZ) + timedelta(days=5)).strftime("%Y-%m-%d 10:00")
    assert run("meetings", "add", "--type", "工作例会", "--title", "例会", "--at", when, "--consortium",
               "zhangdian").exit_code == 0
    edited = run("meetings", "edit", "例会", "--place", "四楼会议室")
    assert edited.exit_code == 0 and "第 1 版" in edited.output
    assert run("meetings", "cancel", "1").exit_code == 0
    again = run("meetings", "cancel", "1")
    assert again.exit_code == 2 and "已经取消" in again.output
    assert run("meetings", "edit", "nope", "--place", "x").exit_code == 2
    listed = json.loads(run("meetings", "list", "--json").output)
    assert (listed[0]["status"], listed[0]["place"], listed[0]["sequence"]) == ("cancelled", "四楼会议室", 2)


def test_a_meeting_set_further_ahead_than_the_horizon_still_has_its_next_occurrence():
    """Its invitation goes out when it is set (a regression: nothing was sent for such a meeting)."""
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    far = info(starts_at=datetime(2029, 3, 1, 1, 0, tzinfo=timezone.utc))
    assert rules.next_occurrence(far, now) == far.starts_at
    assert rules.next_occurrence(info(starts_at=far.starts_at, repeat="quarterly"), now) == far.starts_at
    assert rules.next_occurrence(info(starts_at=far.starts_at, cancelled=True), now) is None
    past_once = info(starts_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert rules.next_occurrence(past_once, now) is None
