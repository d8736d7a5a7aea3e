"""Clause-aware chunking: what a physician sees as the citation depends on it."""

from __future__ import annotations

from knowledge.chunking import MAX_CHUNK_CHARS, chunk_document, match_heading
from knowledge.extract_types import Extracted, TableBlock, TextBlock
from knowledge.readers import extract
from knowledge.samples import SAMPLES_DIR


def _doc(text: str, title: str = "测试制度", hard_wrapped: bool = True) -> Extracted:
    return Extracted("t.txt", title, [TextBlock(line) for line in text.splitlines()], hard_wrapped)


def test_heading_styles_are_recognised():
    cases = {
        "第三章 总则": "第三章",
        "第十二条 联席会议": "第十二条",
        "一、总体要求": "一",
        "（二）主要目标": "（二）",
        "(三)强化督导评估。": "(三)",
        "3.2.1 管理合作。互派管理人员": "3.2.1",
        "2. 落实功能定位。": "2",
        "1、张店区人民医院医疗集团": "1",
        "(1)建立转诊档案": "(1)",
    }
    for line, number in cases.items():
        heading = match_heading(line)
        assert heading is not None, line
        assert heading.number == number, line
    for body in ("2017 年，基本搭建医联体制度框架", "1-2个有明显成效的医共体", "90%以上", "各成员单位"):
        assert match_heading(body) is None, body


def test_nested_decimal_clauses_carry_their_heading_path():
    text = (
        "3.标准\n"
        "3.2 协作内容。\n"
        "3.2.1 管理合作。互派管理人员交流学习，协助制定和完善发展规划，建立和完善管理制度、\n"
        "技术规范，提高医院管理水平。\n"
        "3.3 联席会议。联席会议由医院牵头发起，原则上，每年至少组织一次联席会议。\n"
    )
    chunks = chunk_document(_doc(text))
    by_no = {c.clause_no: c for c in chunks}
    assert by_no["3.2.1"].heading_path == ["3.标准", "3.2 协作内容", "3.2.1 管理合作"]
    # the hard wrap after "管理制度、" is re-joined into one sentence
    assert "管理制度、技术规范" in by_no["3.2.1"].body
    assert by_no["3.3"].heading_path == ["3.标准", "3.3 联席会议"]
    assert by_no["3.3"].text("测试制度").startswith("测试制度 › 3.标准 › 3.3 联席会议\n")


def test_chinese_numbering_nests_and_page_furniture_is_dropped():
    text = (
        "一、总体要求\n（一）指导思想\n全面贯彻党的十九大精神。\n— 2 —\n"
        "（二）主要目标\n到2020年，形成较为完善的医联体政策体系。\n3\n"
        "二、组建原则\n（一）坚持政府主导，统筹规划。落实政府规划职能。\n"
    )
    chunks = chunk_document(_doc(text))
    paths = [c.heading_path for c in chunks]
    assert ["一、总体要求", "（一）指导思想"] in paths
    assert ["一、总体要求", "（二）主要目标"] in paths
    assert ["二、组建原则", "（一）坚持政府主导，统筹规划"] in paths
    assert not any("— 2 —" in c.body or c.body == "3" for c in chunks)


def test_list_clause_carries_its_items_which_also_stand_alone():
    text = (
        "7.2 城市医疗集团成员享有下列权利：\n"
        "7.2.1 各成员单位以独立法人资格自主运营、自主管理。\n"
        "7.2.2 在城市医疗集团内共享资源。\n"
    )
    chunks = chunk_document(_doc(text))
    parent = next(c for c in chunks if c.clause_no == "7.2")
    assert "7.2.1 各成员单位以独立法人资格自主运营" in parent.body
    assert "7.2.2 在城市医疗集团内共享资源" in parent.body
    assert any(c.clause_no == "7.2.1" and c.body.startswith("各成员单位") for c in chunks)


def test_long_clause_is_split_on_sentence_ends_under_the_same_heading():
    sentence = "医联体内各医疗机构要加强协作，提升基层服务能力，推进分级诊疗制度建设。"
    text = "（二）科学实施双向转诊\n" + sentence * 20 + "\n"
    chunks = chunk_document(_doc(text))
    assert len(chunks) > 1
    assert all(len(c.body) <= MAX_CHUNK_CHARS for c in chunks)
    assert all(c.body.endswith("。") for c in chunks)
    assert all(c.heading_path == ["（二）科学实施双向转诊"] for c in chunks)


def test_tab_laid_table_becomes_one_record_per_row_with_column_names():
    path = SAMPLES_DIR / "松原吉林油田医院城市医疗集团实施方案.txt"
    chunks = chunk_document(extract(path.name, path.read_bytes()))
    rows = [c for c in chunks if c.kind == "table_row"]
    contact = next(c for c in rows if "建设社区卫生服务中心" in c.body and "付薇薇" in c.body)
    assert "单位名称：建设社区卫生服务中心" in contact.body
    assert "姓名：付薇薇" in contact.body
    assert contact.heading_path[-1] == "松原吉林油田医院城市医疗集团联系人名单"
    # 33 member units in annex 1 and 33 contacts in annex 2
    assert len(rows) == 66


def test_docx_table_rows_keep_their_header():
    doc = Extracted(
        "members.docx",
        "成员名单",
        [TextBlock("附件1 成员单位名单"), TableBlock(["单位", "联系人"], [["湖田卫生院", "王芳"], ["傅家卫生院", "李强"]])],
        hard_wrapped=False,
    )
    rows = [c for c in chunk_document(doc) if c.kind == "table_row"]
    assert [r.body for r in rows] == ["单位：湖田卫生院；联系人：王芳", "单位：傅家卫生院；联系人：李强"]


def test_word_field_codes_and_mid_sentence_breaks_are_cleaned():
    text = (
        "二、工作目标\n"
        "到 2023 年底，按照省级试点要求，探索城市医疗集团运行\n"
        "\n"
        "机制，城市医疗集团内各医疗卫生机构落实功能定位，基本形成科学有序、系统、连续的就医诊疗格局，不断巩固分级诊疗制度建设成效。\n"
        "附件2\n"
        "\ufffd CONTROL Seal.MSSeal.1 \\s \ufffd\ufffd\ufffd\n"
        "松原吉林油田医院文件_1234567890.unknown\n"
    )
    chunks = chunk_document(_doc(text))
    goal = next(c for c in chunks if c.heading_path == ["二、工作目标"])
    assert "探索城市医疗集团运行机制，城市医疗集团内" in goal.body
    annex = next(c for c in chunks if c.heading_path == ["附件2"])
    assert annex.body == "松原吉林油田医院文件"
