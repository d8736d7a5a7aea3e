"""Referral records as plain data: the JSON the CLI prints, CSV rows for the medical affairs
office, and a FHIR R4 ``Bundle`` (``ServiceRequest`` + ``Task`` + ``Patient`` per referral).

Pure functions of ``Referral`` rows. Identifiers leave the system masked only: the patient's name
is masked in lists, CSV and FHIR (the full record is seen in chat by those allowed, audited), the
ID number and phone are masked everywhere.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable
from typing import Any

from handlers.referral.rules import mask_name
from storage.models import Referral
from storage.privacy import mask_id_number, mask_phone

_NS = uuid.UUID("6f1c2a8e-3b1d-4c55-9a57-1f0d6f4a9e21")

FHIR_SR_STATUS = {"draft": "draft", "submitted": "active", "accepted": "active", "arrived": "active",
                  "completed": "completed", "rejected": "revoked", "cancelled": "revoked"}
FHIR_TASK_STATUS = {"draft": "draft", "submitted": "requested", "accepted": "accepted", "rejected": "rejected",
                    "arrived": "in-progress", "completed": "completed", "cancelled": "cancelled"}
FHIR_PRIORITY = {"routine": "routine", "urgent": "urgent", "emergency": "stat"}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


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
        "patient_sex": r.patient_sex, "patient_age": r.patient_age,
        "patient_id_number": mask_id_number(r.patient_id_number), "patient_phone": mask_phone(r.patient_phone),
        "diagnosis": r.diagnosis, "history": r.history, "reason": r.reason, "reason_code": r.reason_code,
        "reject_reason": r.reject_reason,
        "attachments": [{"file_name": a.file_name, "size": a.size} for a in r.attachments],
        "timeline": [{"at": _iso(e.at), "from_status": e.from_status, "to_status": e.to_status, "actor": e.actor,
                      "channel": e.channel, "note": e.note} for e in r.events],
    }


CSV_COLUMNS = (("number", "转诊单号"), ("status", "状态"), ("direction", "方向"), ("from_institution", "转出机构"),
               ("to_institution", "接收机构"), ("to_department", "接收科室"), ("urgency", "紧急程度"),
               ("patient", "患者"), ("created_at", "登记时间"), ("submitted_at", "提交时间"))


def to_csv(referrals: Iterable[Referral]) -> str:
    """CSV with Chinese headers, UTF-8 with a BOM (Excel then shows Chinese correctly)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([zh for _, zh in CSV_COLUMNS])
    for r in referrals:
        row = as_json(r)
        writer.writerow([row.get(key) or "" for key, _ in CSV_COLUMNS])
    return "\ufeff" + out.getvalue()


def _urn(kind: str, r: Referral) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, f'{kind}:{r.number}')}"


def fhir_entries(r: Referral) -> list[dict[str, Any]]:
    patient_url, sr_url, task_url = _urn("Patient", r), _urn("ServiceRequest", r), _urn("Task", r)
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": patient_url.rsplit(":", 1)[1],
        "name": [{"text": mask_name(r.patient_name)}],
        "gender": {"男": "male", "女": "female"}.get(r.patient_sex, "unknown"),
    }
    if r.patient_birth_date:
        patient["birthDate"] = r.patient_birth_date
    receiver = {"display": r.to_institution.name + (f" {r.to_department}" if r.to_department else "")}
    identifier = [{"system": "urn:yilian:referral", "value": r.number}]
    service_request: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": sr_url.rsplit(":", 1)[1], "identifier": identifier,
        "status": FHIR_SR_STATUS[r.status], "intent": "order", "priority": FHIR_PRIORITY[r.urgency],
        "code": {"text": "上转" if r.direction == "up" else "下转"},
        "subject": {"reference": patient_url}, "authoredOn": _iso(r.created_at),
        "requester": {"display": f"{r.sender.name}（{r.from_institution.name}）"},
        "performer": [receiver],
        "reasonCode": [{"text": r.reason}],
        "note": [{"text": f"初步诊断：{r.diagnosis}"}, {"text": f"病史及诊治经过：{r.history}"}],
    }
    task: dict[str, Any] = {
        "resourceType": "Task", "id": task_url.rsplit(":", 1)[1], "identifier": identifier,
        "status": FHIR_TASK_STATUS[r.status], "businessStatus": {"text": r.status}, "intent": "order",
        "priority": FHIR_PRIORITY[r.urgency], "focus": {"reference": sr_url}, "for": {"reference": patient_url},
        "authoredOn": _iso(r.created_at), "lastModified": _iso(r.updated_at),
        "requester": {"display": r.from_institution.name}, "owner": {"display": r.to_institution.name},
    }
    if r.status == "rejected" and r.reject_reason:
        task["statusReason"] = {"text": r.reject_reason}
    return [{"fullUrl": url, "resource": res} for url, res in
            ((patient_url, patient), (sr_url, service_request), (task_url, task))]


def fhir_bundle(referrals: Iterable[Referral]) -> dict[str, Any]:
    entries = [e for r in referrals for e in fhir_entries(r)]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


__all__ = ["CSV_COLUMNS", "as_detail_json", "as_json", "fhir_bundle", "fhir_entries", "to_csv"]
