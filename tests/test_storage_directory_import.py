"""Directory import: the sample loads; bad files are rejected whole, with line numbers."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage import repositories as repo
from storage.directory_import import DirectoryImportError, import_directory, import_directory_data
from storage.models import AuditLog, Consortium, Institution, Staff

pytest_plugins = ("storage.testing",)  # db_engine, session fixtures

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "storage" / "samples" / "directory.yaml"
POLICIES = ROOT / "knowledge" / "samples"


def counts(session) -> tuple[int, int, int]:
    return tuple(session.scalar(select(func.count()).select_from(m)) for m in (Consortium, Institution, Staff))


# --- the sample -----------------------------------------------------------------------------------

def test_sample_directory_imports_cleanly_and_twice_without_change(session):
    first = import_directory(session, SAMPLE)
    assert first.ok, first.summary_zh()
    assert first.warnings == []
    session.commit()
    assert first.consortia.created == 5 and first.staff.created >= 25
    codes = set(session.scalars(select(Consortium.code)))
    assert codes == {"lincang", "zhangdian", "deyang", "songyuan", "ziyang"}

    audit_before = session.scalar(select(func.count()).select_from(AuditLog))
    second = import_directory(session, SAMPLE)
    session.commit()
    assert second.ok and not second.changed
    assert second.staff.unchanged == first.staff.created
    assert second.institutions.unchanged == first.institutions.created
    assert session.scalar(select(func.count()).select_from(AuditLog)) == audit_before
    assert "未变" in second.summary_zh()


def test_sample_directory_has_the_people_every_consortium_needs(session):
    assert import_directory(session, SAMPLE).ok
    admins = 0
    for consortium in session.scalars(select(Consortium)):
        institutions = consortium.institutions
        leads = [i for i in institutions if i.is_lead]
        assert len(leads) == 1, consortium.code
        lead = leads[0]
        assert all(i.parent_id == lead.id for i in institutions if i is not lead), consortium.code
        staff = repo.list_staff(session, consortium_id=consortium.id)
        at_lead = {r for s in staff if s.institution_id == lead.id for r in s.roles}
        at_member = {r for s in staff if s.institution_id != lead.id for r in s.roles}
        assert {"physician", "liaison"} <= at_lead, consortium.code
        assert {"physician", "liaison"} <= at_member, consortium.code
        admins += sum(s.has_role("admin") for s in staff)
        assert all(s.wecom_userid and re.fullmatch(r"[a-z]+", s.wecom_userid) for s in staff)
        suffix = {"lincang": "_lc", "zhangdian": "_zd", "deyang": "_dy", "songyuan": "_sy", "ziyang": "_zy"}
        assert all(s.code.endswith(suffix[consortium.code]) for s in staff), consortium.code
    assert admins >= 1
    assert repo.get_staff_by_code(session, "dr_wang_sy").institution.name == "松原吉林油田医院"


def test_sample_uses_real_institutions_but_no_real_person_names():
    import yaml

    def norm(text: str) -> str:
        return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))

    policies = norm("".join(p.read_text(encoding="utf-8") for p in POLICIES.glob("*.txt")))
    data = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    songyuan = next(c for c in data["consortia"] if c["code"] == "songyuan")
    assert len(songyuan["institutions"]) == 33  # 集团总院 + 32 成员单位, as in 附件1
    for c in data["consortia"]:
        for inst in c["institutions"]:
            if "示例" not in inst["name"]:
                # "临沧市人民医院" is written "市人民医院" in its own document.
                assert norm(inst["name"]) in policies or norm(inst["name"])[2:] in policies, inst["name"]
            for person in inst.get("staff", []):
                assert person["name"] not in policies, f"{person['name']} is a real name from the policies"


# --- YAML errors ------------------------------------------------------------------------------------

BAD_YAML = """\
consortia:
  - code: lincang
    name: 临沧市城市医疗集团
    institutions:
      - name: 临沧市人民医院
        level: 三级
        is_lead: true
        staff:
          - code: dr_ok_lc
            name: 好医生
            roles: [physician]
          - code: dr_bad_lc
            name: 坏角色
            roles: [surgeon]
      - name: 临翔区紧密型医共体总医院
        level: 四级
      - name: 临沧市人民医院
        level: 三级
staff:
  - consortium: lincang
    institution: 不存在的医院
    code: lia_x_lc
    name: 某联络员
    roles: liaison
  - consortium: lincang
    institution: 临沧市人民医院
    code: dr_ok_lc
    name: 重复代码
    roles: [physician]
    telegram_user_id: abc
"""


def test_bad_yaml_rows_are_reported_by_line_and_nothing_is_imported(session):
    report = import_directory_data(session, BAD_YAML, fmt="yaml", source="bad.yaml")
    assert not report.ok
    by_line = {e.line: e.message for e in report.errors}
    assert "surgeon" in by_line[12]                         # bad role, at its staff item
    assert "四级" in by_line[15]                             # bad level
    assert "重复" in by_line[17]                             # institution defined twice
    assert "telegram_user_id" in by_line[25]                 # not a number
    assert "不存在的医院" in by_line[20]                     # unknown institution
    assert sorted(by_line) == [12, 15, 17, 20, 25]
    assert counts(session) == (0, 0, 0)
    assert "未导入任何数据" in report.summary_zh() and "第 12 行" in report.summary_zh()


def test_raise_on_error(session, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML, encoding="utf-8")
    with pytest.raises(DirectoryImportError) as info:
        import_directory(session, path, raise_on_error=True)
    assert info.value.report.errors and "第 12 行" in str(info.value)
    assert counts(session) == (0, 0, 0)


def test_yaml_syntax_error_points_at_the_line(session):
    report = import_directory_data(session, "consortia:\n  - code: x\n    name: [unclosed\n", fmt="yaml")
    assert not report.ok and report.errors[0].line in (3, 4)
    assert "YAML" in report.errors[0].message


def test_typo_in_a_field_name_is_an_error(session):
    text = "consortia:\n  - code: zhangdian\n    name: 张店区人民医院医疗集团\n    citty: 淄博\n"
    report = import_directory_data(session, text, fmt="yaml")
    assert [e.line for e in report.errors] == [2] and "citty" in report.errors[0].message


def test_flat_lists_format_and_default_parent(session):
    text = """\
consortia:
  - {code: zhangdian, name: 张店区人民医院医疗集团, city: 淄博}
institutions:
  - {consortium: zhangdian, name: 张店区人民医院, level: 二级, is_lead: true}
  - {consortium: zhangdian, name: 湖田卫生院, level: 基层}
staff:
  - {consortium: zhangdian, institution: 湖田卫生院, code: dr_a_zd, name: 甲医生, roles: [医生, 联络员]}
"""
    report = import_directory_data(session, text, fmt="yaml")
    assert report.ok, report.summary_zh()
    member = session.scalars(select(Institution).where(Institution.name == "湖田卫生院")).one()
    assert member.parent.name == "张店区人民医院"
    assert repo.get_staff_by_code(session, "dr_a_zd").roles == ["physician", "liaison"]


def test_two_leads_in_one_consortium_are_refused(session):
    text = """\
consortia:
  - code: ziyang
    name: 资阳市雁江城区医疗集团
    institutions:
      - {name: 资阳市第一人民医院, level: 三级, is_lead: true}
      - {name: 资阳市人民医院, level: 三级, is_lead: true}
"""
    report = import_directory_data(session, text, fmt="yaml")
    assert not report.ok and report.errors[0].line == 6 and "牵头" in report.errors[0].message


# --- CSV --------------------------------------------------------------------------------------------

GOOD_CSV = """\
consortium,consortium_name,institution,level,is_lead,staff_code,name,roles,wecom_userid,telegram_user_id,department,phone
deyang,德阳市人民医院城市医疗集团,德阳市人民医院,三级,是,dr_chen_dy,陈嘉禾,physician,chenjiahe,,心血管内科,13800003000
deyang,,德阳市人民医院,三级,是,liaison_luo_dy,罗雨桐,liaison|admin,luoyutong,,医务部,
deyang,,示例社区卫生服务中心,基层,否,dr_tang_dy,唐书宇,physician;liaison,,,全科,
"""


def test_csv_imports_and_reimport_audits_role_changes(db_engine, session):
    assert import_directory_data(session, GOOD_CSV, fmt="csv", source="d.csv").ok
    session.commit()
    luo = repo.get_staff_by_code(session, "liaison_luo_dy")
    assert luo.roles == ["liaison", "admin"]
    member = session.scalars(select(Institution).where(Institution.name == "示例社区卫生服务中心")).one()
    assert member.level == "基层" and not member.is_lead and member.parent.name == "德阳市人民医院"

    # Bind a Telegram account by invite; a re-import without Telegram ids must keep it.
    code = repo.create_invite(session, luo, created_by="cli")
    assert repo.redeem_invite(session, code, 424242).ok
    session.commit()

    changed = GOOD_CSV.replace("liaison|admin", "liaison")
    report = import_directory_data(session, changed, fmt="csv", source="d.csv", actor="admin_dy")
    session.commit()
    assert report.ok and report.staff.updated == 1 and report.staff.unchanged == 2
    assert report.role_changes == [("liaison_luo_dy", ["liaison", "admin"], ["liaison"])]
    entry = repo.audit_entries(session, action="role_change")[0]
    assert entry.actor == "admin_dy" and entry.target == "staff:liaison_luo_dy"
    assert entry.details["to"] == ["liaison"]
    assert repo.get_staff_by_telegram_id(session, 424242).code == "liaison_luo_dy"
    # The phone is kept in the directory but never in the audit trail.
    assert "13800003000" not in repr([e.details for e in repo.audit_entries(session)])


BAD_CSV = (
    "consortium,consortium_name,institution,level,is_lead,staff_code,name,roles,wecom_userid,telegram_user_id,department,phone\n"
    'songyuan,松原吉林油田医院城市医疗集团,松原吉林油田医院,三级,是,dr_wang_sy,王思远,physician,wangsiyuan,,"心血管\n内科",\n'
    "songyuan,,松原吉林油田医院,二级,是,dr_b_sy,乙,physician,,,,\n"
    "songyuan,,哈达山卫生院,基层,否,dr_c_sy,丙,nurse,,,,\n"
    "songyuan,,哈达山卫生院,基层,否,Dr C!,丁,physician,,,,\n"
    "songyuan,,哈达山卫生院,基层,否,dr_e_sy,戊,physician,wangsiyuan,,,\n"
    "nowhere,,某医院,一级,否,dr_f_sy,己,physician,,,,\n"
)


def test_bad_csv_rows_are_reported_by_physical_line_and_nothing_is_imported(session):
    report = import_directory_data(session, BAD_CSV, fmt="csv", source="bad.csv")
    assert not report.ok
    by_line = {e.line: e.message for e in report.errors}
    # Line 2-3 is one record (quoted newline), so the next rows start at 4.
    assert "二级" in by_line[4] and "三级" in by_line[4]   # level disagrees with line 2
    assert "nurse" in by_line[5]
    assert "Dr C!" in by_line[6] or "dr c!" in by_line[6]
    assert "wangsiyuan" in by_line[7]                      # WeCom id used twice
    assert "nowhere" in by_line[8]                         # unknown consortium without a name
    assert 2 not in by_line and 3 not in by_line
    assert counts(session) == (0, 0, 0)


def test_csv_with_chinese_headers_in_gb18030_and_conflict_with_existing_staff(session):
    assert import_directory(session, SAMPLE).ok
    before = counts(session)
    csv_text = "医联体,机构,级别,牵头,人员代码,姓名,角色,企业微信\nsongyuan,哈达山卫生院,基层,否,dr_new_sy,新医生,医生,wangsiyuan\n"
    report = import_directory_data(session, csv_text.encode("gb18030"), fmt="csv")
    assert not report.ok
    assert report.errors[0].line == 2 and "dr_wang_sy" in report.errors[0].message
    assert counts(session) == before

    ok = import_directory_data(session, csv_text.replace("wangsiyuan", "xinyisheng").encode("gb18030"), fmt="csv")
    assert ok.ok and ok.staff.created == 1
    assert repo.get_staff_by_wecom_userid(session, "xinyisheng").institution.name == "哈达山卫生院"


def test_missing_columns_and_unsupported_files(session, tmp_path):
    report = import_directory_data(session, "consortium,institution\nx,y\n", fmt="csv")
    assert not report.ok and report.errors[0].line == 1 and "staff_code" in report.errors[0].message
    other = tmp_path / "directory.xlsx"
    other.write_bytes(b"PK")
    assert "不支持" in import_directory(session, other).errors[0].message
    assert "无法读取" in import_directory(session, tmp_path / "missing.yaml").errors[0].message


def test_dry_run_validates_without_writing(session):
    report = import_directory(session, SAMPLE, dry_run=True)
    assert report.ok and report.dry_run and counts(session) == (0, 0, 0)
    assert "校验通过" in report.summary_zh()


def test_an_admin_marks_who_receives_referrals(session):
    from handlers.referral.rules import load_rules, receives

    assert import_directory(session, SAMPLE).ok
    cdc = session.scalar(select(Institution).where(Institution.name == "松原市疾病预防控制中心"))
    assert cdc.receives_referrals is None and not receives(cdc, load_rules())  # by kind: not clinical
    override = """
consortia:
  - code: songyuan
    name: 松原吉林油田医院城市医疗集团
    institutions:
      - {name: 松原市疾病预防控制中心, receives_referrals: true}
      - {name: 哈达山卫生院, receives_referrals: 否}
"""
    report = import_directory_data(session, override, fmt="yaml", source="mark.yaml")
    assert report.ok, report.errors
    session.refresh(cdc)
    hadashan = session.scalar(select(Institution).where(Institution.name == "哈达山卫生院"))
    assert cdc.receives_referrals is True and receives(cdc, load_rules())
    assert hadashan.receives_referrals is False and not receives(hadashan, load_rules())
    bad = import_directory_data(session, override.replace("true", "maybe"), fmt="yaml", source="bad.yaml")
    assert not bad.ok and "receives_referrals" in bad.errors[0].message


def test_receives_referrals_in_csv_with_the_chinese_column(session):
    assert import_directory(session, SAMPLE).ok
    csv_text = ("医联体,机构,级别,接收转诊,人员代码,姓名,角色\n"
                "songyuan,松原市妇幼保健计划生育服务中心,,是,dr_fy_sy,妇幼医生,医生\n"
                "songyuan,松原市妇幼保健计划生育服务中心,,是,liaison_fy_sy,妇幼联络员,联络员\n")
    report = import_directory_data(session, csv_text.encode("gb18030"), fmt="csv", source="fy.csv")
    assert report.ok, report.errors
    fy = session.scalar(select(Institution).where(Institution.name == "松原市妇幼保健计划生育服务中心"))
    assert fy.receives_referrals is True
    conflict = csv_text.replace(",是,liaison_fy_sy", ",否,liaison_fy_sy")
    bad = import_directory_data(session, conflict, fmt="csv", source="fy.csv")
    assert not bad.ok and bad.errors[0].line == 3 and "receives_referrals" in bad.errors[0].message
    bad_value = import_directory_data(session, csv_text.replace(",是,dr_fy_sy", ",也许,dr_fy_sy"), fmt="csv")
    assert not bad_value.ok and bad_value.errors[0].line == 2 and "也许" in bad_value.errors[0].message


# --- referral_prefix ------------------------------------------------------------------------------

def test_sample_consortia_have_referral_prefixes_by_the_initials_rule(session):
    from storage.referrals import referral_prefix

    assert import_directory(session, SAMPLE).ok
    prefixes = dict(session.execute(select(Consortium.code, Consortium.referral_prefix)).all())
    assert prefixes == {"lincang": "LC", "zhangdian": "ZD", "deyang": "DY", "songyuan": "SY", "ziyang": "ZY"}
    for consortium in session.scalars(select(Consortium)):
        assert referral_prefix(consortium) == consortium.referral_prefix
    # The rule by itself gives the same: 临沧 LC, 张店 ZD, 德阳 DY, 松原 SY, 资阳 ZY.
    for consortium in session.scalars(select(Consortium)):
        assert referral_prefix(Consortium(code=consortium.code, name=consortium.name)) == consortium.referral_prefix
    # No institution is marked either way in the sample: receiving goes by kind.
    assert session.scalars(select(Institution.receives_referrals).distinct()).all() == [None]


PREFIX_YAML = """
consortia:
  - code: alpha
    name: 甲乙医疗集团
    referral_prefix: {prefix}
    institutions:
      - {{name: 甲医院, level: 三级, is_lead: true}}
"""


@pytest.mark.parametrize("value", ["Z", "ZDABC", "Z1", "张店", "Z-D", "[ZD]", "Ü"])
def test_a_bad_referral_prefix_is_a_clear_error_and_nothing_is_imported(session, value):
    report = import_directory_data(session, PREFIX_YAML.format(prefix=value), fmt="yaml", source="p.yaml")
    assert not report.ok and counts(session) == (0, 0, 0)
    assert report.errors[0].line == 3
    assert "referral_prefix" in report.errors[0].message
    assert "2–4 个大写英文字母" in report.errors[0].message or "应为文字" in report.errors[0].message


def test_referral_prefix_two_to_four_letters_lower_case_taken_as_upper(session):
    for value, stored in (("AB", "AB"), ("abcd", "ABCD"), ("Jy", "JY")):
        report = import_directory_data(session, PREFIX_YAML.format(prefix=value), fmt="yaml", source="p.yaml")
        assert report.ok, report.errors
        assert session.scalar(select(Consortium.referral_prefix).where(Consortium.code == "alpha")) == stored
    again = import_directory_data(session, PREFIX_YAML.format(prefix="JY"), fmt="yaml", source="p.yaml")
    assert again.ok and not again.changed
    # Not given: what is stored stays.
    without = PREFIX_YAML.replace("    referral_prefix: {prefix}\n", "").format()
    assert import_directory_data(session, without, fmt="yaml", source="p.yaml").ok
    assert session.scalar(select(Consortium.referral_prefix).where(Consortium.code == "alpha")) == "JY"


def test_two_consortia_may_not_share_a_referral_prefix(session):
    assert import_directory(session, SAMPLE).ok
    taken = PREFIX_YAML.format(prefix="ZD")
    report = import_directory_data(session, taken, fmt="yaml", source="p.yaml")
    assert not report.ok and "zhangdian" in report.errors[0].message and report.errors[0].line == 3
    # A prefix another consortium's name would give (no prefix stored) counts as taken too.
    session.execute(Consortium.__table__.update().where(Consortium.code == "lincang").values(referral_prefix=None))
    derived = import_directory_data(session, PREFIX_YAML.format(prefix="LC"), fmt="yaml", source="p.yaml")
    assert not derived.ok and "lincang" in derived.errors[0].message
    # Two in the same file.
    both = PREFIX_YAML.format(prefix="QQ") + """  - code: beta
    name: 丙丁医疗集团
    referral_prefix: qq
"""
    twice = import_directory_data(session, both, fmt="yaml")
    assert not twice.ok and {e.line for e in twice.errors} == {3, 8}
    # Moving a prefix from one consortium to another in one file is fine.
    swap = """
consortia:
  - {code: zhangdian, name: 张店区人民医院医疗集团, referral_prefix: ZDA}
  - {code: songyuan, name: 松原吉林油田医院城市医疗集团, referral_prefix: ZD}
"""
    assert import_directory_data(session, swap, fmt="yaml", source="swap.yaml").ok
    assert session.scalar(select(Consortium.referral_prefix).where(Consortium.code == "songyuan")) == "ZD"


def test_referral_prefix_in_csv_with_the_chinese_column(session):
    csv_text = ("医联体,医联体名称,转诊单号前缀,机构,级别,牵头,人员代码,姓名,角色\n"
                "alpha,甲乙医疗集团,jy,甲医院,三级,是,dr_a_jy,甲医生,医生\n"
                "alpha,,JY,甲医院,,,dr_b_jy,乙医生,医生\n")
    report = import_directory_data(session, csv_text, fmt="csv", source="p.csv")
    assert report.ok, report.errors
    assert session.scalar(select(Consortium.referral_prefix).where(Consortium.code == "alpha")) == "JY"
    conflict = import_directory_data(session, csv_text.replace("alpha,,JY", "alpha,,JZ"), fmt="csv")
    assert not conflict.ok and conflict.errors[0].line == 3 and "referral_prefix" in conflict.errors[0].message
    bad = import_directory_data(session, csv_text.replace("alpha,,JY", "alpha,,J9"), fmt="csv")
    assert not bad.ok and bad.errors[0].line == 3 and "J9" in bad.errors[0].message
