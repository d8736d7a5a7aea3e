"""Training quotas (issue 10): progress on records with overlaps, prorating, pace; a file with bad
rows refused whole with each row's line number; ``yilian quotas import/status``; ``/quota`` in chat
for a liaison officer (own institution) and an admin (everyone), refused to a physician."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest

from conftest import cli_runner
from handlers import quotas
from handlers.quota_service import parse_records

pytest_plugins = ("engine_support",)

LEAD = quotas.InstitutionInfo(1, "张店区人民医院", "zhangdian", "二级", True, medical_staff=100)
CLINIC = quotas.InstitutionInfo(2, "湖田卫生院", "zhangdian", "基层", False)
XIAPAI = quotas.QuotaRule(id="x", consortium="zhangdian", kind="下派", title="下派", source="§", period="year",
                          share_of_staff=0.05, min_days=30, applies_to={"is_lead": True})
HEADER = "kind,person,from_institution,to_institution,start,end\n"


def rec(person: str, start: str, end: str, kind: str = "下派") -> quotas.Record:
    return quotas.Record(kind, person, LEAD.id, CLINIC.id, date.fromisoformat(start), date.fromisoformat(end))


def test_overlapping_and_touching_records_of_one_person_count_once():
    records = [rec("王", "2026-03-01", "2026-03-20"), rec("王", "2026-03-15", "2026-04-05"),  # overlap: 36 days
               rec("李", "2026-05-01", "2026-05-10"), rec("李", "2026-05-11", "2026-05-25"),  # touching: 25 days
               rec("赵", "2025-12-20", "2026-01-19")]  # crosses the year: 19 days in 2026
    p = quotas.progress(XIAPAI, LEAD, records, date(2026, 12, 31))
    assert p.target == 5  # 5% of 100 medical staff
    assert p.done == 1 and p.partial == 2  # only 王 reached 30 days in 2026
    assert p.fraction == pytest.approx((30 + 25 + 19) / (5 * 30))
    assert quotas.merge([(date(2026, 3, 1), date(2026, 3, 20)), (date(2026, 3, 15), date(2026, 4, 5))]) == \
        [(date(2026, 3, 1), date(2026, 4, 5))]


def test_days_are_counted_up_to_today_and_pace_compares_with_the_elapsed_share():
    records = [rec(f"P{i}", "2026-01-05", "2026-02-03") for i in range(5)]  # 5 people × 30 days, done by Feb
    early = quotas.progress(XIAPAI, LEAD, records, date(2026, 1, 14))  # 10 days in, 4% of the year gone
    assert early.done == 0 and early.partial == 5 and not early.behind(0.15)
    assert quotas.progress(XIAPAI, LEAD, records, date(2026, 3, 1)).met
    nobody = quotas.progress(XIAPAI, LEAD, [], date(2026, 7, 1))
    assert nobody.behind(0.15) and not quotas.progress(XIAPAI, LEAD, [], date(2026, 2, 1)).behind(0.15)


def test_a_rule_that_starts_mid_period_asks_for_its_share_when_it_prorates():
    rule = quotas.QuotaRule(id="p", consortium="zhangdian", kind="下派", title="t", source="§", people=4,
                            min_days=1, prorate=True, effective_from=date(2026, 7, 1), applies_to={"is_lead": True})
    assert quotas.progress(rule, LEAD, [], date(2026, 8, 1)).target == 2  # half a year left: half of 4
    assert quotas.progress(rule, LEAD, [], date(2027, 8, 1)).target == 4  # a whole year


def test_share_of_staff_without_a_head_count_says_so():
    p = quotas.progress(XIAPAI, quotas.InstitutionInfo(3, "X", "zhangdian", "二级", True), [], date(2026, 6, 1))
    assert p.target is None and "未登记医务人员数" in quotas.line(p)


def test_every_default_rule_cites_its_clause_and_applies_to_a_sample_institution():
    for rule in quotas.load_rules():
        assert rule.source.startswith("《") and "“" in rule.source, rule.id


def test_a_file_with_bad_rows_is_refused_whole_naming_each_line(engine_ctx):
    text = (HEADER + "进修,赵医生,沣水中心卫生院,张店区人民医院,2026-05-01,2026-06-15\n"
            "学习,王医生,张店区人民医院,湖田卫生院,2026-03-01,2026-03-20\n"
            "\n"
            "下派,李医生,不存在医院,湖田卫生院,2026-03-15,2026-02-05\n"
            "下派,周医生,张店区人民医院,德阳市人民医院,2026-03-01,2026-03-05\n")
    with engine_ctx.sessions() as s:
        result = parse_records(s, "records.csv", text.encode("utf-8"))
    assert not result.ok and result.rows == []
    lines = dict(result.errors)
    assert set(lines) == {3, 5, 6}  # physical lines: the header is 1, the blank line 4 is skipped
    assert "学习" in lines[3] and "不存在医院" in lines[5] and "早于" in lines[5] and "同一医联体" in lines[6]
    with engine_ctx.sessions() as s:
        assert not parse_records(s, "records.csv", b"kind,person\n").ok
        assert parse_records(s, "records.pdf", b"%PDF").errors[0][1].startswith("只接受")


def test_import_and_status_from_the_cli_with_an_xlsx_file(engine_ctx, tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["kind", "person", "from_institution", "to_institution", "start", "end"])
    ws.append(["进修", "赵医生", "沣水中心卫生院", "张店区人民医院", date(2026, 5, 1), date(2026, 6, 15)])
    ws.append(["进修", "赵医生", "沣水中心卫生院", "张店区人民医院", "2026-06-01", "2026-06-30"])
    path = tmp_path / "records.xlsx"
    wb.save(path)
    run = cli_runner(engine_ctx.settings.resolved_data_dir)
    result = run("quotas", "import", str(path))
    assert result.exit_code == 0 and "导入 2 条" in result.output
    again = run("quotas", "import", str(path))
    assert again.exit_code == 0 and "导入 0 条" in again.output  # nothing twice
    status = json.loads(run("quotas", "status", "--consortium", "zhangdian", "--year", "2026", "--json").output)
    fengshui = next(p for p in status if p["institution"] == "沣水中心卫生院" and p["kind"] == "进修")
    assert fengshui["done"] == 1 and fengshui["met"] and fengshui["target"] == 1
    assert {"rule", "period", "target", "done", "fraction", "behind", "source"} <= set(fengshui)
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "坐诊,钱,张店区人民医院,湖田卫生院,2026-13-01,2026-12-01\n", "utf-8")
    refused = run("quotas", "import", str(bad))
    assert refused.exit_code == 1 and "第 2 行" in refused.output


def test_quota_in_chat_for_liaison_admin_and_physician(chat, engine_ctx):
    with engine_ctx.sessions.begin() as s:
        from handlers.quota_service import import_records

        data = (HEADER + "进修,赵医生,湖田卫生院,张店区人民医院,2026-01-05,2026-02-20\n").encode()
        assert import_records(s, "r.csv", data, actor="test").added == 1
    liaison = chat("web", "liaison_xu_zd").say("/quota")[0].text  # 湖田卫生院
    assert "湖田卫生院" in liaison and "沣水中心卫生院" not in liaison and "▓" in liaison and "依据：《" in liaison
    admin = chat("web", "admin_zd").say("我院进修完成情况")[0].text
    assert "湖田卫生院" in admin and "沣水中心卫生院" in admin and "核心医院下派" in admin
    physician = chat("web", "dr_liu_zd").say("配额")[0].text
    assert "只有联络员和管理员" in physician


def test_a_liaison_records_a_placement_in_chat_step_by_step(chat, engine_ctx):
    ma = chat("web", "liaison_ma_zd")  # 张店区人民医院, the lead hospital
    ma.say("登记下派")
    assert "人员姓名" in ma.text  # the kind came with the command
    ma.say("王医生")
    assert "下派到哪家机构" in ma.text
    ma.press("湖田卫生院")
    ma.say("明天")
    assert "日期格式不对" in ma.text
    ma.say("2026/3/1")
    ma.say("2026-02-01")
    assert "不能早于开始日期" in ma.text
    ma.say("2026年4月5日")
    assert "2026-03-01 至 2026-04-05（36 天）" in ma.text
    ma.press("保存")
    assert "已保存" in ma.text
    with engine_ctx.sessions() as s:
        from storage.models import TrainingRecord

        row = s.query(TrainingRecord).one()
        assert (row.kind, row.person, row.to_institution.name, row.source) == ("下派", "王医生", "湖田卫生院", "chat")
    ma.say("登记下派")  # the same record again is not stored twice
    ma.say("王医生")
    ma.press("湖田卫生院")
    ma.say("2026-03-01")
    ma.say("2026-04-05")
    ma.press("保存")
    assert "已经登记过了" in ma.text
    assert "只有联络员和管理员" in chat("web", "dr_wu_zd").say("/record")[0].text
