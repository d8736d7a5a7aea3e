"""``安排会议`` / ``/newmeeting``: an admin schedules a meeting of their consortium step by step —
type → title → time → place or link → invitees → repeat → confirm — with the same rules and
notices as ``yilian meetings add`` (``handlers.meeting_service.add_meeting``)."""

from __future__ import annotations

import re
from typing import Any

from handlers import meeting_service
from handlers import meetings as rules
from handlers.dialogs.base import Abort, ChoiceStep, Dialog, Option, Reask, TextStep, Turn
from handlers.messages import Reply
from storage import access

_NONE = ("无", "没有", "-", "暂无", "none")


def _kinds(_t: Turn, _d: dict[str, Any]) -> list[Option]:
    return [Option(k, k) for k in ("联席会议", "理事会", "工作例会", "其他")]


def _title(_t: Turn, _d: dict[str, Any], answer: str) -> str:
    if not answer.strip() or len(answer.strip()) > 100:
        raise Reask("请输入会议标题（100 字以内）。")
    return answer.strip()


def _time(turn: Turn, _d: dict[str, Any], answer: str) -> str:
    text = re.sub(r"\s+", " ", answer.strip().replace("/", "-").replace("：", ":"))
    try:
        when = meeting_service.parse_local_time(text)
    except meeting_service.MeetingError as exc:
        raise Reask(str(exc)) from None
    if when <= turn.now:
        raise Reask("这个时间已经过去了，请填写将来的时间。")
    return text


def _place(_t: Turn, _d: dict[str, Any], answer: str) -> str:
    text = answer.strip()
    if len(text) > 200:
        raise Reask("地点或链接请在 200 字以内。")
    return "" if text.lower() in _NONE else text


def _invitees(turn: Turn, _d: dict[str, Any], answer: str) -> list[str]:
    staff = turn.identity.staff
    assert staff is not None
    if answer.strip() in ("全部", "所有", "全部机构", "all", ""):
        return []
    names = [n for n in re.split(r"[,，、;；\s]+", answer.strip()) if n]
    known = {i.name for i in staff.institution.consortium.institutions}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Reask(f"本医联体没有这些机构：{'、'.join(unknown)}。请输入完整名称，用顿号分隔；或输入“全部”。")
    return names


def _repeats(_t: Turn, _d: dict[str, Any]) -> list[Option]:
    return [Option("none", "不重复"), Option("monthly", "每月"), Option("quarterly", "每季度"), Option("yearly", "每年")]


def _summary(_t: Turn, d: dict[str, Any]) -> str:
    invited = "、".join(d["invitees"]) if d["invitees"] else "本医联体全部机构"
    return (f"请确认：{d['kind']}“{d['title']}”，{d['time']}（北京时间），{d['place'] or '地点待通知'}，"
            f"邀请 {invited}，{d['repeat_label']}。保存后立即通知受邀机构的联络员。")


class MeetingDialog(Dialog):
    name = "meeting_new"
    title = ("会议安排", "meeting")
    restart_hint = ("（发送“安排会议”重新开始）", " (send /newmeeting)")

    def __init__(self) -> None:
        super().__init__()
        self.steps = [
            ChoiceStep("kind", lambda t, d: "会议类型？", _kinds, what=("类型", "type")),
            TextStep("title", lambda t, d: "会议标题？", _title),
            TextStep("time", lambda t, d: "会议时间？（北京时间，如 2027-03-20 09:00）", _time),
            TextStep("place", lambda t, d: "地点或视频会议链接？（没有请回复“无”）", _place),
            TextStep("invitees", lambda t, d: "邀请哪些机构？回复“全部”，或输入机构名称（用顿号分隔）。", _invitees),
            ChoiceStep("repeat", lambda t, d: "是否定期召开？", _repeats, what=("选项", "option")),
            ChoiceStep("confirm", _summary, lambda t, d: [Option("save", "保存并通知", ("确认", "是")),
                                                          Option("discard", "不保存", ("否",))]),
        ]

    def allowed(self, turn: Turn) -> str | None:
        if not access.is_admin(turn.identity.staff):
            return "抱歉，只有管理员可以安排会议。"
        return None

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:
        if data["confirm"] != "save":
            return [Reply("未保存。需要时发送“安排会议”重新开始。")]
        staff = turn.identity.staff
        assert staff is not None
        place, link = (None, data["place"]) if data["place"].startswith(("http://", "https://")) else \
            (data["place"] or None, None)
        try:
            m = meeting_service.add_meeting(
                turn.session, turn.router, consortium_code=staff.institution.consortium.code, kind=data["kind"],
                title=data["title"], at=data["time"], institutions=data["invitees"] or None, place=place, link=link,
                repeat=None if data["repeat"] == "none" else data["repeat"], actor=staff.code, organiser=staff,
                now=turn.now)
        except meeting_service.MeetingError as exc:
            raise Abort(str(exc)) from None
        return [Reply(f"已安排会议 [{m.id}]：{m.kind}“{m.title}”，{rules.format_when(m.starts_at)}，"
                      f"已通知 {len(m.invitations)} 家机构的联络员。发送“出席情况 {m.id}”查看回复。")]


__all__ = ["MeetingDialog"]
