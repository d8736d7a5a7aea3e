"""``登记进修`` / ``登记下派`` / ``登记坐诊`` / ``/record``: a liaison officer (or admin) records one
training placement of their own institution, step by step: kind → person → the other
institution → start → end → confirm. The record is the same as a row of ``yilian quotas import``
(``handlers.quota_service``), from the user's institution; saving it is audited."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from handlers.dialogs.base import ChoiceStep, Dialog, Option, Reask, TextStep, Turn
from handlers.messages import Reply
from handlers.quotas import KINDS
from storage import access
from storage import quotas as store
from storage import repositories as repo

_DATE_RE = re.compile(r"^\s*(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?\s*$")
_DIRECTION = {"进修": "到哪家上级机构进修？", "下派": "下派到哪家机构？", "坐诊": "到哪家机构坐诊或指导？"}


def parse_day(text: str) -> date | None:
    m = _DATE_RE.match(text or "")
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def _kinds(_turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [Option(k, k) for k in KINDS]


def _others(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    staff = turn.identity.staff
    assert staff is not None
    return [Option(str(i.id), i.name) for i in store.institutions(turn.session, staff.institution.consortium.code)
            if i.id != staff.institution_id]


def _person(turn: Turn, _data: dict[str, Any], answer: str) -> str:
    name = answer.strip()
    if not name or len(name) > 50 or any(ch.isdigit() for ch in name):
        raise Reask("请输入人员姓名（不含数字，50 字以内）。")
    return name


def _start(turn: Turn, _data: dict[str, Any], answer: str) -> str:
    day = parse_day(answer)
    if day is None:
        raise Reask("日期格式不对，请写成 2026-05-01。")
    today = turn.now.date()
    if abs((day - today).days) > 3 * 366:
        raise Reask("开始日期离今天超过三年，请检查年份。")
    return day.isoformat()


def _end(turn: Turn, data: dict[str, Any], answer: str) -> str:
    day = parse_day(answer)
    if day is None:
        raise Reask("日期格式不对，请写成 2026-05-31。")
    start = date.fromisoformat(data["start"])
    if day < start:
        raise Reask(f"结束日期不能早于开始日期（{start.isoformat()}）。")
    if day - start > timedelta(days=3 * 366):
        raise Reask("一条记录最长三年，请检查结束日期。")
    return day.isoformat()


def _confirm_question(turn: Turn, data: dict[str, Any]) -> str:
    staff = turn.identity.staff
    days = (date.fromisoformat(data["end"]) - date.fromisoformat(data["start"])).days + 1
    return (f"请确认：{data['kind']} · {data['person']} · {staff.institution.name} → {data['to_label']} · "
            f"{data['start']} 至 {data['end']}（{days} 天）")


class TrainingRecordDialog(Dialog):
    name = "training_record"
    title = ("培训记录登记", "training record")
    restart_hint = ("（发送“登记进修”重新开始）", " (send /record)")

    def __init__(self) -> None:
        super().__init__()
        self.steps = [
            ChoiceStep("kind", lambda t, d: "登记哪类记录？", _kinds, what=("类型", "kind")),
            TextStep("person", lambda t, d: "人员姓名？", _person),
            ChoiceStep("to", lambda t, d: _DIRECTION.get(d.get("kind", ""), "对方机构？"), _others,
                       what=("机构", "institution")),
            TextStep("start", lambda t, d: "开始日期？（如 2026-05-01）", _start),
            TextStep("end", lambda t, d: "结束日期？（含当天，如 2026-05-31）", _end),
            ChoiceStep("confirm", _confirm_question,
                       lambda t, d: [Option("save", "保存", ("确认", "是", "好")), Option("discard", "不保存", ("否",))],
                       what=("选项", "option")),
        ]

    def allowed(self, turn: Turn) -> str | None:
        if access.command_verdict("record_training", turn.identity.staff) is not access.Verdict.ALLOWED:
            return "抱歉，只有联络员和管理员可以登记进修、下派、坐诊记录。"
        return None

    def prefill(self, turn: Turn, arg: str, data: dict[str, Any]) -> None:
        kind = next((k for k in KINDS if k in arg), None)
        if kind:
            data["kind"], data["kind_label"] = kind, kind

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:
        if data["confirm"] != "save":
            return [Reply("未保存。需要时发送“登记进修”重新开始。")]
        staff = turn.identity.staff
        assert staff is not None
        row = {"kind": data["kind"], "person": data["person"], "from_institution_id": staff.institution_id,
               "to_institution_id": int(data["to"]), "start": date.fromisoformat(data["start"]),
               "end": date.fromisoformat(data["end"])}
        added = store.add_records(turn.session, [row], source="chat", created_by=staff.code)
        repo.record(turn.session, staff.code, "quota.record", target=f"institution:{staff.institution_id}",
                    details={"kind": row["kind"], "start": data["start"], "end": data["end"], "added": added})
        if not added:
            return [Reply("这条记录已经登记过了，未重复保存。发送“配额”查看完成情况。")]
        return [Reply(f"已保存：{data['kind']} · {data['person']} → {data['to_label']}，{data['start']} 至 {data['end']}。"
                      "发送“配额”查看完成情况。")]


__all__ = ["TrainingRecordDialog", "parse_day"]
