"""Referral records as plain data: the JSON ``yilian referrals list/show --json`` prints, and the
CSV for the medical affairs office. (The FHIR R4 Bundle is ``handlers.referral.fhir``.)

Pure functions of ``Referral`` rows. The JSON field names are an interface that outside tools
read: ``as_json`` has at least ``number``, ``status``, ``direction``, ``from_institution``,
``to_institution``, ``urgency``, ``created_at`` (ISO 8601, UTC) and ``patient``; ``as_detail_json``
adds the clinical fields, the attachments and the ``timeline``. Never remove or rename one.

Privacy: the patient's name is masked (``rules.mask_name``) in lists, details and CSV; the ID
number and phone only ever leave masked (``storage.privacy``); free text (diagnosis, history,
reason, notes) is passed through ``scrub_text`` so that a number typed into it leaves masked too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from handlers.referral.fhir import bundle as fhir_bundle
from handlers.referral.rules import DIRECTION_LABELS, STATUS_LABELS, URGENCY_LABELS, mask_name
from storage.models import Referral
from storage.privacy import mask_id_number, mask_phone, scrub_text
from storage.types import CHINA_TZ



def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _scrub(text: str | None) -> str | None:
    return scrub_text(text) if text else text


def as_json(r: Referral) -> dict[str, Any]:
    """One element of ``yilian referrals list --json``."""
    return {
        "number": r.number, "status": r.status, "direction": r.direction,
        "from_institution": r.from_institution.name, "to_institution": r.to_institution.name,
        "to_department": r.to_department, "urgency": r.urgency, "green_channel": bool(r.green_channel),
        "created_at": _iso(r.created_at), "submitted_at": _iso(r.submitted_at), "updated_at": _iso(r.updated_at),
        "patient": mask_name(r.patient_name), "sender": r.sender.code,
    }


def as_detail_json(r: Referral) -> dict[str, Any]:
    """``yilian referrals show --json``: the list fields, the clinical ones and the timeline."""
    return {
        **as_json(r),
        "sender_department": r.sender_department,
        "patient_sex": r.patient_sex, "patient_age": r.patient_age, "patient_birth_date": r.patient_birth_date,
        "patient_id_number": mask_id_number(r.patient_id_number), "patient_phone": mask_phone(r.patient_phone),
        "patient_area": _scrub(r.patient_area),
        "diagnosis": _scrub(r.diagnosis), "history": _scrub(r.history), "reason": _scrub(r.reason),
        "reason_code": r.reason_code, "reject_reason": _scrub(r.reject_reason),
        "attachments": [{"file_name": a.file_name, "size": a.size, "mime_type": a.mime_type} for a in r.attachments],
        "timeline": [{"at": _iso(e.at), "from_status": e.from_status, "to_status": e.to_status, "actor": e.actor,
                      "channel": e.channel, "note": _scrub(e.note)} for e in r.events],
    }


# ------------------------------------------------------------------------------------------------
# CSV


def _local(value: datetime | None) -> str:
    return value.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _yes_no(value: bool | None) -> str:
    return "是" if value else "否"


#: (header, value of a referral): one row per referral, in this order.
CSV_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("转诊单号", lambda r: r.number),
    ("状态", lambda r: STATUS_LABELS[r.status][0]),
    ("方向", lambda r: DIRECTION_LABELS[r.direction][0]),
    ("转出机构", lambda r: r.from_institution.name),
    ("转出科室", lambda r: r.sender_department),
    ("转诊医生", lambda r: r.sender.name),
    ("接收机构", lambda r: r.to_institution.name),
    ("接收科室", lambda r: r.to_department),
    ("紧急程度", lambda r: URGENCY_LABELS[r.urgency][0]),
    ("绿色通道", lambda r: _yes_no(r.green_channel)),
    ("患者", lambda r: mask_name(r.patient_name)),
    ("性别", lambda r: r.patient_sex),
    ("年龄", lambda r: r.patient_age),
    ("身份证号（脱敏）", lambda r: mask_id_number(r.patient_id_number)),
    ("联系电话（脱敏）", lambda r: mask_phone(r.patient_phone)),
    ("初步诊断", lambda r: _scrub(r.diagnosis)),
    ("转诊原因", lambda r: _scrub(r.reason)),
    ("拒绝原因", lambda r: _scrub(r.reject_reason)),
    ("登记时间（北京时间）", lambda r: _local(r.created_at)),
    ("提交时间（北京时间）", lambda r: _local(r.submitted_at)),
    ("最后更新（北京时间）", lambda r: _local(r.updated_at)),
)
CSV_HEADERS: tuple[str, ...] = tuple(h for h, _ in CSV_COLUMNS)


def _cell(value: Any) -> str:
    """Text of one cell; free text that a spreadsheet would run as a formula gets a leading '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(referrals: Iterable[Referral]) -> str:
    """CSV with Chinese headers and a BOM (Excel then reads it as UTF-8), CRLF line ends. Write it
    with ``newline=""``."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADERS)
    for r in referrals:
        writer.writerow([_cell(get(r)) for _, get in CSV_COLUMNS])
    return "\ufeff" + out.getvalue()


__all__ = ["CSV_COLUMNS", "CSV_HEADERS", "as_detail_json", "as_json", "fhir_bundle", "to_csv"]
