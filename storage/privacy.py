"""Masking of personal identifiers before they reach logs or the audit trail.

``mask_phone("13912345678") == "139****5678"`` (the form the sample policies print contacts in);
``mask_id_number("110101199003071234") == "110***********1234"``. ``scrub`` applies both to any
JSON-like value: values under sensitive keys are masked whatever their shape, and phone or ID
numbers embedded in free text are masked too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Numbers are only recognised between non-alphanumeric boundaries (CJK text, punctuation, spaces,
#: the ends of the string): digits inside a hex digest (``…a13912345678b…``), a longer number or an
#: identifier (``user_13912345678``) are left alone.
_B = r"(?<![0-9A-Za-z_])"
_E = r"(?![0-9A-Za-z_])"
_MOBILE_RE = re.compile(_B + r"(?:\+?86[- ]?)?(1[3-9]\d)[- ]?(\d{4})[- ]?(\d{4})" + _E)
# 18-digit resident ID (last char may be X) or legacy 15-digit ID, with a plausible birth date
# (a bare 15- or 18-digit identifier without one is not an ID number).
_MMDD = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_ID_RE = re.compile(_B + r"(\d{6}(?:18|19|20)\d{2}" + _MMDD + r"\d{3}[\dXx]|\d{8}" + _MMDD + r"\d{3})" + _E)
# Landline with area code: 0838-2412345, (0438)6123456, 0438 6123456.
_LANDLINE_RE = re.compile(_B + r"\(?(0\d{2,3})\)?[- ]?(\d{7,8})" + _E)
#: Keys of identifiers: integers under them are never masked (``msg_id``, ``telegram_user_id``).
_ID_KEY_RE = re.compile(r"ids?$")

#: Keys whose values are always masked (compared case-insensitively, ignoring "_" and "-").
SENSITIVE_PHONE_KEYS = frozenset({"phone", "mobile", "tel", "telephone", "手机", "手机号", "电话", "联系电话", "联系方式"})
SENSITIVE_ID_KEYS = frozenset({"idnumber", "idcard", "idno", "身份证", "身份证号", "身份证号码", "证件号", "证件号码"})


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit() or ch in "Xx")


def mask_phone(phone: str | None) -> str | None:
    """``139****5678`` for a mobile; area code and last 4 digits kept for other numbers."""
    if phone is None:
        return None
    digits = "".join(ch for ch in str(phone) if ch.isdigit())
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if len(digits) == 11 and digits.startswith("1"):
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) <= 4:
        return "*" * len(digits)
    if digits.startswith("0") and len(digits) >= 10:
        head = digits[:4] if len(digits) >= 11 else digits[:3]
        return f"{head}-{'*' * (len(digits) - len(head) - 4)}{digits[-4:]}"
    return "*" * (len(digits) - 4) + digits[-4:]


def mask_id_number(id_number: str | None) -> str | None:
    """First 3 and last 4 characters kept; birth date and the rest hidden."""
    if id_number is None:
        return None
    raw = _digits(str(id_number)).upper()
    if len(raw) <= 7:
        return "*" * len(raw)
    return f"{raw[:3]}{'*' * (len(raw) - 7)}{raw[-4:]}"


def scrub_text(text: str) -> str:
    """Mask every mobile, landline and ID number found in ``text``."""
    text = _ID_RE.sub(lambda m: mask_id_number(m.group(1)) or "", text)
    text = _MOBILE_RE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)
    text = _LANDLINE_RE.sub(lambda m: mask_phone(m.group(1) + m.group(2)) or "", text)
    return text


def _norm_key(key: object) -> str:
    return str(key).lower().replace("_", "").replace("-", "").replace(" ", "")


def scrub(value: Any, _key: object = None) -> Any:
    """A copy of a JSON-like ``value`` with phone and ID numbers masked (see module doc)."""
    key = _norm_key(_key) if _key is not None else None
    if isinstance(value, Mapping):
        return {str(k): scrub(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(v, _key) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if key is not None and key in SENSITIVE_PHONE_KEYS:
        return mask_phone(str(value))
    if key is not None and key in SENSITIVE_ID_KEYS:
        return mask_id_number(str(value))
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, int) and len(str(abs(value))) in (11, 15, 18) and not (key and _ID_KEY_RE.search(key)):
        # A bare number of phone/ID length under an innocent key (not an id): mask it as text would be.
        masked = scrub_text(str(value))
        return value if masked == str(value) else masked
    return value
