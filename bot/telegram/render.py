"""Engine replies → Telegram outbox payloads, and payloads → Bot API call arguments.

A payload is a small JSON-able dict kept in the outbox until it is sent:

* ``{"kind": "text", "text": ..., "keyboard": [[[label, data], ...], ...]}`` → ``sendMessage``;
  the text is at most 4096 characters (the engine already splits long answers on sentence
  boundaries; ``split_text`` is applied again here so that nothing over the limit ever reaches
  Telegram). ``keyboard`` (optional) becomes an ``InlineKeyboardMarkup`` on the last part.
* ``{"kind": "document", "file_name", "mime_type", "data_b64", "caption"?, "keyboard"?}`` →
  ``sendDocument``. A reply's text goes into the caption when it fits (1024 characters), else it is
  sent as text first.

Choices become inline buttons whose ``callback_data`` is ``Choice.value`` (1–64 bytes of UTF-8, the
Bot API limit). A choice whose value does not fit is not offered as a button; it is listed in the
text instead, so that the user can still type it.

Safety: messages are sent without ``parse_mode`` (the transport passes ``parse_mode=None``
explicitly, overriding any bot-wide default), so Telegram shows reply text — quotes from documents,
echoes of what users typed — exactly as it is: ``<a href>``, ``<b>``, ``[x](url)`` or ``*`` are
never interpreted. Links a reply lists in a ``links`` attribute (``(label, url)`` pairs, http/https
only) are appended as ``label: URL`` lines, the URL visible.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from handlers.messages import Choice, Reply
from handlers.replies import split_text

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4096
MAX_CAPTION_CHARS = 1024
MAX_CALLBACK_BYTES = 64
#: Bots may send files up to 50 MB.
MAX_SEND_FILE_BYTES = 50 * 1024 * 1024
#: Buttons share a row when every label is at most this long.
SHORT_LABEL_CHARS = 12

CHOOSE_ZH = "请选择："
FILE_TOO_LARGE_ZH = "文件“{name}”超过 50 MB，无法通过 Telegram 发送，请联系管理员获取。"

Keyboard = list[list[list[str]]]


def callback_data_ok(value: str) -> bool:
    return 1 <= len(value.encode("utf-8")) <= MAX_CALLBACK_BYTES


def keyboard_for(choices: Iterable[Choice]) -> tuple[Keyboard, list[Choice]]:
    """(button rows as ``[label, callback_data]`` pairs, choices that cannot be buttons)."""
    fitting: list[Choice] = []
    rest: list[Choice] = []
    for c in choices:
        (fitting if callback_data_ok(c.value) else rest).append(c)
    for c in rest:
        log.warning("choice value too long for Telegram callback_data; listed as text: %r", c.value)
    per_row = 2 if fitting and all(len(c.label) <= SHORT_LABEL_CHARS for c in fitting) else 1
    rows: Keyboard = []
    for start in range(0, len(fitting), per_row):
        rows.append([[c.label, c.value] for c in fitting[start : start + per_row]])
    return rows, rest


def text_payloads(text: str, keyboard: Keyboard | None = None) -> list[dict[str, Any]]:
    parts = [p for p in split_text(text, MAX_TEXT_CHARS) if p]
    if keyboard and not parts:
        parts = [CHOOSE_ZH]
    out: list[dict[str, Any]] = [{"kind": "text", "text": p} for p in parts]
    if keyboard:
        out[-1]["keyboard"] = keyboard
    return out


def _link_lines(reply: Reply) -> list[str]:
    """``label: URL`` for each http(s) link in ``reply.links`` (when the reply type has them)."""
    lines: list[str] = []
    for link in getattr(reply, "links", ()) or ():
        if isinstance(link, (tuple, list)) and len(link) == 2:
            label, url = str(link[0]), str(link[1]).strip()
        elif hasattr(link, "url"):
            label, url = str(getattr(link, "label", "") or ""), str(link.url).strip()
        else:
            continue
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc or re.search(r"\s", url):
            continue
        lines.append(f"{label.strip()}: {url}" if label.strip() else url)
    return lines


def render_reply(reply: Reply) -> list[dict[str, Any]]:
    """One engine reply as payloads, in sending order."""
    text = "\n".join(p for p in (reply.text.strip(), *_link_lines(reply)) if p)
    keyboard, unfit = keyboard_for(reply.choices)
    if unfit:
        listing = "\n".join(f"· {c.label}：{c.value}" for c in unfit)
        text = f"{text}\n{listing}" if text else listing
    if reply.file is None:
        return text_payloads(text, keyboard or None)
    f = reply.file
    if len(f.data) > MAX_SEND_FILE_BYTES:
        return text_payloads("\n".join(p for p in (text, FILE_TOO_LARGE_ZH.format(name=f.file_name)) if p),
                             keyboard or None)
    out: list[dict[str, Any]] = []
    document: dict[str, Any] = {"kind": "document", "file_name": f.file_name, "mime_type": f.mime_type,
                                "data_b64": base64.b64encode(f.data).decode("ascii")}
    if text and len(text) <= MAX_CAPTION_CHARS:
        document["caption"] = text
    elif text:
        out.extend(text_payloads(text))
    if keyboard:
        document["keyboard"] = keyboard
    out.append(document)
    return out


def render_replies(replies: Iterable[Reply]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for reply in replies:
        out.extend(render_reply(reply))
    return out


def markup_for(payload: dict[str, Any]) -> InlineKeyboardMarkup | None:
    rows = payload.get("keyboard")
    if not rows:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in row]
                                 for row in rows])


__all__ = ["MAX_CALLBACK_BYTES", "MAX_TEXT_CHARS", "callback_data_ok", "keyboard_for", "markup_for",
           "render_replies", "render_reply", "text_payloads"]
