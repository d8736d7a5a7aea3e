"""Clause-aware chunking of Chinese policy texts.

Policy documents are written as numbered clauses (一、 / （一） / 1. / 3.2.1 / 第X条 …). A user asks
about one rule, and an answer must cite the clause it quotes, so the unit of retrieval is a clause
carrying its heading path (document › section › clause), not a window of characters.

Pipeline: extracted blocks → paragraphs (hard wraps re-joined, page furniture dropped, tab-laid
tables rebuilt) → headings recognised and nested → one chunk per clause (long clauses split on
sentence ends) and one chunk per table row with its column names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.extract_types import Extracted, TableBlock, TextBlock, too_many_chunks
from knowledge.textnorm import SENTENCE_END, clean_display, fold, split_sentences

MAX_CHUNK_CHARS = 360
HEADING_TITLE_MAX = 40
SHORT_TITLE = 20

_CN_NUM = "一二三四五六七八九十百零〇两"
# (kind, pattern). The kind decides nesting: kinds are ranked by first appearance in a document,
# except decimal numbering whose depth is explicit (3 < 3.2 < 3.2.1).
_HEADING_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("chapter", re.compile(rf"^第[{_CN_NUM}\d]+章")),
    ("section", re.compile(rf"^第[{_CN_NUM}\d]+节")),
    ("article", re.compile(rf"^第[{_CN_NUM}\d]+条")),
    ("cn", re.compile(rf"^[{_CN_NUM}]+[、．.]")),
    ("paren_cn", re.compile(rf"^[（(][{_CN_NUM}]+[）)]")),
    ("decimal", re.compile(r"^\d{1,2}(?:\.\d{1,2}){1,3}(?![\d%])(?=\s|[^\d.])")),
    ("arabic", re.compile(r"^\d{1,2}\s*[、．.](?!\d)")),
    ("paren_num", re.compile(r"^[（(]\d{1,2}[）)]")),
    ("circled", re.compile(r"^[①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳]")),
    ("annex", re.compile(r"^附\s*件\s*\d*\s*[:：]?\s*$|^附\s*件\s*\d+")),
]
_PAGE_FURNITURE = re.compile(
    r"^\s*(?:[-—–－]+\s*\d+\s*[-—–－]+|\d{1,3}|第\s*\d+\s*页(?:\s*[,，/]?\s*共\s*\d+\s*页)?|\d+\s*/\s*\d+)\s*$"
)
# Word field codes that leak into text exports ("CONTROL Seal.MSSeal.1 \s", "EMBED Word.Picture")
_FIELD_CODE = re.compile(
    r"\b(?:CONTROL|EMBED|INCLUDEPICTURE|HYPERLINK|MERGEFORMAT|SHAPE)\b[\x20-\x7e]*|_\d{6,}\.unknown"
)


@dataclass(frozen=True)
class Heading:
    kind: str
    depth: int  # only meaningful for decimal headings
    marker: str  # as written: "一、", "（二）", "3.2.1", "1."
    title: str
    line: str
    run_in: bool  # the title ends with its own full stop and the clause text follows

    @property
    def number(self) -> str:
        """The clause number for citations, without its punctuation ("3.2.1", "一", "（二）")."""
        return self.marker.rstrip("、．.:： ")

    @property
    def label(self) -> str:
        """How the heading appears in a citation path: its number and short title."""
        marker = clean_display(self.marker)
        gap = "" if not marker or not marker[-1].isdigit() else " "
        return f"{marker}{gap}{clean_display(self.title)}".strip()


@dataclass
class ChunkDraft:
    seq: int
    kind: str  # "clause" | "table_row"
    heading_path: list[str]
    clause_no: str | None
    body: str
    consortium: str | None = None

    def text(self, title: str) -> str:
        """The indexed and quoted text: heading path, then the clause itself."""
        path = " › ".join([title, *self.heading_path])
        return f"{path}\n{self.body}"


@dataclass
class _Para:
    text: str
    heading: Heading | None = None
    table: TableBlock | None = None


def match_heading(line: str) -> Heading | None:
    """Recognise a numbered heading at the start of ``line``; None for body text."""
    s = line.strip()
    for kind, pattern in _HEADING_PATTERNS:
        m = pattern.match(s)
        if not m:
            continue
        number = m.group(0).strip()
        rest = s[m.end():].strip()
        if kind == "annex":
            return Heading(kind, 0, number, rest, s, False)
        if kind == "decimal":
            depth = number.count(".") + 1
        else:
            depth = 0
        title, run_in = _heading_title(rest)
        return Heading(kind, depth, number, title, s, run_in)
    return None


def _heading_title(rest: str) -> tuple[str, bool]:
    """A heading's short title, and whether it is a run-in title ("技术合作。派出…").

    The title is the text up to the first full stop or colon when that is short; otherwise the
    first phrase, shortened, and the whole text stays the clause body.
    """
    for i, ch in enumerate(rest):
        if ch in "。：:；;":
            if i <= HEADING_TITLE_MAX:
                return rest[:i], True
            break
    if len(rest) <= HEADING_TITLE_MAX:
        return rest, False
    phrase = rest[:SHORT_TITLE]
    for i, ch in enumerate(rest[:SHORT_TITLE]):
        if ch in "，,、":
            phrase = rest[:i]
            break
    return phrase + "…", False


# --------------------------------------------------------------------------------------------
# blocks → paragraphs


def to_paragraphs(doc: Extracted) -> list[_Para]:
    """Re-join hard-wrapped lines, drop page furniture, rebuild tab-laid tables.

    A hard-wrapped export breaks every line at the page width, so a line that fills the width
    continues on the next one, and a clearly shorter line ends its paragraph. A numbered heading
    always starts a new paragraph.
    """
    out: list[_Para] = []
    blocks = list(doc.blocks)
    width = _wrap_width(blocks) if doc.hard_wrapped else 0
    current: list[str] = []

    def flush() -> None:
        if current:
            text = clean_display("".join(current))
            if text:
                out.append(_Para(text, heading=match_heading(text)))
            current.clear()

    i = 0
    while i < len(blocks):
        block = blocks[i]
        if isinstance(block, TableBlock):
            flush()
            out.append(_Para("", table=block))
            i += 1
            continue
        if block.text.startswith("\t"):
            i = _take_tab_table(blocks, i, out, flush)
            continue
        line = clean_display(_FIELD_CODE.sub("", block.text).replace("\ufffd", ""))
        i += 1
        if not line or _PAGE_FURNITURE.match(line):
            continue
        if not doc.hard_wrapped or match_heading(line) is not None:
            flush()
        current.append(line)
        if not doc.hard_wrapped or (_visual_width(line) < 0.8 * width and not _breaks_mid_sentence(line)):
            flush()
    flush()
    return out


def _wrap_width(blocks: list) -> int:
    """The page width of a hard-wrapped text, in characters (90th percentile of line lengths)."""
    lengths = sorted(
        _visual_width(clean_display(b.text)) for b in blocks if isinstance(b, TextBlock) and len(b.text.strip()) > 8
    )
    if not lengths:
        return 0
    return lengths[min(len(lengths) - 1, int(len(lengths) * 0.9))]


def _breaks_mid_sentence(line: str) -> bool:
    """A longish line that stops on a plain character ("…探索城市医疗集团运行") was cut in the
    middle of a sentence, whatever its width; a short one ("二、工作目标") is a title."""
    return len(line) > 15 and not _ends_sentence(line)


def _visual_width(text: str) -> float:
    """Printed width in Chinese characters: Latin letters, digits and spaces are half as wide,
    so "到 2023 年底，…" fills a line with fewer characters than a line of Chinese text."""
    return sum(0.5 if ch.isascii() else 1.0 for ch in text)


def _take_tab_table(blocks: list, i: int, out: list[_Para], flush) -> int:
    """Consume a run of tab-indented lines (a table exported cell by cell) starting at ``i``."""
    cells: list[str] = []
    while i < len(blocks) and isinstance(blocks[i], TextBlock):
        text = blocks[i].text
        if text.startswith("\t"):
            cells.append(clean_display(text))
        elif text.strip():
            break
        i += 1
    flush()
    table = _cells_to_table(cells)
    if table is not None:
        out.append(_Para("", table=table))
    else:
        out.extend(_Para(c, heading=match_heading(c)) for c in cells if c)
    return i


def _ends_sentence(text: str) -> bool:
    t = text.rstrip()
    return bool(t) and (t[-1] in SENTENCE_END or t[-1] in "”」』）)：:")


def _is_title_only(rest: str) -> bool:
    """"总体要求" or "协作内容。" label a section; "各成员单位以独立法人资格自主运营。" is a rule."""
    core = rest.rstrip("。：:；; ")
    if any(c in core for c in "，,。；;"):
        return False
    return len(core) <= 8 or (len(core) <= 20 and not _ends_sentence(rest))


def _cells_to_table(cells: list[str]) -> TableBlock | None:
    """Rebuild rows from a cell-per-line table whose first column is a serial number."""
    cells = [c for c in cells if c]
    try:
        first = cells.index("1")
    except ValueError:
        return None
    head = cells[:first]
    if not head:
        return None
    caption = None
    if "序号" in head and head[0] != "序号":
        k = head.index("序号")
        caption = "".join(head[:k])
        head = head[k:]
    ncols = len(head)
    rows: list[list[str]] = []
    expected = 1
    j = first
    while j < len(cells):
        if cells[j] != str(expected):
            return None if not rows else TableBlock(head, rows, caption)
        k = j + 1
        while k < len(cells) and cells[k] != str(expected + 1):
            k += 1
        row = cells[j:k]
        if len(row) > ncols:  # a wrapped cell: join the overflow into the widest column
            extra = len(row) - ncols
            widest = max(range(1, ncols), key=lambda c: len(row[c]))
            row = row[:widest] + ["".join(row[widest : widest + extra + 1])] + row[widest + extra + 1 :]
        row += [""] * (ncols - len(row))
        rows.append(row)
        expected += 1
        j = k
    return TableBlock(head, rows, caption)


# --------------------------------------------------------------------------------------------
# paragraphs → chunks


def chunk_document(doc: Extracted, consortium: str | None = None, *, max_chunks: int | None = None) -> list[ChunkDraft]:
    """Split an extracted document into clause and table-row chunks, in document order.

    With ``max_chunks``, raises ``IngestError`` as soon as the document needs more chunks than
    that (so a pathological file costs at most ``max_chunks`` drafts, never all of them).
    """
    drafts: list[ChunkDraft] = []

    def check() -> None:
        if max_chunks is not None and len(drafts) > max_chunks:
            raise too_many_chunks(doc.file_name, max_chunks)

    stack: list[Heading] = []
    kind_rank: dict[str, int] = {}
    paras: list[str] = []
    caption: str | None = None  # the last short line before a table names it

    def emit() -> None:
        if paras:
            path = [h.label for h in stack]
            clause_no = stack[-1].number if stack else None
            for body in _pack(paras):
                drafts.append(ChunkDraft(len(drafts), "clause", list(path), clause_no, body, consortium))
            check()
        paras.clear()

    for para in to_paragraphs(doc):
        if para.table is not None:
            emit()
            _emit_table(drafts, para.table, [h.label for h in stack], caption, consortium, check)
            caption = None
            continue
        h = para.heading
        if h is None:
            if not stack and not drafts and fold(para.text) == fold(doc.title):
                continue  # the title line itself
            paras.append(para.text)
            caption = para.text if len(para.text) <= HEADING_TITLE_MAX and not _ends_sentence(para.text) else None
            continue
        emit()
        _push_heading(stack, kind_rank, h)
        rest = para.text.strip()[len(h.marker) :].strip()
        if _is_title_only(rest):
            caption = h.title
            continue
        body = rest[len(h.title) :].lstrip("。：:；;").strip() if h.run_in else ""
        paras.append(body or rest)
    emit()
    return _with_list_items(drafts)


_LIST_INTRO = re.compile(r"(?:以下|下列|如下|包括)[^。]{0,12}[：:。]?$|[：:]$")


def _with_list_items(drafts: list[ChunkDraft]) -> list[ChunkDraft]:
    """A clause that introduces a list ("需具备以下条件：") also carries its items.

    Questions such as "成员享有哪些权利？" match the introduction, but the answer is the items
    underneath it; the items stay chunks of their own as well.
    """
    for i, draft in enumerate(drafts):
        if draft.kind != "clause" or not _LIST_INTRO.search(draft.body):
            continue
        depth = len(draft.heading_path)
        items = []
        for child in drafts[i + 1 :]:
            if child.kind != "clause" or child.heading_path[:depth] != draft.heading_path or len(child.heading_path) == depth:
                break
            items.append(f"{child.clause_no} {child.body}" if child.clause_no else child.body)
        merged = "\n".join([draft.body, *items])
        if items and len(merged) <= 2 * MAX_CHUNK_CHARS:
            draft.body = merged
    return drafts


def _push_heading(stack: list[Heading], kind_rank: dict[str, int], h: Heading) -> None:
    """Nest ``h`` under the open headings.

    Heading styles rank by first appearance in the document (the usual 一、 › （一） › 1. › (1),
    whatever a given document uses); decimal numbers nest by their depth. An annex starts over.
    """
    if h.kind == "annex":
        stack.clear()
        kind_rank.clear()
    kind_rank.setdefault(h.kind, len(kind_rank))

    def rank(x: Heading) -> tuple[int, int]:
        return (kind_rank[x.kind], x.depth)

    while stack and stack[-1].kind != "annex" and rank(stack[-1]) >= rank(h):
        stack.pop()
    stack.append(h)


def _pack(paras: list[str]) -> list[str]:
    """Group a clause's paragraphs into chunks of at most MAX_CHUNK_CHARS, splitting on sentences."""
    pieces: list[str] = []
    for p in paras:
        if len(p) <= MAX_CHUNK_CHARS:
            pieces.append(p)
        else:
            pieces.extend(split_sentences(p))
    chunks: list[str] = []
    buf = ""
    for piece in pieces:
        if buf and len(buf) + len(piece) > MAX_CHUNK_CHARS:
            chunks.append(buf)
            buf = ""
        if len(piece) > MAX_CHUNK_CHARS:  # one enormous sentence: hard cut on commas
            for k in range(0, len(piece), MAX_CHUNK_CHARS):
                chunks.append(piece[k : k + MAX_CHUNK_CHARS])
            continue
        buf = f"{buf}\n{piece}" if buf and piece in paras else buf + piece
    if buf:
        chunks.append(buf)
    return chunks


def _emit_table(
    drafts: list[ChunkDraft],
    table: TableBlock,
    path: list[str],
    caption: str | None,
    consortium: str | None,
    check=lambda: None,
) -> None:
    path = [*path, table.caption or caption or "表格"]
    for row in table.rows:
        fields = [
            f"{clean_display(col) or f'第{i + 1}列'}：{clean_display(val)}"
            for i, (col, val) in enumerate(zip(table.header, row))
            if clean_display(val)
        ]
        if not fields:
            continue
        body = "；".join(fields)
        clause_no = row[0] if row and row[0].isdigit() else None
        drafts.append(ChunkDraft(len(drafts), "table_row", list(path), clause_no, body, consortium))
        check()
