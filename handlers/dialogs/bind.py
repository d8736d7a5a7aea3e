"""``/bind``: link a Telegram account to a staff member with a one-time code from an admin.

``/bind ABCD2345`` binds at once; ``/bind`` alone asks for the code. A mistyped code (wrong
shape, or no such code) is asked again; an expired or already used code ends the dialog with its
own explanation, since typing it again cannot help. Redeeming is audited by the repository
(``bind`` / ``bind.failed``).
"""

from __future__ import annotations

from typing import Any

from handlers.dialogs.base import Abort, Dialog, Reask, TextStep, Turn
from handlers.messages import Choice, Reply
from storage import repositories as repo
from storage.repositories import INVITE_ALPHABET, INVITE_LENGTH, RedeemError

# Our own wording (the repository's says 邀请码; users are told "绑定码" everywhere in the chat).
REDEEM_MESSAGES_ZH: dict[RedeemError, str] = {
    RedeemError.UNKNOWN: "绑定码无效：没有找到这个绑定码。请核对后重新发送，或联系管理员重新获取。",
    RedeemError.EXPIRED: "绑定码已过期，请联系管理员重新生成。",
    RedeemError.USED: "该绑定码已被使用过，每个绑定码只能使用一次。如需重新绑定，请联系管理员。",
    RedeemError.TELEGRAM_ID_TAKEN: "您的 Telegram 账号已绑定到其他人员，无法重复绑定。如有疑问请联系管理员。",
    RedeemError.STAFF_INACTIVE: "该绑定码对应的人员已停用，请联系管理员。",
}
REDEEM_MESSAGES_EN: dict[RedeemError, str] = {
    RedeemError.UNKNOWN: "This code is not valid. Please check it and send it again, or ask your administrator "
                         "for a new one.",
    RedeemError.EXPIRED: "This code has expired. Please ask your administrator for a new one.",
    RedeemError.USED: "This code has already been used; each code works only once. Ask your administrator if "
                      "you need to bind again.",
    RedeemError.TELEGRAM_ID_TAKEN: "Your Telegram account is already bound to another staff member. "
                                   "Please contact your administrator.",
    RedeemError.STAFF_INACTIVE: "The staff member this code was issued for has been deactivated. "
                                "Please contact your administrator.",
}


def _check_shape(turn: Turn, _data: dict[str, Any], answer: str) -> str:
    code = repo.normalize_invite_code(answer)
    if len(code) != INVITE_LENGTH or any(ch not in INVITE_ALPHABET for ch in code):
        raise Reask(turn.t(
            f"“{answer[:30]}”不是有效的绑定码格式。绑定码由 {INVITE_LENGTH} 位大写字母和数字组成，例如 ABCD2345"
            "（不含 0、O、1、I、L，大小写均可）。",
            f"\"{answer[:30]}\" does not look like a binding code. A code has {INVITE_LENGTH} letters and digits, "
            "e.g. ABCD2345 (no 0, O, 1, I or L; case does not matter).",
        ))
    return code


class BindDialog(Dialog):
    name = "bind"
    title = ("绑定", "binding")
    restart_hint = ("（发送 /bind）", " (send /bind)")

    def __init__(self) -> None:
        self.steps = [
            TextStep(
                name="code",
                question=lambda turn, _d: turn.t(
                    "请发送管理员给您的绑定码（8 位字母和数字，例如 ABCD2345）。",
                    "Please send the binding code your administrator gave you (8 letters and digits, e.g. ABCD2345).",
                ),
                validate=_check_shape,
            )
        ]

    def allowed(self, turn: Turn) -> str | None:
        channel = turn.identity.channel
        if channel == "wecom":
            return turn.t(
                "企业微信用户无需绑定：您的身份由企业微信账号识别。如果系统不认识您，请联系管理员将您的"
                "企业微信账号（userid）添加到人员名录。",
                "WeCom users do not need to bind: you are recognised by your WeCom account. If I do not "
                "know you, ask your administrator to add your WeCom userid to the staff directory.",
            )
        if channel != "telegram":
            return turn.t(
                "绑定码用于 Telegram 账号。在网页聊天或终端中，请直接选择一个人员身份。",
                "Binding codes are for Telegram accounts. In the web chat or terminal, pick a staff identity instead.",
            )
        staff = turn.identity.staff
        if staff is not None:
            return turn.t(
                f"您已绑定为 {staff.name}（{staff.institution.name}，{staff.roles_zh}），无需重复绑定。"
                "如需更换绑定，请联系管理员。",
                f"You are already bound as {staff.name} ({staff.institution.name}). To change it, contact your "
                "administrator.",
            )
        return None

    def prefill(self, turn: Turn, arg: str, data: dict[str, Any]) -> None:
        data["code"] = _check_shape(turn, data, arg)

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:
        result = repo.redeem_invite(turn.session, data["code"], int(turn.identity.user_key), now=turn.now)
        if result.error is not None:
            message = (REDEEM_MESSAGES_EN if turn.english else REDEEM_MESSAGES_ZH)[result.error]
            if result.error == RedeemError.UNKNOWN:  # perhaps mistyped: let them try again
                raise Reask(message)
            raise Abort(message)
        staff = result.staff
        assert staff is not None
        text = turn.t(
            f"{result.message_zh}\n现在您可以咨询政策、发起转诊登记和查看提醒。发送“帮助”查看全部功能。",
            f"Bound: {staff.name} ({staff.institution.name}). You can now ask policy questions, start referrals "
            "and see reminders. Send \"help\" to see everything.",
        )
        return [Reply(text, choices=(Choice(turn.t("查看功能菜单", "Show menu"), "/help"),))]
