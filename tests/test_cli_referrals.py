"""``yilian referrals list / show / export``: the fields tools rely on, masking, the timeline,
and a FHIR R4 bundle that validates (fhir.resources, R4B models) with references that resolve."""

from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import cli_runner
from handlers.referral import service
from storage import referrals as store
from storage import repositories as repo
from storage.types import utcnow

pytest_plugins = ("engine_support",)

ID_NUMBER, PHONE = "110101195803071233", "13912345678"


def _make(session, sender_code: str, to_name: str, *, urgency="routine", status_path=()):
    sender = repo.get_staff_by_code(session, sender_code)
    to = next(i for i in store.institutions_of(session, sender.institution.consortium_id) if i.name == to_name)
    r = store.create_referral(session, sender=sender, actor_channel="wecom", direction="up", to_institution_id=to.id,
                              patient_name="张三丰", patient_sex="男", patient_age=68, patient_birth_date="1958-03-07",
                              patient_id_number=ID_NUMBER, patient_phone=PHONE, diagnosis="社区获得性肺炎",
                              history="发热3天", reason="疑难复杂病例不能确诊", reason_code="undiagnosed", urgency=urgency)
    store.apply_transition(session, r, "submitted", actor=sender.code, channel="wecom", submitted_at=utcnow())
    for action, who, note in status_path:
        service.act(session, None, repo.get_staff_by_code(session, who), r, action, channel="telegram", note=note,
                    now=utcnow())
    return r.number


@pytest.fixture
def referrals(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        a = _make(s, "dr_liu_zd", "张店区人民医院", urgency="emergency",
                  status_path=(("accept", "liaison_ma_zd", None),))
        b = _make(s, "dr_liu_zd", "张店区人民医院", status_path=(("reject", "liaison_ma_zd", "床位已满"),))
    return engine_ctx, a, b


def _run(ctx):
    return cli_runner(ctx.settings.resolved_data_dir)


def test_list_json_has_the_interface_fields_and_masks_the_patient(referrals):
    ctx, a, b = referrals
    result = _run(ctx)("referrals", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["number"] for r in rows} == {a, b} and a.startswith("ZD-")
    for r in rows:
        assert {"number", "status", "direction", "from_institution", "to_institution", "urgency", "created_at",
                "patient"} <= set(r)
        assert r["patient"] == "张*丰" and r["direction"] == "up"
    assert {r["status"] for r in rows} == {"accepted", "rejected"}
    only = json.loads(_run(ctx)("referrals", "list", "--status", "rejected", "--json").stdout)
    assert [r["number"] for r in only] == [b]
    bad = _run(ctx)("referrals", "list", "--status", "lost")
    assert bad.exit_code == 2 and "未知状态" in bad.stderr


def test_show_has_the_timeline_masks_identifiers_and_is_audited(referrals):
    ctx, _a, b = referrals
    result = _run(ctx)("referrals", "show", b.lower(), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [e["to_status"] for e in data["timeline"]] == ["draft", "submitted", "rejected"]
    assert data["timeline"][-1]["note"] == "床位已满" and data["reject_reason"] == "床位已满"
    assert data["patient_id_number"] == "110***********1233" and data["patient_phone"] == "139****5678"
    assert ID_NUMBER not in result.stdout and PHONE not in result.stdout
    with ctx.sessions() as s:
        assert repo.audit_entries(s, action="referral.view")[0].target == b
    missing = _run(ctx)("referrals", "show", "ZD-2026-999999")
    assert missing.exit_code == 1 and "没有转诊单号" in missing.stderr


def test_fhir_export_validates_as_r4_and_maps_status_and_priority(referrals, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    ctx, a, b = referrals
    out = tmp_path / "bundle.json"
    result = _run(ctx)("referrals", "export", "--fhir", "--output", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert ID_NUMBER not in text and PHONE not in text and "张三丰" not in text
    data = json.loads(text)
    bundle = Bundle.model_validate(data)  # raises on anything FHIR R4(B) does not allow
    assert bundle.type == "collection" and len(bundle.entry) == 6
    urls = {e["fullUrl"] for e in data["entry"]}
    by_number = {}
    for e in data["entry"]:
        res = e["resource"]
        for ref in (res.get("subject"), res.get("focus"), res.get("for")):
            if ref:
                assert ref["reference"] in urls  # every reference resolves inside the bundle
        if res["resourceType"] in ("ServiceRequest", "Task"):
            by_number.setdefault(res["identifier"][0]["value"], {})[res["resourceType"]] = res
    assert by_number[a]["ServiceRequest"]["priority"] == "stat" and by_number[a]["Task"]["status"] == "accepted"
    assert by_number[b]["ServiceRequest"]["status"] == "revoked" and by_number[b]["Task"]["status"] == "rejected"
    assert by_number[b]["Task"]["statusReason"]["text"] == "床位已满"
    assert by_number[a]["ServiceRequest"]["intent"] == "order"


def test_since_filters_and_a_bad_date_is_one_line(referrals):
    ctx, _a, _b = referrals
    future = json.loads(_run(ctx)("referrals", "export", "--fhir", "--since", "2999-01-01").stdout)
    assert future["entry"] == []
    bad = _run(ctx)("referrals", "export", "--fhir", "--since", "yesterday")
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.stderr
    assert _run(ctx)("referrals", "export").exit_code == 2


def test_csv_export_has_chinese_headers_and_a_bom(referrals):
    ctx, a, _b = referrals
    result = _run(ctx)("referrals", "export", "--csv")
    assert result.exit_code == 0
    assert result.stdout.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(result.stdout.lstrip("\ufeff"))))
    assert rows[0][:3] == ["转诊单号", "状态", "方向"] and len(rows) == 3
    assert ID_NUMBER not in result.stdout and "张*丰" in result.stdout
