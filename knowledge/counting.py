"""Count questions over tables: "集团有几家成员单位？", "how many health stations are members?".

A policy's annex often lists its members as a table (one chunk per row). A question asking *how
many* is answered by counting that table's rows — those whose cells name what the question
names, when it narrows the count ("几个卫生所" counts rows with 卫生所) — and citing the table,
instead of quoting one row or a neighbouring clause. Pure functions over the snapshot's chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.textnorm import utf8_len
from knowledge.tokenize import concept_word

_COUNT_ZH = re.compile(r"(几|多少)\s*(家|个|所|名|位|人|项|条|种|类|处)|一共有?多少|总共有?多少|数量")
_COUNT_EN = re.compile(r"\bhow many\b|\bnumber of\b", re.IGNORECASE)
_SEQ = re.compile(r"^(序号|编号|No\.?)[：:]\s*\d+[；;]\s*")
MAX_NAMES_BYTES = 900


def asks_count(question: str) -> bool:
    return bool(_COUNT_ZH.search(question) or _COUNT_EN.search(question))


@dataclass(frozen=True)
class TableCount:
    title: str  # the document
    table: tuple[str, ...]  # heading path of the table
    total: int  # rows of the table
    matched: int  # rows naming what the question narrows to (== total when it does not narrow)
    narrowed_by: tuple[str, ...]
    names: tuple[str, ...]  # the first cell of each matched row

    def text(self, language: str) -> str:
        where = " › ".join([f"《{self.title}》", *self.table])
        shown, size = [], 0
        for name in self.names:
            size += utf8_len(name) + 3
            if size > MAX_NAMES_BYTES:
                break
            shown.append(name)
        more = len(self.names) - len(shown)
        if language == "en":
            head = (f"The table {where} lists {self.total} rows"
                    + (f"; {self.matched} of them name {'/'.join(self.narrowed_by)}" if self.narrowed_by else "")
                    + ":")
            tail = f" … and {more} more" if more else ""
        else:
            head = (f"按{where}统计：表中共 {self.total} 行"
                    + (f"，其中名称含“{'、'.join(self.narrowed_by)}”的 {self.matched} 个" if self.narrowed_by else "")
                    + "：")
            tail = f" …等，另有 {more} 个未列出" if more else ""
        return head + "\n" + "、".join(shown) + tail


def _first_cell(body: str) -> str:
    body = _SEQ.sub("", body.strip())
    cell = re.split(r"[；;]", body, maxsplit=1)[0]
    return cell.split("：", 1)[-1].split(":", 1)[-1].strip()


def count_in_tables(query, hits: list, chunks: list) -> TableCount | None:
    """The count of the table the question is about — the table of the best-ranked row, or else
    the table whose title names what the question counts — narrowed by the question's words
    that some but not all of its rows contain. None when no table fits."""
    tables: dict[tuple[str, tuple[str, ...]], list] = {}
    for c in chunks:
        if c.kind == "table_row":
            tables.setdefault((c.document_title, c.heading_path), []).append(c)
    # only a table of a document the best answers come from: never another consortium's list
    documents = {h.chunk.document_title for h in hits[:2]}
    key = next(((h.chunk.document_title, h.chunk.heading_path) for h in hits[:10]
                if h.chunk.kind == "table_row" and h.chunk.document_title in documents), None)
    if key is None:
        asked = [concept_word(c) for c in query.concepts]
        named = [k for k in tables if k[0] in documents and any(w in " ".join(k[1]) for w in asked if len(w) >= 2)]
        key = named[0] if named else None
    rows = tables.get(key, []) if key else []
    if len(rows) < 2:
        return None
    narrowing = []
    context = rows[0].document_title + " ".join(rows[0].heading_path)
    for concept in query.concepts:
        word = concept_word(concept)
        if word in context:  # "松原…集团", "成员单位": which table, not which rows
            continue
        having = [r for r in rows if word in _first_cell(r.body)]
        if 0 < len(having) < len(rows):
            narrowing.append(word)
    matched = [r for r in rows if all(w in _first_cell(r.body) for w in narrowing)]
    if not matched:
        return None
    return TableCount(rows[0].document_title, rows[0].heading_path, len(rows), len(matched), tuple(narrowing),
                      tuple(_first_cell(r.body) for r in matched))


# An enumeration of institutions inside a sentence: "联合A卫生院、B卫生院、C中心等单位成立".
_INSTITUTION_END = ("院", "中心", "所", "站", "室", "医院", "机构", "单位")
_ENUM_LEAD = re.compile(r"(联合|包括|包含|由|有|设|下设|组建|成员[为是]?)")


@dataclass(frozen=True)
class EnumerationCount:
    items: tuple[str, ...]

    def text(self, language: str) -> str:
        if language == "en":
            return f"The clause below names {len(self.items)}: " + "、".join(self.items)
        return f"下列条款列出 {len(self.items)} 个：" + "、".join(self.items)


def count_in_sentence(text: str) -> EnumerationCount | None:
    """The institutions a sentence enumerates with "、" (at least three), or None."""
    best: tuple[str, ...] = ()
    for sentence in re.split(r"[。；;]", text.replace("\n", "")):
        for part in re.split(r"[，,：:]", sentence):
            items = [i.strip() for i in part.split("、")]
            if len(items) < 3:
                continue
            lead = _ENUM_LEAD.search(items[0])
            if lead:
                items[0] = items[0][lead.end():]
            items[-1] = re.sub(r"(等|共同|成立|组成|组建|建立).*$", "", items[-1]) or items[-1]
            if all(i.endswith(_INSTITUTION_END) and 2 <= len(i) <= 30 for i in items) and len(items) > len(best):
                best = tuple(items)
    return EnumerationCount(best) if best else None


_NUMBER = r"[\d一二两三四五六七八九十百]+"


@dataclass(frozen=True)
class StatedCount:
    """A sentence of the policy that states the number asked for ("与32个成员单位…")."""

    sentence: str
    citation: str

    def text(self, language: str) -> str:
        source = "Source: " if language == "en" else "出处："
        return f"“{self.sentence}”\n—— {source}{self.citation}"


def _around(sentence: str, found: str, before: int = 40, after: int = 40) -> str:
    """The part of a long sentence around ``found``, cut at commas where possible."""
    if len(sentence) <= before + after + len(found) + 20:
        return sentence
    at = sentence.index(found)
    start = max(0, at - before)
    comma = max(sentence.rfind(c, start, at) for c in "，,、")
    start = comma + 1 if comma >= start else start
    end = min(len(sentence), at + len(found) + after)
    stop = min((i for i in (sentence.find(c, at + len(found)) for c in "，,。；;") if i != -1), default=end)
    end = stop + 1 if stop < end else end
    return ("…" if start > 0 else "") + sentence[start:end] + ("…" if end < len(sentence) else "")


def stated_count(query, hits: list, chunks: list) -> StatedCount | None:
    """The policy's own statement of the count: a number with a measure word right before a word
    the question counts ("32个成员单位"), in the documents the best answers come from."""
    documents = [h.chunk.document_title for h in hits[:2]]
    # the counted words, in Chinese (an English concept carries its Chinese forms too)
    counted = sorted({t for c in query.concepts for form in c if len(form) == 1 for t in form
                      if len(t) >= 2 and re.match(r"^[\u4e00-\u9fff]+$", t)}, key=len, reverse=True)
    if not counted:
        return None
    pattern = re.compile(rf"{_NUMBER}\s*[个家所名位项]\s*(?:{'|'.join(re.escape(w) for w in counted)})")
    for title in dict.fromkeys(documents):
        for chunk in (c for c in chunks if c.document_title == title):
            match = pattern.search(chunk.body)
            if match:
                sentence = next((s for s in re.split(r"(?<=[。；;])", chunk.body) if match.group(0) in s), chunk.body)
                return StatedCount(_around(sentence.strip(), match.group(0)), chunk.citation)
    return None


__all__ = ["EnumerationCount", "StatedCount", "TableCount", "asks_count", "count_in_sentence", "count_in_tables",
           "stated_count"]
