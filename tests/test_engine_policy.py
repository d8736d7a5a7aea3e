"""Policy answers through the engine: citations, the user's consortium, English, long replies."""

from __future__ import annotations

import re

from handlers.engine import ConversationEngine
from handlers.messages import Incoming, Reply
from handlers.replies import CHANNEL_LIMITS, Limit, fit_replies, split_text, utf8_len

pytest_plugins = ("engine_support",)

SONGYUAN_DOC = "《松原吉林油田医院城市医疗集团实施方案》"
TRAINING_Q = "基层医务人员到上级医院进修培训有什么安排？"


def test_policy_question_is_answered_with_its_source(chat):
    doctor = chat("wecom", "wangsiyuan")  # dr_wang_sy, known by WeCom userid
    replies = doctor.say("双向转诊的流程是什么？")
    assert len(replies) == 1
    assert "出处：《" in replies[0].text
    assert "双向转诊" in replies[0].text


def test_unbound_visitor_may_ask_policy_questions(chat):
    replies = chat("telegram", "5550001").say("双向转诊的流程是什么？")
    assert "出处：《" in replies[0].text


def test_answers_prefer_the_users_own_consortium(chat):
    songyuan_doctor = chat("web", "dr_wang_sy")
    first_citation = songyuan_doctor.say(TRAINING_Q)[0].text.split("出处：", 1)[1]
    assert first_citation.startswith(SONGYUAN_DOC)
    guest = chat("web", "guest-abcdef")
    assert not guest.say(TRAINING_Q)[0].text.split("出处：", 1)[1].startswith(SONGYUAN_DOC)


def test_unbound_users_get_the_default_consortiums_documents(app_context, directory_template, tmp_path, clock):
    from engine_support import context_on_copy

    ctx = context_on_copy(directory_template, tmp_path / "v2", default_consortium="songyuan")
    try:
        engine = ConversationEngine(ctx, kb=app_context.kb, clock=clock)
        text = engine.handle(Incoming("telegram", "777", text=TRAINING_Q))[0].text
        assert text.split("出处：", 1)[1].startswith(SONGYUAN_DOC)
    finally:
        ctx.close()


def test_english_question_gets_an_english_answer(chat):
    text = chat("web", "dr_wang_sy").say("What are the criteria for downward referral?")[0].text
    assert text.startswith("According to the policy documents")
    assert "Source: 《" in text
    assert "出处" not in text


def test_english_help_is_in_english(chat):
    text = chat("telegram", "5550002").say("help")[0].text
    assert "policy" in text.lower() and "/bind" in text
    assert not re.search(r"[\u4e00-\u9fff]{4,}", text)


def test_long_answer_is_split_on_sentence_boundaries(app_context, engine_ctx, clock):
    """A channel whose limit is smaller than the answer gets the same answer in several messages,
    each within the limit and each ending at a line or sentence end (never mid-sentence, since the
    limit is as long as the answer's longest sentence)."""
    from knowledge.textnorm import split_sentences

    question = "双向转诊的流程是什么？"
    whole = ConversationEngine(engine_ctx, kb=app_context.kb, clock=clock).handle(
        Incoming("web", "dr_wang_sy", text=question))
    original = whole[0].text
    assert len(whole) == 1 and "出处" in original
    limit = max(len(s) for line in original.split("\n") for s in split_sentences(line))
    assert len(original) > 2 * limit  # so the answer must be cut at least twice
    small = ConversationEngine(engine_ctx, kb=app_context.kb, clock=clock, limits={"web": Limit(limit)})
    parts = small.handle(Incoming("web", "dr_wang_sy", text=question))
    assert len(parts) >= 3
    assert all(len(p.text) <= limit for p in parts)
    squeeze = lambda t: re.sub(r"\s+", "", t)
    assert squeeze("".join(p.text for p in parts)) == squeeze(original)
    for p in parts[:-1]:  # every cut is at a line end or right after a sentence
        end = original.index(p.text) + len(p.text)
        assert original[end] == "\n" or p.text[-1] in "。！？；”…", p.text[-20:]


def test_split_text_respects_telegram_characters_and_wecom_bytes():
    sentence = "医联体内推行双向转诊、急慢分治，畅通向下转诊通道。"  # 25 characters, 75 bytes
    text = sentence * 300  # 7500 characters, 22500 bytes
    telegram = split_text(text, CHANNEL_LIMITS["telegram"].size)
    assert len(telegram) == 2 and all(len(p) <= 4096 for p in telegram)
    assert all(p.endswith("。") for p in telegram)
    wecom = split_text(text, CHANNEL_LIMITS["wecom"].size, unit="bytes")
    assert all(utf8_len(p) <= 2048 for p in wecom)
    assert len(wecom) == 12 and all(p.endswith("。") for p in wecom)
    assert "".join(wecom) == text


def test_split_text_cuts_inside_a_sentence_only_when_it_must():
    one_long_sentence = "甲" * 5000
    parts = split_text(one_long_sentence, 4096)
    assert [len(p) for p in parts] == [4096, 904]
    mixed = "第一段。\n\n" + "短句。" * 3
    assert split_text(mixed, 8) == ["第一段。", "短句。短句。", "短句。"]


def test_buttons_stay_with_the_last_part():
    from handlers.messages import Choice

    reply = Reply("这是一句话。" * 50, choices=(Choice("菜单", "/help"),))
    parts = fit_replies([reply], "web", {"web": Limit(100)})  # 16 sentences fit in 100 characters
    assert [len(p.text) for p in parts] == [96, 96, 96, 12]
    assert [bool(p.choices) for p in parts] == [False, False, False, True]


def test_reminders_and_quotas_are_honest_and_quote_the_policy(chat):
    replies = chat("web", "dr_zhao_sy").say("进修")
    text = "\n".join(r.text for r in replies)
    assert "联络员" in text and "会议" in text  # where the records are kept, and the meetings
    assert "出处：《" in text and "进修" in text


def test_unknown_slash_command_points_to_help(chat):
    text = chat("web", "dr_wang_sy").say("/frobnicate")[0].text
    assert "/frobnicate" in text and "/help" in text


def test_example_question_buttons_are_answered(chat):
    doctor = chat("web", "dr_wang_sy")
    doctor.say("/ask")
    examples = list(doctor.buttons)
    assert len(examples) == 3
    for label in examples:
        doctor.say("/ask")
        doctor.press(label)
        assert "出处：《" in doctor.text, label
    visitor = chat("web", "guest-english1")
    visitor.say("ask")
    assert visitor.text.startswith("Type your policy question")
    visitor.press("What")
    assert visitor.text.startswith("According to the policy documents")
