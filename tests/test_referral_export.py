"""``handlers.referral.export`` and ``handlers.referral.fhir``: referral rows → JSON, CSV and a
FHIR R4 Bundle. Referrals are built with ``storage.referrals`` directly (no dialog, no service).

The FHIR checks use the R4 models of ``fhir.resources`` (its ``R4B`` subpackage: the package has
shipped R4B in place of R4 since 7.0). Those models check structure, required fields and
date formats but not code values, so the value sets of status, intent and priority are asserted
here explicitly.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime, timezone

import pytest

from handlers.referral import export, fhir
from storage import referrals as store
from storage import repositories as repo
from storage.models import Referral
from storage.models.referral import REFERRAL_STATUSES, URGENCIES
from storage.types import utcnow

pytest_plugins = ("engine_support",)

ID_NUMBER, PHONE = "110101195803071233", "13912345678"
#: A second patient's identifiers, typed into free text by a physician.
OTHER_ID, OTHER_PHONE = "220702198001011234", "13698765432"

#: The transitions that lead from draft to each status.
PATHS: dict[str, tuple[str, ...]] = {
    "draft": (),
    "submitted": ("submitted",),
    "accepted": ("submitted", "accepted"),
    "rejected": ("submitted", "rejected"),
    "arrived": ("submitted", "accepted", "arrived"),
    "completed": ("submitted", "accepted", "arrived", "completed"),
    "cancelled": ("submitted", "cancelled"),
}

# FHIR R4 value sets (http://hl7.org/fhir/R4/valueset-request-status.html, task-status,
# request-intent, request-priority, administrative-gender).
REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
TASK_STATUS = {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress",
               "on-hold", "failed", "completed", "entered-in-error"}
REQUEST_PRIORITY = {"routine", "urgent", "asap", "stat"}
GENDERS = {"male", "female", "other", "unknown"}


def make_referral(session, sender_code: str = "dr_liu_zd", to_name: str = "张店区人民医院", *,
                  status: str = "submitted", receiver_code: str = "liaison_ma_zd", now: datetime | None = None,
                  reject_reason: str = "床位已满", **overrides) -> Referral:
    """A referral from ``sender_code`` to ``to_name`` (same consortium), moved to ``status``."""
    now = now or utcnow()
    sender = repo.get_staff_by_code(session, sender_code)
    to = next(i for i in store.institutions_of(session, sender.institution.consortium_id) if i.name == to_name)
    fields = dict(direction="up", to_institution_id=to.id, to_department="内科", patient_name="张三丰",
                  patient_sex="男", patient_age=68, patient_birth_date="1958-03-07", patient_id_number=ID_NUMBER,
                  patient_phone=PHONE, diagnosis="社区获得性肺炎", history="发热3天，口服头孢无好转",
                  reason="疑难复杂病例不能确诊", reason_code="undiagnosed", urgency="routine", green_channel=False)
    fields.update(overrides)
    r = store.create_referral(session, sender=sender, actor_channel="wecom", now=now, **fields)
    for step in PATHS[status]:
        by_sender = step in ("submitted", "cancelled")
        values = {"submitted_at": now} if step == "submitted" else {}
        note = None
        if step == "rejected":
            values["reject_reason"] = note = reject_reason
        store.apply_transition(session, r, step, actor=sender_code if by_sender else receiver_code,
                               channel="wecom" if by_sender else "telegram", note=note, now=now, **values)
    return r


def validate_r4(data: dict):
    """The Bundle and each resource through the fhir.resources R4(B) models (raises when invalid)."""
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.bundle import Bundle

    bundle = Bundle.model_validate(data)
    for entry in data["entry"]:
        res = entry["resource"]
        get_fhir_model_class(res["resourceType"]).model_validate(res)
    return bundle


def resources(data: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == kind]


# --- FHIR -----------------------------------------------------------------------------------------


def test_mapping_tables_cover_every_status_and_urgency_with_fhir_codes():
    assert set(fhir.SERVICE_REQUEST_STATUS) == set(REFERRAL_STATUSES) == set(fhir.TASK_STATUS)
    assert set(fhir.SERVICE_REQUEST_STATUS.values()) <= REQUEST_STATUS
    assert set(fhir.TASK_STATUS.values()) <= TASK_STATUS
    assert set(fhir.PRIORITY) == set(URGENCIES) and set(fhir.PRIORITY.values()) <= REQUEST_PRIORITY


EXPECTED = {  # status → (ServiceRequest.status, Task.status)
    "draft": ("draft", "draft"), "submitted": ("active", "requested"), "accepted": ("active", "accepted"),
    "rejected": ("revoked", "rejected"), "arrived": ("active", "in-progress"),
    "completed": ("completed", "completed"), "cancelled": ("revoked", "cancelled"),
}


def test_every_status_and_priority_maps_and_the_bundle_validates(engine_ctx):
    urgency_of = dict(zip(REFERRAL_STATUSES, ["routine", "urgent", "emergency"] * 3))
    with engine_ctx.sessions.begin() as s:
        rows = [make_referral(s, status=status, urgency=urgency_of[status]) for status in REFERRAL_STATUSES]
        data = json.loads(json.dumps(fhir.bundle(rows), ensure_ascii=False))
    bundle = validate_r4(data)
    assert data["resourceType"] == "Bundle" and bundle.type == "collection" and len(bundle.entry) == 3 * len(rows)
    requests = {res["identifier"][0]["value"]: res for res in resources(data, "ServiceRequest")}
    tasks = {res["identifier"][0]["value"]: res for res in resources(data, "Task")}
    for r in rows:
        sr, task = requests[r.number], tasks[r.number]
        assert (sr["status"], task["status"]) == EXPECTED[r.status], r.status
        assert task["businessStatus"]["text"] == r.status
        assert sr["intent"] == task["intent"] == "order"
        assert sr["priority"] == {"routine": "routine", "urgent": "urgent", "emergency": "stat"}[r.urgency]
        assert sr["authoredOn"] == task["authoredOn"] == r.created_at.isoformat()
        assert task["lastModified"] == r.updated_at.isoformat()
        assert sr["requester"]["display"].endswith("（沣水中心卫生院）")
        assert sr["performer"] == [{"display": "张店区人民医院 内科"}]
        assert task["owner"] == {"display": "张店区人民医院"}
        assert sr["reasonCode"] == [{"text": "疑难复杂病例不能确诊"}]
        assert sr["note"][0]["text"] == "初步诊断：社区获得性肺炎"
    assert tasks[rows[REFERRAL_STATUSES.index("rejected")].number]["statusReason"] == {"text": "床位已满"}


def test_references_resolve_inside_the_bundle_and_ids_are_deterministic(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        rows = [make_referral(s), make_referral(s, status="accepted")]
        first, again = fhir.bundle(rows), fhir.bundle(rows)
    assert first == again  # the same referral always yields the same ids
    by_url = {e["fullUrl"]: e["resource"] for e in first["entry"]}
    assert len(by_url) == 6
    for url, res in by_url.items():
        assert url == f"urn:uuid:{res['id']}" and uuid.UUID(res["id"]).version == 5
    for r in rows:
        sr = next(res for res in resources(first, "ServiceRequest") if res["identifier"][0]["value"] == r.number)
        task = next(res for res in resources(first, "Task") if res["identifier"][0]["value"] == r.number)
        patient = by_url[sr["subject"]["reference"]]
        assert patient["resourceType"] == "Patient" and by_url[task["for"]["reference"]] is patient
        assert by_url[task["focus"]["reference"]] is sr
        assert sr["id"] == str(uuid.uuid5(fhir.NAMESPACE, f"ServiceRequest:{r.number}"))


def test_patient_is_masked_and_carries_no_identifier(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        man = make_referral(s)
        woman = make_referral(s, patient_name="欧阳娜娜", patient_sex="女", patient_birth_date=None,
                              patient_id_number=None, patient_phone=None)
        other = make_referral(s, patient_name="李四", patient_sex="未知")
        data = fhir.bundle([man, woman, other])
    validate_r4(data)
    patients = resources(data, "Patient")
    assert [p["name"] for p in patients] == [[{"text": "张*丰"}], [{"text": "欧**娜"}], [{"text": "李*"}]]
    assert [p["gender"] for p in patients] == ["male", "female", "unknown"]
    assert {p["gender"] for p in patients} <= GENDERS
    assert patients[0]["birthDate"] == "1958-03-07" and "birthDate" not in patients[1]
    assert all("identifier" not in p and "telecom" not in p for p in patients)
    text = json.dumps(data, ensure_ascii=False)
    assert ID_NUMBER not in text and PHONE not in text and "张三丰" not in text
    assert "110***********1233" not in text and "139****5678" not in text  # left out, not even masked


def test_an_invalid_resource_is_refused_by_the_validator(engine_ctx):
    """The validator really checks: a ServiceRequest without subject or with a bad date fails."""
    from pydantic import ValidationError

    with engine_ctx.sessions.begin() as s:
        data = fhir.bundle([make_referral(s)])
    sr = resources(data, "ServiceRequest")[0]
    del sr["subject"]
    with pytest.raises(ValidationError):
        validate_r4(data)
    sr["subject"] = {"reference": "urn:uuid:x"}
    sr["authoredOn"] = "2026-12-02 08:00"
    with pytest.raises(ValidationError):
        validate_r4(data)


def test_green_channel_and_empty_history_in_the_notes(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        data = fhir.bundle([make_referral(s, green_channel=True, history="", urgency="emergency")])
    validate_r4(data)
    notes = [n["text"] for n in resources(data, "ServiceRequest")[0]["note"]]
    assert notes == ["初步诊断：社区获得性肺炎", "申请绿色通道"]


# --- identifiers typed into free text -----------------------------------------------------------------


def test_numbers_typed_into_free_text_leave_masked_everywhere(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        r = make_referral(s, status="rejected", diagnosis=f"肺炎，家属电话{OTHER_PHONE}",
                          history=f"既往史见身份证{OTHER_ID}名下病历", reason=f"联系{OTHER_PHONE}",
                          reject_reason=f"请致电{OTHER_PHONE}协调")
        outputs = [json.dumps(export.as_json(r), ensure_ascii=False),
                   json.dumps(export.as_detail_json(r), ensure_ascii=False),
                   export.to_csv([r]), json.dumps(fhir.bundle([r]), ensure_ascii=False)]
    for text in outputs:
        for secret in (ID_NUMBER, PHONE, OTHER_ID, OTHER_PHONE):
            assert secret not in text
    assert "136****5432" in outputs[1] and "136****5432" in outputs[2] and "136****5432" in outputs[3]


# --- JSON -----------------------------------------------------------------------------------------


def test_json_fields_of_list_and_detail(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        r = make_referral(s, status="accepted", urgency="urgent", green_channel=True)
        owner = "wecom:liu"
        att = store.add_draft_attachment(s, owner, "血常规.pdf", b"%PDF-1.4 test", "application/pdf")
        store.attach_drafts(s, owner, r, [att.id])
        s.refresh(r)
        row, detail = export.as_json(r), export.as_detail_json(r)
    assert {"number", "status", "direction", "from_institution", "to_institution", "urgency", "created_at",
            "patient"} <= set(row)
    assert row["number"].startswith("ZD-") and row["status"] == "accepted" and row["direction"] == "up"
    assert (row["from_institution"], row["to_institution"]) == ("沣水中心卫生院", "张店区人民医院")
    assert row["urgency"] == "urgent" and row["patient"] == "张*丰" and row["green_channel"] is True
    assert datetime.fromisoformat(row["created_at"]).tzinfo is not None
    assert detail["patient_id_number"] == "110***********1233" and detail["patient_phone"] == "139****5678"
    assert detail["to_department"] == "内科" and detail["diagnosis"] == "社区获得性肺炎"
    assert detail["reason"] == "疑难复杂病例不能确诊"
    assert detail["attachments"] == [{"file_name": "血常规.pdf", "size": 13, "mime_type": "application/pdf"}]
    assert [(e["from_status"], e["to_status"], e["actor"], e["channel"]) for e in detail["timeline"]] == [
        (None, "draft", "dr_liu_zd", "wecom"), ("draft", "submitted", "dr_liu_zd", "wecom"),
        ("submitted", "accepted", "liaison_ma_zd", "telegram")]
    assert set(detail["timeline"][0]) == {"at", "from_status", "to_status", "actor", "channel", "note"}


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_has_a_bom_chinese_headers_labels_and_masked_identifiers(engine_ctx):
    created = datetime(2026, 3, 1, 16, 30, tzinfo=timezone.utc)  # 2026-03-02 00:30 Beijing time
    with engine_ctx.sessions.begin() as s:
        rows = [make_referral(s, status="rejected", urgency="emergency", green_channel=True, now=created),
                make_referral(s, status="draft", direction="down", patient_id_number=None, patient_phone=None)]
        text = export.to_csv(rows)
    data = text.encode("utf-8")
    assert data.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    table = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert list(table[0]) == list(export.CSV_HEADERS) and "转诊单号" in table[0] and "\r\n" in text
    first, second = table
    assert first["状态"] == "已拒绝" and first["方向"] == "上转" and first["紧急程度"] == "急诊"
    assert first["绿色通道"] == "是" and first["患者"] == "张*丰" and first["拒绝原因"] == "床位已满"
    assert first["身份证号（脱敏）"] == "110***********1233" and first["联系电话（脱敏）"] == "139****5678"
    assert first["登记时间（北京时间）"] == "2026-03-02 00:30" and first["转诊医生"] == "刘清源"
    assert second["状态"] == "草稿" and second["方向"] == "下转" and second["身份证号（脱敏）"] == ""
    assert second["提交时间（北京时间）"] == ""
    assert ID_NUMBER not in text and PHONE not in text and "张三丰" not in text


def test_csv_cells_never_start_a_spreadsheet_formula(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        text = export.to_csv([make_referral(s, diagnosis='=HYPERLINK("http://x.example","点我")',
                                            reason="+1 复查", to_department="@内科")])
    row = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))[0]
    assert row["初步诊断"].startswith("'=") and row["转诊原因"] == "'+1 复查" and row["接收科室"] == "'@内科"
