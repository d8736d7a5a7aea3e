"""Training records in and quota progress out: file import with line-numbered errors, progress
for an institution or a consortium, and the scheduled nudges (behind pace, last-month summary).

Rules and arithmetic are in ``handlers.quotas``; this module loads rows and sends notifications.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy.orm import Session

from handlers import quotas
from handlers.meetings import CHINA_TZ, QuietHours
from handlers.messages import Outgoing, Reply
from handlers.notifications import ChannelRouter, notify
from storage import meetings as ledger
from storage import quotas as store
from storage import repositories as repo
from storage.models import Institution, Staff

COLUMNS = ("kind", "person", "from_institution", "to_institution", "start", "end")
MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_ROWS = 20_000


@dataclass
class ImportResult:
    rows: list[dict] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    added: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _read_rows(file_name: str, data: bytes) -> list[tuple[int, list[str]]]:
    """(line number, cells) of the file, header included (line 1)."""
    if file_name.lower().endswith(".xlsx"):
        from openpyxl import load_workbook

        try:
            sheet = load_workbook(io.BytesIO(data), read_only=True, data_only=True).worksheets[0]
        except Exception as exc:  # noqa: BLE001 - any unreadable workbook
            raise ValueError(f"无法读取 Excel 文件：{type(exc).__name__}") from None
        out = []
        for n, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            cells = ["" if v is None else (v.date().isoformat() if isinstance(v, datetime) else
                                           v.isoformat() if isinstance(v, date) else str(v).strip()) for v in row]
            out.append((n, cells))
        return out
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValueError("文件编码无法识别，请保存为 UTF-8 的 CSV")
    reader = csv.reader(io.StringIO(text))
    return [(reader.line_num, [c.strip() for c in row]) for row in reader]


def parse_records(session: Session, file_name: str, data: bytes) -> ImportResult:
    """Every row checked; a file with any bad row yields errors and no rows to store."""
    result = ImportResult()
    if len(data) > MAX_IMPORT_BYTES:
        result.errors.append((0, f"文件超过 {MAX_IMPORT_BYTES // 1024 // 1024} MB"))
        return result
    if not file_name.lower().endswith((".csv", ".xlsx")):
        result.errors.append((0, "只接受 .csv 或 .xlsx 文件"))
        return result
    try:
        rows = _read_rows(file_name, data)
    except ValueError as exc:
        result.errors.append((0, str(exc)))
        return result
    rows = [(n, cells) for n, cells in rows if any(cells)]
    if not rows:
        result.errors.append((1, "文件为空"))
        return result
    header_line, header = rows[0]
    header = [h.lower() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        result.errors.append((header_line, f"缺少列：{', '.join(missing)}（需要 {','.join(COLUMNS)}）"))
        return result
    if len(rows) - 1 > MAX_ROWS:
        result.errors.append((0, f"行数超过 {MAX_ROWS}"))
        return result
    index = {c: header.index(c) for c in COLUMNS}
    by_name = {inst.name: inst for inst in store.institutions(session)}
    for line, cells in rows[1:]:
        def cell(name: str) -> str:
            i = index[name]
            return cells[i].strip() if i < len(cells) else ""

        problems = []
        kind = cell("kind")
        if kind not in quotas.KINDS:
            problems.append(f"类型“{kind}”无效，应为 进修/下派/坐诊")
        person = cell("person")
        if not person or len(person) > 100:
            problems.append("人员姓名为空或过长")
        ends = {}
        for col, label in (("from_institution", "派出机构"), ("to_institution", "接收机构")):
            inst = by_name.get(cell(col))
            if inst is None:
                problems.append(f"{label}“{cell(col)}”不在机构名录中")
            ends[col] = inst
        dates = {}
        for col, label in (("start", "开始日期"), ("end", "结束日期")):
            try:
                dates[col] = date.fromisoformat(cell(col))
            except ValueError:
                problems.append(f"{label}“{cell(col)}”应为 YYYY-MM-DD")
        if len(dates) == 2 and dates["end"] < dates["start"]:
            problems.append("结束日期早于开始日期")
        a, b = ends.get("from_institution"), ends.get("to_institution")
        if a is not None and b is not None:
            if a.id == b.id:
                problems.append("派出机构与接收机构相同")
            elif a.consortium_id != b.consortium_id:
                problems.append("派出机构与接收机构不属于同一医联体")
        if problems:
            result.errors.append((line, "；".join(problems)))
            continue
        result.rows.append({"kind": kind, "person": person, "from_institution_id": a.id, "to_institution_id": b.id,
                            "start": dates["start"], "end": dates["end"]})
    if result.errors:
        result.rows = []
    return result


def import_records(session: Session, file_name: str, data: bytes, *, actor: str, source: str = "import") -> ImportResult:
    result = parse_records(session, file_name, data)
    if result.ok:
        result.added = store.add_records(session, result.rows, source=source, created_by=actor)
        repo.record(session, actor, "quota.import", target=f"file:{file_name}",
                    details={"rows": len(result.rows), "added": result.added})
    return result


# ------------------------------------------------------------------------------------------------
# progress


def _info(inst: Institution) -> quotas.InstitutionInfo:
    return quotas.InstitutionInfo(inst.id, inst.name, inst.consortium.code, inst.level, bool(inst.is_lead),
                                  inst.medical_staff)


def _record(r) -> quotas.Record:
    return quotas.Record(r.kind, r.person, r.from_institution_id, r.to_institution_id, r.start, r.end)


def status(session: Session, rules: list[quotas.QuotaRule], today: date, *, consortium: str | None = None,
           institution_id: int | None = None) -> list[quotas.Progress]:
    # every institution of the consortia involved: a per-destination rule counts visits to each
    everyone = store.institutions(session, consortium)
    insts = [i for i in everyone if institution_id is None or i.id == institution_id]
    consortia = {i.consortium_id for i in insts}
    records = [_record(r) for r in store.records_from(session, [i.id for i in insts])]
    result = quotas.progress_for(rules, [_info(i) for i in everyone if i.consortium_id in consortia], records, today)
    wanted = {i.id for i in insts}
    return [p for p in result if p.institution.id in wanted]


def status_reply(session: Session, staff: Staff, rules: list[quotas.QuotaRule], today: date) -> Reply:
    """``/quota``: a liaison officer's own institution; an admin's whole consortium."""
    admin = staff.has_role("admin")
    found = status(session, rules, today, consortium=staff.institution.consortium.code,
                   institution_id=None if admin else staff.institution_id)
    if not found:
        whom = "本医联体" if admin else staff.institution.name
        return Reply(f"{whom}没有适用的培训配额规则（进修、下派、坐诊）。")
    head = "本医联体各机构培训配额完成情况：" if admin else f"{staff.institution.name}培训配额完成情况："
    lines = [head, *(f"• {quotas.line(p)}" for p in found)]
    sources = dict.fromkeys(p.rule.source for p in found)
    lines.append("依据：" + "；".join(sources))
    return Reply("\n".join(lines))


# ------------------------------------------------------------------------------------------------
# scheduled nudges


def send_quota_reminders(session: Session, router: ChannelRouter | None, now: datetime,
                         rules: list[quotas.QuotaRule], margin: float, quiet: QuietHours | None) -> int:
    """Liaison officers of an institution behind its linear pace (at most once a month per rule),
    and at the start of a period's last month a summary to them and a table to the admins."""
    if quiet is not None and quiet.contains(now):
        return 0
    today = now.astimezone(CHINA_TZ).date()
    month = f"{today.year}-{today.month:02d}"
    sent = 0
    per_consortium: dict[int, list[quotas.Progress]] = {}
    for p in status(session, rules, today):
        if p.rule.cumulative_days:
            continue
        inst = session.get(Institution, p.institution.id)
        liaisons = ledger.liaisons_of(session, [inst.id])[inst.id]
        dest = f":{p.destination.id}" if p.destination else ""
        start, end, _ = quotas.period_of(p.rule.period or "year", today)
        last_month_start = date(end.year if end.month > 1 else end.year - 1, (end.month - 2) % 12 + 1, 1)
        if p.behind(margin):
            key = f"quota:pace:{p.rule.id}:{inst.id}{dest}:{month}"
            if ledger.log_once(session, key, "quota_pace", now, "sent", recipients=len(liaisons), now=now):
                text = (f"【配额提醒】{quotas.line(p)}\n按时间进度应完成约 {round(p.elapsed * 100)}%，"
                        f"目前 {round((p.fraction or 0) * 100)}%，已落后。\n依据：{p.rule.source}")
                notify(session, router, [Outgoing(s.id, Reply(text), kind="quota", dedupe_key=f"{key}:{s.id}")
                                         for s in liaisons], now=now)
                sent += 1
        if p.rule.period != "month" and today >= last_month_start:
            per_consortium.setdefault(inst.consortium_id, []).append(p)
            key = f"quota:summary:{p.rule.id}:{inst.id}{dest}:{p.period_label}"
            if ledger.log_once(session, key, "quota_summary", now, "sent", recipients=len(liaisons), now=now):
                text = f"【配额小结】{p.period_label} 已进入最后一个月：\n{quotas.line(p)}\n依据：{p.rule.source}"
                notify(session, router, [Outgoing(s.id, Reply(text), kind="quota", dedupe_key=f"{key}:{s.id}")
                                         for s in liaisons], now=now)
                sent += 1
    for consortium_id, items in per_consortium.items():
        label = items[0].period_label
        key = f"quota:table:{consortium_id}:{label}"
        admins = ledger.admins_of(session, consortium_id)
        if ledger.log_once(session, key, "quota_table", now, "sent", recipients=len(admins), now=now):
            text = "\n".join([f"【配额汇总】{label} 各机构完成情况：", *(f"• {quotas.line(p)}" for p in items)])
            notify(session, router, [Outgoing(a.id, Reply(text), kind="quota", dedupe_key=f"{key}:{a.id}")
                                     for a in admins], now=now)
            sent += 1
    return sent


__all__ = ["COLUMNS", "ImportResult", "import_records", "parse_records", "send_quota_reminders", "status",
           "status_reply"]
