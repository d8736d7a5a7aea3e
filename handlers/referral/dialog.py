"""``/refer`` / ``转诊``: the referral wizard, from direction to submission.

Steps (each validated, re-asked with a reason on bad input; ``上一步``/``返回`` goes back one step,
``取消`` leaves): direction → urgency (an emergency upward referral is told to call the receiving
hospital first) → green channel (urgent and emergency only) → patient name, sex, age or birth date,
ID number (optional, checksum checked), phone (optional), home area (downward only, optional) →
preliminary diagnosis → history and treatment → reason (the consortium's criteria for that
direction, or free text) → receiving institution (suggested from the directory; a typed part of a
name offers the matches as buttons) → department (optional) → attachments (optional) → summary,
where the physician submits, edits any field, or cancels.

The dialog only collects and checks; ``handlers.referral.service.submit`` makes the record and
notifies the receiving side. Everything typed lives in the dialog's database row between
messages, so a restart or another worker continues where the physician was.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from handlers.dialogs.base import Abort, ChoiceStep, Dialog, OpenChoiceStep, Option, Reask, Step, TextStep, Turn, Update
from handlers.messages import Choice, Reply
from handlers.referral import rules as R
from handlers.referral import service
from handlers.texts import pick
from storage import access
from storage import referrals as store
from storage.models import Institution

UP, DOWN = R.UP, R.DOWN
SKIP_WORDS = frozenset({"跳过", "无", "没有", "不填", "略", "skip", "none", "no", "-"})
BACK_WORDS = frozenset({"上一步", "返回", "返回上一步", "back", "previous"})
DONE_WORDS = frozenset({"完成", "好了", "没有了", "不用", "done", "finish", "no more"}) | SKIP_WORDS
MAX_ATTACHMENTS = 5
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
ATTACHMENT_SUFFIXES = (".pdf", ".jpg", ".jpeg", ".png", ".heic", ".webp", ".gif", ".bmp", ".tif", ".tiff")
NAV_HINT = ("（发送“上一步”返回，“取消”退出）", "(send \"back\" for the previous step, \"cancel\" to stop)")


def _rules(turn: Turn) -> R.ReferralRules:
    path = getattr(turn.settings, "referral_rules", None)
    return R.rules_for(str(path) if path else None)


def _skippable(answer: str) -> bool:
    return answer.strip().lower().strip("。.！!") in SKIP_WORDS


# ------------------------------------------------------------------------------------------------
# validation of typed answers (pure functions of the text)

_NAME_RE = re.compile(r"^[\u4e00-\u9fff·•]{2,10}$|^[A-Za-z][A-Za-z .'-]{1,39}$")
_MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
_LANDLINE_RE = re.compile(r"^0\d{2,3}-?\d{7,8}$")
_DATE_RE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?$|^(\d{4})(\d{2})(\d{2})$")
_AGE_RE = re.compile(r"^(\d{1,3})\s*(?:岁|周岁|y|yrs?|years?)?$", re.IGNORECASE)
_MONTHS_RE = re.compile(r"^(\d{1,2})\s*(?:个月|月龄|months?)$", re.IGNORECASE)


def _validate_name(turn: Turn, _d: dict[str, Any], text: str) -> str:
    name = re.sub(r"\s+", " ", text.strip())
    if not _NAME_RE.match(name):
        raise Reask(turn.t("请输入患者姓名（2–10 个汉字，或英文姓名），不要包含数字或符号。",
                           "Please type the patient's name (letters only, no digits or symbols)."))
    return name


def parse_age(text: str, today: date) -> dict[str, Any] | None:
    """``{"age": 45}``, ``{"age": 0}`` for months, or ``{"age": 45, "birth": "1980-03-07"}``."""
    text = text.strip().replace(" ", "")
    m = _AGE_RE.match(text)
    if m:
        age = int(m.group(1))
        return {"age": age} if 0 <= age <= 120 else None
    if _MONTHS_RE.match(text):
        return {"age": 0}
    m = _DATE_RE.match(text)
    if m:
        y, mo, d = (m.group(1), m.group(2), m.group(3)) if m.group(1) else (m.group(4), m.group(5), m.group(6))
        try:
            born = date(int(y), int(mo), int(d))
        except ValueError:
            return None
        if not date(1880, 1, 1) <= born <= today:
            return None
        return {"age": R.age_on(born, today), "birth": born.isoformat()}
    return None


def _validate_age(turn: Turn, _d: dict[str, Any], text: str) -> dict[str, Any]:
    value = parse_age(text, turn.now.date())
    if value is None:
        raise Reask(turn.t("请输入年龄（如 45 或 45岁；婴儿可写 8个月）或出生日期（如 1980-03-07）。",
                           "Please type the age (e.g. 45) or the birth date (e.g. 1980-03-07)."))
    return value


def _validate_id(turn: Turn, data: dict[str, Any], text: str) -> str:
    if _skippable(text):
        return ""
    value = re.sub(r"\s+", "", text).upper()
    if not R.valid_id_number(value, today=turn.now.date()):
        raise Reask(turn.t("身份证号无效：需为 18 位，出生日期和最后一位校验码要正确。请核对后重新输入，或发送“跳过”。",
                           "That ID number is not valid (18 characters with a correct birth date and check "
                           "digit). Please check it, or send \"skip\"."))
    sex = data.get("sex")
    if sex in ("男", "女") and R.sex_of_id(value) != sex:
        raise Reask(turn.t(f"身份证号显示的性别与所选性别（{sex}）不一致，请核对后重新输入，或发送“跳过”。",
                           f"The ID number's sex does not match the sex chosen ({sex}); please check it, or send \"skip\"."))
    return value


def _validate_phone(turn: Turn, _d: dict[str, Any], text: str) -> str:
    if _skippable(text):
        return ""
    value = re.sub(r"[\s()（）]", "", text).removeprefix("+86")
    if not (_MOBILE_RE.match(value) or _LANDLINE_RE.match(value)):
        raise Reask(turn.t("电话号码格式不对：手机号为 11 位（如 13912345678），座机请带区号（如 0838-2412345）。"
                           "也可发送“跳过”。",
                           "That phone number does not look right: 11-digit mobile, or a landline with its area "
                           "code. Or send \"skip\"."))
    return value


def _validate_area(turn: Turn, _d: dict[str, Any], text: str) -> str:
    if _skippable(text):
        return ""
    value = text.strip()
    if len(value) > 50:
        raise Reask(turn.t("请简短填写患者居住的乡镇、街道或社区（50 字以内），或发送“跳过”。",
                           "Please keep the home area short (under 50 characters), or send \"skip\"."))
    return value


def _text_validator(min_chars: int, max_chars: int, what: tuple[str, str], *, allow_none: bool = False):
    def validate(turn: Turn, _d: dict[str, Any], text: str) -> str:
        value = text.strip()
        if allow_none and _skippable(value):
            return turn.t("无", "none")
        if len(value) < min_chars:
            raise Reask(turn.t(f"请填写{what[0]}（至少 {min_chars} 个字）。", f"Please describe the {what[1]}."))
        if len(value) > max_chars:
            raise Reask(turn.t(f"{what[0]}太长了，请控制在 {max_chars} 字以内。",
                               f"The {what[1]} is too long; please keep it under {max_chars} characters."))
        return value

    return validate


# ------------------------------------------------------------------------------------------------
# options


def direction_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [
        Option(UP, turn.t("上转（转往上级医院）", "Upward (to a higher-level hospital)"),
               aliases=("上转", "向上转诊", "上级", "up", "upward", "上")),
        Option(DOWN, turn.t("下转（转往下级/基层机构）", "Downward (to a lower-level or primary-care institution)"),
               aliases=("下转", "向下转诊", "下级", "基层", "down", "downward", "下")),
    ]


def urgency_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [
        Option("routine", turn.t("普通", "Routine"), aliases=("一般", "常规", "routine", "normal")),
        Option("urgent", turn.t("加急", "Urgent"), aliases=("紧急", "急", "urgent")),
        Option("emergency", turn.t("急诊（急危重症）", "Emergency"), aliases=("急诊", "急危重症", "危重", "emergency")),
    ]


def yes_no(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [Option("yes", turn.t("是，申请绿色通道", "Yes, request it"), aliases=("是", "要", "申请", "yes", "y")),
            Option("no", turn.t("否", "No"), aliases=("不", "不用", "不要", "no", "n"))]


def sex_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [Option("男", turn.t("男", "Male"), aliases=("男性", "male", "m")),
            Option("女", turn.t("女", "Female"), aliases=("女性", "female", "f"))]


def reason_options(turn: Turn, data: dict[str, Any]) -> list[Option]:
    english = turn.english
    return [Option(c.code, c.en if english else c.zh) for c in _rules(turn).criteria(data.get("direction", UP))]


def _candidates(turn: Turn) -> list[Institution]:
    staff = turn.identity.staff
    assert staff is not None
    rules = _rules(turn)
    return [i for i in store.institutions_of(turn.session, staff.institution.consortium_id)
            if i.id != staff.institution_id and R.receives(i, rules)]


def receiver_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [Option(str(i.id), i.name) for i in _candidates(turn)]


def likely_receivers(turn: Turn, data: dict[str, Any]) -> list[Institution]:
    """Upward: the lead and higher-level members of the consortium, highest first. Downward:
    members in the patient's home area first, then lower-level members under the sender."""
    staff = turn.identity.staff
    assert staff is not None
    mine = staff.institution
    my_rank = R.LEVEL_RANK.get(mine.level)
    others = _candidates(turn)
    rank = lambda i: R.LEVEL_RANK.get(i.level, -1)  # noqa: E731
    if data.get("direction") == UP:
        picked = [i for i in others if i.is_lead or (my_rank is not None and rank(i) > my_rank)]
        picked.sort(key=lambda i: (not i.is_lead, -rank(i), i.id))
        return picked
    picked = [i for i in others if my_rank is not None and -1 < rank(i) < my_rank]
    area = (data.get("area") or "").strip()
    words = [w for w in re.split(r"[\s,，、]+", area) if len(w) >= 2]
    cores = [w.rstrip("镇乡街道社区村") for w in words]

    def in_area(i: Institution) -> bool:
        return any(w in i.name for w in words) or any(len(c) >= 2 and c in i.name for c in cores)

    home = [i for i in others if area and in_area(i)]
    rest = [i for i in picked if i not in home]
    rest.sort(key=lambda i: (i.parent_id != mine.id, -rank(i), i.id))
    return home + rest


def featured_receivers(turn: Turn, data: dict[str, Any]) -> list[Option]:
    picked = likely_receivers(turn, data) or _candidates(turn)
    return [Option(str(i.id), i.name) for i in picked]


def _receiver(turn: Turn, data: dict[str, Any]) -> Institution | None:
    return turn.session.get(Institution, int(data["to"])) if data.get("to") else None


def department_options(turn: Turn, data: dict[str, Any]) -> list[Option]:
    receiver = _receiver(turn, data)
    depts = list(receiver.departments or []) if receiver is not None else []
    return [Option("", turn.t("不指定科室", "No particular department"), aliases=("不指定", "跳过", "skip", "none")),
            *(Option(d, d) for d in depts)]


# ------------------------------------------------------------------------------------------------
# questions


def _receiver_question(turn: Turn, data: dict[str, Any]) -> str:
    staff = turn.identity.staff
    assert staff is not None
    consortium = staff.institution.consortium.name
    mine = staff.institution.name
    up = data.get("direction") == UP
    if not likely_receivers(turn, data):
        if up:
            return turn.t(f"{mine}已是{consortium}内级别最高的医院，医联体内没有可上转的上级医院。"
                          "如仍需登记，请从下列成员机构中选择，或输入机构名称（可只输入一部分）：",
                          f"{mine} is already the highest-level hospital in {consortium}. To register anyway, "
                          "choose a member below or type (part of) its name:")
        return turn.t(f"{consortium}内没有比{mine}级别更低的机构。如仍需登记，请从下列成员机构中选择，或输入机构名称：",
                      f"{consortium} has no institution below {mine}. To register anyway, choose a member below or "
                      "type its name:")
    if up:
        return turn.t(f"请选择接收机构（{consortium}内的上级医院），或输入机构名称（可只输入一部分）：",
                      f"Choose the receiving institution (a higher-level hospital in {consortium}), or type (part "
                      "of) its name:")
    return turn.t(f"请选择接收机构（{consortium}内的下级或基层机构，患者居住地附近的排在前面），或输入机构名称：",
                  f"Choose the receiving institution (a lower-level member of {consortium}; those near the "
                  "patient's home first), or type its name:")


def _urgency_question(turn: Turn, _d: dict[str, Any]) -> str:
    return turn.t("患者情况紧急吗？", "How urgent is it?")


def _lead_for(turn: Turn, data: dict[str, Any], step: str) -> str:
    """A warning put before the next question, depending on what was just answered."""
    if step == "green" and data.get("urgency") == "emergency" and data.get("direction") == UP:
        return service.emergency_warning(english=turn.english) + "\n\n"
    return ""


class AttachmentStep(Step):
    """Photos or PDFs of results, one or more messages; ``完成`` (or a button) goes on."""

    name = key = "attachments"

    def prompt(self, turn: Turn, data: dict[str, Any], dialog: str) -> Reply:
        got = data.get("_files") or []
        head = turn.t(f"已收到 {len(got)} 个附件。", f"{len(got)} file(s) received. ") if got else ""
        text = head + turn.t("附件（选填）：如有检查报告、影像或病历，可直接发送图片或 PDF（每个 10 MB 以内，最多 5 个）；"
                             "没有或已发完请点“完成”。",
                             "Send photos or PDFs of results if you have them (10 MB each, up to 5); "
                             "press \"Done\" when finished or if there are none.")
        from handlers.dialogs.base import encode_choice

        return Reply(f"{text}\n{pick(turn.hint, turn.english)}",
                     choices=(Choice(turn.t("完成", "Done"), encode_choice(dialog, self.name, "done")),))

    def parse(self, turn: Turn, data: dict[str, Any]) -> Any:
        if turn.attachments:
            files = list(data.get("_files") or [])
            notes = []
            for a in turn.attachments:
                name = a.file_name or "file"
                if len(files) >= MAX_ATTACHMENTS:
                    notes.append(turn.t(f"附件已达 {MAX_ATTACHMENTS} 个上限，“{name}”未保存。",
                                        f"Limit of {MAX_ATTACHMENTS} files reached; \"{name}\" was not kept."))
                    continue
                if not name.lower().endswith(ATTACHMENT_SUFFIXES):
                    notes.append(turn.t(f"“{name}”不是图片或 PDF，未保存。", f"\"{name}\" is not a photo or PDF; not kept."))
                    continue
                if len(a.data) > MAX_ATTACHMENT_BYTES:
                    notes.append(turn.t(f"“{name}”超过 10 MB，未保存。", f"\"{name}\" is over 10 MB; not kept."))
                    continue
                if not a.data:
                    notes.append(turn.t(f"“{name}”是空文件，未保存。", f"\"{name}\" is empty; not kept."))
                    continue
                row = store.add_draft_attachment(turn.session, f"{turn.channel}:{turn.user_key}", name, a.data,
                                                 a.mime_type)
                files.append([row.id, name])
            data["_files"] = files
            raise Reask("\n".join(notes) if notes else turn.t("已保存。", "Saved."))
        if turn.choice == "done" or turn.answer.lower() in DONE_WORDS:
            return "done"
        raise Reask(turn.t("请发送图片或 PDF 文件，或点“完成”继续。", "Please send a photo or PDF, or press \"Done\"."))


EDITABLE: tuple[tuple[str, str, str], ...] = (
    ("direction", "转诊方向", "direction"), ("urgency", "紧急程度", "urgency"), ("name", "患者姓名", "name"),
    ("sex", "性别", "sex"), ("age", "年龄/出生日期", "age"), ("id_number", "身份证号", "ID number"),
    ("phone", "联系电话", "phone"), ("diagnosis", "初步诊断", "diagnosis"), ("history", "病史及诊治经过", "history"),
    ("reason", "转诊理由", "reason"), ("to", "接收机构", "institution"), ("department", "接收科室", "department"),
    ("attachments", "附件", "attachments"),
)
#: Answers that depend on another: changing the key clears these too.
DEPENDENT = {"direction": ("reason", "to", "department", "area"), "to": ("department",), "urgency": ("green",)}


def edit_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [Option(key, turn.t(zh, en)) for key, zh, en in EDITABLE]


def confirm_options(turn: Turn, _data: dict[str, Any]) -> list[Option]:
    return [Option("submit", turn.t("提交", "Submit"), aliases=("确认", "确定", "提交", "submit", "confirm", "yes")),
            Option("edit", turn.t("修改", "Edit"), aliases=("修改", "更改", "edit", "change")),
            Option("cancel", turn.t("取消", "Cancel"), aliases=("放弃", "cancel"))]


class ReferralDialog(Dialog):
    name = "refer"
    title = ("转诊登记", "referral")
    restart_hint = ("（发送“转诊”或 /refer）", " (send /refer)")
    hint = NAV_HINT

    def __init__(self) -> None:
        super().__init__()
        t = lambda zh, en: (lambda turn, _d: turn.t(zh, en))  # noqa: E731
        self.steps = [
            ChoiceStep(name="direction", question=t("请选择转诊方向：", "Which direction is the referral?"),
                       options=direction_options, what=("转诊方向", "direction")),
            ChoiceStep(name="urgency", question=_urgency_question, options=urgency_options, what=("紧急程度", "urgency")),
            ChoiceStep(name="green", question=t("是否申请绿色通道（优先接诊、检查、住院）？",
                                                "Request the green channel (priority admission and examinations)?"),
                       options=yes_no, what=("选项", "option")),
            TextStep(name="name", question=t("请输入患者姓名：", "Patient's name?"), validate=_validate_name),
            ChoiceStep(name="sex", question=t("患者性别：", "Patient's sex?"), options=sex_options, what=("性别", "sex")),
            TextStep(name="age", question=t("患者年龄或出生日期（如 45 或 1980-03-07）：",
                                            "Patient's age or birth date (e.g. 45 or 1980-03-07)?"),
                     validate=_validate_age),
            TextStep(name="id_number", question=t("患者身份证号（选填，不填请发送“跳过”）：",
                                                  "Patient's ID number (optional; send \"skip\" to leave it out)?"),
                     validate=_validate_id),
            TextStep(name="phone", question=t("患者或家属联系电话（选填，不填请发送“跳过”）：",
                                              "Phone of the patient or family (optional; \"skip\")?"),
                     validate=_validate_phone),
            TextStep(name="area", question=t("患者居住的乡镇/街道/社区（选填，用于推荐就近的基层机构；不填请发送“跳过”）：",
                                             "Where does the patient live (town or community; optional, \"skip\")?"),
                     validate=_validate_area),
            TextStep(name="diagnosis", question=t("初步诊断：", "Preliminary diagnosis?"),
                     validate=_text_validator(2, 200, ("初步诊断", "diagnosis"))),
            TextStep(name="history", question=t("主要病史及诊治经过（没有可填“无”）：",
                                                "Main history and treatment so far (\"none\" if none)?"),
                     validate=_text_validator(2, 1000, ("病史及诊治经过", "history"), allow_none=True)),
            OpenChoiceStep(name="reason", question=t("转诊理由（点选，或直接输入）：", "Reason for the referral (choose or type)?"),
                           options=reason_options, what=("转诊理由", "reason"), min_chars=4),
            ChoiceStep(name="to", question=_receiver_question, options=receiver_options, featured=featured_receivers,
                       what=("接收机构", "institution"), max_buttons=6),
            OpenChoiceStep(name="department", question=t("接收科室（点选、输入，或“不指定”）：",
                                                         "Receiving department (choose, type, or none)?"),
                           options=department_options, what=("科室", "department"), max_buttons=8),
            AttachmentStep(),
            ChoiceStep(name="confirm", question=self._summary_question, options=confirm_options, what=("选项", "option")),
            ChoiceStep(name="edit", question=t("要修改哪一项？", "What would you like to change?"),
                       options=edit_options, what=("项目", "field"), max_buttons=13),
        ]

    # -- flow -------------------------------------------------------------------------------------

    def next_step(self, current: str | None, data: dict[str, Any]) -> str | None:
        if current == "confirm" and data.get("confirm") == "edit":
            data.pop("confirm", None)
            data.pop("confirm_label", None)
            return "edit"
        if current == "edit":
            field = data.pop("edit")
            data.pop("edit_label", None)
            for key in (field, *DEPENDENT.get(field, ())):
                data.pop(key, None)
                data.pop(f"{key}_label", None)
            data.pop("confirm", None)
        for s in self.steps:
            if s.key in data or s.name == "edit":
                continue
            if s.name == "green" and data.get("urgency") == "routine":
                data["green"] = "no"
                continue
            if s.name == "area" and data.get("direction") != DOWN:
                continue
            return s.name
        return None

    def advance(self, turn: Turn, step_name: str, data: dict[str, Any]) -> Update:
        answer = (turn.text or "").strip().lower()
        if turn.choice is None and not turn.attachments and answer in BACK_WORDS:
            return self._back(turn, step_name, data)
        if turn.attachments and step_name != "attachments":
            turn.attachments = ()
            turn.dialog, turn.hint = self.name, self.hint
            data = dict(data)
            turn.english = data.get("_lang") == "en"
            prompt = self.step(step_name).prompt(turn, data, self.name)
            return Update([Reply(turn.t("现在还不需要文件，附件会在后面的步骤中收集。", "No files are needed yet; "
                                        "attachments come at a later step.") + "\n\n" + prompt.text,
                                 choices=prompt.choices)], step_name, data)
        update = super().advance(turn, step_name, data)
        if update.step is not None and update.step != step_name:
            trail = list(update.data.get("_trail") or [])
            if step_name not in ("confirm", "edit"):
                trail.append(step_name)
            update.data["_trail"] = trail
            lead = _lead_for(turn, update.data, update.step)
            if lead and update.replies:
                last = update.replies[-1]
                update.replies[-1] = Reply(lead + last.text, choices=last.choices)
        return update

    def _back(self, turn: Turn, step_name: str, data: dict[str, Any]) -> Update:
        data = dict(data)
        turn.dialog, turn.hint = self.name, self.hint
        turn.english = data.get("_lang") == "en"
        trail = list(data.get("_trail") or [])
        if not trail:
            prompt = self.step(step_name).prompt(turn, data, self.name)
            return Update([Reply(turn.t("已经是第一步了。", "This is the first step.") + "\n\n" + prompt.text,
                                 choices=prompt.choices)], step_name, data)
        previous = trail.pop()
        data["_trail"] = trail
        step = self.step(previous)
        data.pop(step.key, None)
        data.pop(f"{step.key}_label", None)
        if previous == "urgency":
            data.pop("green", None)
        data.pop("confirm", None)
        return Update([step.prompt(turn, data, self.name)], previous, data)

    # -- behaviour --------------------------------------------------------------------------------

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
        data["_trail"] = ["direction"]

    def _summary_question(self, turn: Turn, data: dict[str, Any]) -> str:
        staff = turn.identity.staff
        assert staff is not None
        receiver = _receiver(turn, data)
        lines = []
        if data.get("urgency") == "emergency" and data.get("direction") == UP:
            lines.append(service.emergency_warning(english=turn.english, receiver=receiver))
        lines.append(turn.t("请核对转诊信息：", "Please check the referral:"))
        age = data.get("age") or {}
        age_text = turn.t(f"{age.get('age')}岁", f"{age.get('age')} y") + (f"（{age['birth']}）" if age.get("birth") else "")
        from storage.privacy import mask_id_number, mask_phone, scrub_text

        rows = [
            (turn.t("方向", "Direction"), data.get("direction_label", "")),
            (turn.t("紧急程度", "Urgency"), data.get("urgency_label", "") +
             (turn.t("，申请绿色通道", ", green channel") if data.get("green") == "yes" else "")),
            (turn.t("患者", "Patient"), f"{data.get('name', '')}，{data.get('sex', '')}，{age_text}"),
            (turn.t("身份证号", "ID number"), mask_id_number(data["id_number"]) if data.get("id_number") else turn.t("未填", "—")),
            (turn.t("联系电话", "Phone"), mask_phone(data["phone"]) if data.get("phone") else turn.t("未填", "—")),
            (turn.t("初步诊断", "Diagnosis"), scrub_text(data.get("diagnosis", ""))),
            (turn.t("病史及诊治经过", "History"), scrub_text(data.get("history", ""))),
            (turn.t("转诊理由", "Reason"), data.get("reason_label", "")),
            (turn.t("转出", "From"), f"{staff.institution.name}（{staff.name}）"),
            (turn.t("接收", "To"), (receiver.name if receiver else "") +
             (f" · {data['department']}" if data.get("department") else "")),
            (turn.t("附件", "Attachments"), "、".join(n for _, n in data.get("_files") or []) or turn.t("无", "none")),
        ]
        lines += [f"· {k}：{v}" for k, v in rows]
        if receiver is not None and R.level_conflict(data.get("direction", UP), staff.institution, receiver):
            direction = data.get("direction_label", "")
            lines.append(turn.t(f"提示：{receiver.name}（{receiver.level}）的级别与“{direction}”不一致，请确认方向或接收机构。",
                                f"Note: {receiver.name} ({receiver.level}) does not fit this direction; please check."))
        lines.append(turn.t("确认无误请点“提交”；需要更改请点“修改”。", "Press Submit to send it, or Edit to change something."))
        return "\n".join(lines)

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:
        if data.get("confirm") == "cancel":
            return [Reply(turn.t("已取消本次转诊登记，未提交给任何机构。", "Referral cancelled; nothing was sent."))]
        staff = turn.identity.staff
        assert staff is not None
        receiver = _receiver(turn, data)
        if receiver is None or receiver.consortium_id != staff.institution.consortium_id or \
                not R.receives(receiver, _rules(turn)):
            raise Reask(turn.t("接收机构已不可用，请重新选择。", "That institution can no longer receive referrals; choose again."),
                        step="to")
        reason = data.get("reason", "")
        age = data.get("age") or {}
        fields = dict(
            direction=data["direction"], to_institution_id=receiver.id, to_department=data.get("department") or None,
            patient_name=data["name"], patient_sex=data["sex"], patient_age=age.get("age"),
            patient_birth_date=age.get("birth"), patient_id_number=data.get("id_number") or None,
            patient_phone=data.get("phone") or None, patient_area=data.get("area") or None,
            diagnosis=data["diagnosis"], history=data["history"], reason=data.get("reason_label", ""),
            reason_code=None if reason.startswith("text:") else reason, urgency=data["urgency"],
            green_channel=data.get("green") == "yes",
        )
        done = service.submit(turn.session, turn.router, staff, fields, channel=turn.channel,
                              owner_key=f"{turn.channel}:{turn.user_key}",
                              attachment_ids=[int(i) for i, _ in data.get("_files") or []],
                              rules=_rules(turn), now=turn.now)
        r = done.referral
        lines = []
        if r.urgency == "emergency" and r.direction == UP:
            lines.append(service.emergency_warning(r, english=turn.english))
        lines.append(turn.t(f"转诊已提交，单号 {r.number}。", f"Referral submitted: {r.number}."))
        who = "、".join(s.name for s in done.recipients)
        if not done.recipients:
            lines.append(turn.t(f"{receiver.name}暂无联络员或管理员登记在系统中，无法通知对方；请电话联系该院，并告知本院管理员。",
                                f"{receiver.name} has no liaison officer or admin on file, so nobody could be notified; "
                                "please phone them and tell your admin."))
        elif done.via_liaison:
            lines.append(turn.t(f"已通知{receiver.name}联络员：{who}。", f"Notified at {receiver.name}: {who}."))
        else:
            lines.append(turn.t(f"{receiver.name}没有登记联络员，已转给管理员：{who}。",
                                f"{receiver.name} has no liaison officer on file; sent to its admin: {who}."))
        if done.recipients and len(done.delivery.unreached) == len(done.recipients):
            lines.append(turn.t("对方暂未绑定企业微信或 Telegram，通知已放入其网页消息中心；紧急情况请电话联系。",
                                "They have no chat account linked; the notice is in their web inbox. Phone them if it is urgent."))
        lines.append(turn.t("对方接收或拒绝后会通知您；发送“我的转诊”查看进度。",
                            "You will be told when they accept or reject it; send \"my referrals\" to follow it."))
        return [Reply("\n".join(lines), choices=(Choice(turn.t("查看转诊", "View referral"),
                                                        service.encode_action("view", r.id)),))]


class RejectDialog(Dialog):
    """Pressing 拒绝 on a referral: ask the reason (required), then reject it."""

    name = "reject"
    title = ("拒绝转诊", "rejection")

    def __init__(self) -> None:
        super().__init__()
        self.steps = [OpenChoiceStep(
            name="reason", question=lambda turn, d: turn.t(f"请说明拒绝转诊 {d.get('number', '')} 的理由（点选或直接输入）：",
                                                           f"Why do you reject {d.get('number', '')}? (choose or type)"),
            options=lambda turn, _d: [Option(v, v) for v in ("床位已满", "超出本院诊疗范围", "所需设备或专科暂不具备",
                                                             "资料不全，请补充后再转", "建议转往其他医院")],
            what=("理由", "reason"), min_chars=2)]

    def prefill(self, turn: Turn, arg: str, data: dict[str, Any]) -> None:
        r = store.get(turn.session, int(arg)) if arg.isdigit() else None
        if r is None:
            raise Abort(turn.t("没有找到这条转诊。", "Referral not found."))
        if not R.may_act(turn.identity.staff, r, "reject"):
            raise Abort(turn.t("抱歉，只有接收机构的联络员或管理员可以处理这条转诊。",
                               "Sorry, only the receiving institution's liaison officers or admins can handle it."))
        if R.next_status(r.status, "reject") is None:
            raise Abort(service.handled_by_text(r, turn.english))
        data["id"] = r.id
        data["number"] = r.number

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:
        staff = turn.identity.staff
        assert staff is not None
        r = store.get(turn.session, int(data["id"]))
        assert r is not None
        try:
            service.act(turn.session, turn.router, staff, r, "reject", channel=turn.channel,
                        note=data.get("reason_label") or data.get("reason"), now=turn.now)
        except (service.NotAllowed, store.StaleTransition):
            return [Reply(service.handled_by_text(r, turn.english))]
        return [Reply(turn.t(f"已拒绝转诊 {r.number}，理由：{r.reject_reason}。已通知转诊医生。",
                             f"Referral {r.number} rejected ({r.reject_reason}); the referring physician was told."))]
