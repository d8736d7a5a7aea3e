"""Quota nudges over a simulated year (issue 10): a liaison officer whose institution falls behind
a linear pace hears so at most once a month per rule, everyone gets the summary when the period's
last month starts, admins get the table of everyone once, and quiet hours send nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select

from handlers import quota_service, quotas
from handlers.meetings import CHINA_TZ, QuietHours
from storage.models import Notification, Staff

pytest_plugins = ("engine_support",)

HEADER = "kind,person,from_institution,to_institution,start,end\n"


def test_a_simulated_year_of_quota_reminders(engine_ctx, tmp_path: Path):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "quotas:\n"
        "  - {id: jinxiu, consortium: zhangdian, kind: 进修, title: 基层进修, applies_to: {level: 基层}, period: year,\n"
        "     target: {people: 1}, min_days: 30, source: 《张店》“每年至少派出1名医师”}\n", "utf-8")
    rule_set = quotas.load_rules(rules_file)
    with engine_ctx.sessions.begin() as s:  # 湖田卫生院 sends someone in January; 沣水 never does
        data = (HEADER + "进修,赵医生,湖田卫生院,张店区人民医院,2026-01-05,2026-02-20\n").encode()
        assert quota_service.import_records(s, "r.csv", data, actor="test").added == 1
    quiet = QuietHours.parse("22:00-07:30")
    day = datetime(2026, 1, 1, 10, tzinfo=CHINA_TZ).astimezone(timezone.utc)
    while day.year == 2026:
        with engine_ctx.sessions.begin() as s:
            quota_service.send_quota_reminders(s, None, day, rule_set, 0.15, quiet)
            # a night tick never sends anything
            assert quota_service.send_quota_reminders(s, None, day + timedelta(hours=13), rule_set, 0.15, quiet) == 0
        day += timedelta(days=1)
    with engine_ctx.sessions() as s:
        def texts(code: str) -> list[str]:
            staff = s.scalar(select(Staff).where(Staff.code == code))
            return [n.text for n in s.scalars(select(Notification).where(Notification.staff_id == staff.id))]

        xu = texts("liaison_xu_zd")  # 湖田卫生院: met its quota in February
        assert not any("【配额提醒】" in t for t in xu)
        assert sum("【配额小结】" in t for t in xu) == 1 and "✅" in next(t for t in xu if "【配额小结】" in t)
        admin = texts("admin_zd")
        tables = [t for t in admin if "【配额汇总】" in t]
        assert len(tables) == 1 and "沣水中心卫生院" in tables[0] and "湖田卫生院" in tables[0]
        # 沣水 has no liaison officer and never sends anyone: it is found behind from late February
        # (15% of the year gone) and decided once a month, February to December
        from storage.models import Institution, ReminderLog

        fengshui = s.scalar(select(Institution).where(Institution.name == "沣水中心卫生院"))
        months = [k.rsplit(":", 1)[1] for (k,) in s.execute(select(ReminderLog.key))
                  if k.startswith(f"quota:pace:jinxiu:{fengshui.id}:")]
        assert months == [f"2026-{m:02d}" for m in range(2, 13)]
