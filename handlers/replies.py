"""Fitting replies to a channel's message size limit.

Every channel adapter gets replies already cut to its platform's limit, so no adapter has to
split text itself. Splitting prefers paragraph boundaries, then sentence ends (Chinese and Latin
punctuation), then clause punctuation, and cuts inside a sentence only when one sentence alone is
longer than the limit. Choice buttons and a file stay on the last part, where the user reads them.

``split_text`` is the one reusable splitting function; ``fit_replies`` applies it per channel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from handlers.messages import Reply
from knowledge.textnorm import utf8_len


@dataclass(frozen=True)
class Limit:
    """A message size limit: ``size`` measured in characters or in UTF-8 bytes."""

    size: int
    unit: str = "chars"  # "chars" | "bytes"

    @property
    def measure(self) -> Callable[[str], int]:
        return utf8_len if self.unit == "bytes" else len


#: Per-channel limits. Telegram: 4096 characters per text message. WeCom: 2048 bytes of UTF-8 for
#: passive replies and for ``message/send`` text/markdown. The web chat uses Telegram's size so
#: that what a visitor sees resembles the phone; the terminal has no limit.
CHANNEL_LIMITS: dict[str, Limit | None] = {
    "telegram": Limit(4096, "chars"),
    "wecom": Limit(2048, "bytes"),
    "web": Limit(4096, "chars"),
    "cli": None,
}

# Boundaries, strongest first. Each pattern matches the *end* of a piece (the cut goes after it).
_PARAGRAPH = re.compile(r"\n\s*\n")
_LINE = re.compile(r"\n")
_SENTENCE = re.compile(r"[。！？!?；;…]+[”’」』）)\]】]*\s*|(?<![0-9])\.(?=\s)\s*")
_CLAUSE = re.compile(r"[，,、：:]\s*|\s+")


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    """``text`` cut after every match of ``pattern``; joining the pieces gives ``text`` back."""
    out: list[str] = []
    start = 0
    for m in pattern.finditer(text):
        if m.end() > start:
            out.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def _hard_cut(text: str, size: int, measure: Callable[[str], int]) -> list[str]:
    """Cut at character boundaries so that each part measures at most ``size``."""
    out: list[str] = []
    current = ""
    for ch in text:
        if current and measure(current + ch) > size:
            out.append(current)
            current = ""
        current += ch
    if current:
        out.append(current)
    return out


_LEVELS = (_PARAGRAPH, _LINE, _SENTENCE, _CLAUSE)


def _split(text: str, size: int, measure: Callable[[str], int], level: int) -> list[str]:
    # Blank space at the ends of a part is dropped when it is sent, so it does not count.
    def fits(candidate: str) -> bool:
        return measure(candidate.strip()) <= size

    if fits(text):
        return [text]
    if level >= len(_LEVELS):
        return _hard_cut(text.strip(), size, measure)
    parts: list[str] = []
    current = ""
    for piece in _pieces(text, _LEVELS[level]):
        if fits(current + piece):
            current += piece
            continue
        if current:
            parts.append(current)
            current = ""
        if fits(piece):
            current = piece
        else:  # one piece alone is too long: split it at the next weaker boundary
            sub = _split(piece, size, measure, level + 1)
            parts.extend(sub[:-1])
            current = sub[-1]
    if current:
        parts.append(current)
    return parts


def split_text(text: str, max_size: int, *, unit: str = "chars") -> list[str]:
    """Split ``text`` into parts of at most ``max_size`` characters (or UTF-8 bytes with
    ``unit="bytes"``), cutting at the strongest boundary available: paragraph, line, sentence,
    clause, and inside a word only as a last resort. Parts are stripped of surrounding blank
    space; an empty text gives ``[""]``."""
    if max_size < 4:
        raise ValueError("max_size is too small to split text sensibly")
    measure = utf8_len if unit == "bytes" else len
    text = text.strip()
    if not text:
        return [""]
    parts = [p.strip() for p in _split(text, max_size, measure, 0)]
    return [p for p in parts if p] or [""]


def fit_reply(reply: Reply, limit: Limit | None) -> list[Reply]:
    """One reply as one or more replies within ``limit``; choices and file go on the last."""
    if limit is None or limit.measure(reply.text) <= limit.size:
        return [reply]
    texts = split_text(reply.text, limit.size, unit=limit.unit)
    head = [Reply(text=t) for t in texts[:-1]]
    return [*head, replace(reply, text=texts[-1])]


def fit_replies(replies: Iterable[Reply], channel: str,
                limits: dict[str, Limit | None] | None = None) -> list[Reply]:
    """All ``replies`` cut to ``channel``'s limit (``CHANNEL_LIMITS`` unless ``limits`` given)."""
    table = CHANNEL_LIMITS if limits is None else {**CHANNEL_LIMITS, **limits}
    limit = table.get(channel)
    out: list[Reply] = []
    for reply in replies:
        out.extend(fit_reply(reply, limit))
    return out


__all__ = ["CHANNEL_LIMITS", "Limit", "fit_replies", "fit_reply", "split_text", "utf8_len"]
