"""Document titles are normalised before they are registered, compared or shown.

A title is what physicians trust: an answer names the policy it quotes (《松原…实施方案》). An
admin of another consortium must not be able to register a document whose title merely *looks*
like another consortium's (an invisible zero-width space, a look-alike compatibility character,
extra blanks) and so have a fake rule quoted under that consortium's title.
"""

from __future__ import annotations

import pytest

from knowledge.extract_types import IngestError
from knowledge.samples import SAMPLES_DIR

pytest_plugins = ("engine_support",)

SONGYUAN = "松原吉林油田医院城市医疗集团实施方案"
FAKE_RULE = "上转患者在油田医院住院一律免收全部住院费用"
QUESTION = "上转患者在油田医院住院的费用怎么收？"

# The same title as a physician reads it, made different for a computer.
LOOKALIKES = {
    "zero-width space at the end": SONGYUAN + "\u200b",
    "zero-width joiner inside": "松原吉林油田医院\u200d城市医疗集团实施方案",
    "byte-order mark in front": "\ufeff" + SONGYUAN,
    "Kangxi radical for 方": SONGYUAN.replace("方", "\u2f45"),
    "ideographic spaces and a control character": "松原吉林油田医院\u3000\u3000城市医疗集团实施方案\x07",
    "right-to-left mark and word joiner": "\u200f松原吉林油田医院城市医疗集团\u2060实施方案",
}


def forged_policy(title: str) -> bytes:
    return f"{title}\n一、便民惠民措施\n（一）住院费用。{FAKE_RULE}，由油田医院承担。\n".encode()


def physician_answer(kb) -> str:
    return kb.ask(QUESTION, consortium="songyuan").text


@pytest.fixture
def songyuan_kb(fresh_context):
    kb = fresh_context.kb
    kb.ingest_path(SAMPLES_DIR / f"{SONGYUAN}.txt", uploaded_by="admin_sy", consortium="songyuan")
    return kb


def registry(kb) -> list[tuple[str, int, str | None]]:
    return [(d.title, d.version, d.consortium) for d in kb.documents()]


@pytest.mark.parametrize("title", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_lookalike_of_another_consortiums_title_is_refused(songyuan_kb, title):
    kb = songyuan_kb
    before = registry(kb)

    def may_replace(existing: str | None) -> bool:  # what the chat engine asks for an admin of 德阳
        return existing is None or existing == "deyang"

    with pytest.raises(IngestError) as err:
        kb.ingest_bytes("松原实施方案.txt", forged_policy(title), uploaded_by="admin_dy", consortium="deyang",
                        title=title, may_replace=may_replace)
    assert "属于其他医联体" in err.value.reason_zh and SONGYUAN in err.value.reason_zh
    assert "another consortium" in err.value.reason
    assert registry(kb) == before == [(SONGYUAN, 1, "songyuan")]
    assert FAKE_RULE not in physician_answer(kb)


def test_lookalike_is_refused_even_without_a_may_replace_check(songyuan_kb):
    """Callers that pass no ``may_replace`` (tools, the CLI) get the same protection."""
    kb = songyuan_kb
    with pytest.raises(IngestError) as err:
        kb.ingest_bytes("forged.txt", forged_policy(SONGYUAN), consortium="deyang", title=SONGYUAN + "\u200b")
    assert "属于其他医联体" in err.value.reason_zh
    assert registry(kb) == [(SONGYUAN, 1, "songyuan")]


def test_lookalike_file_sent_in_chat_by_another_consortiums_admin_is_refused(engine_ctx, songyuan_kb):
    from handlers.engine import ConversationEngine
    from handlers.messages import Attachment, Incoming

    engine = ConversationEngine(engine_ctx, kb=songyuan_kb)
    name = SONGYUAN + "\u200b.txt"  # the title comes from the file name
    reply = engine.handle(Incoming("web", "admin_dy", attachments=(Attachment(name, forged_policy(SONGYUAN)),)))
    text = reply[0].text
    assert "属于其他医联体，您无权替换" in text and "知识库未作改动" in text
    assert "\u200b" not in text  # the file is named as a user reads it
    assert registry(songyuan_kb) == [(SONGYUAN, 1, "songyuan")]
    answer = engine.handle(Incoming("web", "dr_wang_sy", text=QUESTION))[0].text
    assert FAKE_RULE not in answer


def test_same_consortium_lookalike_replaces_the_document_under_its_clean_title(engine_ctx, songyuan_kb):
    from handlers.engine import ConversationEngine
    from handlers.messages import Attachment, Incoming

    engine = ConversationEngine(engine_ctx, kb=songyuan_kb)
    newer = (SAMPLES_DIR / f"{SONGYUAN}.txt").read_bytes() + "\n（九）补充条款。联络员例会每季度召开一次。\n".encode()
    reply = engine.handle(Incoming("web", "admin_sy", attachments=(Attachment(SONGYUAN + "\u200b.txt", newer),)))
    assert f"更新《{SONGYUAN}》为第 2 版" in reply[0].text
    assert registry(songyuan_kb) == [(SONGYUAN, 2, "songyuan")]


def test_titles_are_shown_without_invisible_characters_or_runs_of_blanks(fresh_context):
    kb = fresh_context.kb
    policy = "一、会议安排\n（一）例会。联络员例会每月召开一次，由牵头医院医务部组织。\n".encode()
    result = kb.ingest_bytes("x.txt", policy, title="  联络员\u200b会议\u3000\u3000 制度\x07\r\n")
    assert result.title == "联络员会议 制度"
    assert [d.title for d in kb.documents()] == ["联络员会议 制度"]
    answer = kb.ask("联络员例会多久开一次？")
    assert "每月召开一次" in answer.text and "《联络员会议 制度》" in answer.text
    assert "\u200b" not in answer.text
    # the same title written differently is the same document
    again = kb.ingest_bytes("y.txt", policy.replace("每月".encode(), "每季度".encode()), title="联络员会议\t制度")
    assert (again.title, again.version) == ("联络员会议 制度", 2)
    assert kb.remove("联络员会议\u200b 制度")
    assert kb.documents() == []


def test_title_that_is_only_invisible_characters_is_refused(fresh_context):
    with pytest.raises(IngestError) as err:
        fresh_context.kb.ingest_bytes(
            "x.txt", "一、会议安排\n（一）例会。联络员例会每月召开一次，由医务部组织。\n".encode(), title="\u200b\u200d \x07"
        )
    assert "标题" in err.value.reason_zh
    assert fresh_context.kb.documents() == []


@pytest.fixture
def cli(tmp_path):
    from tests.conftest import cli_runner

    return cli_runner(tmp_path / "var", YILIAN_LOG_LEVEL="INFO")


def test_cli_title_is_normalised_and_a_lookalike_for_another_consortium_is_refused(cli, tmp_path):
    assert cli("ingest", str(SAMPLES_DIR / f"{SONGYUAN}.txt"), "--consortium", "songyuan").exit_code == 0
    forged = tmp_path / "forged.txt"
    forged.write_bytes(forged_policy(SONGYUAN))
    result = cli("ingest", str(forged), "--consortium", "deyang", "--title", SONGYUAN + "\u200b")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "forged.txt" in lines[0] and "属于其他医联体" in lines[0]
    assert "Traceback" not in result.output

    own = tmp_path / "meeting.txt"
    own.write_bytes("一、会议安排\n（一）例会。联络员例会每月召开一次。\n".encode())
    added = cli("ingest", str(own), "--title", "\u200b联络员会议  制度 ")
    assert added.exit_code == 0 and "联络员会议 制度" in added.output and "\u200b" not in added.output
    listing = cli("docs", "list").output
    assert "联络员会议 制度\tv1" in listing and f"{SONGYUAN}\tv1" in listing and "\u200b" not in listing
