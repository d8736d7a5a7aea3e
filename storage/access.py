"""Every permission rule of the application, in one place.

Pure functions over ``Staff`` / ``Institution`` data (no queries, except the documented fallback
in ``can_view_referral``). ``None`` stands for an unbound user (unknown Telegram account, web
visitor). A deactivated staff member is treated like an unbound user.

Rules:

* policy questions: everyone, bound or not;
* managing policy documents (upload, replace, remove): admins (optionally only of the
  consortium the document belongs to);
* managing users (invites, roles, directory import): admins;
* viewing a referral: its sender; liaison officers when their own institution sends or receives
  it; admins for any referral touching an institution of their consortium;
* creating a referral: physicians and liaisons.

``COMMAND_RULES`` / ``command_verdict`` say, per chat command, who may use it and whether only in
a private chat; the engine asks nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sqlalchemy.orm import object_session

from storage.models.directory import ROLE_ADMIN, ROLE_LIAISON, ROLE_PHYSICIAN, Institution, Staff

DENIED_MANAGE_DOCUMENTS_ZH = "抱歉，只有管理员可以上传、更新或删除政策文件。"
DENIED_MANAGE_USERS_ZH = "抱歉，只有管理员可以管理人员、角色和邀请码。"
DENIED_VIEW_REFERRAL_ZH = "抱歉，您无权查看这条转诊记录：仅转出或接收机构的医生、联络员及本医联体管理员可以查看。"
DENIED_CREATE_REFERRAL_ZH = "抱歉，只有已绑定的医生或联络员可以发起转诊。"
NOT_BOUND_ZH = "您尚未绑定医联体人员身份，请使用管理员发放的邀请码完成绑定。"


class InstitutionLike(Protocol):
    id: int
    consortium_id: int


def _active(staff: Staff | None) -> bool:
    return staff is not None and bool(staff.active)


def _consortium_id(staff: Staff) -> int | None:
    inst = staff.institution
    return inst.consortium_id if inst is not None else None


def is_admin(staff: Staff | None) -> bool:
    return _active(staff) and staff.has_role(ROLE_ADMIN)  # type: ignore[union-attr]


def can_ask_policy(staff: Staff | None) -> bool:
    """Everyone may ask policy questions, bound or not."""
    return True


def can_manage_documents(staff: Staff | None, consortium_code: str | None = None) -> bool:
    """Admins; when ``consortium_code`` (the document's consortium) is given, only its admins."""
    if not is_admin(staff):
        return False
    if consortium_code is None:
        return True
    inst = staff.institution  # type: ignore[union-attr]
    return inst is not None and inst.consortium is not None and inst.consortium.code == consortium_code


def can_manage_users(staff: Staff | None) -> bool:
    return is_admin(staff)


def can_create_referral(staff: Staff | None) -> bool:
    return _active(staff) and (staff.has_role(ROLE_PHYSICIAN) or staff.has_role(ROLE_LIAISON))  # type: ignore[union-attr]


def can_view_referral(staff: Staff | None, sending_institution: InstitutionLike | int,
                      receiving_institution: InstitutionLike | int, *, sender_id: int | None = None) -> bool:
    """May ``staff`` see a referral from ``sending_institution`` to ``receiving_institution``
    that ``sender_id`` sent? Its sender, the liaison officers of either institution, and admins
    of a consortium either institution belongs to; nobody else (not the sender's colleagues).

    Institutions may be given as objects or ids. With bare ids the admin rule needs the
    institutions' consortium, which is looked up through the staff object's session; when that is
    impossible the answer is False (fail closed).
    """
    if not _active(staff):
        return False
    assert staff is not None
    if sender_id is not None and staff.id == sender_id:
        return True
    ends = (sending_institution, receiving_institution)
    end_ids = {e if isinstance(e, int) else e.id for e in ends}
    if staff.has_role(ROLE_LIAISON) and staff.institution_id in end_ids:
        return True
    if staff.has_role(ROLE_ADMIN):
        mine = _consortium_id(staff)
        return mine is not None and any(_consortium_of(staff, e) == mine for e in ends)
    return False


def _consortium_of(staff: Staff, inst: InstitutionLike | int) -> int | None:
    if not isinstance(inst, int):
        return inst.consortium_id
    if staff.institution is not None and staff.institution.id == inst:
        return staff.institution.consortium_id
    session = object_session(staff)
    if session is None:
        return None
    found = session.get(Institution, inst)
    return found.consortium_id if found is not None else None


# ------------------------------------------------------------------------------------------------
# Added for the conversation engine (handlers/): user management is scoped to the admin's own
# consortium. Kept separate from the rules above on purpose.


def can_manage_staff_member(admin: Staff | None, target: Staff) -> bool:
    """May ``admin`` invite, re-role or unbind ``target``? Admins of the target's consortium only."""
    if not can_manage_users(admin):
        return False
    assert admin is not None
    mine = _consortium_id(admin)
    return mine is not None and mine == _consortium_id(target)


# ------------------------------------------------------------------------------------------------
# What each role may ask of the assistant, per command, in one table.
#
# Commands are named by the intent values of ``handlers.intents`` (plain strings: storage knows
# nothing of handlers) plus ``upload`` (a file sent in chat). ``private_only`` commands either show
# something personal (a binding code, a login link, the staff list, a patient's referral) or take
# an admin action: in a group chat others would read the answer, so the bot asks to be written to
# privately instead.


class Audience(StrEnum):
    ANYONE = "anyone"  # unbound users too
    BOUND = "bound"  # any active staff member
    CLINICAL = "clinical"  # physicians and liaison officers
    ADMIN = "admin"
    COORDINATION = "coordination"  # liaison officers and admins (quotas, attendance)


@dataclass(frozen=True)
class CommandRule:
    audience: Audience
    private_only: bool = False


COMMAND_RULES: dict[str, CommandRule] = {
    "ask": CommandRule(Audience.ANYONE),
    "help": CommandRule(Audience.ANYONE),
    "start": CommandRule(Audience.ANYONE),
    "cancel": CommandRule(Audience.ANYONE),
    "unknown_command": CommandRule(Audience.ANYONE),
    "bind": CommandRule(Audience.ANYONE, private_only=True),
    "whoami": CommandRule(Audience.BOUND, private_only=True),
    "login": CommandRule(Audience.BOUND, private_only=True),
    "status": CommandRule(Audience.BOUND),
    "quota": CommandRule(Audience.COORDINATION),
    "meetings": CommandRule(Audience.BOUND),
    "attendance": CommandRule(Audience.ADMIN, private_only=True),
    "record_training": CommandRule(Audience.COORDINATION, private_only=True),
    "new_meeting": CommandRule(Audience.ADMIN, private_only=True),
    "docs": CommandRule(Audience.ANYONE),
    "my_referrals": CommandRule(Audience.BOUND, private_only=True),
    "pending_referrals": CommandRule(Audience.BOUND, private_only=True),
    "referral_view": CommandRule(Audience.BOUND, private_only=True),
    "refer": CommandRule(Audience.CLINICAL, private_only=True),
    "invite": CommandRule(Audience.ADMIN, private_only=True),
    "users": CommandRule(Audience.ADMIN, private_only=True),
    "role": CommandRule(Audience.ADMIN, private_only=True),
    "unbind": CommandRule(Audience.ADMIN, private_only=True),
    "upload": CommandRule(Audience.ADMIN, private_only=True),
}


class Verdict(StrEnum):
    ALLOWED = "allowed"
    NOT_BOUND = "not_bound"  # tell the user how to get access
    ROLE = "role"  # their role may not do this
    PRIVATE = "private"  # allowed, but only in a private chat


def _in_audience(staff: Staff | None, audience: Audience) -> bool:
    if audience is Audience.ANYONE:
        return True
    if not _active(staff):
        return False
    if audience is Audience.BOUND:
        return True
    if audience is Audience.CLINICAL:
        return can_create_referral(staff)
    if audience is Audience.COORDINATION:
        return staff.has_role(ROLE_LIAISON) or is_admin(staff)  # type: ignore[union-attr]
    return is_admin(staff)


def command_verdict(command: str, staff: Staff | None, *, private: bool = True) -> Verdict:
    """May ``staff`` (None = unbound) use ``command`` here? Unknown commands are denied."""
    rule = COMMAND_RULES.get(command)
    if rule is None:
        return Verdict.ROLE
    if not _in_audience(staff, rule.audience):
        return Verdict.NOT_BOUND if not _active(staff) else Verdict.ROLE
    if rule.private_only and not private:
        return Verdict.PRIVATE
    return Verdict.ALLOWED


# --- the admin console (/admin) -----------------------------------------------------------------
# Pages and actions, each with who may use it. Liaison officers read their own institution's
# referrals, meetings and quotas; everything else, and every change, is for admins (of their
# consortium: the console scopes each query by ``console_scope``). Physicians have no console.

CONSOLE_PAGES: dict[str, Audience] = {
    "documents": Audience.ADMIN,
    "hittest": Audience.ADMIN,
    "referrals": Audience.COORDINATION,
    "meetings": Audience.COORDINATION,
    "quotas": Audience.COORDINATION,
    "people": Audience.ADMIN,
    "audit": Audience.ADMIN,
}

CONSOLE_ACTIONS: dict[str, Audience] = {
    "document.upload": Audience.ADMIN,
    "document.delete": Audience.ADMIN,
    "document.rollback": Audience.ADMIN,
    "referral.export": Audience.ADMIN,
    "quota.import": Audience.ADMIN,
    "meeting.manage": Audience.ADMIN,
    "people.manage": Audience.ADMIN,
    "audit.export": Audience.ADMIN,
}


def console_allowed(name: str, staff: Staff | None) -> bool:
    """May ``staff`` open console page or use console action ``name``? Unknown names: no."""
    audience = CONSOLE_PAGES.get(name) or CONSOLE_ACTIONS.get(name)
    return audience is not None and _in_audience(staff, audience)


def console_home(staff: Staff | None) -> str | None:
    """The first console page ``staff`` may open, or None (no console: back to the chat)."""
    return next((page for page in CONSOLE_PAGES if console_allowed(page, staff)), None)


@dataclass(frozen=True)
class ConsoleScope:
    """What the console shows ``staff``: one consortium (admins) or one institution (liaisons)."""

    consortium_id: int | None
    institution_id: int | None  # set for a liaison officer: only their institution

    @property
    def read_only(self) -> bool:
        return self.institution_id is not None


def console_scope(staff: Staff) -> ConsoleScope:
    inst = staff.institution
    consortium_id = inst.consortium_id if inst is not None else None
    if is_admin(staff):
        return ConsoleScope(consortium_id, None)
    return ConsoleScope(consortium_id, inst.id if inst is not None else -1)
