"""Phone and ID numbers are masked before they are logged or audited."""

from __future__ import annotations

from storage.privacy import mask_id_number, mask_phone, scrub, scrub_text


def test_mask_phone():
    assert mask_phone("13912345678") == "139****5678"
    assert mask_phone("+86 139-1234-5678") == "139****5678"
    assert mask_phone("0838-2412345") == "0838-***2345"
    assert mask_phone("010-12345678").endswith("5678") and "1234" not in mask_phone("010-12345678")
    assert mask_phone("1234") == "****"
    assert mask_phone(None) is None


def test_mask_id_number():
    assert mask_id_number("22070219800101123X") == "220***********123X"
    assert mask_id_number("220702198001011234") == "220***********1234"
    assert mask_id_number("220702800101123") == "220********1123"
    assert mask_id_number(None) is None


def test_scrub_text_masks_numbers_inside_sentences():
    text = "患者身份证22070219800101123X，手机13912345678，科室电话0438-6123456，床号12。"
    out = scrub_text(text)
    assert "22070219800101123X" not in out and "13912345678" not in out and "6123456" not in out
    assert "床号12" in out and "220***********123X" in out and "139****5678" in out


def test_scrub_nested_values_and_sensitive_keys():
    out = scrub({
        "phone": 13912345678,
        "联系电话": "0438-6123456",
        "patient": {"身份证号": "22070219800101123X", "name": "张某"},
        "items": ["13912345678", 42],
        "telegram_user_id": 123456789,
        "ok": True,
    })
    assert out["phone"] == "139****5678"
    assert "6123456" not in out["联系电话"]
    assert out["patient"] == {"身份证号": "220***********123X", "name": "张某"}
    assert out["items"] == ["139****5678", 42]
    assert out["telegram_user_id"] == 123456789 and out["ok"] is True


def test_digits_inside_hex_digests_and_identifiers_are_left_alone():
    digest = "9f2ca13912345678b" + "0e" * 20 + "c04386123456d"  # 11 digits in a row, a landline-like run
    assert scrub_text(digest) == digest
    for text in ("user_13912345678", "doc13912345678x", "a22070219800101123Xb", "msg:70000000000000000123",
                 "TOKEN04386123456", "id 123456789012345678", "file 700000000000000012"):
        assert scrub_text(text) == text, text
    # numeric ids under id-like keys stay numbers (audit rows keep them usable)
    row = {"msg_id": 700000000000000012, "telegram_user_id": 13912345678, "sha256": digest}
    assert scrub(row) == row


def test_real_numbers_in_chinese_text_are_still_masked():
    out = scrub_text("请联系电话13912345678，或座机(0438)6123456；身份证号110101199003071234。手机:+86 139-1234-5678")
    assert "13912345678" not in out and "6123456" not in out and "110101199003071234" not in out
    assert "1234-5678" not in out
    assert out.startswith("请联系电话139****5678，") and "110***********1234。" in out
    assert scrub_text("13912345678") == "139****5678"
    assert scrub({"note": "回电13912345678"}) == {"note": "回电139****5678"}
    assert scrub({"contact": 13912345678}) == {"contact": "139****5678"}
