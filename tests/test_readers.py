"""Format readers: what a user uploading TXT / MD / DOCX / PDF would notice."""

from __future__ import annotations

import os

import pytest

from knowledge.extract_types import Extracted, IngestError, TableBlock, TextBlock
from knowledge.readers import SUPPORTED_SUFFIXES, extract

try:
    from tests.fixtures_docs import (
        make_blank_pdf,
        make_cjk_pdf,
        make_docx,
        make_encrypted_pdf,
        make_ole_file,
        make_text_pdf,
        replace_zip_member,
    )
except ImportError:  # tests/ itself on sys.path (pytest "prepend" import mode, no package)
    from fixtures_docs import (  # type: ignore[no-redef]
        make_blank_pdf,
        make_cjk_pdf,
        make_docx,
        make_encrypted_pdf,
        make_ole_file,
        make_text_pdf,
        replace_zip_member,
    )

POLICY_TXT = (
    "关于推进医疗联合体建设和发展的实施意见\r\n"
    "\r\n"
    "一、总体要求   \r\n"
    "（一）指导思想。以人民健康为中心，推进分级诊疗，\r\n"
    "促进优质医疗资源下沉。\r\n"
    "\t科室\t联系人\t电话\r\n"
)

PDF_LINES = [
    "Two-way Referral Management Measures",
    "Article 1. Lead hospitals shall accept upward referrals within 24 hours.",
    "Article 2. Stable patients are referred back to community health centres.",
]


def texts(extracted: Extracted) -> list[str]:
    return [b.text for b in extracted.blocks if isinstance(b, TextBlock)]


def tables(extracted: Extracted) -> list[TableBlock]:
    return [b for b in extracted.blocks if isinstance(b, TableBlock)]


def raises_ingest(file_name: str, data: bytes, **kwargs) -> IngestError:
    with pytest.raises(IngestError) as info:
        extract(file_name, data, **kwargs)
    err = info.value
    assert err.file_name == file_name
    assert file_name in str(err)
    assert err.reason and err.reason_zh and err.reason != err.reason_zh
    return err


# ---------------------------------------------------------------------------------------------
# TXT
# ---------------------------------------------------------------------------------------------


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == (".txt", ".md", ".docx", ".pdf")


def test_gbk_txt_decodes_to_correct_chinese() -> None:
    result = extract("资阳市实施意见.txt", POLICY_TXT.encode("gbk"))
    assert result.title == "资阳市实施意见"
    assert result.hard_wrapped is True
    lines = texts(result)
    assert lines[0] == "关于推进医疗联合体建设和发展的实施意见"
    assert "（一）指导思想。以人民健康为中心，推进分级诊疗，" in lines
    assert "促进优质医疗资源下沉。" in lines


def test_gb18030_only_characters_decode() -> None:
    # "𠀀" and "䶮" are outside GBK but inside GB18030.
    text = "第一条 罕见字：䶮、𠀀。医联体牵头医院负责双向转诊。\n"
    assert texts(extract("罕见字.txt", text.encode("gb18030"))) == [text.strip()]


def test_utf8_bom_is_removed_and_lines_are_kept_as_is() -> None:
    result = extract("政策.TXT", b"\xef\xbb\xbf" + POLICY_TXT.encode("utf-8"))
    lines = texts(result)
    assert lines[0] == "关于推进医疗联合体建设和发展的实施意见"  # no BOM, no "\r"
    assert lines[1] == ""  # blank line survives as a paragraph break
    assert lines[2] == "一、总体要求"  # trailing spaces stripped
    assert lines[-1] == "\t科室\t联系人\t电话"  # tab-indented table row passed through untouched
    assert all("\r" not in line for line in lines)


def test_utf16_txt_from_windows_notepad() -> None:
    result = extract("notepad.txt", POLICY_TXT.encode("utf-16"))
    assert texts(result)[0] == "关于推进医疗联合体建设和发展的实施意见"


def test_txt_title_is_the_file_stem_even_with_a_path() -> None:
    result = extract("uploads/德阳市人民医院城市医疗集团工作制度.txt", "正文内容。".encode())
    assert result.title == "德阳市人民医院城市医疗集团工作制度"


def test_sample_policy_files_read_cleanly() -> None:
    samples = os.path.join(os.path.dirname(__file__), "..", "knowledge", "samples")
    names = sorted(n for n in os.listdir(samples) if n.endswith(".txt"))
    assert names
    for name in names:
        with open(os.path.join(samples, name), "rb") as fh:
            raw = fh.read()
        result = extract(name, raw)
        assert result.title == name[: -len(".txt")]
        assert sum(len(t) for t in texts(result)) > 500
        expected = [line.rstrip() for line in raw.decode("utf-8-sig").splitlines()]
        assert "\n".join(texts(result)) in "\n".join(expected)


def test_binary_junk_named_txt_is_rejected() -> None:
    junk = bytes(range(256)) * 8
    err = raises_ingest("报表.txt", junk)
    assert "decode" in err.reason
    assert "编码" in err.reason_zh


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

POLICY_MD = """\
# 双向转诊管理办法

## 第一章 总则

**第一条** 为规范医联体内双向转诊，制定本办法。

| 科室 | 联系人 | 电话 |
|:---|---|---:|
| 心内科 | **张医生** | 0838-1234567 |
| 儿科 | 李医生 |

第二条 本办法自发布之日起施行。
"""


def test_md_title_headings_emphasis_and_table() -> None:
    result = extract("转诊办法.md", POLICY_MD.encode("utf-8"))
    assert result.title == "双向转诊管理办法"
    assert result.hard_wrapped is True
    lines = texts(result)
    assert lines[0] == "双向转诊管理办法"
    assert "第一章 总则" in lines  # "##" marker removed, heading kept as its own block
    assert "第一条 为规范医联体内双向转诊，制定本办法。" in lines  # "**" removed
    assert not any("|" in line or "---" in line for line in lines)

    [table] = tables(result)
    assert table.header == ["科室", "联系人", "电话"]
    assert table.rows == [["心内科", "张医生", "0838-1234567"], ["儿科", "李医生", ""]]

    # Body order: heading, paragraph, table, closing paragraph.
    non_blank = [b for b in result.blocks if not (isinstance(b, TextBlock) and not b.text)]
    kinds = [type(b).__name__ for b in non_blank]
    assert kinds == ["TextBlock", "TextBlock", "TextBlock", "TableBlock", "TextBlock"]


def test_md_without_leading_h1_uses_file_stem() -> None:
    result = extract("notes/转诊流程.MD", "## 流程\n\n先挂号，再转诊。\n".encode("utf-8"))
    assert result.title == "转诊流程"
    assert texts(result)[0] == "流程"


def test_md_gbk_encoded() -> None:
    result = extract("gbk.md", "# 医联体章程\n\n正文。\n".encode("gbk"))
    assert result.title == "医联体章程"


# ---------------------------------------------------------------------------------------------
# DOCX
# ---------------------------------------------------------------------------------------------

DOCX_TABLE = [
    ["科室", "联系人", "电话"],
    ["心内科", "张医生", "0838-1234567"],
    ["儿科", "李医生", "0838-7654321"],
]


def test_docx_paragraphs_and_table_in_body_order(tmp_path) -> None:
    data = make_docx(
        title_paragraph="城市医疗集团工作制度",
        paragraphs_before=["第一条 为规范医疗集团运行，制定本制度。", "第二条 成员单位职责如下："],
        table=DOCX_TABLE,
        paragraphs_after=["第三条 本制度自印发之日起施行。"],
    )
    path = tmp_path / "工作制度.docx"
    path.write_bytes(data)

    result = extract(path.name, path.read_bytes())
    assert result.title == "城市医疗集团工作制度"
    assert result.hard_wrapped is False
    assert [type(b).__name__ for b in result.blocks] == [
        "TextBlock",
        "TextBlock",
        "TextBlock",
        "TableBlock",
        "TextBlock",
    ]
    assert texts(result) == [
        "城市医疗集团工作制度",
        "第一条 为规范医疗集团运行，制定本制度。",
        "第二条 成员单位职责如下：",
        "第三条 本制度自印发之日起施行。",
    ]  # the empty paragraph did not become a block
    [table] = tables(result)
    assert table.header == ["科室", "联系人", "电话"]
    assert table.rows == [["心内科", "张医生", "0838-1234567"], ["儿科", "李医生", "0838-7654321"]]


def test_docx_merged_cells_are_not_repeated_and_columns_stay_aligned() -> None:
    data = make_docx(paragraphs_before=["附表"], table=DOCX_TABLE, merge_first_row=True)
    [table] = tables(extract("附表.docx", data))
    assert table.header == ["科室", "", "电话"]
    assert table.rows[0] == ["心内科", "张医生", "0838-1234567"]


def test_docx_title_from_core_properties_then_stem() -> None:
    with_core = make_docx(core_title="医联体章程（2024版）", paragraphs_before=["正文第一段。"])
    assert extract("a.docx", with_core).title == "医联体章程（2024版）"

    plain = make_docx(paragraphs_before=["普通正文段落，不是标题。"])
    assert extract("会议纪要.DOCX", plain).title == "会议纪要"


def test_docx_without_text_is_rejected() -> None:
    err = raises_ingest("空白.docx", make_docx())
    assert "no text" in err.reason


def test_corrupt_docx_is_reported_as_damaged() -> None:
    err = raises_ingest("损坏.docx", b"PK\x03\x04" + b"\x00garbage" * 50)
    assert "damaged" in err.reason and "DOCX" in err.reason
    assert "损坏" in err.reason_zh

    bad_xml = replace_zip_member(
        make_docx(paragraphs_before=["正文"]), "word/document.xml", b"<w:document><w:body"
    )
    err = raises_ingest("坏XML.docx", bad_xml)
    assert "damaged" in err.reason

    err = raises_ingest("其实是文本.docx", "这不是 Word 文件".encode())
    assert "damaged" in err.reason


def test_password_protected_docx_and_renamed_doc() -> None:
    err = raises_ingest("加密.docx", make_ole_file(encrypted=True))
    assert "password" in err.reason
    assert err.reason_zh == "文件已加密（有密码保护），请上传未加密的版本"

    err = raises_ingest("旧版.docx", make_ole_file(encrypted=False))
    assert ".doc" in err.reason and "另存为 .docx" in err.reason_zh


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------


def test_pdf_text_layer_is_extracted() -> None:
    data = make_text_pdf([PDF_LINES[:2], PDF_LINES[2:]])
    result = extract("referral-measures.pdf", data)
    assert result.title == "referral-measures"
    assert result.hard_wrapped is True
    assert texts(result) == PDF_LINES  # both pages, in order, no blank line at the page break


def test_pdf_chinese_text_layer_is_extracted() -> None:
    lines = ["第一条 医联体牵头医院负责上转患者的接诊。", "第二条 病情稳定的患者下转至社区卫生服务中心。"]
    assert texts(extract("转诊.PDF", make_cjk_pdf(lines))) == lines


def test_pdf_with_owner_password_only_opens() -> None:
    data = make_encrypted_pdf(make_text_pdf([PDF_LINES]), user_password="")
    assert texts(extract("restricted.pdf", data)) == PDF_LINES


def test_pdf_with_user_password_is_rejected() -> None:
    data = make_encrypted_pdf(make_text_pdf([PDF_LINES]), user_password="secret")
    err = raises_ingest("机密.pdf", data)
    assert "password" in err.reason
    assert err.reason_zh == "文件已加密（有密码保护），请上传未加密的版本"


def test_scanned_pdf_without_text_layer_is_rejected() -> None:
    err = raises_ingest("扫描件.pdf", make_blank_pdf())
    assert "no text layer" in err.reason and "DOCX/TXT" in err.reason
    assert "扫描件" in err.reason_zh


@pytest.mark.parametrize("cut", [40, 200, -60])
def test_truncated_pdf_is_reported_as_damaged(cut: int) -> None:
    data = make_text_pdf([PDF_LINES])
    err = raises_ingest("truncated.pdf", data[:cut])
    assert "damaged" in err.reason and "PDF" in err.reason
    assert "损坏" in err.reason_zh


def test_not_really_a_pdf() -> None:
    err = raises_ingest("fake.pdf", "<html>登录超时</html>".encode())
    assert "damaged" in err.reason


# ---------------------------------------------------------------------------------------------
# Errors common to all formats
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["空.txt", "空.md", "空.docx", "空.pdf"])
@pytest.mark.parametrize("data", [b"", b"  \r\n\t \n"])
def test_empty_file(name: str, data: bytes) -> None:
    err = raises_ingest(name, data)
    assert err.reason == "file is empty"
    assert err.reason_zh == "文件为空"


def test_whitespace_only_text_after_decoding_is_empty() -> None:
    err = raises_ingest("全角空格.txt", "\u3000\u3000\n".encode("utf-8"))
    assert err.reason_zh == "文件为空"


def test_file_larger_than_limit_names_the_limit() -> None:
    data = "医".encode() * (1024 * 1024)  # 3 MB
    err = raises_ingest("大文件.txt", data, max_bytes=2 * 1024 * 1024)
    assert "2 MB" in err.reason and "3 MB" in err.reason
    assert "2 MB" in err.reason_zh
    # At the limit it is fine.
    assert extract("大文件.txt", data, max_bytes=len(data)).blocks


@pytest.mark.parametrize("name", ["表格.xlsx", "旧版.doc", "无后缀", "图片.JPG", ".txt"])
def test_unsupported_suffix_lists_supported_types(name: str) -> None:
    err = raises_ingest(name, b"some content")
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in err.reason
    assert err.reason_zh.startswith("不支持的文件格式，请上传 PDF、DOCX、TXT 或 MD 文件")


def test_old_doc_gets_a_save_as_hint() -> None:
    err = raises_ingest("旧版.doc", make_ole_file(encrypted=False))
    assert ".docx" in err.reason_zh
