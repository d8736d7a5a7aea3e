"""``yilian referrals list / show / export``: the fields tools rely on, masking, the timeline,
the audit, and a FHIR R4 bundle that validates (fhir.resources, R4B models) with references that
resolve; CSV for the medical affairs office; ``--since`` in Beijing time."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest

from conftest import cli_runner
from storage import repositories as repo
from test_referral_export import ID_NUMBER, PHONE, make_referral, validate_r4

pytest_plugins = ("engine_support",)

MASKED = ("110***********1233", "139****5678")


@pytest.fixture
def referrals(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        a = make_referral(s, status="accepted", urgency="emergency", green_channel=True).number
        b = make_referral(s, status="rejected", reject_reason="床位已满").number
    return engine_ctx, a, b


def _run(ctx):
    return cli_runner(ctx.settings.resolved_data_dir)


def _no_identifiers(text: str) -> None:
    assert ID_NUMBER not in text and PHONE not in text and "张三丰" not in text


def test_list_json_has_the_interface_fields_and_masks_the_patient(referrals):
    ctx, a, b = referrals
    result = _run(ctx)("referrals", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # one JSON array, nothing else on stdout
    assert isinstance(rows, list) and [r["number"] for r in rows] == [b, a] and a.startswith("ZD-2")
    for r in rows:
        assert {"number", "status", "direction", "from_institution", "to_institution", "urgency", "created_at",
                "patient"} <= set(r)
        assert r["patient"] == "张*丰" and r["direction"] == "up"
        assert (r["from_institution"], r["to_institution"]) == ("沣水中心卫生院", "张店区人民医院")
        assert datetime.fromisoformat(r["created_at"]).utcoffset() is not None
    assert {r["number"]: (r["status"], r["urgency"]) for r in rows} == {a: ("accepted", "emergency"),
                                                                         b: ("rejected", "routine")}
    _no_identifiers(result.stdout)
    only = json.loads(_run(ctx)("referrals", "list", "--status", "rejected", "--json").stdout)
    assert [r["number"] for r in only] == [b]
    assert json.loads(_run(ctx)("referrals", "list", "--status", "draft", "--json").stdout) == []


def test_list_table_is_readable_and_a_bad_status_is_one_line(referrals):
    ctx, a, b = referrals
    result = _run(ctx)("referrals", "list")
    assert result.exit_code == 0
    line_a = next(line for line in result.stdout.splitlines() if line.startswith(a))
    assert "已接收" in line_a and "上转" in line_a and "急诊（绿色通道）" in line_a and "张*丰" in line_a
    assert "沣水中心卫生院 → 张店区人民医院" in line_a and "共 2 条" in result.stdout
    _no_identifiers(result.stdout)
    bad = _run(ctx)("referrals", "list", "--status", "lost")
    assert bad.exit_code == 2 and bad.stdout == "" and "未知状态" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_show_has_the_timeline_masks_identifiers_and_is_audited(referrals):
    ctx, _a, b = referrals
    result = _run(ctx)("referrals", "show", b.lower(), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["number"] == b and data["status"] == "rejected"
    assert [e["to_status"] for e in data["timeline"]] == ["draft", "submitted", "rejected"]
    assert set(data["timeline"][0]) == {"at", "from_status", "to_status", "actor", "channel", "note"}
    assert data["timeline"][-1]["note"] == "床位已满" and data["reject_reason"] == "床位已满"
    assert data["timeline"][-1]["actor"] == "liaison_ma_zd" and data["timeline"][-1]["channel"] == "telegram"
    assert (data["patient_id_number"], data["patient_phone"]) == MASKED
    assert data["to_department"] == "内科" and data["diagnosis"] == "社区获得性肺炎"
    assert data["reason"] == "疑难复杂病例不能确诊" and data["green_channel"] is False
    assert data["attachments"] == []
    _no_identifiers(result.stdout)
    text = _run(ctx)("referrals", "show", b)
    assert text.exit_code == 0 and "timeline:" in text.stdout and MASKED[0] in text.stdout
    _no_identifiers(text.stdout)
    with ctx.sessions() as s:
        views = repo.audit_entries(s, action="referral.view")
        assert [v.target for v in views] == [b, b] and {v.actor for v in views} == {"cli"}
    missing = _run(ctx)("referrals", "show", "ZD-2026-999999")
    assert missing.exit_code == 1 and "没有转诊单号" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    with ctx.sessions() as s:
        assert len(repo.audit_entries(s, action="referral.view")) == 2  # nothing shown, nothing audited


def test_fhir_export_validates_as_r4_and_maps_status_and_priority(referrals, tmp_path):
    ctx, a, b = referrals
    out = tmp_path / "bundle.json"
    result = _run(ctx)("referrals", "export", "--fhir", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "已导出 2 条" in result.stderr
    text = out.read_text(encoding="utf-8")
    _no_identifiers(text)
    assert MASKED[0] not in text and MASKED[1] not in text
    data = json.loads(text)
    bundle = validate_r4(data)  # raises on anything the FHIR R4(B) models do not allow
    assert bundle.type == "collection" and len(bundle.entry) == 6
    urls = {e["fullUrl"] for e in data["entry"]}
    by_number: dict[str, dict] = {}
    for e in data["entry"]:
        res = e["resource"]
        for ref in (res.get("subject"), res.get("focus"), res.get("for")):
            if ref:
                assert ref["reference"] in urls  # every reference resolves inside the bundle
        if res["resourceType"] in ("ServiceRequest", "Task"):
            by_number.setdefault(res["identifier"][0]["value"], {})[res["resourceType"]] = res
    assert list(by_number) == [a, b]  # oldest first
    assert by_number[a]["ServiceRequest"]["priority"] == "stat" and by_number[a]["Task"]["status"] == "accepted"
    assert by_number[a]["ServiceRequest"]["status"] == "active"
    assert by_number[b]["ServiceRequest"]["status"] == "revoked" and by_number[b]["Task"]["status"] == "rejected"
    assert by_number[b]["ServiceRequest"]["priority"] == "routine"
    assert by_number[b]["Task"]["statusReason"]["text"] == "床位已满"
    assert by_number[a]["ServiceRequest"]["intent"] == "order" == by_number[a]["Task"]["intent"]
    stdout = _run(ctx)("referrals", "export", "--fhir")
    assert json.loads(stdout.stdout) == data  # the same bundle on standard output
    with ctx.sessions() as s:
        exports = repo.audit_entries(s, action="referral.export")
        assert len(exports) == 2 and exports[0].actor == "cli"


def test_since_filters_by_beijing_date_and_a_bad_date_is_one_line(engine_ctx):
    with engine_ctx.sessions.begin() as s:
        # 2026-05-31 23:00 and 2026-06-01 01:00 in Beijing time
        late_may = make_referral(s, now=datetime(2026, 5, 31, 15, 0, tzinfo=timezone.utc)).number
        june = make_referral(s, now=datetime(2026, 5, 31, 17, 0, tzinfo=timezone.utc)).number
    run = _run(engine_ctx)

    def numbers(*args: str) -> list[str]:
        result = run("referrals", "export", "--fhir", *args)
        assert result.exit_code == 0, result.output
        return [e["resource"]["identifier"][0]["value"] for e in json.loads(result.stdout)["entry"]
                if e["resource"]["resourceType"] == "Task"]

    assert numbers() == [late_may, june]
    assert numbers("--since", "2026-06-01") == [june]
    assert numbers("--since", "2026-05-31") == [late_may, june]
    assert numbers("--since", "2999-01-01") == []
    csv_rows = run("referrals", "export", "--csv", "--since", "2026-06-01").stdout
    assert late_may not in csv_rows and june in csv_rows
    for bad_value in ("yesterday", "2026-13-01", "20260601"):
        bad = run("referrals", "export", "--fhir", "--since", bad_value)
        assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.stderr and bad.stdout == ""
        assert len(bad.stderr.strip().splitlines()) == 1
    neither = run("referrals", "export")
    assert neither.exit_code == 2 and "--fhir 或 --csv" in neither.stderr
    assert run("referrals", "export", "--fhir", "--csv").exit_code == 2


def test_csv_export_opens_with_chinese_headers_and_a_bom(referrals, tmp_path):
    ctx, a, b = referrals
    result = _run(ctx)("referrals", "export", "--csv")
    assert result.exit_code == 0
    assert result.stdout.startswith("\ufeff")
    out = tmp_path / "转诊.csv"
    assert _run(ctx)("referrals", "export", "--csv", "--output", str(out)).exit_code == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\r\n" not in raw
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert list(rows[0])[:3] == ["转诊单号", "状态", "方向"] and len(rows) == 2
    assert [(r["转诊单号"], r["状态"]) for r in rows] == [(a, "已接收"), (b, "已拒绝")]
    assert rows[0]["身份证号（脱敏）"] == MASKED[0] and rows[0]["联系电话（脱敏）"] == MASKED[1]
    assert rows[0]["患者"] == "张*丰"
    _no_identifiers(raw.decode("utf-8-sig"))
    _no_identifiers(result.stdout)
