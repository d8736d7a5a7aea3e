"""What happens to a referral: submission, the receiving side's answers, escalation, and how a
referral is shown to each person.

Every function takes the open session (and a ``ChannelRouter`` for notifications) and works in
the caller's transaction: the state change, its event, its audit row and the notifications it
causes commit together. Who may do what is asked of ``rules.may_act``; what the next status is,
of ``rules.TRANSITIONS``.

Notification buttons carry ``r:<action>:<referral id>`` (``encode_action``). They need no stored
state, so they stay valid across restarts; they act once, because a transition is conditional on
the status the referral had (``storage.referrals.apply_transition``): a second press, or a press
by a colleague, is told who handled it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from handlers.messages import Choice, Outgoing, Reply
from handlers.notifications import ChannelRouter, Delivery, names, notify
from handlers.referral import rules as R
from handlers.texts import tr
from storage import referrals as store
from storage import repositories as repo
from storage.models import Institution, Referral, Staff
from storage.privacy import mask_id_number, mask_phone, scrub_text

ACTION_PREFIX = "r:"


def encode_action(action: str, referral_id: int) -> str:
    return f"{ACTION_PREFIX}{action}:{referral_id}"


def decode_action(value: str) -> tuple[str, int] | None:
    if not value.startswith(ACTION_PREFIX):
        return None
    action, _, ident = value[len(ACTION_PREFIX):].partition(":")
    if not ident.isdigit():
        return None
    return action, int(ident)


def status_label(status: str, english: bool = False) -> str:
    return tr(english, *R.STATUS_LABELS.get(status, (status, status)))


def _pair(table: dict[str, tuple[str, str]], key: str, english: bool) -> str:
    return tr(english, *table.get(key, (key, key)))


# ------------------------------------------------------------------------------------------------
# how a referral reads


def patient_line(r: Referral, english: bool = False, *, full_name: bool = False) -> str:
    name = r.patient_name if full_name else R.mask_name(r.patient_name)
    age = tr(english, f"{r.patient_age}岁", f"{r.patient_age} y") if r.patient_age is not None else ""
    return "，".join(p for p in (name, r.patient_sex, age) if p) if not english else \
        ", ".join(p for p in (name, {"男": "male", "女": "female"}.get(r.patient_sex, r.patient_sex), age) if p)


def reason_text(r: Referral) -> str:
    return scrub_text(r.reason)


def summary(r: Referral, english: bool = False, *, full_name: bool = False) -> list[str]:
    """The lines every party reads: number, direction, ends, patient (masked), urgency, reason."""
    t = lambda zh, en: tr(english, zh, en)  # noqa: E731
    to = r.to_institution.name + (f" · {r.to_department}" if r.to_department else "")
    urgency = _pair(R.URGENCY_LABELS, r.urgency, english) + (t("（申请绿色通道）", " (green channel requested)")
                                                             if r.green_channel else "")
    lines = [
        t(f"转诊单号：{r.number}（{status_label(r.status)}）", f"Referral {r.number} ({status_label(r.status, True)})"),
        t(f"方向：{_pair(R.DIRECTION_LABELS, r.direction, False)}", f"Direction: {_pair(R.DIRECTION_LABELS, r.direction, True)}"),
        t(f"转出：{r.from_institution.name}" + (f" · {r.sender_department}" if r.sender_department else "")
          + f"（{r.sender.name}）", f"From: {r.from_institution.name} ({r.sender.name})"),
        t(f"接收：{to}", f"To: {to}"),
        t(f"患者：{patient_line(r, False, full_name=full_name)}", f"Patient: {patient_line(r, True, full_name=full_name)}"),
        t(f"初步诊断：{scrub_text(r.diagnosis)}", f"Preliminary diagnosis: {scrub_text(r.diagnosis)}"),
        t(f"转诊理由：{reason_text(r)}", f"Reason: {reason_text(r)}"),
        t(f"紧急程度：{urgency}", f"Urgency: {urgency}"),
    ]
    return lines


def detail(r: Referral, english: bool = False) -> list[str]:
    """The full record for someone allowed to see it (identifiers still masked)."""
    t = lambda zh, en: tr(english, zh, en)  # noqa: E731
    lines = summary(r, english, full_name=True)
    if r.patient_birth_date:
        lines.append(t(f"出生日期：{r.patient_birth_date}", f"Born: {r.patient_birth_date}"))
    if r.patient_id_number:
        lines.append(t(f"身份证号：{mask_id_number(r.patient_id_number)}", f"ID number: {mask_id_number(r.patient_id_number)}"))
    if r.patient_phone:
        lines.append(t(f"联系电话：{mask_phone(r.patient_phone)}", f"Phone: {mask_phone(r.patient_phone)}"))
    history = scrub_text(r.history)  # an ID number or phone typed into free text is masked too
    lines.append(t(f"病史及诊治经过：{history}", f"History and treatment: {history}"))
    if r.attachments:
        lines.append(t("附件：", "Attachments: ") + "、".join(a.file_name for a in r.attachments))
    if r.reject_reason:
        reason = scrub_text(r.reject_reason)
        lines.append(t(f"拒绝理由：{reason}", f"Reason for rejection: {reason}"))
    lines.append(t("进度：", "Timeline:"))
    for e in r.events:
        when = e.at.astimezone().strftime("%m-%d %H:%M")
        note = f"（{e.note}）" if e.note else ""
        lines.append(f"· {when} {status_label(e.to_status, english)} — {e.actor}{note}")
    return lines


def action_choices(staff: Staff | None, r: Referral, english: bool = False) -> tuple[Choice, ...]:
    return tuple(Choice(_pair(R.ACTION_LABELS, a, english), encode_action(a, r.id)) for a in R.actions_for(staff, r))


def emergency_warning(r: Referral | None = None, *, english: bool = False, receiver: Institution | None = None) -> str:
    name = (r.to_institution.name if r is not None else receiver.name if receiver is not None else "")
    return tr(english,
              f"⚠ 急危重症患者：请立即电话联系{name or '接收医院'}急诊科，并按急救流程转运。本对话只做登记和通知，不能代替电话联系。",
              f"⚠ Emergency: call the emergency department of {name or 'the receiving hospital'} now and transport the "
              "patient by the emergency procedure. This chat only records and notifies; it never replaces that call.")


# ------------------------------------------------------------------------------------------------
# notifications


def _receiver_recipients(session: Session, r: Referral) -> tuple[list[Staff], bool]:
    """(the receiving institution's liaisons, True) or, when it has none, (its admins, False)."""
    liaisons = store.liaisons_of(session, r.to_institution_id)
    if liaisons:
        return liaisons, True
    return store.admins_for(session, r.to_institution), False


def _receiver_notice(r: Referral, *, escalated: bool = False) -> Reply:
    head = "【转诊超时未处理，请协调】" if escalated else "【新的转诊申请】"
    lines = [head]
    if r.urgency == "emergency" and r.direction == R.UP:
        lines.append(emergency_warning(r))
    lines += summary(r)
    lines.append("请点击“接收”或“拒绝”；发送转诊单号可查看完整信息。")
    choices = (Choice("接收", encode_action("accept", r.id)), Choice("拒绝", encode_action("reject", r.id)),
               Choice("查看详情", encode_action("view", r.id)))
    return Reply("\n".join(lines), choices=choices)


def _sender_notice(r: Referral, by: Staff | None) -> Reply:
    label = status_label(r.status)
    text = f"您的转诊 {r.number}（患者 {R.mask_name(r.patient_name)}，转往{r.to_institution.name}）{label}"
    if r.status == "rejected" and r.reject_reason:
        text = f"您的转诊 {r.number}（患者 {R.mask_name(r.patient_name)}，转往{r.to_institution.name}）已拒绝：{r.reject_reason}"
    if by is not None:
        text += f"。处理人：{by.name}（{by.institution.name}）"
    return Reply(text, choices=(Choice("查看详情", encode_action("view", r.id)),))


@dataclass
class Submitted:
    referral: Referral
    recipients: list[Staff]
    via_liaison: bool
    delivery: Delivery


def submit(session: Session, router: ChannelRouter | None, sender: Staff, fields: dict[str, Any], *,
           channel: str, owner_key: str, attachment_ids: Sequence[int], rules: R.ReferralRules,
           now: datetime) -> Submitted:
    """Create the record (draft), attach the wizard's files, submit it and notify the receiver."""
    r = store.create_referral(session, sender=sender, actor_channel=channel, now=now, **fields)
    store.attach_drafts(session, owner_key, r, attachment_ids)
    store.apply_transition(session, r, "submitted", actor=sender.code, channel=channel, now=now,
                           submitted_at=now, due_at=now + rules.escalate_after(r.urgency))
    recipients, via_liaison = _receiver_recipients(session, r)
    delivery = notify(session, router, [Outgoing(s.id, _receiver_notice(r), kind="referral.new",
                                                 dedupe_key=f"referral:{r.id}:new:{s.id}") for s in recipients],
                      now=now)
    return Submitted(r, recipients, via_liaison, delivery)


class NotAllowed(Exception):
    pass


def act(session: Session, router: ChannelRouter | None, staff: Staff, r: Referral, action: str, *, channel: str,
        note: str | None = None, now: datetime) -> Referral:
    """Take ``action`` on ``r`` as ``staff``; raises ``NotAllowed`` or ``store.StaleTransition``."""
    target = R.next_status(r.status, action)
    if not R.may_act(staff, r, action):
        raise NotAllowed(action)
    if target is None:
        raise store.StaleTransition(r)
    values: dict[str, Any] = {}
    if action in ("accept", "reject"):
        values["handled_by_id"] = staff.id
    if action == "reject":
        values["reject_reason"] = note
    store.apply_transition(session, r, target, actor=staff.code, channel=channel, note=note, now=now, **values)
    if staff.id != r.sender_id:
        notify(session, router, [Outgoing(r.sender_id, _sender_notice(r, staff), kind=f"referral.{target}",
                                          dedupe_key=f"referral:{r.id}:{target}:sender")], now=now)
    if action == "cancel":  # the receiving side must stop preparing for the patient
        recipients, _ = _receiver_recipients(session, r)
        notify(session, router, [Outgoing(s.id, Reply(f"转诊 {r.number}（患者 {R.mask_name(r.patient_name)}）已由转出方撤销，无需再处理。"),
                                          kind="referral.cancelled", dedupe_key=f"referral:{r.id}:cancelled:{s.id}")
                                 for s in recipients], now=now)
    return r


def handled_by_text(r: Referral, english: bool = False) -> str:
    """Said to whoever presses a button of a referral that is no longer waiting for it."""
    last = r.events[-1] if r.events else None
    who = r.handled_by.name if r.handled_by is not None and r.status in ("accepted", "rejected") else (last.actor if last else "")
    return tr(english, f"转诊 {r.number} 已由{who}处理，当前状态：{status_label(r.status)}。",
              f"Referral {r.number} was already handled by {who}; it is now {status_label(r.status, True)}.")


def escalate_due(session: Session, router: ChannelRouter | None, *, now: datetime, rules: R.ReferralRules) -> int:
    """Tell the receiving institution's admins about submissions nobody answered in time (once
    each; several workers may call this at the same time). Returns how many escalated."""
    count = 0
    for r in store.due_for_escalation(session, now):
        if not store.claim_escalation(session, r, now):
            continue
        admins = store.admins_for(session, r.to_institution)
        notify(session, router, [Outgoing(a.id, _receiver_notice(r, escalated=True), kind="referral.escalated",
                                          dedupe_key=f"referral:{r.id}:escalated:{a.id}") for a in admins], now=now)
        repo.record(session, "system", "referral.escalate", target=r.number,
                    details={"admins": [a.code for a in admins]})
        count += 1
    return count


# ------------------------------------------------------------------------------------------------
# views


def may_view(staff: Staff | None, r: Referral) -> bool:
    """The sender, the two institutions' liaison officers, and admins of either consortium."""
    from storage import access

    return access.can_view_referral(staff, r.from_institution, r.to_institution, sender_id=r.sender_id)


def view(session: Session, staff: Staff, r: Referral, *, english: bool = False) -> Reply:
    if not may_view(staff, r):
        repo.record(session, staff.code, "access.denied", target=f"referral:{r.number}")
        return Reply(tr(english, "抱歉，您无权查看这条转诊记录：仅转诊医生、转出和接收机构的联络员及管理员可以查看。",
                        "Sorry, you may not see this referral: only its physician and the two institutions' liaison "
                        "officers and admins can."))
    repo.record(session, staff.code, "referral.view", target=r.number)
    lines = detail(r, english)
    if r.urgency == "emergency" and r.direction == R.UP and r.status == "submitted":
        lines.insert(0, emergency_warning(r, english=english))
    return Reply("\n".join(lines), choices=action_choices(staff, r, english))


def _row(r: Referral, english: bool) -> str:
    arrow = _pair(R.DIRECTION_LABELS, r.direction, english)
    return (f"· {r.number} {status_label(r.status, english)} {arrow} {r.from_institution.name} → "
            f"{r.to_institution.name} · {R.mask_name(r.patient_name)}")


def my_referrals(session: Session, staff: Staff, *, english: bool = False, limit: int = 15) -> Reply:
    rows = store.list_referrals(session, sender_id=staff.id, limit=limit)
    if not rows:
        return Reply(tr(english, "您还没有发起过转诊。发送“转诊”开始登记。", "You have not started any referral yet. Send /refer to start."),
                     choices=(Choice(tr(english, "发起转诊", "Start a referral"), "/refer"),))
    lines = [tr(english, f"您最近的 {len(rows)} 条转诊：", f"Your latest {len(rows)} referrals:")]
    lines += [_row(r, english) for r in rows]
    lines.append(tr(english, "发送转诊单号查看详情。", "Send a referral number to see it."))
    return Reply("\n".join(lines), choices=tuple(Choice(r.number, encode_action("view", r.id)) for r in rows[:6]))


def pending(session: Session, staff: Staff, *, english: bool = False, limit: int = 20) -> Reply:
    """The queue of the user's institution: referrals waiting to be accepted, or for the patient."""
    mine = [r for status in ("submitted", "accepted", "arrived")
            for r in store.list_referrals(session, status=status, to_institution_id=staff.institution_id, limit=limit)]
    mine = [r for r in mine if R.actions_for(staff, r)]
    if not mine:
        return Reply(tr(english, f"{staff.institution.name}目前没有待处理的转诊。",
                        f"Nothing is waiting at {staff.institution.name}."))
    lines = [tr(english, f"{staff.institution.name}待处理的转诊（{len(mine)} 条）：",
                f"Waiting at {staff.institution.name} ({len(mine)}):")]
    lines += [_row(r, english) for r in mine]
    return Reply("\n".join(lines), choices=tuple(Choice(r.number, encode_action("view", r.id)) for r in mine[:6]))


__all__ = [
    "ACTION_PREFIX", "NotAllowed", "Submitted", "act", "action_choices", "decode_action", "detail",
    "emergency_warning", "encode_action", "escalate_due", "handled_by_text", "may_view", "my_referrals", "pending",
    "status_label", "submit", "summary", "view",
]
