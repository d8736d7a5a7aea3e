"""Training-quota rules and progress, as pure functions of rules, records and a date.

Rules are data (``quota_rules_default.yaml``, each citing its clause). Two shapes:

* per institution per period — ``target.people`` persons (or ``target.share_of_staff`` of the
  institution's medical staff, rounded up) must each spend at least ``min_days`` on ``kind``
  within the period; ``per_destination`` counts that separately for every lower member (e.g. a
  deputy-director-level cadre to *each* member every month);
* per person cumulative — ``cumulative_days`` of ``kind`` over all time (1 year of grassroots
  service before a senior title).

Progress merges each person's overlapping or touching records (two entries for the same weeks
count once), clips them to the period and to today, and — for the pace check — measures
person-days (each person counting up to ``min_days``) against the share of the period elapsed.
With ``prorate: true`` a rule that took effect (``effective_from``) inside a period asks for the
remaining share of the target only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from dateutil.relativedelta import relativedelta

KINDS = ("进修", "下派", "坐诊")


@dataclass(frozen=True)
class Record:
    kind: str
    person: str
    from_id: int
    to_id: int
    start: date
    end: date  # inclusive


@dataclass(frozen=True)
class InstitutionInfo:
    id: int
    name: str
    consortium: str
    level: str
    is_lead: bool
    medical_staff: int | None = None


@dataclass(frozen=True)
class QuotaRule:
    id: str
    consortium: str
    kind: str
    title: str
    source: str
    applies_to: dict[str, Any] = field(default_factory=dict)  # {level: 基层} / {is_lead: true}
    period: str | None = "year"  # month | quarter | year; None for cumulative rules
    people: int | None = None
    share_of_staff: float | None = None
    min_days: int = 1
    per_destination: bool = False
    cumulative_days: int | None = None
    prorate: bool = False
    effective_from: date | None = None

    def applies(self, inst: InstitutionInfo) -> bool:
        if inst.consortium != self.consortium:
            return False
        if "level" in self.applies_to and inst.level != self.applies_to["level"]:
            return False
        if "is_lead" in self.applies_to and inst.is_lead != bool(self.applies_to["is_lead"]):
            return False
        return True


def load_rules(path: Path | None = None) -> list[QuotaRule]:
    data = yaml.safe_load((path or Path(__file__).with_name("quota_rules_default.yaml")).read_text("utf-8"))
    rules = []
    for item in data.get("quotas", []) or []:
        target = item.get("target") or {}
        rules.append(QuotaRule(
            id=str(item["id"]), consortium=str(item["consortium"]), kind=str(item["kind"]),
            title=str(item.get("title", item["id"])), source=str(item.get("source", "")),
            applies_to=dict(item.get("applies_to") or {}),
            period=None if item.get("cumulative_days") else str(item.get("period", "year")),
            people=target.get("people"), share_of_staff=target.get("share_of_staff"),
            min_days=int(item.get("min_days", 1)), per_destination=bool(item.get("per_destination", False)),
            cumulative_days=item.get("cumulative_days"), prorate=bool(item.get("prorate", False)),
            effective_from=item.get("effective_from")))
        if rules[-1].kind not in KINDS:
            raise ValueError(f"quota rule {item['id']}: unknown kind {rules[-1].kind!r}")
    return rules


# ------------------------------------------------------------------------------------------------
# periods and intervals


def period_of(period: str, day: date) -> tuple[date, date, str]:
    """``[start, end)`` dates of the period containing ``day`` and its label."""
    if period == "month":
        start = date(day.year, day.month, 1)
        return start, start + relativedelta(months=1), f"{day.year}-{day.month:02d}"
    if period == "quarter":
        q = (day.month - 1) // 3
        start = date(day.year, 3 * q + 1, 1)
        return start, start + relativedelta(months=3), f"{day.year}-Q{q + 1}"
    if period == "year":
        return date(day.year, 1, 1), date(day.year + 1, 1, 1), str(day.year)
    raise ValueError(f"unknown period {period!r}")


def merge(intervals: Iterable[tuple[date, date]]) -> list[tuple[date, date]]:
    """Inclusive date intervals merged where they overlap or touch."""
    out: list[tuple[date, date]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def days_within(intervals: Iterable[tuple[date, date]], start: date, end_exclusive: date) -> int:
    total = 0
    for a, b in merge(intervals):
        lo, hi = max(a, start), min(b, end_exclusive - timedelta(days=1))
        if hi >= lo:
            total += (hi - lo).days + 1
    return total


# ------------------------------------------------------------------------------------------------
# progress


@dataclass(frozen=True)
class Progress:
    rule: QuotaRule
    institution: InstitutionInfo
    period_label: str
    #: People required (None: the target needs a head count that is not recorded).
    target: int | None
    #: People who have done at least ``min_days`` in the period (up to today).
    done: int
    #: People with days in the period but not yet ``min_days`` (ongoing or too short).
    partial: int
    #: Share of the target's person-days reached so far, 0..1 (None when target unknown).
    fraction: float | None
    #: Share of the period elapsed by today, 0..1.
    elapsed: float
    destination: InstitutionInfo | None = None
    people: tuple[tuple[str, int], ...] = ()  # (person, days) for cumulative rules

    def behind(self, margin: float) -> bool:
        return self.fraction is not None and self.target and self.fraction + margin < self.elapsed

    @property
    def met(self) -> bool:
        return self.target is not None and self.done >= self.target


def target_people(rule: QuotaRule, inst: InstitutionInfo, start: date, end: date) -> int | None:
    if rule.share_of_staff is not None:
        if not inst.medical_staff:
            return None
        base = math.ceil(inst.medical_staff * float(rule.share_of_staff) - 1e-9)
    else:
        base = int(rule.people or 1)
    if rule.prorate and rule.effective_from and start < rule.effective_from < end:
        share = (end - rule.effective_from).days / (end - start).days
        base = int(base * share + 0.5)  # to the nearest person: days make the share only approximate
    return max(base, 1)


def progress(rule: QuotaRule, inst: InstitutionInfo, records: Sequence[Record], today: date, *,
             destination: InstitutionInfo | None = None) -> Progress:
    if rule.cumulative_days:
        by_person: dict[str, list[tuple[date, date]]] = defaultdict(list)
        for r in records:
            if r.kind == rule.kind and r.from_id == inst.id:
                by_person[r.person].append((r.start, min(r.end, today)))
        days = sorted(((p, days_within(iv, date.min, today + timedelta(days=1))) for p, iv in by_person.items()),
                      key=lambda x: (-x[1], x[0]))
        done = sum(1 for _, d in days if d >= rule.cumulative_days)
        return Progress(rule, inst, "累计", None, done, len(days) - done, None, 0.0, people=tuple(days))
    assert rule.period is not None
    start, end, label = period_of(rule.period, today)
    effective = max(start, rule.effective_from) if rule.effective_from and rule.prorate else start
    upto = min(today + timedelta(days=1), end)
    by_person = defaultdict(list)
    for r in records:
        if r.kind != rule.kind or r.from_id != inst.id:
            continue
        if destination is not None and r.to_id != destination.id:
            continue
        by_person[r.person].append((r.start, r.end))
    counted = {p: days_within(iv, effective, upto) for p, iv in by_person.items()}
    counted = {p: d for p, d in counted.items() if d > 0}
    done = sum(1 for d in counted.values() if d >= rule.min_days)
    target = target_people(rule, inst, start, end)
    fraction = None
    if target:
        need = target * rule.min_days
        have = sum(sorted((min(d, rule.min_days) for d in counted.values()), reverse=True)[:target])
        fraction = min(1.0, have / need)
    elapsed = max(0.0, min(1.0, (upto - effective).days / max(1, (end - effective).days)))
    return Progress(rule, inst, label, target, done, len(counted) - done, fraction, elapsed, destination)


def progress_for(rules: Iterable[QuotaRule], institutions: Sequence[InstitutionInfo], records: Sequence[Record],
                 today: date) -> list[Progress]:
    """Every applicable (rule, institution[, destination]) of the institutions given."""
    by_consortium: dict[str, list[InstitutionInfo]] = defaultdict(list)
    for inst in institutions:
        by_consortium[inst.consortium].append(inst)
    out = []
    for rule in rules:
        for inst in institutions:
            if not rule.applies(inst):
                continue
            if rule.per_destination:
                for dest in by_consortium[inst.consortium]:
                    if dest.id != inst.id and not dest.is_lead:
                        out.append(progress(rule, inst, records, today, destination=dest))
            else:
                out.append(progress(rule, inst, records, today))
    return out


def bar(fraction: float, width: int = 10) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "▓" * filled + "░" * (width - filled)


def line(p: Progress) -> str:
    """One progress line: ``进修（2026）沣水中心卫生院 ▓▓▓░░░░░░░ 1/2 人 …``."""
    dest = f" → {p.destination.name}" if p.destination else ""
    if p.rule.cumulative_days:
        top = "；".join(f"{name} {days}/{p.rule.cumulative_days} 天" for name, days in p.people[:5]) or "暂无记录"
        return f"{p.rule.title} · {p.institution.name}：已满 {p.done} 人；{top}"
    if p.target is None:
        return (f"{p.rule.title}（{p.period_label}）{p.institution.name}{dest}：已完成 {p.done} 人，"
                f"目标无法计算（机构未登记医务人员数）")
    mark = "✅" if p.met else ("⚠️" if p.fraction is not None and p.fraction < p.elapsed else "")
    extra = f"，进行中 {p.partial} 人" if p.partial else ""
    return (f"{p.rule.title}（{p.period_label}）{p.institution.name}{dest}：{bar(p.fraction or 0.0)} "
            f"{p.done}/{p.target} 人（每人≥{p.rule.min_days} 天{extra}；时间已过 {round(p.elapsed * 100)}%）{mark}")


__all__ = ["InstitutionInfo", "Progress", "QuotaRule", "Record", "bar", "days_within", "line", "load_rules",
           "merge", "period_of", "progress", "progress_for", "target_people"]
