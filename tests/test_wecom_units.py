"""WeCom channel pieces: crypto, dedupe keys, classification, rendering, API client and token cache."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from wechatpy.crypto import _get_signature

from bot.wecom import crypto as crypto_mod
from bot.wecom.api import MediaTooLarge, WeComAPI, WeComAPIError, filename_from_disposition
from bot.wecom.crypto import WeComCrypto, WeComCryptoError
from bot.wecom.inbound import SUPPORTED_NOTE_ZH, classify, dedupe_key, parse_plaintext
from bot.wecom.render import render_replies
from handlers.messages import Choice, FileReply, Reply
from storage.db import make_engine, make_session_factory
from storage.types import utcnow
from tests.wecom_support import AES_KEY, CORP_ID, SECRET, TOKEN, FakeWeCom, WeComSender, card_click_xml, message_xml

pytest_plugins = ("storage.testing",)  # sqlite_template


# -- crypto ------------------------------------------------------------------------------------


def test_signature_matches_wechatpy_and_is_compared_in_constant_time(monkeypatch):
    c = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    sender = WeComSender("http://unused")
    encrypted = sender.encrypt("<xml><a>1</a></xml>")
    good = _get_signature(TOKEN, "1700000000", "nonce1", encrypted)
    compared = []
    real = crypto_mod.hmac.compare_digest
    monkeypatch.setattr(crypto_mod.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    assert c.check_signature(good, "1700000000", "nonce1", encrypted)
    assert not c.check_signature(good, "1700000001", "nonce1", encrypted)
    assert not c.check_signature("", "1700000000", "nonce1", encrypted)
    assert not c.check_signature("签名", "1700000000", "nonce1", encrypted)
    assert len(compared) == 4
    assert c.decrypt(encrypted) == "<xml><a>1</a></xml>"


def test_decrypt_refuses_other_corps_and_garbage():
    other = WeComSender("http://unused", corp_id="wwsomeoneelse")
    c = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    with pytest.raises(WeComCryptoError):
        c.decrypt(other.encrypt("<xml/>"))
    with pytest.raises(WeComCryptoError):
        c.decrypt("not base64 at all!")
    with pytest.raises(WeComCryptoError):
        c.decrypt("QUJD")


# -- inbound -----------------------------------------------------------------------------------


def test_dedupe_keys_for_messages_and_events():
    text = parse_plaintext(message_xml("u1", "text", msg_id=123456789012345, Content="hi"))
    assert dedupe_key(text) == "msg:123456789012345"
    a = parse_plaintext(card_click_xml("u1", "k:up", "task-1", create_time=1700000000))
    b = parse_plaintext(card_click_xml("u1", "k:down", "task-1", create_time=1700000000))
    c = parse_plaintext(card_click_xml("u1", "k:up", "task-2", create_time=1700000000))
    a_again = parse_plaintext(card_click_xml("u1", "k:up", "task-1", create_time=1700000000))
    assert dedupe_key(a) == dedupe_key(a_again)
    assert len({dedupe_key(a), dedupe_key(b), dedupe_key(c)}) == 3  # same user and second, different clicks
    assert len(dedupe_key(a)) <= 100


def test_classification():
    click = classify(parse_plaintext(card_click_xml("u1", "d:refer:direction:up", "t1")), "ev:1")
    assert click.kind == "engine" and click.incoming.choice == "d:refer:direction:up" and click.incoming.text == ""
    menu = classify(parse_plaintext(message_xml("u1", "event", Event="click", EventKey="帮助")))
    assert menu.kind == "engine" and menu.incoming.choice == "帮助"
    assert classify(parse_plaintext(message_xml("u1", "event", Event="enter_agent", EventKey=""))).kind == "ignore"
    assert classify(parse_plaintext(message_xml("u1", "link", msg_id=1, Title="t", Url="u"))).note == SUPPORTED_NOTE_ZH
    f = classify(parse_plaintext(message_xml("u1", "file", msg_id=2, MediaId="M1", FileName="a.pdf")), "msg:2")
    assert (f.kind, f.media_id, f.file_name, f.incoming.user_key) == ("file", "M1", "a.pdf", "u1")


# -- rendering ---------------------------------------------------------------------------------


def test_long_text_is_split_under_2048_bytes_in_order():
    text = "".join(f"第{i}句话说明医联体的转诊规则与要求。" for i in range(300)) + "没有标点的超长内容" * 300
    payloads = render_replies([Reply(text)])
    parts = [p["text"]["content"] for p in payloads]
    assert len(parts) > 3 and all(len(p.encode("utf-8")) <= 2048 for p in parts)
    assert "".join(parts) == text


def test_choices_render_as_cards_with_at_most_six_buttons_or_markdown():
    choices = tuple(Choice(f"选项{i}", f"v{i}") for i in range(8))
    cards = render_replies([Reply("请选择科室：", choices)])
    assert [len(c["template_card"]["button_list"]) for c in cards] == [6, 2]
    assert [b["key"] for c in cards for b in c["template_card"]["button_list"]] == [f"v{i}" for i in range(8)]
    assert len({c["template_card"]["task_id"] for c in cards}) == 2
    long_prompt = "说明。" * 100
    [text, card] = render_replies([Reply(long_prompt, choices[:2])])
    assert text["msgtype"] == "text" and card["template_card"]["main_title"]["title"] == "请选择"
    [md] = render_replies([Reply("请选择：", choices[:2])], style="markdown")
    assert md["msgtype"] == "markdown" and "选项1" in md["markdown"]["content"]


def test_file_reply_is_carried_for_upload():
    [payload] = render_replies([Reply("", file=FileReply("转诊单.pdf", b"%PDF-1.4 x", "application/pdf"))])
    assert payload["msgtype"] == "file" and payload["file"]["file_name"] == "转诊单.pdf"


def test_content_disposition_file_names():
    assert filename_from_disposition('attachment; filename="a b.pdf"') == "a b.pdf"
    assert filename_from_disposition("attachment; filename*=UTF-8''%E6%94%BF%E7%AD%96.docx") == "政策.docx"
    assert filename_from_disposition('attachment; filename="%E6%94%BF.txt"') == "政.txt"
    assert filename_from_disposition(None) is None


# -- API client ----------------------------------------------------------------------------------


@pytest.fixture
async def fake():
    server = await FakeWeCom().start()
    yield server
    await server.close()


@pytest.fixture
def sessions(tmp_path, sqlite_template):
    db = tmp_path / "api.sqlite3"
    shutil.copyfile(sqlite_template, db)
    engine = make_engine(f"sqlite:///{db}")
    yield make_session_factory(engine)
    engine.dispose()


def _api(fake, sessions, **kw) -> WeComAPI:
    return WeComAPI(corp_id=CORP_ID, secret=SECRET, sessions=sessions, api_base=fake.url, agent_id=1000002,
                    timeout_s=2, **kw)


async def test_token_is_shared_through_the_database_and_refreshed_when_refused(fake, sessions):
    first, second = _api(fake, sessions), _api(fake, sessions)
    try:
        body = {"touser": "u1", "agentid": 1000002, "msgtype": "text", "text": {"content": "一"}}
        await first.send_message(body)
        await second.send_message(body)  # another worker: reads the cached token, no gettoken
        assert fake.token_fetches == 1
        fake.expire_tokens()  # WeCom answers 42001 now
        await second.send_message(body)
        assert fake.token_fetches == 2
        await first.send_message(body)  # its memory copy is refused, the shared one is fresh
        assert fake.token_fetches == 2 and len(fake.delivered) == 4
        # a token about to expire is not used
        first.tokens.store("OLD", utcnow() + timedelta(seconds=10))
        third = _api(fake, sessions)
        await third.send_message(body)
        assert fake.token_fetches == 3
        await third.close()
    finally:
        await first.close()
        await second.close()


async def test_wrong_secret_and_media_limits(fake, sessions):
    bad = WeComAPI(corp_id=CORP_ID, secret="wrong", sessions=sessions, api_base=fake.url, timeout_s=2)
    with pytest.raises(WeComAPIError) as err:
        await bad.access_token()
    assert err.value.errcode == 40001
    await bad.close()
    api = _api(fake, sessions)
    fake.media["M1"] = ("规范.pdf", b"%PDF" + b"x" * 5000, "application/pdf")
    try:
        media = await api.get_media("M1", max_bytes=10_000)
        assert media.file_name == "规范.pdf" and len(media.data) == 5004
        with pytest.raises(MediaTooLarge):
            await api.get_media("M1", max_bytes=1000)
        with pytest.raises(WeComAPIError) as err:
            await api.get_media("missing", max_bytes=1000)
        assert err.value.errcode == 40007 and err.value.retryable is False  # expired media_id
    finally:
        await api.close()


def test_options_from_settings(tmp_path):
    import pydantic

    from bot.wecom import WeComOptions
    from tests.conftest import make_settings

    options = WeComOptions.from_settings(
        make_settings(tmp_path, wecom_choice_style="markdown", wecom_per_user_per_minute=20)
    )
    assert (options.choice_style, options.outbox.per_minute) == ("markdown", 20)
    defaults = WeComOptions.from_settings(make_settings(tmp_path))
    assert (defaults.choice_style, defaults.outbox.per_minute) == ("card", 25)
    with pytest.raises(pydantic.ValidationError):  # over WeCom's 30 a minute: refused at start-up
        make_settings(tmp_path, wecom_per_user_per_minute=99)
    assert "可信IP" in str(WeComAPIError(60020, "not allow to access from your ip"))
