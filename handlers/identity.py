"""Who is writing: the ``Staff`` behind a channel user, and how an unknown user gets access.

* WeCom: the userid WeCom reports (``FromUserName``) must be a staff member's ``wecom_userid``.
* Telegram: the numeric user id, bound once with an invite code (``/bind CODE``).
* Web chat and terminal: the staff code the visitor picked (``--as``); web guests have a
  ``guest-…`` key, which never matches a staff code (codes have no dash).

A deactivated staff member resolves to ``None`` (treated as unbound), as ``storage.access`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from storage import repositories as repo
from storage.models import Staff

GUEST_PREFIX = "guest"


@dataclass(frozen=True)
class Identity:
    channel: str
    user_key: str
    staff: Staff | None

    @property
    def bound(self) -> bool:
        return self.staff is not None

    @property
    def consortium_code(self) -> str | None:
        """The code of the user's consortium (Staff → Institution → Consortium), if any."""
        if self.staff is None or self.staff.institution is None or self.staff.institution.consortium is None:
            return None
        return self.staff.institution.consortium.code

    @property
    def actor(self) -> str:
        """How this user appears in the audit log."""
        if self.staff is not None:
            return self.staff.code
        return f"{self.channel}:{self.user_key}"


def resolve_staff(session: Session, channel: str, user_key: str) -> Staff | None:
    key = (user_key or "").strip()
    if not key:
        return None
    if channel == "wecom":
        return repo.get_staff_by_wecom_userid(session, key)
    if channel == "telegram":
        try:
            telegram_id = int(key)
        except ValueError:
            return None
        return repo.get_staff_by_telegram_id(session, telegram_id)
    if channel in ("web", "cli"):
        if key.lower().startswith(GUEST_PREFIX):
            return None
        return repo.get_staff_by_code(session, key)
    return None


def resolve(session: Session, channel: str, user_key: str) -> Identity:
    return Identity(channel=channel, user_key=str(user_key), staff=resolve_staff(session, channel, str(user_key)))


def access_guidance(channel: str, *, english: bool = False) -> str:
    """How an unbound user of ``channel`` gets access (shown whenever they ask for more than
    policy answers)."""
    if english:
        if channel == "telegram":
            return ("You are not linked to a staff member of the consortium yet, so you can only ask policy "
                    "questions. To get access, ask your consortium's administrator for a binding code and "
                    "send /bind CODE here.")
        if channel == "wecom":
            return ("Your WeCom account is not in the consortium's staff directory yet, so you can only ask "
                    "policy questions. Please ask your administrator to add your WeCom userid to the directory.")
        return ("You are chatting as an unbound visitor, so you can only ask policy questions. Pick a staff "
                "identity (web chat: the list at the top; terminal: yilian chat --as STAFF_CODE) to try the rest.")
    if channel == "telegram":
        return ("您尚未绑定医联体人员身份，目前只能咨询政策问题。\n"
                "如需使用转诊、提醒等功能，请向本医联体管理员索取绑定码，然后在这里发送：/bind 绑定码")
    if channel == "wecom":
        return ("您的企业微信账号尚未登记在医联体人员名录中，目前只能咨询政策问题。\n"
                "如需使用转诊、提醒等功能，请联系本医联体管理员，将您的企业微信账号（userid）添加到人员名录。")
    return ("您当前是未绑定的访客，只能咨询政策问题。\n"
            "如需体验转诊等功能，请选择一个示例人员身份（网页：页面顶部的身份列表；终端：yilian chat --as 人员代码）。")


__all__ = ["GUEST_PREFIX", "Identity", "access_guidance", "resolve", "resolve_staff"]
