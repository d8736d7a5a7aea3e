"""Meetings as the assistant does them: create/edit/cancel with notices to the invitees, the
reminders due at a moment, RSVP buttons (参加 / 请假), the attendance list and compliance warnings.

Functions take a session (the caller's transaction), a ``ChannelRouter`` and ``now``; every
notification is an ``Outgoing`` through ``handlers.notifications.notify`` (web inbox + the
persistent outbox), and every scheduled one is first written to the reminder ledger under its
unique key, in the same transaction: it is sent once, however often the scheduler runs or restarts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session

from handlers import meetings as rules
from handlers.messages import Choice, FileReply, Outgoing, Reply
from handlers.notifications import ChannelRouter, notify
from storage import meetings as store
from storage import repositories as repo
from storage.models import Consortium, Institution, Meeting, Staff

log = logging.getLogger(__name__)

ACTION_PREFIX = "m:"
ANSWER_LABELS = {"attend": "参加", "leave": "请假"}


class MeetingError(ValueError):
    """A meeting request that cannot be carried out; the message is for the user, ``field`` names
    the input it is about (``at``, ``title``, ``kind``, ``repeat``, ``institutions``) when one is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# ------------------------------------------------------------------------------------------------
# buttons


def encode_action(answer: str, meeting_id: int, occurrence: datetime) -> str:
    return f"{ACTION_PREFIX}{answer}:{meeting_id}:{int(occurrence.timestamp())}"


def decode_action(value: str | None) -> tuple[str, int, datetime] | None:
    if not value or not value.startswith(ACTION_PREFIX):
        return None
    parts = value[len(ACTION_PREFIX):].split(":")
    if len(parts) != 3 or parts[0] not in ANSWER_LABELS or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), datetime.fromtimestamp(int(parts[2]), tz=timezone.utc)


def rsvp_choices(meeting_id: int, occurrence: datetime) -> tuple[Choice, ...]:
    return tuple(Choice(label, encode_action(answer, meeting_id, occurrence)) for answer, label in ANSWER_LABELS.items())


# ------------------------------------------------------------------------------------------------
# invitees


@dataclass(frozen=True)
class Invitee:
    institution: Institution
    staff: Staff | None  # None: the institution has no liaison officer


def invitees(session: Session, meeting: Meeting) -> list[Invitee]:
    ids = [inv.institution_id for inv in meeting.invitations]
    by_inst = store.liaisons_of(session, ids)
    out = []
    for inv in sorted(meeting.invitations, key=lambda i: i.institution_id):
        people = by_inst.get(inv.institution_id) or []
        out.extend(Invitee(inv.institution, s) for s in people) if people else out.append(Invitee(inv.institution, None))
    return out


def _recipients(session: Session, meeting: Meeting) -> list[Staff]:
    return [i.staff for i in invitees(session, meeting) if i.staff is not None]


# ------------------------------------------------------------------------------------------------
# create, edit, cancel


def parse_local_time(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM[:SS]`` in Beijing time → aware UTC."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=rules.CHINA_TZ).astimezone(timezone.utc)
        except ValueError:
            continue
    raise MeetingError(f"时间“{text}”无法识别，请写成 YYYY-MM-DD HH:MM（北京时间）。", field="at")


def add_meeting(session: Session, router: ChannelRouter | None, *, consortium_code: str, kind: str, title: str,
                at: str | datetime, institutions: list[str] | None = None, place: str | None = None,
                link: str | None = None, agenda: str | None = None, repeat: str | None = None,
                actor: str, organiser: Staff | None = None, now: datetime) -> Meeting:
    """Create a meeting (default invitees: every institution of the consortium) and send each
    invited liaison officer the invitation with its .ics and the RSVP buttons."""
    from sqlalchemy import select

    consortium = session.scalar(select(Consortium).where(Consortium.code == consortium_code))
    if consortium is None:
        raise MeetingError(f"没有代码为“{consortium_code}”的医联体。")
    if kind not in ("联席会议", "理事会", "工作例会", "其他"):
        raise MeetingError(f"会议类型“{kind}”无效，应为 联席会议 / 理事会 / 工作例会 / 其他。", field="kind")
    if not title.strip():
        raise MeetingError("会议标题不能为空。", field="title")
    if repeat is not None and repeat not in rules.REPEAT_STEP:
        raise MeetingError(f"重复规则“{repeat}”无效，应为 monthly / quarterly / yearly。", field="repeat")
    starts = parse_local_time(at) if isinstance(at, str) else at
    if starts <= now:
        raise MeetingError("会议时间已过，请填写将来的时间。", field="at")
    members = {i.name: i for i in consortium.institutions}
    if institutions:
        missing = [n for n in institutions if n not in members]
        if missing:
            raise MeetingError(f"本医联体没有这些机构：{'、'.join(missing)}。", field="institutions")
        chosen = [members[n].id for n in institutions]
    else:
        chosen = [i.id for i in consortium.institutions]
    meeting = store.create_meeting(session, consortium=consortium, kind=kind, title=title.strip(), starts_at=starts,
                                   institution_ids=chosen, created_by=actor,
                                   organiser_id=organiser.id if organiser else None, place=place, link=link,
                                   agenda=agenda, repeat=repeat, now=now)
    repo.record(session, actor, "meeting.create", target=f"meeting:{meeting.id}",
                details={"kind": kind, "title": meeting.title, "starts_at": starts.isoformat(), "repeat": repeat,
                         "institutions": len(chosen)})
    _announce(session, router, meeting, "invite", now)
    return meeting


def edit_meeting(session: Session, router: ChannelRouter | None, meeting: Meeting, *, actor: str, now: datetime,
                 at: str | None = None, place: str | None = None, link: str | None = None,
                 agenda: str | None = None, title: str | None = None) -> Meeting:
    if meeting.status == "cancelled":
        raise MeetingError("这个会议已取消，不能修改。")
    changes = {}
    if at:
        changes["starts_at"] = parse_local_time(at)
    for name, value in (("place", place), ("link", link), ("agenda", agenda), ("title", title)):
        if value is not None:
            changes[name] = value
    if not changes:
        raise MeetingError("没有要修改的内容。")
    for name, value in changes.items():
        setattr(meeting, name, value)
    meeting.sequence += 1
    meeting.updated_at = now
    repo.record(session, actor, "meeting.edit", target=f"meeting:{meeting.id}",
                details={k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in changes.items()})
    session.flush()
    _announce(session, router, meeting, "update", now)
    return meeting


def cancel_meeting(session: Session, router: ChannelRouter | None, meeting: Meeting, *, actor: str,
                   now: datetime) -> Meeting:
    if meeting.status == "cancelled":
        raise MeetingError("这个会议已经取消过了。")
    occ = rules.next_occurrence(rules.MeetingInfo.of(meeting), now)
    meeting.status = "cancelled"
    meeting.sequence += 1
    meeting.updated_at = now
    repo.record(session, actor, "meeting.cancel", target=f"meeting:{meeting.id}")
    session.flush()
    _announce(session, router, meeting, "cancel", now, occurrence=occ)
    return meeting


def _announce(session: Session, router: ChannelRouter | None, meeting: Meeting, what: str, now: datetime,
              occurrence: datetime | None = None) -> None:
    info = rules.MeetingInfo.of(meeting)
    occ = occurrence or rules.next_occurrence(info, now)
    if occ is None:
        return
    head = {"invite": "【会议通知】", "update": "【会议变更】", "cancel": "【会议取消】"}[what]
    lines = [f"{head}{info.kind}：{info.title}", f"时间：{rules.format_when(occ)}"
             + (f"（{rules.REPEAT_LABELS[info.repeat]}）" if info.repeat else ""), f"地点：{rules.where(info)}"]
    if info.agenda and what != "cancel":
        lines.append(f"议程：{info.agenda}")
    if what == "cancel":
        lines.append("本次会议已取消，日历文件会从您的日历中移除该会议。")
    else:
        lines.append("请点击“参加”或“请假”回复。")
    method = "CANCEL" if what == "cancel" else "REQUEST"
    file = FileReply(rules.ics_name(info, occ), rules.ics(info, occ, method=method), "text/calendar")
    choices = () if what == "cancel" else rsvp_choices(meeting.id, occ)
    items = [Outgoing(s.id, Reply("\n".join(lines), choices=choices, file=file), kind=f"meeting_{what}",
                      dedupe_key=f"meeting:{meeting.id}:{what}:{meeting.sequence}:{s.id}")
             for s in _recipients(session, meeting)]
    notify(session, router, items, now=now)


# ------------------------------------------------------------------------------------------------
# reminders and compliance (called by the scheduler)


def send_due_reminders(session: Session, router: ChannelRouter | None, now: datetime, offsets: list[timedelta],
                       quiet: rules.QuietHours | None) -> int:
    """Queue every reminder due at ``now``; returns how many reminders (not messages) went out."""
    rows = {m.id: m for m in store.list_meetings(session, include_cancelled=False)}
    infos = [rules.MeetingInfo.of(m) for m in rows.values()]
    handled = store.handled_keys(session, "meeting:", now - max(offsets, default=timedelta()) - timedelta(days=1))
    sent = 0
    for due in rules.due_reminders(infos, offsets, now, handled, quiet):
        for older in due.superseded:
            store.log_once(session, rules.reminder_key(due.meeting.id, due.occurrence, older), "meeting_reminder",
                           due.occurrence - older, "dropped", now=now)
        if not store.log_once(session, due.key, "meeting_reminder", due.due_at, "late" if due.late else "sent",
                              now=now):
            continue  # another scheduler handled it a moment ago
        meeting = rows[due.meeting.id]
        file = FileReply(rules.ics_name(due.meeting, due.occurrence), rules.ics(due.meeting, due.occurrence),
                         "text/calendar")
        answered = store.responses(session, meeting.id, due.occurrence)
        items = []
        for staff in _recipients(session, meeting):
            text = rules.reminder_text(due, now)
            if staff.id in answered:
                text += f"\n您已回复：{ANSWER_LABELS[answered[staff.id]]}（可重新选择）。"
            items.append(Outgoing(staff.id, Reply(text, choices=rsvp_choices(meeting.id, due.occurrence), file=file),
                                  kind="meeting_reminder", dedupe_key=f"{due.key}:{staff.id}"))
        notify(session, router, items, now=now)
        store.set_recipients(session, due.key, len(items))
        log.info("meeting reminder", extra={"key": due.key, "late": due.late, "recipients": len(items)})
        sent += 1
    return sent


def send_compliance_warnings(session: Session, router: ChannelRouter | None, now: datetime,
                             meeting_rules: list[rules.MeetingRule], quiet: rules.QuietHours | None) -> int:
    if quiet is not None and quiet.contains(now):
        return 0
    from sqlalchemy import select

    infos = [rules.MeetingInfo.of(m) for m in store.list_meetings(session, include_cancelled=False)]
    sent = 0
    for gap in rules.compliance_gaps(meeting_rules, infos, now):
        consortium = session.scalar(select(Consortium).where(Consortium.code == gap.rule.consortium))
        if consortium is None or not store.log_once(session, gap.key, "compliance", now, "sent", now=now):
            continue
        admins = store.admins_of(session, consortium.id)
        notify(session, router, [Outgoing(a.id, Reply(gap.text()), kind="compliance", dedupe_key=f"{gap.key}:{a.id}")
                                 for a in admins], now=now)
        store.set_recipients(session, gap.key, len(admins))
        sent += 1
    return sent


# ------------------------------------------------------------------------------------------------
# answers and lists


def record_answer(session: Session, staff: Staff, answer: str, meeting_id: int, occurrence: datetime, *,
                  channel: str, now: datetime) -> Reply:
    meeting = session.get(Meeting, meeting_id)
    if meeting is None:
        return Reply("这个会议已不存在。")
    info = rules.MeetingInfo.of(meeting)
    if meeting.status == "cancelled":
        return Reply("这个会议已取消，无需回复。", settle="会议已取消")
    if occurrence not in rules.occurrences(info, occurrence, occurrence + timedelta(seconds=1)):
        return Reply("这个按钮对应的会议时间已变更，请以最新通知为准。")
    if occurrence <= now:
        return Reply("会议已经开始或结束，无法再回复。", settle="会议已开始")
    if staff.institution_id not in {i.institution_id for i in meeting.invitations}:
        return Reply("抱歉，您所在的机构不在这个会议的邀请名单中。")
    if not staff.has_role("liaison"):  # the invitees are the institutions' liaison officers
        return Reply("会议回复由本机构的联络员办理；如需参会，请联系您院的联络员。")
    store.set_response(session, meeting.id, occurrence, staff.id, answer, channel, now=now)
    repo.record(session, staff.code, f"meeting.{answer}", target=f"meeting:{meeting.id}",
                details={"occurrence": occurrence.isoformat()})
    label = ANSWER_LABELS[answer]
    return Reply(f"已记录：{label} {info.kind}“{info.title}”（{rules.format_when(occurrence)}）。",
                 choices=rsvp_choices(meeting.id, occurrence), settle=f"已回复：{label}")


@dataclass(frozen=True)
class AttendanceRow:
    staff_code: str | None
    name: str | None
    institution: str
    answer: str  # attend | leave | none


def attendance(session: Session, meeting: Meeting, now: datetime) -> tuple[datetime | None, list[AttendanceRow]]:
    """Each invitee's answer for the next occurrence (or the last one, once all have passed)."""
    info = rules.MeetingInfo.of(meeting)
    occ = rules.next_occurrence(info, now) if meeting.status == "scheduled" else None
    if occ is None:
        past = rules.occurrences(replace(info, cancelled=False), info.starts_at, now + timedelta(seconds=1))
        occ = past[-1] if past else info.starts_at
    answered = store.responses(session, meeting.id, occ)
    rows = [AttendanceRow(i.staff.code if i.staff else None, i.staff.name if i.staff else None, i.institution.name,
                          answered.get(i.staff.id, "none") if i.staff else "none")
            for i in invitees(session, meeting)]
    return occ, rows


def attendance_reply(session: Session, admin: Staff, which: str, now: datetime) -> Reply:
    """``出席情况 [ID或标题]``: each invitee's answer; without an argument, the consortium's next
    meeting. Admins see only their own consortium's meetings."""
    consortium_id = admin.institution.consortium_id
    meeting = store.find_meeting(session, which) if which else None
    if meeting is None and not which:
        upcoming_ones = [(rules.next_occurrence(rules.MeetingInfo.of(m), now), m)
                         for m in store.list_meetings(session, consortium_id=consortium_id, include_cancelled=False)]
        upcoming_ones = sorted(((o, m) for o, m in upcoming_ones if o is not None), key=lambda p: p[0])
        meeting = upcoming_ones[0][1] if upcoming_ones else None
    if meeting is None or meeting.consortium_id != consortium_id:
        return Reply(f"没有找到会议“{which}”。发送“会议”查看近期会议及其编号。" if which else "本医联体近期没有会议。")
    occ, rows = attendance(session, meeting, now)
    labels = {"attend": "参加", "leave": "请假", "none": "未回复"}
    counts = {k: sum(1 for r in rows if r.answer == k) for k in labels}
    lines = [f"{meeting.kind}：{meeting.title}（{rules.format_when(occ) if occ else ''}）出席情况："
             f"参加 {counts['attend']}，请假 {counts['leave']}，未回复 {counts['none']}"]
    lines += [f"• {r.institution} {r.name or '（无联络员）'}：{labels[r.answer]}" for r in rows]
    return Reply("\n".join(lines))


def upcoming(session: Session, staff: Staff, now: datetime, *, limit: int = 5) -> Reply:
    """The next meetings the user's institution is invited to (admins: their consortium's)."""
    mine = []
    for m in store.list_meetings(session, consortium_id=staff.institution.consortium_id, include_cancelled=False):
        if not staff.has_role("admin") and staff.institution_id not in {i.institution_id for i in m.invitations}:
            continue
        occ = rules.next_occurrence(rules.MeetingInfo.of(m), now)
        if occ is not None:
            mine.append((occ, m))
    mine.sort(key=lambda pair: pair[0])
    if not mine:
        return Reply("近期没有安排邀请您所在机构参加的会议。")
    lines = ["近期会议："]
    choices: list[Choice] = []
    for occ, m in mine[:limit]:
        answer = store.responses(session, m.id, occ).get(staff.id)
        state = f"（您已回复：{ANSWER_LABELS[answer]}）" if answer else ""
        lines.append(f"• [{m.id}] {m.kind}：{m.title} — {rules.format_when(occ)}，{rules.where(rules.MeetingInfo.of(m))}{state}")
    if len(mine) == 1 and staff.has_role("liaison"):  # liaison officers answer for their institution
        choices = list(rsvp_choices(mine[0][1].id, mine[0][0]))
    return Reply("\n".join(lines), choices=tuple(choices))


__all__ = ["AttendanceRow", "MeetingError", "add_meeting", "attendance", "cancel_meeting", "decode_action",
           "edit_meeting", "encode_action", "invitees", "record_answer", "send_compliance_warnings",
           "send_due_reminders", "upcoming"]
