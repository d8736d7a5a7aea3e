"""Follow-up questions keep context (issue #8): "那理事会呢？", "第二条出自哪里？", "还有呢？".

Through the real engine (``engine_support``) on the five sample policies, plus the pure rewrite
and classification functions of ``handlers.followup``. Expectations about answers are made by
comparison with what the engine answers to the plain question, so that they hold whatever the
retrieval in knowledge/ currently ranks first.
"""

from __future__ import annotations

import re

import pytest

from handlers import followup
from handlers.engine import ConversationEngine
from handlers.followup import Context, Kind, QuoteRef, interpret, rewrite, source_reply
from handlers.messages import Incoming
from storage import repositories as repo

pytest_plugins = ("engine_support",)

BASE_Q = "联席会议多久开一次？"
COUNCIL_Q = "理事会多久开一次？"
# Questions the sample policies answer with several quotes (the first one that does is used).
MANY_QUOTES_QS = ("上转患者享受哪些优先服务？", "双向转诊的流程是什么？", "医联体内如何实行双向转诊？", "理事会的职责是什么？")
CITATION_RE = re.compile(r"(?:出处|Source)：?:? ?(《[^》\n]+》[^\n]*)")


def stored_context(ctx, channel: str, user: str) -> Context | None:
    with ctx.sessions.begin() as session:
        state = repo.get_dialog(session, channel, user)
    if not isinstance(state, repo.Dialog) or state.dialog != followup.CONTEXT_DIALOG:
        return None
    return Context.from_data(state.data)


def citations(text: str) -> list[str]:
    return [c.strip() for c in CITATION_RE.findall(text)]


def fresh_answer(chat, text: str, user: str = "liaison_ma_zd", channel: str = "web") -> str:
    """What a user without any context is answered (the same consortium as dr_wu_zd by default)."""
    return chat(channel, user).say(text)[0].text


def ask_with_several_quotes(talker) -> tuple[str, list[str]]:
    for question in MANY_QUOTES_QS:
        talker.say(question)
        if len(citations(talker.text)) >= 2:
            return question, citations(talker.text)
    raise AssertionError("no sample question is answered with two quotes any more")


class CountingKB:
    """The shared knowledge base, counting ``ask`` calls (a source follow-up needs none)."""

    def __init__(self, kb) -> None:
        self._kb = kb
        self.asked: list[str] = []

    def ask(self, question, **kwargs):
        self.asked.append(question)
        return self._kb.ask(question, **kwargs)

    def __getattr__(self, name):
        return getattr(self._kb, name)


# --- subject follow-ups ----------------------------------------------------------------------


def test_chinese_follow_up_is_answered_as_the_rewritten_question(chat, engine_ctx):
    doctor = chat("web", "dr_wu_zd")  # 张店
    doctor.say(BASE_Q)
    assert "出处：《" in doctor.text
    assert stored_context(engine_ctx, "web", "dr_wu_zd").question == BASE_Q
    doctor.say("那理事会呢？")
    assert stored_context(engine_ctx, "web", "dr_wu_zd").question == COUNCIL_Q
    assert doctor.text == fresh_answer(chat, COUNCIL_Q)
    # A chain: the rewritten question is the context of the next follow-up.
    doctor.say("那例会呢")
    assert stored_context(engine_ctx, "web", "dr_wu_zd").question == "例会多久开一次？"


def test_english_follow_up_after_a_chinese_question_is_rewritten_in_chinese(chat, engine_ctx):
    doctor = chat("wecom", "wuchengze")  # dr_wu_zd by WeCom userid
    doctor.say(BASE_Q)
    doctor.say("What about the council?")
    # The previous question's language is kept: the answer is the Chinese question's answer.
    assert stored_context(engine_ctx, "wecom", "wuchengze").question == COUNCIL_Q
    assert doctor.text == fresh_answer(chat, COUNCIL_Q)


def test_english_follow_up_after_an_english_question(chat, engine_ctx):
    doctor = chat("web", "dr_wu_zd")
    doctor.say("How often does the joint meeting meet?")
    doctor.say("What about the council?")
    assert stored_context(engine_ctx, "web", "dr_wu_zd").question == "How often does the council meet?"
    assert doctor.text == fresh_answer(chat, "How often does the council meet?")


def test_complete_questions_are_answered_as_without_context(chat, engine_ctx):
    doctor = chat("web", "dr_wu_zd")
    doctor.say(BASE_Q)
    for question in ("那个联席会议多久开一次", "双向转诊的流程是什么？", "另外，进修人员需要具备什么条件？"):
        doctor.say(question)
        assert doctor.text == fresh_answer(chat, question), question
        assert stored_context(engine_ctx, "web", "dr_wu_zd").question == question


# --- where a quote comes from ------------------------------------------------------------------


def test_source_follow_ups_answer_from_the_stored_quotes_without_retrieval(engine_ctx, app_context, clock, chat):
    kb = CountingKB(app_context.kb)
    engine = ConversationEngine(engine_ctx, kb=kb, clock=clock)
    doctor = chat("web", "dr_wang_sy", on=engine)
    question, quoted = ask_with_several_quotes(doctor)
    assert [q.citation for q in stored_context(engine_ctx, "web", "dr_wang_sy").quotes] == quoted
    asked = len(kb.asked)

    for message in ("第二条说的是哪个文件？", "第二条出自哪里"):
        doctor.say(message)
        document, _, section = quoted[1].partition(" › ")
        assert "第 2 条引文出自" in doctor.text and document in doctor.text and section in doctor.text
    doctor.say("where is the first one from?")
    document, _, section = quoted[0].partition(" › ")
    assert "Quote 1 of my last answer is from" in doctor.text
    assert document in doctor.text and section in doctor.text
    doctor.say("第九条出自哪里？")
    assert f"只引用了 {len(quoted)} 条" in doctor.text
    assert len(kb.asked) == asked  # no retrieval for any of these
    # Asking about the source keeps the context.
    assert stored_context(engine_ctx, "web", "dr_wang_sy").question == question


def test_source_follow_up_after_a_refusal_says_nothing_was_quoted(chat):
    doctor = chat("web", "dr_wang_sy")
    doctor.say("医院停车场怎么收费？")
    assert "没有找到" in doctor.text
    doctor.say("第一条出自哪里？")
    assert "没有引用任何政策条款" in doctor.text


def test_a_source_question_without_context_is_an_ordinary_question(chat):
    text = chat("web", "dr_wang_sy").say("第二条出自哪里")[0].text
    assert text == fresh_answer(chat, "第二条出自哪里", user="dr_zhao_sy")


# --- more of the same question -------------------------------------------------------------------


def test_more_shows_further_clauses_not_yet_shown(chat, engine_ctx):
    doctor = chat("web", "dr_wang_sy")
    question, first = ask_with_several_quotes(doctor)
    doctor.say("还有呢？")
    assert f"关于“{question}”" in doctor.text
    more = citations(doctor.text)
    if more:
        assert "其他可能相关的条款" in doctor.text
        assert not set(more) & set(first)
        context = stored_context(engine_ctx, "web", "dr_wang_sy")
        assert [q.citation for q in context.quotes] == more  # "第一条" now means the first of these
        assert len(context.shown_ids) == len(first) + len(more)
    else:
        assert "没有更多相关条款" in doctor.text
    doctor.say("还有吗")
    assert not set(citations(doctor.text)) & set(first + more)
    doctor.say("anything else?")
    assert "Further clauses" in doctor.text or "no further clauses" in doctor.text


def test_more_after_a_refusal_invents_nothing(chat):
    doctor = chat("web", "dr_wang_sy")
    doctor.say("医院停车场怎么收费？")
    doctor.say("还有吗")
    assert "没有更多相关条款" in doctor.text and "出处" not in doctor.text


# --- context boundaries ------------------------------------------------------------------------------


def test_follow_up_after_the_context_expired_is_a_standalone_question(chat, engine_ctx, clock):
    doctor = chat("web", "dr_wu_zd")
    doctor.say(BASE_Q)
    clock.advance(minutes=engine_ctx.settings.dialog_ttl_minutes + 1)
    doctor.say("那理事会呢？")
    assert "超过" not in doctor.text and "已自动结束" not in doctor.text  # never announced as a dialog
    assert doctor.text == fresh_answer(chat, "那理事会呢？")
    assert stored_context(engine_ctx, "web", "dr_wu_zd").question == "那理事会呢？"


def test_another_users_follow_up_does_not_use_my_context(chat, engine_ctx):
    chat("web", "dr_wu_zd").say(BASE_Q)
    other = chat("web", "liaison_xu_zd")  # same consortium
    other.say("那理事会呢？")
    assert other.text == fresh_answer(chat, "那理事会呢？")
    assert stored_context(engine_ctx, "web", "liaison_xu_zd").question == "那理事会呢？"
    # The same user key on another channel is another user too.
    chat("telegram", "dr_wu_zd").say("那理事会呢？")
    assert stored_context(engine_ctx, "telegram", "dr_wu_zd").question == "那理事会呢？"
    assert stored_context(engine_ctx, "web", "dr_wu_zd").question == BASE_Q


def test_a_referral_in_between_works_and_replaces_the_context(chat, engine_ctx):
    doctor = chat("web", "dr_wang_sy")
    doctor.say(BASE_Q)
    doctor.say("/cancel")
    assert "没有进行中的操作" in doctor.text  # the context is no dialog to cancel
    assert stored_context(engine_ctx, "web", "dr_wang_sy") is not None
    doctor.say("转诊")
    assert "请选择转诊方向" in doctor.text
    with engine_ctx.sessions.begin() as session:
        assert repo.get_dialog(session, "web", "dr_wang_sy").dialog == "refer"
    doctor.say("那理事会呢？")  # inside the dialog this answers the dialog's question
    assert "请选择转诊方向" in doctor.text or "转诊方向" in doctor.text
    assert "出处" not in doctor.text
    doctor.press("下转")
    assert "紧急" in doctor.text
    doctor.say("取消")
    assert "已取消转诊登记" in doctor.text
    doctor.say("那理事会呢？")  # the referral replaced the context: a standalone question
    assert doctor.text == fresh_answer(chat, "那理事会呢？", user="dr_zhao_sy")
    # and a new question after the dialog is remembered again
    doctor.say(BASE_Q)
    doctor.say("那理事会呢？")
    assert stored_context(engine_ctx, "web", "dr_wang_sy").question == COUNCIL_Q


def test_an_explicit_question_inside_a_dialog_closes_it_and_is_remembered(chat, engine_ctx):
    doctor = chat("web", "dr_wang_sy")
    doctor.say("转诊")
    doctor.say(f"/ask {BASE_Q}")
    assert "出处：《" in doctor.text
    assert stored_context(engine_ctx, "web", "dr_wang_sy").question == BASE_Q


def test_a_late_context_write_never_replaces_a_real_dialog(engine_ctx, clock):
    with engine_ctx.sessions.begin() as session:
        repo.put_dialog(session, "web", "dr_wang_sy", "refer", "direction", {"_lang": "zh"}, now=clock.now)
    with engine_ctx.sessions.begin() as session:
        written = repo.put_dialog_unless_other(session, "web", "dr_wang_sy", followup.CONTEXT_DIALOG,
                                               followup.CONTEXT_STEP, {"question": BASE_Q}, now=clock.now)
    assert not written
    with engine_ctx.sessions.begin() as session:
        state = repo.get_dialog(session, "web", "dr_wang_sy", now=clock.now)
        assert (state.dialog, state.step) == ("refer", "direction")
        repo.clear_dialog(session, "web", "dr_wang_sy")
        assert repo.put_dialog_unless_other(session, "web", "dr_wang_sy", followup.CONTEXT_DIALOG,
                                            followup.CONTEXT_STEP, {"question": BASE_Q}, now=clock.now)
        assert repo.put_dialog_unless_other(session, "web", "dr_wang_sy", followup.CONTEXT_DIALOG,
                                            followup.CONTEXT_STEP, {"question": COUNCIL_Q}, now=clock.now)
        assert repo.get_dialog(session, "web", "dr_wang_sy", now=clock.now).data["question"] == COUNCIL_Q


def test_an_expired_context_is_not_announced_before_a_command(chat, engine_ctx, clock):
    doctor = chat("web", "dr_wang_sy")
    doctor.say(BASE_Q)
    clock.advance(minutes=engine_ctx.settings.dialog_ttl_minutes + 5)
    doctor.say("转诊")
    assert "已自动结束" not in doctor.text and "请选择转诊方向" in doctor.text


def test_group_messages_neither_use_nor_store_private_context(engine, engine_ctx, chat):
    doctor = chat("wecom", "wuchengze")
    doctor.say(BASE_Q)

    def in_group(text: str) -> str:
        return engine.handle(Incoming("wecom", "wuchengze", text=text, private=False))[0].text

    assert in_group("那理事会呢？") == fresh_answer(chat, "那理事会呢？")
    assert "第 1 条引文" not in in_group("第一条出自哪里？")
    in_group("双向转诊的流程是什么？")
    # The private context is untouched by the group: the private follow-up still uses it.
    assert stored_context(engine_ctx, "wecom", "wuchengze").question == BASE_Q
    doctor.say("那理事会呢？")
    assert stored_context(engine_ctx, "wecom", "wuchengze").question == COUNCIL_Q


# --- the pure functions ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idf(app_context):
    return app_context.kb.snapshot().idf


@pytest.mark.parametrize(
    ("previous", "message", "expected"),
    [
        (BASE_Q, "那理事会呢？", COUNCIL_Q),
        (BASE_Q, "What about the council?", COUNCIL_Q),
        (BASE_Q, "理事会呢", COUNCIL_Q),
        (BASE_Q, "理事会？", COUNCIL_Q),  # a bare subject of the same kind
        ("例会多久开一次？", "那联席会议呢", BASE_Q),
        ("进修人员需要具备什么条件？", "那下派呢？", "下派人员需要具备什么条件？"),
        ("进修人员需要具备什么条件？", "还有规培呢", "规培人员需要具备什么条件？"),
        ("上转患者享受哪些优先服务？", "那下转呢？", "下转患者享受哪些优先服务？"),
        ("上转患者享受哪些优先服务？", "那下转患者呢？", "下转患者享受哪些优先服务？"),
        ("上转患者享受哪些优先服务？", "What about downward referrals?", "下转患者享受哪些优先服务？"),
        ("医联体内如何实行双向转诊？", "那医共体呢", "医共体内如何实行双向转诊？"),
        ("医联体内如何实行双向转诊？", "那县域医共体呢", "县域医共体内如何实行双向转诊？"),
        ("德阳的联席会议多久开一次？", "那张店的理事会呢", "张店的理事会多久开一次？"),
        ("张店的理事会多久开一次？", "德阳的呢", "德阳的理事会多久开一次？"),
        ("牵头医院有哪些职责？", "那成员单位呢？", "成员单位有哪些职责？"),
        ("多点执业需要备案吗？", "那么对口支援呢？", "对口支援需要备案吗？"),
        ("停车场收费标准是什么？", "那食堂呢", "食堂收费标准是什么？"),
        ("How often does the council meet?", "What about the joint meeting?", "How often does the joint meeting meet?"),
        ("How often does the joint meeting meet?", "And the regular meeting?",
         "How often does the regular meeting meet?"),
        ("How often does the joint meeting meet?", "那理事会呢？", "How often does the board of directors meet?"),
        ("What priority do upward referred patients get?", "How about downward?",
         "What priority do downward referred patients get?"),
    ],
)
def test_rewrite_swaps_the_subject(idf, previous, message, expected):
    assert rewrite(previous, message, idf) == expected


@pytest.mark.parametrize(
    ("previous", "message"),
    [
        (BASE_Q, "那个联席会议多久开一次"),  # starts with 那 but is complete
        (BASE_Q, "那么，转诊需要什么条件？"),
        (BASE_Q, "另外，进修有什么要求？"),
        (BASE_Q, "and how often does the council meet?"),
        (BASE_Q, "双向转诊？"),  # a bare subject of another kind
        (BASE_Q, "谢谢"),
        (BASE_Q, "好的"),
        (BASE_Q, "What about parking?"),  # no policy term to put into the Chinese question
        (BASE_Q, "联席会议呢？"),  # nothing new
        (BASE_Q, "那谢谢了"),  # thanks name nothing
        (BASE_Q, "那我知道了"),
        ("How often does the joint meeting meet?", "what about now?"),
        ("How often does the joint meeting meet?", "and you?"),
        (BASE_Q, ""),
    ],
)
def test_rewrite_leaves_other_messages_alone(idf, previous, message):
    assert rewrite(previous, message, idf) is None


@pytest.mark.parametrize(
    ("message", "kind", "index"),
    [
        ("第二条说的是哪个文件？", Kind.SOURCE, 1),
        ("第二条出自哪里", Kind.SOURCE, 1),
        ("第3条出自哪个文件", Kind.SOURCE, 2),
        ("最后一条出自哪里？", Kind.SOURCE, -1),
        ("这条出自哪个文件？", Kind.SOURCE, None),
        ("where is the first one from?", Kind.SOURCE, 0),
        ("Which document is quote 2 from?", Kind.SOURCE, 1),
        ("还有呢？", Kind.MORE, None),
        ("还有吗", Kind.MORE, None),
        ("还有别的规定吗", Kind.MORE, None),
        ("anything else?", Kind.MORE, None),
        ("what else?", Kind.MORE, None),
        ("那理事会呢？", Kind.REWRITE, None),
        ("德阳制度第二条出自哪里", Kind.NONE, None),  # names a document: an ordinary question
        ("那理事会在哪里开会？", Kind.NONE, None),
        ("Where does the green channel come from?", Kind.NONE, None),
        ("双向转诊的流程是什么？", Kind.NONE, None),
    ],
)
def test_interpret_sorts_follow_ups(idf, message, kind, index):
    turn = interpret(message, Context(BASE_Q), idf)
    assert (turn.kind, turn.index) == (kind, index)
    assert interpret(message, None, idf).kind is Kind.NONE  # without context nothing is a follow-up


def test_source_reply_names_document_and_section():
    context = Context(BASE_Q, quotes=(
        QuoteRef("《德阳市人民医院城市医疗集团工作制度》 › 3.标准 › 3.3 联席会议", "a"),
        QuoteRef("《张店区区域医疗机构组建医疗集团实施方案》 › 三、组织管理", "b"),
    ))
    assert source_reply(context, 1, english=False) == (
        "上次回答中的第 2 条引文出自：\n《张店区区域医疗机构组建医疗集团实施方案》，位置：三、组织管理")
    assert "section: 3.标准 › 3.3 联席会议" in source_reply(context, 0, english=True)
    both = source_reply(context, None, english=False)
    assert "1. 《德阳" in both and "2. 《张店" in both
    assert "只引用了 2 条" in source_reply(context, 4, english=False)
    assert "《张店" in source_reply(context, -1, english=False)


def test_context_round_trips_and_tolerates_bad_data():
    context = Context(BASE_Q, "zhangdian", "zh", (QuoteRef("《T》 › 一", "c1"),), ("c1",))
    assert Context.from_data(context.to_data()) == context
    for bad in (None, {}, {"question": ""}, {"question": 3}, "x"):
        assert Context.from_data(bad) is None
    assert Context.from_data({"question": "q", "quotes": [None, {"citation": "《T》"}]}).quotes == (QuoteRef("《T》", ""),)
