"""Engine replies → WeCom ``message/send`` bodies (without ``touser``/``agentid``, added at send time).

* Text: ``msgtype=text``, cut to 2048 UTF-8 bytes on sentence boundaries by the shared splitter
  (``handlers.replies.split_text``); the parts keep their order in the outbox.
* Choices: a ``button_interaction`` template card (buttons' ``key`` = ``Choice.value``; a click
  comes back as ``template_card_event`` with that EventKey). At most 6 buttons fit on a card, so
  more choices take several cards. A prompt that does not fit in the card (about 160 characters) is
  sent as text first and the card follows with a short title. Labels longer than a button allows
  (10 characters) are shortened, or, if that makes two alike, numbered and listed in the prompt. With ``style="markdown"`` the
  choices are listed in a markdown message instead (no buttons; the user types the option).
* Files: ``msgtype=file`` with the bytes base64-encoded in the payload; the transport uploads them
  (``media/upload``) when sending.

Safety: reply texts quote documents and echo users, and WeCom interprets some of what they may
contain — ``<a href="…">`` in text messages (a link whose target the reader cannot see), and in
markdown ``[label](url)``, ``**``, `` ` ``, ``>`` quotes, ``#`` headings and ``<font>`` tags. So every
text from a reply is neutralised here (``escape_text`` / ``escape_markdown``: the characters that
would start markup become their full-width look-alikes, which WeCom shows as they are), and the
only markup that reaches WeCom is built by this module: the choice list of the markdown style, and
links a reply lists in a ``links`` attribute (``(label, url)`` pairs, http/https only), rendered by
``anchor``. Template card fields are plain text to WeCom.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from handlers.messages import Choice, Reply
from handlers.replies import split_text

MAX_TEXT_BYTES = 2048
MAX_BUTTONS = 6
MAX_BUTTON_CHARS = 10
MAX_CARD_TITLE_CHARS = 36
MAX_CARD_TEXT_CHARS = 160
#: WeCom's own limit for files sent by an app is 20 MB.
MAX_FILE_BYTES = 20 * 1024 * 1024

CHOOSE_TITLE_ZH = "请选择"
MORE_CHOICES_ZH = "更多选项"
MARKDOWN_HINT_ZH = "请直接回复选项文字。"
FILE_TOO_LARGE_ZH = "文件“{name}”超过 20 MB，无法通过企业微信发送，请联系管理员获取。"


#: ``<`` opening a tag (``<a``, ``</a``, ``<font``, ``<!--``), also entity-encoded (``&lt;a``).
_TAG_OPEN_RE = re.compile(r"<(?=\s*[A-Za-z/!?])|&(?:lt|#0*60|#x0*3c);(?=\s*[A-Za-z/!?])", re.IGNORECASE)
#: WeCom's id translation in text messages (``$userName=…$``, ``$departmentName=…$``).
_ID_TRANSLATION_RE = re.compile(r"\$(?=(?:userName|departmentName)=)", re.IGNORECASE)
#: Markdown that starts anywhere (links, emphasis, code, tags) ...
_MD_CHARS = str.maketrans({"<": "＜", "[": "［", "]": "］", "*": "＊", "`": "｀"})
#: ... and at the start of a line (headings, quotes).
_MD_LINE_START_RE = re.compile(r"^([ \t]*)([#>])", re.MULTILINE)


def escape_text(text: str) -> str:
    """``text`` as a WeCom text message shows it literally: no tag (``<a href>``) can start."""
    text = _TAG_OPEN_RE.sub("＜", text)
    return _ID_TRANSLATION_RE.sub("＄", text)


def escape_markdown(text: str) -> str:
    """``text`` for a WeCom markdown message: no link, emphasis, code, quote, heading or tag
    (the characters that would start them become full-width)."""
    text = escape_text(text).translate(_MD_CHARS)
    return _MD_LINE_START_RE.sub(lambda m: m.group(1) + {"#": "＃", ">": "＞"}[m.group(2)], text)


def safe_url(url: str) -> str | None:
    """``url`` if it is an absolute http(s) URL without spaces or quotes, else None."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or re.search(r"[\s\"'<>]", url):
        return None
    return url


def anchor(label: str, url: str) -> str:
    """A link for a WeCom text message, built here (never taken from reply text); a URL that is
    not plain http(s) is not linked (the label alone)."""
    target = safe_url(url)
    label = escape_text(label).replace("<", "＜").replace(">", "＞").strip() or (target or "")
    if target is None:
        return label
    return f'<a href="{html.escape(target, quote=True)}">{html.escape(label, quote=False)}</a>'


def _links(reply: Reply) -> list[tuple[str, str]]:
    """The links a reply asks for (``reply.links``: ``(label, url)`` pairs or objects with
    ``label``/``url``), if the reply type has them."""
    out: list[tuple[str, str]] = []
    for link in getattr(reply, "links", ()) or ():
        if isinstance(link, (tuple, list)) and len(link) == 2:
            out.append((str(link[0]), str(link[1])))
        elif hasattr(link, "url"):
            out.append((str(getattr(link, "label", "") or ""), str(link.url)))
    return out


def new_task_id() -> str:
    """Template card task_id: unique per app, letters/digits/``_-@``, ≤ 128 bytes."""
    return "yl-" + secrets.token_hex(12)


def text_payloads(text: str, *, links: Iterable[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Text messages for ``text`` (escaped here), then our own ``links`` as anchors."""
    body = escape_text(text)
    anchors = "\n".join(anchor(label, url) for label, url in links)
    if anchors:
        body = f"{body}\n{anchors}" if body.strip() else anchors
    return [{"msgtype": "text", "text": {"content": part}} for part in split_text(body, MAX_TEXT_BYTES, unit="bytes")
            if part]


def _button_labels(choices: list[Choice]) -> list[str] | None:
    """Button texts: the labels, shortened to fit when that keeps them distinct; None if it does
    not (the buttons are then numbered and the labels listed in the card's text)."""
    labels = [c.label if len(c.label) <= MAX_BUTTON_CHARS else c.label[: MAX_BUTTON_CHARS - 1] + "…"
              for c in choices]
    return labels if len(set(labels)) == len(labels) else None


def _card_text(text: str) -> tuple[str, str | None] | None:
    """(main title, sub-title text) for a prompt, or None when it does not fit on a card."""
    if not text:
        return CHOOSE_TITLE_ZH, None
    first, _, rest = text.partition("\n")
    rest = rest.strip()
    if len(first) <= MAX_CARD_TITLE_CHARS and len(rest) <= MAX_CARD_TEXT_CHARS:
        return first, (rest or None)
    if len(text) <= MAX_CARD_TEXT_CHARS:
        return CHOOSE_TITLE_ZH, text
    return None


def card_payloads(text: str, choices: list[Choice], *, task_id: Callable[[], str] = new_task_id) -> list[dict[str, Any]]:
    text = text.strip()
    labels = _button_labels(choices)
    if labels is None:
        listing = "\n".join(f"{i}. {c.label}" for i, c in enumerate(choices, start=1))
        text = f"{text}\n{listing}" if text else listing
        labels = [str(i) for i in range(1, len(choices) + 1)]
    out: list[dict[str, Any]] = []
    fitted = _card_text(text)
    if fitted is None:
        out.extend(text_payloads(text))
        fitted = (CHOOSE_TITLE_ZH, None)
    title, sub = fitted
    for start in range(0, len(choices), MAX_BUTTONS):
        group = list(zip(labels, choices))[start : start + MAX_BUTTONS]
        card: dict[str, Any] = {
            "card_type": "button_interaction",
            "main_title": {"title": title if start == 0 else MORE_CHOICES_ZH},
            "task_id": task_id(),
            "button_list": [{"text": label, "style": 1, "key": c.value} for label, c in group],
        }
        if start == 0 and sub:
            card["sub_title_text"] = sub
        out.append({"msgtype": "template_card", "template_card": card})
    return out


def markdown_payloads(text: str, choices: list[Choice]) -> list[dict[str, Any]]:
    listing = "\n".join(f"> {i}. **{escape_markdown(c.label)}**" for i, c in enumerate(choices, start=1))
    tail = f"{listing}\n{MARKDOWN_HINT_ZH}"
    body = escape_markdown(text.strip())
    if len(f"{body}\n\n{tail}".encode("utf-8")) <= MAX_TEXT_BYTES:
        return [{"msgtype": "markdown", "markdown": {"content": f"{body}\n\n{tail}" if body else tail}}]
    return [*text_payloads(text.strip()), {"msgtype": "markdown", "markdown": {"content": tail}}]


def file_payloads(reply: Reply) -> list[dict[str, Any]]:
    f = reply.file
    assert f is not None
    if len(f.data) > MAX_FILE_BYTES:
        return text_payloads(FILE_TOO_LARGE_ZH.format(name=f.file_name))
    return [{"msgtype": "file", "file": {"file_name": f.file_name, "mime_type": f.mime_type,
                                         "data_b64": base64.b64encode(f.data).decode("ascii")}}]


def render_reply(reply: Reply, *, style: str = "card", task_id: Callable[[], str] = new_task_id) -> list[dict[str, Any]]:
    """One engine reply as WeCom message bodies, in sending order."""
    out: list[dict[str, Any]] = []
    links = _links(reply)
    if reply.choices:
        choices = list(reply.choices)
        if style == "markdown":
            out.extend(markdown_payloads(reply.text, choices))
        else:
            out.extend(card_payloads(reply.text, choices, task_id=task_id))
        if links:
            out.extend(text_payloads("", links=links))
    elif reply.text.strip() or links:
        out.extend(text_payloads(reply.text, links=links))
    if reply.file is not None:
        out.extend(file_payloads(reply))
    return out


def render_replies(replies: Iterable[Reply], *, style: str = "card",
                   task_id: Callable[[], str] = new_task_id) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for reply in replies:
        out.extend(render_reply(reply, style=style, task_id=task_id))
    return out


__all__ = ["MAX_TEXT_BYTES", "anchor", "escape_markdown", "escape_text", "new_task_id", "render_replies",
           "render_reply", "safe_url", "text_payloads"]
