"""Referrals as FHIR R4: one ``Bundle`` (type ``collection``) holding, per referral, a ``Patient``,
a ``ServiceRequest`` (the referral order) and a ``Task`` (its workflow at the receiving side).

Pure functions of ``Referral`` rows (``yilian referrals export --fhir`` writes the result).

* References resolve inside the bundle: every ``fullUrl`` is ``urn:uuid:<uuid5 of the kind and
  the referral number>``, so the same referral always yields the same ids (a re-export can be
  diffed or upserted) and ``ServiceRequest.subject``, ``Task.focus`` and ``Task.for`` point at
  entries of the same bundle.
* Status and priority are mapped by the tables below (``SERVICE_REQUEST_STATUS``, ``TASK_STATUS``,
  ``PRIORITY``); ``Task.businessStatus.text`` keeps our own status word.
* Institutions appear as display names (``requester``, ``performer``, ``owner``), not as
  ``Organization`` resources: the directory has no identifiers a receiving system could match.

Privacy (decided for this export): the patient's name is masked (``rules.mask_name``), the
resident ID number and the phone are **not exported at all** — not even masked, because a
masked ID is no identifier anyone can match on and would only leak its region and check digits.
The referral number (``identifier``) is the key the receiving hospital looks the record up by.
Free text (diagnosis, history, reason, notes) is passed through ``storage.privacy.scrub_text``
so that a phone or ID number typed into it leaves masked.

The resources are valid against the R4 models of ``fhir.resources`` (its ``R4B`` subpackage:
since 7.0 the package ships R4B in place of R4; ServiceRequest, Task, Patient and Bundle do not
differ between R4 and R4B); the tests validate every export.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from handlers.referral.rules import DIRECTION_LABELS, mask_name
from storage.models import Referral
from storage.privacy import scrub_text

#: Namespace of the uuid5 ids (fixed forever: changing it changes every exported id).
NAMESPACE = uuid.UUID("6f1c2a8e-3b1d-4c55-9a57-1f0d6f4a9e21")
#: ``Identifier.system`` of our referral numbers.
NUMBER_SYSTEM = "urn:yilian:referral"

#: Our status → ``ServiceRequest.status`` (draft | active | on-hold | revoked | completed | …).
SERVICE_REQUEST_STATUS = {
    "draft": "draft", "submitted": "active", "accepted": "active", "arrived": "active",
    "completed": "completed", "rejected": "revoked", "cancelled": "revoked",
}
#: Our status → ``Task.status`` (draft | requested | accepted | rejected | in-progress | …).
TASK_STATUS = {
    "draft": "draft", "submitted": "requested", "accepted": "accepted", "rejected": "rejected",
    "arrived": "in-progress", "completed": "completed", "cancelled": "cancelled",
}
#: Our urgency → ``priority`` (routine | urgent | asap | stat).
PRIORITY = {"routine": "routine", "urgent": "urgent", "emergency": "stat"}
GENDER = {"男": "male", "女": "female"}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _clean(text: str | None) -> str:
    return scrub_text(text or "").strip()


def resource_id(kind: str, number: str) -> str:
    """The deterministic id of the ``kind`` resource of referral ``number``."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{number}"))


def full_url(kind: str, number: str) -> str:
    return f"urn:uuid:{resource_id(kind, number)}"


def patient(r: Referral) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": resource_id("Patient", r.number),
        "name": [{"text": mask_name(r.patient_name)}],
        "gender": GENDER.get(r.patient_sex, "unknown"),
    }
    if r.patient_birth_date:
        res["birthDate"] = r.patient_birth_date
    return res


def service_request(r: Referral) -> dict[str, Any]:
    direction_zh = DIRECTION_LABELS[r.direction][0]
    receiver = r.to_institution.name + (f" {r.to_department}" if r.to_department else "")
    sender = r.sender.name if r.sender is not None else ""
    notes = [{"text": f"初步诊断：{_clean(r.diagnosis)}"}]
    if _clean(r.history):
        notes.append({"text": f"病史及诊治经过：{_clean(r.history)}"})
    if r.green_channel:
        notes.append({"text": "申请绿色通道"})
    return {
        "resourceType": "ServiceRequest",
        "id": resource_id("ServiceRequest", r.number),
        "identifier": [{"system": NUMBER_SYSTEM, "value": r.number}],
        "status": SERVICE_REQUEST_STATUS[r.status],
        "intent": "order",
        "category": [{"text": "双向转诊"}],
        "priority": PRIORITY[r.urgency],
        "code": {"text": direction_zh},
        "subject": {"reference": full_url("Patient", r.number)},
        "authoredOn": _iso(r.created_at),
        "requester": {"display": f"{sender}（{r.from_institution.name}）" if sender else r.from_institution.name},
        "performer": [{"display": receiver}],
        "reasonCode": [{"text": _clean(r.reason)}],
        "note": notes,
    }


def task(r: Referral) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Task",
        "id": resource_id("Task", r.number),
        "identifier": [{"system": NUMBER_SYSTEM, "value": r.number}],
        "status": TASK_STATUS[r.status],
        "businessStatus": {"text": r.status},
        "intent": "order",
        "priority": PRIORITY[r.urgency],
        "focus": {"reference": full_url("ServiceRequest", r.number)},
        "for": {"reference": full_url("Patient", r.number)},
        "authoredOn": _iso(r.created_at),
        "lastModified": _iso(r.updated_at),
        "requester": {"display": r.from_institution.name},
        "owner": {"display": r.to_institution.name},
    }
    if r.status == "rejected" and r.reject_reason:
        res["statusReason"] = {"text": _clean(r.reject_reason)}
    return res


def entries(r: Referral) -> list[dict[str, Any]]:
    """The three bundle entries of one referral: Patient, ServiceRequest, Task."""
    return [{"fullUrl": full_url(res["resourceType"], r.number), "resource": res}
            for res in (patient(r), service_request(r), task(r))]


def bundle(referrals: Iterable[Referral]) -> dict[str, Any]:
    """A ``collection`` Bundle of every referral's entries, in the order given."""
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [e for r in referrals for e in entries(r)]}


__all__ = ["GENDER", "NAMESPACE", "NUMBER_SYSTEM", "PRIORITY", "SERVICE_REQUEST_STATUS", "TASK_STATUS", "bundle",
           "entries", "full_url", "patient", "resource_id", "service_request", "task"]
