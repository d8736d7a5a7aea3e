"""Small text helpers shared by chunking, indexing and answering.

Two normal forms exist on purpose: *display* text keeps the document's own punctuation (a quote
must look like the policy) but drops the stray spaces PDF export leaves between Chinese
characters ("副理事长8 名", "韩  伟"); *match* text is NFKC-folded (full/half width, compatibility
forms) and has no white space at all, which is what both retrieval and answer checks compare.

Document titles (and file names shown back to users) have their own pair: ``clean_title`` is what
is registered and shown (no invisible or control characters, blanks folded), ``title_key`` is
what two titles are compared by (NFKC, case-folded, no blanks), so that a title cannot pass for
another one by a zero-width space, a look-alike compatibility character or an extra blank.
"""

from __future__ import annotations

import re
import unicodedata

_CJK = r"\u3400-\u9fff\uf900-\ufaff"
_CJK_PUNCT = r"\u3001-\u303f\uff00-\uffef“”‘’《》"
# A run of blanks with a CJK character (or CJK punctuation) on at least one side is noise from
# fixed-width layout; blanks between two Latin words are real and kept.
# The ideographic space (U+3000) is left alone: it is what separates names in a column list.
_SPACE_NEAR_CJK = re.compile(rf"(?<=[{_CJK}{_CJK_PUNCT}])[^\S\n\u3000]+|[^\S\n\u3000]+(?=[{_CJK}{_CJK_PUNCT}])")
_MULTI_SPACE = re.compile(r"[^\S\n]{2,}")
_WS = re.compile(r"\s+")

SENTENCE_END = "。！？；!?;"
_SENTENCE_SPLIT = re.compile(r"(?<=[。！？；!?;])(?![”’」』）)])|(?<=[。！？][”’」』）)])")


_COLUMN_GAP = re.compile(r"[^\S\n]{2,}")
_CJK_CELL = re.compile(rf"^[{_CJK}{_CJK_PUNCT}A-Za-z0-9·]{{1,12}}$")


def _columns(line: str) -> str | None:
    """A line laid out in columns of short names ("刘新宇  许  明  赵春哲"): its cells joined by an
    ideographic space (shown as a gap; like any white space it is ignored when text is compared),
    two-character names padded to the column width ("许  明") put back together. None when the
    line is not such a list (the gaps are then plain layout noise)."""
    cells = [c for c in _COLUMN_GAP.split(line.strip()) if c]
    if len(cells) < 3 or not all(_CJK_CELL.match(c) for c in cells):
        return None
    merged: list[str] = []
    i = 0
    while i < len(cells):
        if len(cells[i]) == 1 and i + 1 < len(cells) and len(cells[i + 1]) == 1:
            merged.append(cells[i] + cells[i + 1])
            i += 2
        else:
            merged.append(cells[i])
            i += 1
    return "\u3000".join(merged)


def clean_display(text: str) -> str:
    """Collapse layout spaces around Chinese text; keep everything else as written, except that
    columns of names keep a separator ("刘新宇　许明　赵春哲", not "刘新宇许明赵春哲")."""
    text = text.replace("\ufeff", "").strip()
    lines = [(_columns(line) or line) for line in text.split("\n")]
    text = "\n".join(lines)
    text = _SPACE_NEAR_CJK.sub("", text)
    return _MULTI_SPACE.sub(" ", text)


def fold(text: str) -> str:
    """The comparison form: NFKC, lower case, no white space."""
    return _WS.sub("", unicodedata.normalize("NFKC", text)).lower()


# Format characters (zero-width space/joiners, bidi marks and overrides, word joiner, BOM, soft
# hyphen, tag characters…) are category Cf; controls are Cc. The others render as nothing too.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_INVISIBLE_EXTRA = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u3164\uffa0") | frozenset(
    chr(c) for c in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]  # variation selectors
)
# Full-width ASCII forms (（）：，ＡＢ１２) are kept in titles as written: Chinese typography uses
# them, and title_key folds them for comparisons anyway.
_FULLWIDTH_RUN = re.compile("([\uff01-\uff5e]+)")


def _nfkc_keeping_fullwidth(text: str) -> str:
    parts = _FULLWIDTH_RUN.split(text)
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


def _visible(text: str) -> str:
    """White space as a plain blank, invisible characters dropped."""
    return "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or (unicodedata.category(ch) not in _INVISIBLE_CATEGORIES and ch not in _INVISIBLE_EXTRA)
    )


def clean_title(text: str) -> str:
    """A title as registered and shown: NFKC (full-width punctuation kept), no zero-width,
    format or control characters, runs of white space folded to one blank, trimmed."""
    return " ".join(_visible(_nfkc_keeping_fullwidth(text)).split())


def title_key(text: str) -> str:
    """What two titles are compared by: NFKC, case-folded, invisible characters and blanks removed.

    "松原…实施方案\u200b", "松原…实施⽅案" (Kangxi radical) and "松原… 实施方案" all have the key
    of "松原…实施方案".
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", clean_title(text)).casefold())
    return "".join(_visible(folded).split())


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
