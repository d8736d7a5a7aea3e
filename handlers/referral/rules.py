"""The rules of a two-way referral, as pure functions and data.

* ``ReferralRules`` — the consortium's criteria per direction, escalation times and which
  institutions receive referrals: data (``rules_default.yaml``, or the admin's copy named by
  ``YILIAN_REFERRAL_RULES``), validated once at load.
* ``TRANSITIONS`` — the lifecycle as a table ``(status, action) → new status``; ``may_act`` says
  who may take an action. Chat buttons, CLI and any later console ask these, nothing else.
* Level checks (``level_conflict``), receiving institutions (``receives``) and the check of an
  18-digit resident ID number (``valid_id_number``, GB 11643 checksum).

Nothing here reads the database or knows a channel.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator

from storage.models import ROLE_ADMIN, ROLE_LIAISON, Institution, Referral, Staff

UP, DOWN = "up", "down"
DEFAULT_RULES_FILE = Path(__file__).with_name("rules_default.yaml")

#: Rough order of care levels; 专科 (specialist) has no place in it.
LEVEL_RANK = {"三级": 3, "二级": 2, "一级": 1, "基层": 0}

STATUS_LABELS = {
    "draft": ("草稿", "draft"),
    "submitted": ("待接收", "submitted"),
    "accepted": ("已接收", "accepted"),
    "rejected": ("已拒绝", "rejected"),
    "arrived": ("患者已到达", "patient arrived"),
    "completed": ("已完成", "completed"),
    "cancelled": ("已撤销", "cancelled"),
}
URGENCY_LABELS = {
    "routine": ("普通", "routine"),
    "urgent": ("加急", "urgent"),
    "emergency": ("急诊", "emergency"),
}
DIRECTION_LABELS = {UP: ("上转", "upward"), DOWN: ("下转", "downward")}


class Criterion(BaseModel):
    code: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    zh: str = Field(min_length=2, max_length=60)
    en: str = Field(min_length=2, max_length=120)


class ReferralRules(BaseModel):
    up: list[Criterion] = Field(min_length=1)
    down: list[Criterion] = Field(min_length=1)
    escalate_after_hours: dict[str, float] = Field(default_factory=lambda: {"routine": 24, "urgent": 2,
                                                                            "emergency": 2})
    non_clinical_name_words: list[str] = Field(default_factory=list)

    @field_validator("escalate_after_hours")
    @classmethod
    def _known_urgencies(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(URGENCY_LABELS)
        if unknown:
            raise ValueError(f"unknown urgency {sorted(unknown)}; allowed: {list(URGENCY_LABELS)}")
        if any(h <= 0 for h in value.values()):
            raise ValueError("escalation hours must be positive")
        return value

    def criteria(self, direction: str) -> list[Criterion]:
        return self.up if direction == UP else self.down

    def criterion(self, direction: str, code: str | None) -> Criterion | None:
        return next((c for c in self.criteria(direction) if c.code == code), None)

    def escalate_after(self, urgency: str) -> timedelta:
        hours = self.escalate_after_hours.get(urgency) or self.escalate_after_hours.get("routine", 24)
        return timedelta(hours=hours)


def load_rules(path: Path | str | None = None) -> ReferralRules:
    """The rules from ``path`` (default: the shipped file); raises ``ValueError`` naming the file."""
    source = Path(path) if path else DEFAULT_RULES_FILE
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        return ReferralRules.model_validate(data)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"referral rules {source}: {exc}") from exc


@lru_cache(maxsize=8)
def rules_for(path: str | None) -> ReferralRules:
    """``load_rules`` once per file (the engine asks on every message)."""
    return load_rules(path)


# ------------------------------------------------------------------------------------------------
# institutions


def receives(inst: Institution, rules: ReferralRules) -> bool:
    """May referrals be sent to ``inst``? The admin's mark wins; else clinical institutions do."""
    if inst.receives_referrals is not None:
        return bool(inst.receives_referrals)
    return not any(word in inst.name for word in rules.non_clinical_name_words)


def level_conflict(direction: str, sender: Institution, receiver: Institution) -> bool:
    """True when ``direction`` contradicts the two institutions' levels (上转 to a lower level…)."""
    mine, theirs = LEVEL_RANK.get(sender.level), LEVEL_RANK.get(receiver.level)
    if mine is None or theirs is None:
        return False
    return theirs < mine if direction == UP else theirs > mine


# ------------------------------------------------------------------------------------------------
# lifecycle

#: ``(status, action) → new status``. Anything else is illegal.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("draft", "submit"): "submitted",
    ("draft", "cancel"): "cancelled",
    ("submitted", "accept"): "accepted",
    ("submitted", "reject"): "rejected",
    ("submitted", "cancel"): "cancelled",
    ("accepted", "arrive"): "arrived",
    ("arrived", "complete"): "completed",
}
ACTION_LABELS = {
    "accept": ("接收", "Accept"),
    "reject": ("拒绝", "Reject"),
    "arrive": ("患者已到达", "Patient arrived"),
    "complete": ("完成转诊", "Complete"),
    "cancel": ("撤销转诊", "Cancel referral"),
}
#: Actions of the receiving side; ``cancel`` belongs to the sending side.
RECEIVER_ACTIONS = frozenset({"accept", "reject", "arrive", "complete"})


def next_status(status: str, action: str) -> str | None:
    return TRANSITIONS.get((status, action))


def _is_admin_of(staff: Staff, inst: Institution) -> bool:
    return staff.has_role(ROLE_ADMIN) and staff.institution.consortium_id == inst.consortium_id


def may_act(staff: Staff | None, referral: Referral, action: str) -> bool:
    """Receiving liaisons (or their consortium's admins) accept, reject and record the patient's
    arrival and completion; the sender (or the sending consortium's admin) cancels."""
    if staff is None or not staff.active:
        return False
    if action in RECEIVER_ACTIONS:
        receiver = referral.to_institution
        return (staff.has_role(ROLE_LIAISON) and staff.institution_id == receiver.id) or _is_admin_of(staff, receiver)
    if action == "cancel":
        return staff.id == referral.sender_id or _is_admin_of(staff, referral.from_institution)
    return False


def actions_for(staff: Staff | None, referral: Referral) -> list[str]:
    """The actions ``staff`` may take on ``referral`` now, in the order they are offered."""
    return [a for a in ACTION_LABELS if next_status(referral.status, a) and may_act(staff, referral, a)]


# ------------------------------------------------------------------------------------------------
# patient identifiers

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_RE = re.compile(r"^\d{17}[\dX]$")


def valid_id_number(value: str, *, today: date | None = None) -> bool:
    """An 18-digit resident ID number with a valid birth date and check character."""
    value = value.strip().upper()
    if not _ID_RE.match(value):
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS))
    if _ID_CHECK[total % 11] != value[17]:
        return False
    return birth_date_of_id(value, today=today) is not None


def birth_date_of_id(value: str, *, today: date | None = None) -> date | None:
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None
    today = today or date.today()
    return born if date(1880, 1, 1) <= born <= today else None


def sex_of_id(value: str) -> str:
    """男 for an odd 17th digit, 女 for an even one."""
    return "男" if int(value[16]) % 2 else "女"


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def mask_name(name: str) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧**娜, Zhang San → Z*** S**."""
    name = name.strip()
    if not name:
        return name
    if " " in name:
        return " ".join(w[0] + "*" * (len(w) - 1) for w in name.split())
    if len(name) <= 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


__all__ = [
    "ACTION_LABELS", "DEFAULT_RULES_FILE", "DIRECTION_LABELS", "DOWN", "LEVEL_RANK", "RECEIVER_ACTIONS",
    "STATUS_LABELS", "TRANSITIONS", "UP", "URGENCY_LABELS", "Criterion", "ReferralRules", "actions_for",
    "age_on", "birth_date_of_id", "level_conflict", "load_rules", "mask_name", "may_act", "next_status",
    "receives", "rules_for", "sex_of_id", "valid_id_number",
]
