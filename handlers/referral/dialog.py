"""``/refer`` / ``转诊``: the entry of the referral wizard.

This release collects the direction (上转 / 下转) and the receiving institution (from the directory
of the user's own consortium; buttons for the likely ones, any member typed by name), then says
plainly that submitting referral forms comes in the next release and shows what was captured and
whom to contact. The later wizard extends ``ReferralDialog``: append steps (patient, diagnosis,
reason, department, …) to ``steps`` and replace ``finish`` with the real submission.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers.dialogs.base import ChoiceStep, Dialog, Option, Turn
from handlers.messages import Choice, Reply
from storage import access
from storage import repositories as repo
from storage.models import ROLE_LIAISON, Institution

UP, DOWN = "up", "down"
#: Rough order of care levels for suggesting receivers; 专科 (specialist) has no place in it.
LEVEL_RANK = {"三级": 3, "二级": 2, "一级": 1, "基层": 0}


def direction_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [
        Option(UP, turn.t("上转（转往上级医院）", "Upward (to a higher-level hospital)"),
               aliases=("上转", "向上转诊", "上级", "up", "upward", "上")),
        Option(DOWN, turn.t("下转（转往下级/基层机构）", "Downward (to a lower-level or primary-care institution)"),
               aliases=("下转", "向下转诊", "下级", "基层", "down", "downward", "下")),
    ]


def _consortium_institutions(turn: Turn) -> list[Institution]:
    staff = turn.identity.staff
    assert staff is not None
    rows = turn.session.scalars(
        select(Institution).where(Institution.consortium_id == staff.consortium_id).order_by(Institution.id)
    ).unique()
    return [i for i in rows if i.id != staff.institution_id]


def _label(inst: Institution) -> str:
    return inst.name


def receiver_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [Option(str(i.id), _label(i), aliases=(i.name,)) for i in _consortium_institutions(turn)]


def _likely_receivers(turn: Turn, data: dict[str, Any]) -> list[Institution]:
    """Higher levels (lead first) for 上转, lower levels (own members first) for 下转."""
    staff = turn.identity.staff
    assert staff is not None
    mine = staff.institution
    my_rank = LEVEL_RANK.get(mine.level)
    others = _consortium_institutions(turn)
    if data.get("direction") == UP:
        picked = [i for i in others if i.is_lead or (my_rank is not None and LEVEL_RANK.get(i.level, -1) > my_rank)]
        picked.sort(key=lambda i: (not i.is_lead, -LEVEL_RANK.get(i.level, -1), i.id))
    else:
        picked = [i for i in others if my_rank is not None and -1 < LEVEL_RANK.get(i.level, -1) < my_rank]
        picked.sort(key=lambda i: (i.parent_id != mine.id, -LEVEL_RANK.get(i.level, -1), i.id))
    return picked


def featured_receivers(turn: Turn, data: dict[str, Any]) -> list[Option]:
    """The likely receivers for the chosen direction; every member when there are none."""
    picked = _likely_receivers(turn, data) or _consortium_institutions(turn)
    return [Option(str(i.id), _label(i), aliases=(i.name,)) for i in picked]


def _receiver_question(turn: Turn, data: dict[str, Any]) -> str:
    staff = turn.identity.staff
    assert staff is not None
    consortium = staff.institution.consortium.name
    mine = staff.institution.name
    up = data.get("direction") == UP
    if not _likely_receivers(turn, data):
        # say so plainly instead of offering "higher-level" hospitals that are not higher
        if up:
            return turn.t(
                f"{mine}已是{consortium}内级别最高的医院，医联体内没有可上转的上级医院。"
                "如仍需登记，请从下列成员机构中选择，或直接输入机构名称：",
                f"{mine} is already the highest-level hospital in {consortium}; there is no higher-level "
                "hospital to refer to. To register anyway, choose a member below or type its name:",
            )
        return turn.t(
            f"{consortium}内没有比{mine}级别更低的机构。如仍需登记，请从下列成员机构中选择，或直接输入机构名称：",
            f"{consortium} has no institution below {mine}. To register anyway, choose a member below or type its name:",
        )
    if up:
        return turn.t(f"请选择接收机构（{consortium}内的上级医院），或直接输入机构名称：",
                      f"Choose the receiving institution (a higher-level hospital in {consortium}), or type its name:")
    return turn.t(f"请选择接收机构（{consortium}内的下级或基层机构），或直接输入机构名称：",
                  f"Choose the receiving institution (a lower-level member of {consortium}), or type its name:")


class ReferralDialog(Dialog):
    name = "refer"
    title = ("转诊登记", "referral")
    restart_hint = ("（发送“转诊”或 /refer）", " (send /refer)")

    def __init__(self) -> None:
        self.steps = [
            ChoiceStep(
                name="direction",
                question=lambda turn, _d: turn.t("请选择转诊方向：", "Which direction is the referral?"),
                options=direction_options,
                what=("转诊方向", "direction"),
            ),
            ChoiceStep(
                name="to",
                question=_receiver_question,
                options=receiver_options,
                featured=featured_receivers,
                what=("接收机构", "institution"),
            ),
        ]

    def allowed(self, turn: Turn) -> str | None:
        if not access.can_create_referral(turn.identity.staff):
            return turn.t(access.DENIED_CREATE_REFERRAL_ZH,
                          "Sorry, only bound physicians and liaison officers can start a referral.")
        return None

    def prefill(self, turn: Turn, arg: str, data: dict[str, Any]) -> None:
        """``/refer 上转`` chooses the direction at once."""
        turn.text = arg
        option = self.step("direction").parse(turn, data)
        data["direction"] = option.value
        data["direction_label"] = option.label

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:
        staff = turn.identity.staff
        assert staff is not None
        receiver = turn.session.get(Institution, int(data["to"]))
        mine = staff.institution
        up = data["direction"] == UP
        direction = turn.t("上转" if up else "下转", "upward" if up else "downward")
        lines = [
            turn.t("已记录您的转诊意向：", "Here is what you entered:"),
            turn.t(f"· 方向：{direction}", f"· Direction: {direction}"),
            turn.t(f"· 转出机构：{mine.name}（{mine.level}）", f"· From: {mine.name} ({mine.level})"),
            turn.t(f"· 接收机构：{receiver.name}（{receiver.level}）", f"· To: {receiver.name} ({receiver.level})"),
        ]
        my_rank, their_rank = LEVEL_RANK.get(mine.level), LEVEL_RANK.get(receiver.level)
        if my_rank is not None and their_rank is not None and (
            (up and their_rank < my_rank) or (not up and their_rank > my_rank)
        ):
            lines.append(turn.t(
                f"提示：{receiver.name}的级别（{receiver.level}）与“{direction}”不一致，请确认转诊方向。",
                f"Note: {receiver.name} ({receiver.level}) does not match an {direction} referral; please check.",
            ))
        liaisons = repo.list_staff(turn.session, institution_id=receiver.id, role=ROLE_LIAISON)
        if liaisons:
            names = "、".join(f"{s.name}（{s.department}）" if s.department else s.name for s in liaisons)
            lines.append(turn.t(f"· 接收机构联络员：{names}", f"· Liaison at the receiving institution: {names}"))
        lines.append("")
        lines.append(turn.t(
            "在线填写和提交转诊单（患者信息、初步诊断、转诊理由等）将在下一版本上线。本次信息没有提交给接收机构，"
            "也不会保存；目前请按本院流程办理转诊，或联系本院联络员。\n"
            "需要了解转诊政策时，可以直接问我，例如“上转患者享受哪些优先服务？”",
            "Filling in and submitting referral forms (patient, preliminary diagnosis, reason, …) comes in the next "
            "release. Nothing was sent to the receiving institution or stored; for now please follow your "
            "hospital's procedure or contact your liaison officer.\n"
            "You can ask me about the referral policies at any time, e.g. \"What priority do referred patients get?\"",
        ))
        return [Reply("\n".join(lines), choices=(Choice(turn.t("转诊政策", "Referral policy"), "/ask 双向转诊的流程和要求"),
                                                 Choice(turn.t("功能菜单", "Menu"), "/help")))]
