"""Small text helpers shared by chunking, indexing and answering.

Two normal forms exist on purpose: *display* text keeps the document's own punctuation (a quote
must look like the policy) but drops the stray spaces PDF export leaves between Chinese
characters ("副理事长8 名", "韩  伟"); *match* text is NFKC-folded (full/half width, compatibility
forms) and has no white space at all, which is what both retrieval and answer checks compare.
"""

from __future__ import annotations

import re
import unicodedata

_CJK = r"\u3400-\u9fff\uf900-\ufaff"
_CJK_PUNCT = r"\u3000-\u303f\uff00-\uffef“”‘’《》"
# A run of blanks with a CJK character (or CJK punctuation) on at least one side is noise from
# fixed-width layout; blanks between two Latin words are real and kept.
_SPACE_NEAR_CJK = re.compile(rf"(?<=[{_CJK}{_CJK_PUNCT}])[^\S\n]+|[^\S\n]+(?=[{_CJK}{_CJK_PUNCT}])")
_MULTI_SPACE = re.compile(r"[^\S\n]{2,}")
_WS = re.compile(r"\s+")

SENTENCE_END = "。！？；!?;"
_SENTENCE_SPLIT = re.compile(r"(?<=[。！？；!?;])(?![”’」』）)])|(?<=[。！？][”’」』）)])")


def clean_display(text: str) -> str:
    """Collapse layout spaces around Chinese text; keep everything else as written."""
    text = text.replace("\ufeff", "").strip()
    text = _SPACE_NEAR_CJK.sub("", text)
    return _MULTI_SPACE.sub(" ", text)


def fold(text: str) -> str:
    """The comparison form: NFKC, lower case, no white space."""
    return _WS.sub("", unicodedata.normalize("NFKC", text)).lower()


def split_sentences(text: str) -> list[str]:
    """Split on Chinese/Latin sentence ends, keeping the terminator with its sentence."""
    parts = [p.strip() for p in _SENTENCE_SPLIT.split(text)]
    return [p for p in parts if p]


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def truncate_utf8(text: str, max_bytes: int, ellipsis: str = "…") -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes, at a character boundary."""
    if utf8_len(text) <= max_bytes:
        return text
    budget = max_bytes - utf8_len(ellipsis)
    out = text.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return out + ellipsis


def is_mostly_latin(text: str) -> bool:
    """True when the user wrote in English (or another Latin-script language)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if c.isascii())
    return latin / len(letters) > 0.6
