"""Meeting rules as pure functions of data and a clock: recurrence, which reminder is due,
quiet hours, the .ics of an occurrence, and policy compliance (a required meeting not scheduled).

Nothing here touches the database or a channel: ``handlers.meeting_service`` feeds it rows and
``bot.scheduler`` calls it with the scheduler's clock, so that a test can run a simulated quarter
in seconds.

Reminder policy (what "sent once, in time, never as a stale burst" means):

* an occurrence has one reminder per offset (default 7 days, 1 day, 2 hours before);
* at a tick, of the offsets whose moment has come, only the *latest* is sent: the earlier ones are
  superseded (recorded as dropped). After downtime the one still relevant goes out late, with a
  note; nothing is sent once the meeting has started;
* in quiet hours (default 22:00–07:30 Beijing time) a reminder waits for the morning unless the
  meeting would have begun by then (then it is urgent and goes at once).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from dateutil.relativedelta import relativedelta

from storage.types import CHINA_TZ


REPEAT_STEP = {"monthly": relativedelta(months=1), "quarterly": relativedelta(months=3),
               "yearly": relativedelta(years=1)}
REPEAT_LABELS = {"monthly": "每月", "quarterly": "每季度", "yearly": "每年"}
#: A reminder sent this long after its moment carries a note that it is late.
LATE_AFTER = timedelta(minutes=10)
#: Occurrences of a series are computed at most this far ahead.
HORIZON = timedelta(days=400)


# ------------------------------------------------------------------------------------------------
# settings values


_OFFSET_RE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$", re.IGNORECASE)


def parse_offsets(text: str) -> list[timedelta]:
    """``"7d,1d,2h"`` → offsets, largest first. Raises ValueError on a malformed item."""
    out = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        m = _OFFSET_RE.match(part)
        if not m:
            raise ValueError(f"bad reminder offset {part.strip()!r} (use e.g. 7d, 1d, 2h, 30m)")
        n, unit = int(m.group(1)), m.group(2).lower()
        out.append({"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit])
    return sorted(set(out), reverse=True)


def offset_label(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str | None) -> QuietHours | None:
        """``"22:00-07:30"`` → quiet hours; empty → None (disabled)."""
        if not text or not text.strip():
            return None
        try:
            a, b = (datetime.strptime(p.strip(), "%H:%M").time() for p in text.split("-"))
        except ValueError:
            raise ValueError(f"bad quiet hours {text!r} (use HH:MM-HH:MM)") from None
        return cls(a, b)

    def contains(self, moment: datetime) -> bool:
        t = moment.astimezone(CHINA_TZ).time()
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def ends_after(self, moment: datetime) -> datetime:
        """When the quiet period containing ``moment`` ends (``moment`` itself if not quiet)."""
        if not self.contains(moment):
            return moment
        local = moment.astimezone(CHINA_TZ)
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end.astimezone(timezone.utc)


# ------------------------------------------------------------------------------------------------
# recurrence


@dataclass(frozen=True)
class MeetingInfo:
    """What the rules need of a meeting row (``storage.models.Meeting``)."""

    id: int
    kind: str
    title: str
    starts_at: datetime
    duration_minutes: int = 120
    place: str | None = None
    link: str | None = None
    agenda: str | None = None
    repeat: str | None = None
    repeat_until: datetime | None = None
    cancelled: bool = False
    uid: str = ""
    sequence: int = 0
    consortium: str = ""

    @classmethod
    def of(cls, row: Any) -> MeetingInfo:
        return cls(id=row.id, kind=row.kind, title=row.title, starts_at=row.starts_at,
                   duration_minutes=row.duration_minutes, place=row.place, link=row.link, agenda=row.agenda,
                   repeat=row.repeat, repeat_until=row.repeat_until, cancelled=row.status == "cancelled",
                   uid=row.uid, sequence=row.sequence,
                   consortium=row.consortium.code if getattr(row, "consortium", None) is not None else "")


def occurrences(meeting: MeetingInfo, start: datetime, end: datetime) -> list[datetime]:
    """Starts of ``meeting``'s occurrences in ``[start, end)`` (UTC), in Beijing local time steps
    (so a series at 09:00 stays at 09:00 and the 31st falls back to the month's last day)."""
    if meeting.cancelled:
        return []
    if not meeting.repeat:
        return [meeting.starts_at] if start <= meeting.starts_at < end else []
    step = REPEAT_STEP[meeting.repeat]
    first = meeting.starts_at.astimezone(CHINA_TZ)
    out: list[datetime] = []
    n = 0
    while True:
        moment = (first + step * n).astimezone(timezone.utc)
        if moment >= end or (meeting.repeat_until is not None and moment > meeting.repeat_until):
            break
        if moment >= start:
            out.append(moment)
        n += 1
        if n > 2000:  # a century of monthly meetings: a guard, never reached by real data
            break
    return out


def next_occurrence(meeting: MeetingInfo, now: datetime) -> datetime | None:
    """The first occurrence at or after ``now``: a meeting set further ahead than ``HORIZON``
    has one too (its invitation goes out when it is set, not when it comes near)."""
    if meeting.cancelled:
        return None
    if meeting.starts_at >= now:
        return meeting.starts_at
    found = occurrences(meeting, now, now + HORIZON)
    return found[0] if found else None


# ------------------------------------------------------------------------------------------------
# reminders


@dataclass(frozen=True)
class DueReminder:
    meeting: MeetingInfo
    occurrence: datetime
    offset: timedelta
    due_at: datetime
    #: Sent after downtime (more than ``LATE_AFTER`` after its moment): the text says so.
    late: bool
    #: Earlier offsets of the same occurrence that were never sent: recorded as dropped.
    superseded: tuple[timedelta, ...] = ()

    @property
    def key(self) -> str:
        return reminder_key(self.meeting.id, self.occurrence, self.offset)


def reminder_key(meeting_id: int, occurrence: datetime, offset: timedelta) -> str:
    stamp = occurrence.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"meeting:{meeting_id}:{stamp}:{offset_label(offset)}"


def due_reminders(meetings: Iterable[MeetingInfo], offsets: Sequence[timedelta], now: datetime,
                  handled: set[str], quiet: QuietHours | None = None) -> list[DueReminder]:
    """The reminders to send at ``now``: per occurrence not yet begun, the latest offset whose
    moment has come, unless handled before (``handled``: keys in the ledger) or held back by
    quiet hours."""
    if not offsets:
        return []
    biggest = max(offsets)
    out: list[DueReminder] = []
    for meeting in meetings:
        for occ in occurrences(meeting, now, now + biggest + timedelta(minutes=1)):
            passed = [o for o in offsets if occ - o <= now]
            if not passed:
                continue
            latest = min(passed)
            key = reminder_key(meeting.id, occ, latest)
            if key in handled:
                continue
            due = occ - latest
            if quiet is not None and quiet.contains(now) and quiet.ends_after(now) < occ - timedelta(minutes=30):
                continue  # not urgent: wait for the morning
            # "late" means the moment was missed (downtime), not held back by quiet hours
            held = quiet is not None and quiet.contains(due) and now - quiet.ends_after(due) <= LATE_AFTER
            late = now - due > LATE_AFTER and not held
            older = tuple(o for o in passed if o != latest
                          and reminder_key(meeting.id, occ, o) not in handled)
            out.append(DueReminder(meeting, occ, latest, due, late, older))
    return out


def format_when(moment: datetime, *, english: bool = False) -> str:
    local = moment.astimezone(CHINA_TZ)
    if english:
        return local.strftime("%Y-%m-%d %H:%M") + " (Beijing time)"
    weekday = "一二三四五六日"[local.weekday()]
    return local.strftime("%Y-%m-%d") + f"（周{weekday}）" + local.strftime("%H:%M")


def where(meeting: MeetingInfo) -> str:
    parts = [p for p in (meeting.place, meeting.link) if p]
    return "；".join(parts) if parts else "地点待通知"


def lead_time(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400} 天后"
    if seconds >= 3600:
        return f"{seconds / 3600:g} 小时后"
    return f"{max(1, seconds // 60)} 分钟后"


def reminder_text(r: DueReminder, now: datetime) -> str:
    m = r.meeting
    lines = [f"【会议提醒】{m.kind}：{m.title}",
             f"时间：{format_when(r.occurrence)}（{_until(r.occurrence - now)}）",
             f"地点：{where(m)}"]
    if m.agenda:
        lines.append(f"议程：{m.agenda}")
    if r.late:
        lines.append(f"（系统恢复后补发：本提醒原定于 {format_when(r.due_at)} 发送。）")
    lines.append("请点击“参加”或“请假”回复；附件为日历文件（.ics），可导入日历。")
    return "\n".join(lines)


def _until(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes >= 1440:
        days, rest = divmod(minutes, 1440)
        return f"{days} 天后" + (f"{rest // 60} 小时" if rest >= 60 and days < 3 else "")
    if minutes >= 60:
        return f"{minutes // 60} 小时{minutes % 60} 分钟后" if minutes % 60 else f"{minutes // 60} 小时后"
    return f"{minutes} 分钟后"


# ------------------------------------------------------------------------------------------------
# calendar file


def ics(meeting: MeetingInfo, occurrence: datetime, *, method: str = "REQUEST",
        alarms: Sequence[timedelta] = (timedelta(hours=2),), organiser: str | None = None) -> bytes:
    """An RFC 5545 calendar with one event: the occurrence. The UID is stable per occurrence of a
    meeting (``<meeting uid>-<date>``) and SEQUENCE is the meeting's revision, so that an edit
    (METHOD:REQUEST) or a cancellation (METHOD:CANCEL, STATUS:CANCELLED) replaces the event in the
    invitee's calendar instead of adding a second one."""
    from icalendar import Alarm, Calendar, Event

    cal = Calendar()
    cal.add("prodid", "-//YiLian Assistant//医联助手//ZH")
    cal.add("version", "2.0")
    cal.add("method", method)
    ev = Event()
    stamp = occurrence.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    ev.add("uid", f"{meeting.uid}-{stamp}@yilian" if meeting.repeat else f"{meeting.uid}@yilian")
    ev.add("sequence", meeting.sequence)
    ev.add("dtstamp", datetime.now(timezone.utc).replace(microsecond=0))
    ev.add("dtstart", occurrence.astimezone(timezone.utc))
    ev.add("dtend", (occurrence + timedelta(minutes=meeting.duration_minutes)).astimezone(timezone.utc))
    ev.add("summary", f"{meeting.kind}：{meeting.title}")
    if meeting.place or meeting.link:
        ev.add("location", where(meeting))
    if meeting.link:
        ev.add("url", meeting.link)
    if meeting.agenda:
        ev.add("description", meeting.agenda)
    if organiser:
        ev.add("organizer", organiser)
    cancelled = method == "CANCEL"
    ev.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    if not cancelled:
        for before in alarms:
            alarm = Alarm()
            alarm.add("action", "DISPLAY")
            alarm.add("description", f"{meeting.kind}：{meeting.title}")
            alarm.add("trigger", -before)
            ev.add_component(alarm)
    cal.add_component(ev)
    return cal.to_ical()


def ics_name(meeting: MeetingInfo, occurrence: datetime) -> str:
    return f"meeting-{meeting.id}-{occurrence.astimezone(CHINA_TZ).strftime('%Y%m%d')}.ics"


# ------------------------------------------------------------------------------------------------
# policy compliance


@dataclass(frozen=True)
class MeetingRule:
    """A meeting a consortium's policy requires: ``min_count`` of ``kind`` per ``period``."""

    id: str
    consortium: str
    kind: str
    period: str  # month | quarter | year
    min_count: int
    warn_days_before_end: int
    source: str


def load_meeting_rules(path: Path | None = None) -> list[MeetingRule]:
    data = yaml.safe_load((path or Path(__file__).with_name("meeting_rules_default.yaml")).read_text("utf-8"))
    rules = []
    for item in data.get("meetings", []) or []:
        rules.append(MeetingRule(id=str(item["id"]), consortium=str(item["consortium"]), kind=str(item["kind"]),
                                 period=str(item.get("period", "year")), min_count=int(item.get("min_count", 1)),
                                 warn_days_before_end=int(item.get("warn_days_before_end", 30)),
                                 source=str(item.get("source", ""))))
    return rules


def period_bounds(period: str, moment: datetime) -> tuple[datetime, datetime, str]:
    """``[start, end)`` of the month / quarter / year containing ``moment`` (Beijing time), and
    a label: ``2026-05``, ``2026-Q2``, ``2026``."""
    local = moment.astimezone(CHINA_TZ)
    if period == "month":
        start = date(local.year, local.month, 1)
        end = start + relativedelta(months=1)
        label = f"{local.year}-{local.month:02d}"
    elif period == "quarter":
        q = (local.month - 1) // 3
        start = date(local.year, 3 * q + 1, 1)
        end = start + relativedelta(months=3)
        label = f"{local.year}-Q{q + 1}"
    elif period == "year":
        start, end, label = date(local.year, 1, 1), date(local.year + 1, 1, 1), str(local.year)
    else:
        raise ValueError(f"unknown period {period!r}")

    def at(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=CHINA_TZ).astimezone(timezone.utc)

    return at(start), at(end), label


PERIOD_LABELS = {"month": "本月", "quarter": "本季度", "year": "本年度"}


@dataclass(frozen=True)
class ComplianceGap:
    rule: MeetingRule
    period_label: str
    period_end: datetime
    scheduled: int

    @property
    def key(self) -> str:
        return f"compliance:{self.rule.id}:{self.period_label}"

    def text(self) -> str:
        days = max(0, (self.period_end - timedelta(seconds=1)).astimezone(CHINA_TZ).date().toordinal())
        last = date.fromordinal(days)
        return (f"【制度提醒】{PERIOD_LABELS[self.rule.period]}（{self.period_label}）尚未安排足够的{self.rule.kind}："
                f"已安排 {self.scheduled} 次，制度要求至少 {self.rule.min_count} 次，期限 {last.isoformat()}。\n"
                f"依据：{self.rule.source}\n可发送 /meetings 查看已安排的会议，或用 `yilian meetings add` 安排。")


def compliance_gaps(rules: Iterable[MeetingRule], meetings: Iterable[MeetingInfo], now: datetime) -> list[ComplianceGap]:
    """Rules whose period ends within their warning window with fewer meetings scheduled in it
    than required (an occurrence anywhere in the period counts, past or planned)."""
    meetings = list(meetings)
    gaps = []
    for rule in rules:
        start, end, label = period_bounds(rule.period, now)
        if now < end - timedelta(days=rule.warn_days_before_end):
            continue
        count = sum(len(occurrences(m, start, end)) for m in meetings
                    if m.consortium == rule.consortium and m.kind == rule.kind)
        if count < rule.min_count:
            gaps.append(ComplianceGap(rule, label, end, count))
    return gaps


__all__ = [
    "CHINA_TZ", "ComplianceGap", "DueReminder", "MeetingInfo", "MeetingRule", "QuietHours", "compliance_gaps",
    "due_reminders", "format_when", "ics", "ics_name", "load_meeting_rules", "next_occurrence", "occurrences",
    "offset_label", "parse_offsets", "period_bounds", "reminder_key", "reminder_text",
]
