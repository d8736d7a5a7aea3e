"""A simulated quarter of meetings over both channels' fake servers (issue 10, "Tests that must
exist"): reminders with .ics and 参加/请假 buttons reach the liaison officers on Telegram and
WeCom, their answers are recorded, quiet hours hold back a reminder until the morning, downtime
sends the still-relevant reminder late with a note and drops the stale ones, and a restart in the
middle of the quarter (a second process taking over the lease) repeats and loses nothing.

The scheduler runs on a simulated clock (a tick every 30 minutes of the quarter); the real server
with both channels delivers what it queued.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from bot.scheduler import Scheduler
from handlers import meeting_service
from handlers.meetings import CHINA_TZ
from storage.models import OutboxMessage, ReminderLog
from tests.test_referral_channels import (  # noqa: F401 - fixtures
    TgPerson,
    WxPerson,
    _bind_telegram,
    engine_for,
    make_ctx,
    serve,
    tg,
    wx,
)

pytest_plugins = ("storage.testing",)

XU_TG = 77_801  # liaison_xu_zd (湖田卫生院) on Telegram; liaison_ma_zd (张店区人民医院) on WeCom: maxiaoyan


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHINA_TZ).astimezone(timezone.utc)


def run(scheduler: Scheduler, start: datetime, end: datetime, step: timedelta = timedelta(minutes=30)) -> None:
    now = start
    while now < end:
        scheduler.tick(now)
        now += step


def _reminder_rows(ctx) -> dict[str, ReminderLog]:
    with ctx.sessions() as s:
        rows = list(s.scalars(select(ReminderLog).where(ReminderLog.kind == "meeting_reminder")))
        for r in rows:
            s.expunge(r)
    return {r.key: r for r in rows}


def _unpaced(monkeypatch) -> None:
    """A simulated quarter sends a quarter's messages in seconds: WeCom's per-member pacing (25 a
    minute, tested in the channel's own tests) would make the test wait a real minute."""
    from bot.outbox import OutboxOptions
    from tests import test_referral_channels as channels
    from tests import wecom_support as wxs

    outbox = OutboxOptions(poll_interval_s=0.05, lease_s=3.0, backoff_base_s=0.02, backoff_max_s=0.1, per_minute=600)
    monkeypatch.setattr(channels, "_wx_options",
                        lambda: wxs.fast_options(rate_limit=channels._no_rate_limit(), outbox=outbox))


async def test_a_simulated_quarter_of_meetings_over_telegram_and_wecom(tg, wx, make_ctx, engine_for, tmp_path,
                                                                        monkeypatch):
    _unpaced(monkeypatch)
    no_quotas = tmp_path / "quotas.yaml"
    no_quotas.write_text("quotas: []\n", "utf-8")
    ctx = make_ctx(telegram=tg, wecom=wx, quota_rules=no_quotas, quiet_hours="22:00-07:30")
    _bind_telegram(ctx, "liaison_xu_zd", XU_TG)
    start = local(2027, 1, 1, 8, 0)
    with ctx.sessions.begin() as session:
        council = meeting_service.add_meeting(
            session, ctx.router, consortium_code="zhangdian", kind="理事会", title="一季度理事会",
            at="2027-02-10 09:00", place="行政楼三楼会议室", agenda="年度计划", actor="test", now=start)
        weekly = meeting_service.add_meeting(
            session, ctx.router, consortium_code="zhangdian", kind="工作例会", title="转诊工作例会",
            at="2027-01-15 14:00", institutions=["湖田卫生院", "张店区人民医院"], link="https://meet.example.org/zd",
            repeat="monthly", actor="test", now=start)
        council_id, weekly_id = council.id, weekly.id

    xu, ma = TgPerson(tg, XU_TG), WxPerson(wx, "maxiaoyan")
    async with serve(ctx, engine_for(ctx), telegram=True, wecom=True) as running:
        import aiohttp

        xu.server = ma.server = running
        async with aiohttp.ClientSession() as http:
            ma.http = http
            await running.settled()
            invitations = len(xu.received)
            assert invitations >= 2 and "【会议通知】" in xu.text

            first = Scheduler(ctx, holder="process-1")
            # January: the monthly meeting's three reminders (7d, 1d, 2h before 01-15 14:00)
            run(first, start, local(2027, 1, 15, 13, 0))
            await running.settled()
            texts = [s.text for s in xu.received[invitations:]]
            reminders = [t for t in texts if "【会议提醒】" in t]
            assert len(reminders) == 3 and all("转诊工作例会" in t and "meet.example.org" in t for t in reminders)
            assert "1 天后" in reminders[1] and "2 小时后" in reminders[2]
            # each reminder carries the .ics (sendDocument) …
            documents = [c for c in tg.calls_of("sendDocument")]
            assert any(c.get("filename", "").endswith(".ics") or ".ics" in str(c) for c in documents)
            # … and WeCom got it through media/upload, then a file message
            assert any(b"BEGIN:VCALENDAR" in data for _name, data in wx.uploads)
            assert any(d.msgtype == "file" for d in ma.received)

            # the liaisons answer: 参加 on Telegram, 请假 on the WeCom card
            await xu.press("参加")
            assert "已记录：参加" in xu.received[-1].text
            await ma.click("请假")
            assert "已记录：请假" in ma.text
            with ctx.sessions() as session:
                from storage.models import Meeting

                occ, rows = meeting_service.attendance(session, session.get(Meeting, weekly_id), local(2027, 1, 15, 13))
            answers = {r.staff_code: r.answer for r in rows}
            assert answers == {"liaison_xu_zd": "attend", "liaison_ma_zd": "leave"}

            # February: a restart mid-quarter. The old process dies holding the lease; the new one
            # waits for it to expire, then takes over; nothing is repeated or lost.
            run(first, local(2027, 1, 15, 13, 0), local(2027, 2, 1, 0, 0))
            assert first.tick(local(2027, 2, 1, 0, 0)).leader  # its last tick before it dies
            restarted = make_ctx(telegram=tg, wecom=wx, quota_rules=no_quotas, quiet_hours="22:00-07:30")
            second = Scheduler(restarted, holder="process-2")
            assert not second.tick(local(2027, 2, 1, 0, 0, 30)).leader  # process-1's lease still runs
            # downtime from 02-09 08:00: the council's 1d reminder (02-09 09:00) is missed; at
            # 02-09 20:00 it goes out late, with a note. The 2h one is then held by quiet hours.
            run(second, local(2027, 2, 1, 0, 2), local(2027, 2, 9, 8, 0))
            run(second, local(2027, 2, 9, 20, 0), local(2027, 3, 31, 23, 0))
            await running.settled()

    rows = _reminder_rows(ctx)
    council_keys = {k: r for k, r in rows.items() if k.startswith(f"meeting:{council_id}:")}
    assert {k.rsplit(":", 1)[1]: r.status for k, r in council_keys.items()} == {"7d": "sent", "1d": "late",
                                                                                 "2h": "sent"}
    two_hours = next(r for k, r in council_keys.items() if k.endswith(":2h"))
    # due 07:00 (quiet hours until 07:30): sent at 07:30, before the 09:00 meeting
    assert two_hours.handled_at.astimezone(CHINA_TZ).strftime("%H:%M") == "07:30"
    late_text = [s.text for s in xu.received if "补发" in s.text]
    assert len(late_text) == 1 and "一季度理事会" in late_text[0]
    # the monthly meeting: 3 occurrences (01-15, 02-15, 03-15) × 3 offsets, all sent once
    weekly_keys = [k for k in rows if k.startswith(f"meeting:{weekly_id}:")]
    assert len(weekly_keys) == 9 and all(rows[k].status == "sent" for k in weekly_keys)
    # exactly once per person: no outbox key twice, no reminder text twice to the same chat
    with ctx.sessions() as s:
        keys = [k for (k,) in s.execute(select(OutboxMessage.dedupe_key))]
    assert len(keys) == len(set(keys))
    sent_texts = Counter((s.chat_id, s.text) for s in tg.sent if "【会议提醒】" in s.text)
    assert sent_texts and max(sent_texts.values()) == 1
    wecom_texts = Counter((d.touser, d.text) for d in wx.to("maxiaoyan") if "【会议提醒】" in d.text)
    assert wecom_texts and max(wecom_texts.values()) == 1
    # 3 (weekly, Jan) + 3 (Feb) + 3 (Mar) + 3 council reminders for xu on Telegram
    assert sum(1 for s in xu.received if "【会议提醒】" in s.text) == 12
