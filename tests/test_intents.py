"""Requests typed in the user's own words reach their feature; policy questions stay questions."""

from __future__ import annotations

import pytest

from handlers.intents import IntentKind, route

pytest_plugins = ("engine_support",)


@pytest.mark.parametrize(("text", "kind"), [
    ("帮我发起个转诊", IntentKind.REFER),
    ("我想给病人办个转诊", IntentKind.REFER),
    ("I want to start a referral", IntentKind.REFER),
    ("你能干啥", IntentKind.HELP),
    ("你都有什么功能？", IntentKind.HELP),
    ("what can you do?", IntentKind.HELP),
    ("有哪些政策文件？", IntentKind.DOCS),
    ("知识库里收录了哪些制度", IntentKind.DOCS),
    ("which policies do you have", IntentKind.DOCS),
    ("我的转诊记录", IntentKind.MY_REFERRALS),
    ("查一下我转的病人进度", IntentKind.MY_REFERRALS),
])
def test_requests_in_own_words(text, kind):
    intent = route(text)
    assert intent.kind == kind and intent.explicit


@pytest.mark.parametrize("text", [
    "转诊需要什么条件？", "双向转诊有哪些政策规定？", "上转患者有什么优先？", "政策文件里联席会议多久开一次",
    "What is the referral policy?", "how do I refer a patient to the lead hospital", "下派人员的功能定位是什么",
    "我们医院转诊的病人费用怎么算",
])
def test_questions_that_mention_those_words_stay_questions(text):
    assert route(text).kind == IntentKind.ASK


def test_the_document_list_is_answered_from_the_index(chat):
    reply = chat("web", "dr_wang_sy").say("有哪些政策文件？")[0].text
    assert "已收录 5 份政策文件" in reply
    first = reply.splitlines()[1]
    assert "松原" in first and "本医联体" in first  # the asker's own consortium first
    assert "出处" not in reply  # not a policy quote


def test_asking_what_it_can_do_gets_the_menu(chat):
    reply = chat("web", "dr_wang_sy").say("你能干啥")[0]
    assert "我可以帮您" in reply.text and reply.choices
    english = chat("web", "dr_wang_sy").say("what can you do?")[0]
    assert "What I can do" in english.text


def test_starting_a_referral_in_own_words_starts_the_dialog(chat):
    reply = chat("web", "dr_wang_sy").say("帮我发起个转诊")[0]
    assert "转诊方向" in reply.text and [c.label for c in reply.choices][:1] == ["上转（转往上级医院）"]
