"""Admin ``邀请 STAFF`` / ``/invite STAFF``: issue a one-time Telegram binding code.

``/invite`` alone asks whom to invite. The staff member may be given by code (``dr_wang_sy``) or by
exact name within the admin's consortium. Admins only invite staff of their own consortium
(``storage.access.can_manage_staff_member``). Creating the code is audited (``invite.create``).
"""

from __future__ import annotations

import difflib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from handlers.dialogs.base import Abort, Dialog, Reask, TextStep, Turn
from handlers.messages import Reply
from storage import access
from storage import repositories as repo
from storage.models import Institution, Staff
from storage.types import CHINA_TZ



def format_expiry(when: datetime, *, english: bool = False) -> str:
    stamp = when.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")
    return f"{stamp} (UTC+8)" if english else f"{stamp}（北京时间）"


def find_staff_in_consortium(turn: Turn, answer: str) -> Staff:
    """The staff member an admin means by a code or an exact name; raises Reask/Abort."""
    admin = turn.identity.staff
    assert admin is not None
    answer = answer.strip()
    if not answer:
        raise Reask(turn.t("请输入人员代码（例如 dr_wang_sy）或姓名。", "Please type a staff code (e.g. dr_wang_sy) or name."))
    target = repo.get_staff_by_code(turn.session, answer, active_only=False)
    colleagues = repo.list_staff(turn.session, consortium_id=admin.consortium_id, active_only=False)
    if target is None:
        by_name = [s for s in colleagues if s.name == answer]
        if len(by_name) == 1:
            target = by_name[0]
        elif len(by_name) > 1:
            codes = "、".join(s.code for s in by_name)
            raise Reask(turn.t(f"本医联体有多位名为“{answer}”的人员（{codes}），请输入人员代码。",
                               f"Several staff are named \"{answer}\" ({codes}); please type the staff code."))
    if target is None:
        names = [s.code for s in colleagues] + [s.name for s in colleagues]
        close = difflib.get_close_matches(answer.lower(), names, n=3, cutoff=0.5)
        hint = turn.t(f"您是不是要找：{'、'.join(close)}？", f"Did you mean: {', '.join(close)}?") if close else ""
        raise Reask(turn.t(f"人员名录中没有“{answer}”。{hint}可发送“人员列表”查看本医联体的人员代码。",
                           f"There is no \"{answer}\" in the staff directory. {hint} Send /users to list the codes."))
    if not access.can_manage_staff_member(admin, target):
        raise Abort(turn.t("抱歉，您只能管理本医联体的人员。", "Sorry, you can only manage staff of your own consortium."))
    if not target.active:
        raise Abort(turn.t(f"{target.name}（{target.code}）已停用，不能邀请。如需恢复，请在人员名录中启用后重新导入。",
                           f"{target.name} ({target.code}) is deactivated and cannot be invited."))
    return target


class InviteDialog(Dialog):
    name = "invite"
    title = ("邀请", "invitation")
    restart_hint = ("（发送“邀请 人员代码”）", " (send /invite STAFF_CODE)")

    def __init__(self) -> None:
        self.steps = [
            TextStep(
                name="staff",
                question=lambda turn, _d: turn.t("请输入要邀请的人员代码（例如 dr_wang_sy）或姓名。",
                                                 "Whom do you want to invite? Type a staff code (e.g. dr_wang_sy) or name."),
                validate=lambda turn, _d, answer: find_staff_in_consortium(turn, answer).code,
            )
        ]

    def allowed(self, turn: Turn) -> str | None:
        if not access.can_manage_users(turn.identity.staff):
            return turn.t(access.DENIED_MANAGE_USERS_ZH, "Sorry, only administrators can manage staff, roles and invites.")
        return None

    def prefill(self, turn: Turn, arg: str, data: dict[str, Any]) -> None:
        data["staff"] = find_staff_in_consortium(turn, arg).code

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:
        admin = turn.identity.staff
        assert admin is not None
        target = find_staff_in_consortium(turn, data["staff"])
        ttl = turn.settings.invite_ttl_hours
        code = repo.create_invite(turn.session, target, created_by=admin.code, ttl_hours=ttl, now=turn.now)
        expires = format_expiry(turn.now + timedelta(hours=ttl), english=turn.english)
        inst = turn.session.scalar(select(Institution.name).where(Institution.id == target.institution_id))
        bound_note = turn.t(
            "\n注意：此人已绑定过 Telegram 账号，使用新绑定码后将改绑到新账号。" if target.telegram_user_id else "",
            "\nNote: this person is already bound; using the new code moves the binding to the new account."
            if target.telegram_user_id else "",
        )
        return [Reply(turn.t(
            f"已为 {target.name}（{inst}，{target.roles_zh}）生成绑定码：\n\n{code}\n\n"
            f"有效期至 {expires}，只能使用一次。请通过可靠渠道转交本人：在 Telegram 中向本助手发送 /bind {code} 即可完成绑定。"
            f"{bound_note}",
            f"Binding code for {target.name} ({inst}):\n\n{code}\n\n"
            f"Valid until {expires}, usable once. Hand it to them privately; they send /bind {code} to this bot on "
            f"Telegram.{bound_note}",
        ))]
