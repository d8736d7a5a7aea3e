"""Format readers: turn an uploaded file (name + bytes) into an ``Extracted`` for the normaliser.

Readers only extract text and tables in reading order; they never interpret headings, clauses
or wrapped lines (that is the normaliser's job). Every failure a user can cause (empty file,
wrong format, encrypted or damaged file, scanned PDF, unknown encoding) is reported as an
``IngestError`` naming the file, with an English ``reason`` and a Chinese ``reason_zh``; no raw
exception escapes ``extract``.

Every reader also enforces the per-file ``Limits`` (characters, lines/paragraphs/rows, PDF pages
and content streams, DOCX unpacked size): the file is refused while it is being read, with a
clear reason, so that a pathological upload costs seconds and bounded memory, not minutes and
gigabytes. Library diagnostics (pypdf warnings, reader tracebacks) are logged at DEBUG only: the
caller reports the one clear line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import threading
import unicodedata
import zipfile

from knowledge.extract_types import (
    Block,
    Budget,
    Extracted,
    IngestError,
    Limits,
    TableBlock,
    TextBlock,
    too_many_blocks,
    too_many_chars,
)

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".docx", ".pdf")

# A PDF whose extracted text has fewer meaningful characters than this is treated as scanned.
MIN_PDF_TEXT_CHARS = 20
# Legacy Office files (.doc, and password-protected .docx) are OLE compound files.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")

_SUPPORTED_ZH = "请上传 PDF、DOCX、TXT 或 MD 文件"


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def extract(file_name: str, data: bytes, *, max_bytes: int | None = None, limits: Limits | None = None) -> Extracted:
    """Extract blocks from one uploaded file, dispatching on its suffix (case-insensitive).

    Raises ``IngestError`` (never anything else) when the file cannot be ingested, including
    when it is over one of ``limits`` (the defaults of ``extract_types`` when not given;
    ``max_bytes`` overrides ``limits.max_bytes``).
    """
    limits = limits or Limits()
    if max_bytes is None:
        max_bytes = limits.max_bytes
    suffix = _suffix(file_name)
    if suffix not in SUPPORTED_SUFFIXES:
        _raise_unsupported(file_name, suffix)
    if max_bytes is not None and len(data) > max_bytes:
        raise IngestError(
            file_name,
            f"file is {_mb(len(data))} MB, larger than the {_mb(max_bytes)} MB limit",
            f"文件过大（{_mb(len(data))} MB），超过 {_mb(max_bytes)} MB 的上限，请拆分或压缩后再上传",
        )
    if not data or not data.strip():
        raise IngestError(file_name, "file is empty", "文件为空")

    try:
        if suffix == ".txt":
            return _read_txt(file_name, data, limits)
        if suffix == ".md":
            return _read_md(file_name, data, limits)
        if suffix == ".docx":
            return _read_docx(file_name, data, limits)
        return _read_pdf(file_name, data, limits)
    except IngestError:
        raise
    except RecursionError:  # absurdly nested structures
        raise _damaged(file_name, suffix) from None
    except MemoryError:
        raise IngestError(
            file_name, "file is too large to read (out of memory; the per-file limit)", "文件过大，超出读取上限，无法读取"
        ) from None
    except Exception:  # a reader bug or a library choking on odd input: still a clean error
        log.debug("unexpected error while reading %s", file_name, exc_info=True)
        raise _damaged(file_name, suffix) from None


# --------------------------------------------------------------------------------------------
# Helpers shared by the readers
# --------------------------------------------------------------------------------------------


def _base_name(file_name: str) -> str:
    return re.split(r"[\\/]", file_name)[-1]


def _suffix(file_name: str) -> str:
    base = _base_name(file_name)
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def _stem(file_name: str) -> str:
    base = _base_name(file_name)
    dot = base.rfind(".")
    stem = base[:dot] if dot > 0 else base
    return stem.strip() or base


def _mb(n: int) -> str:
    value = n / (1024 * 1024)
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _raise_unsupported(file_name: str, suffix: str) -> None:
    supported = ", ".join(SUPPORTED_SUFFIXES)
    shown = suffix or "(no extension)"
    reason = f"unsupported file type {shown}; supported types: {supported}"
    reason_zh = f"不支持的文件格式，{_SUPPORTED_ZH}"
    if suffix in (".doc", ".wps", ".rtf"):
        reason += "; please save the document as .docx first"
        reason_zh += "（旧版 Word/WPS 文档请先另存为 .docx）"
    raise IngestError(file_name, reason, reason_zh)


def _damaged(file_name: str, suffix: str) -> IngestError:
    kind = suffix.lstrip(".").upper() or "document"
    return IngestError(
        file_name,
        f"file is damaged or not a real {kind}",
        f"文件已损坏或不是有效的 {kind} 文件，无法读取",
    )


def _encrypted(file_name: str) -> IngestError:
    return IngestError(
        file_name,
        "file is password-protected; please upload an unencrypted copy",
        "文件已加密（有密码保护），请上传未加密的版本",
    )


def _no_text(file_name: str) -> IngestError:
    return IngestError(file_name, "document contains no text", "文档中没有可读取的文字内容")


def _line_blocks(lines: list[str]) -> list[Block]:
    """Lines as TextBlocks; blank lines kept as TextBlock("") except at the very start/end."""
    blocks: list[Block] = [TextBlock(line) for line in lines]
    return _trim_blank(blocks)


def _trim_blank(blocks: list[Block]) -> list[Block]:
    def blank(b: Block) -> bool:
        return isinstance(b, TextBlock) and not b.text.strip()

    start, end = 0, len(blocks)
    while start < end and blank(blocks[start]):
        start += 1
    while end > start and blank(blocks[end - 1]):
        end -= 1
    return blocks[start:end]


def _split_lines(text: str) -> list[str]:
    """Split on any newline convention; strip trailing whitespace (and '\\r') from each line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    return [line.rstrip() for line in text.split("\n")]


# --------------------------------------------------------------------------------------------
# Plain text decoding (TXT and MD)
# --------------------------------------------------------------------------------------------


# control characters (category Cc) other than \t \n \v \f \r
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def _looks_binary(text: str) -> bool:
    """True if the decoded text is full of control characters, i.e. it is not really text."""
    if "\x00" in text:
        return True
    return len(_CONTROLS.findall(text)) > max(2, len(text) // 100)


def _decode_text(file_name: str, data: bytes) -> str:
    candidates: list[str] = []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:  # UTF-16 with BOM, as saved by Windows Notepad's "Unicode" option
            candidates.append(data.decode("utf-16"))
        except UnicodeDecodeError:
            pass
    if not candidates and b"\x00" not in data:
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                candidates.append(data.decode(encoding))
                break
            except UnicodeDecodeError:
                continue
    if not candidates:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is not None:
            candidates.append(str(best))

    for text in candidates:
        text = text.lstrip("\ufeff")
        if not _looks_binary(text):
            return text
    raise IngestError(
        file_name,
        "cannot decode the text (not UTF-8 or GBK/GB18030); please save it as UTF-8",
        "无法识别文件的文字编码（不是 UTF-8 或 GBK），请另存为 UTF-8 编码后再上传",
    )


def _text_lines(file_name: str, text: str, limits: Limits) -> list[str]:
    """The lines of a decoded text file, refused before splitting when it is over the limits."""
    lf, cr = text.count("\n"), text.count("\r")
    if len(text) - lf - cr > limits.max_chars:
        raise too_many_chars(file_name, limits.max_chars)
    if max(lf, cr) > 4 * limits.max_blocks:  # far more lines than the limit, even with blank lines
        raise too_many_blocks(file_name, limits.max_blocks)
    lines = _split_lines(text)
    if sum(1 for line in lines if line.strip()) > limits.max_blocks:
        raise too_many_blocks(file_name, limits.max_blocks)
    return lines


def _read_txt(file_name: str, data: bytes, limits: Limits) -> Extracted:
    text = _decode_text(file_name, data)
    if not text.strip():
        raise IngestError(file_name, "file is empty", "文件为空")
    return Extracted(
        file_name=file_name,
        title=_stem(file_name),
        blocks=_line_blocks(_text_lines(file_name, text, limits)),
        hard_wrapped=True,
    )


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+|(?=[^#\s]))(.*?)(?:[ \t]+#+)?[ \t]*$")
_MD_EMPTY_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]*$")
_MD_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")
_MD_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_MD_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_MD_SETEXT_H1 = re.compile(r"^ {0,3}=+[ \t]*$")
_MD_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_MD_FRONT_TITLE = re.compile(r"""^title\s*:\s*["']?(.*?)["']?\s*$""", re.IGNORECASE)


def _strip_emphasis(text: str) -> str:
    return _MD_BOLD.sub(r"\1", text)


def _split_table_row(line: str) -> list[str]:
    row = line.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    cells = re.split(r"(?<!\\)\|", row)
    return [_strip_emphasis(cell.replace("\\|", "|").strip()) for cell in cells]


def _is_table_row(line: str) -> bool:
    return bool(line.strip()) and re.search(r"(?<!\\)\|", line) is not None


def _fit(row: list[str], width: int) -> list[str]:
    return (row + [""] * width)[:width]


def _read_md(file_name: str, data: bytes, limits: Limits) -> Extracted:
    text = _decode_text(file_name, data)
    if not text.strip():
        raise IngestError(file_name, "file is empty", "文件为空")
    lines = _text_lines(file_name, text, limits)
    title: str | None = None
    blocks: list[Block] = []

    i = 0
    # YAML front matter: drop it, but honour a `title:` field.
    if lines and lines[0].strip() == "---":
        for j in range(1, len(lines)):
            if lines[j].strip() in ("---", "..."):
                for meta in lines[1:j]:
                    m = _MD_FRONT_TITLE.match(meta.strip())
                    if m and m.group(1).strip():
                        title = m.group(1).strip()
                i = j + 1
                break

    seen_content = False
    in_fence: str | None = None
    while i < len(lines):
        line = lines[i]

        fence = _MD_FENCE.match(line)
        if in_fence is not None:
            if fence and fence.group(1) == in_fence:
                in_fence = None
            else:
                blocks.append(TextBlock(line))
            i += 1
            continue
        if fence:
            in_fence = fence.group(1)
            i += 1
            continue

        # Pipe table: a row, then a separator row, then rows until a non-row line.
        if (
            _is_table_row(line)
            and i + 1 < len(lines)
            and "-" in lines[i + 1]
            and _MD_TABLE_SEP.match(lines[i + 1])
            and ("|" in lines[i + 1] or line.strip().startswith("|"))
        ):
            header = _split_table_row(line)
            width = len(header)
            rows: list[list[str]] = []
            i += 2
            while i < len(lines) and _is_table_row(lines[i]):
                rows.append(_fit(_split_table_row(lines[i]), width))
                i += 1
            blocks.append(TableBlock(header=header, rows=rows))
            seen_content = True
            continue

        heading = _MD_HEADING.match(line)
        if heading:
            heading_text = _strip_emphasis(heading.group(2).strip())
            if heading_text:
                if not seen_content and title is None and len(heading.group(1)) == 1:
                    title = heading_text
                blocks.append(TextBlock(heading_text))
                seen_content = True
            i += 1
            continue
        if _MD_EMPTY_HEADING.match(line):
            i += 1
            continue

        # Setext heading underline ("Title" / "=====") or a thematic break ("---", "***").
        last = blocks[-1] if blocks else None
        prev_is_text = isinstance(last, TextBlock) and bool(last.text.strip())
        if _MD_SETEXT_H1.match(line) and prev_is_text:
            non_blank = [b for b in blocks if not isinstance(b, TextBlock) or b.text.strip()]
            if title is None and len(non_blank) == 1:
                title = last.text.strip()
            i += 1
            continue
        rule = _MD_RULE.match(line)
        if rule:
            # "---" right under text underlines a setext heading; otherwise it is a thematic
            # break, kept as a paragraph break.
            if not (prev_is_text and rule.group(1) == "-" and line.strip().strip("-") == ""):
                blocks.append(TextBlock(""))
            i += 1
            continue

        blocks.append(TextBlock(_strip_emphasis(line)))
        if line.strip():
            seen_content = True
        i += 1

    blocks = _trim_blank(blocks)
    if not blocks:
        raise _no_text(file_name)
    return Extracted(
        file_name=file_name,
        title=title or _stem(file_name),
        blocks=blocks,
        hard_wrapped=True,
    )


# --------------------------------------------------------------------------------------------
# DOCX
# --------------------------------------------------------------------------------------------


def _check_docx_container(file_name: str, data: bytes, limits: Limits) -> None:
    if data.startswith(_OLE_MAGIC):
        if _OLE_ENCRYPTION_INFO in data:
            raise _encrypted(file_name)
        raise IngestError(
            file_name,
            "this is an old Word 97-2003 (.doc) file, not a real DOCX; please save it as .docx",
            "这是旧版 Word（.doc）文件，不是真正的 DOCX，请在 Word 或 WPS 中另存为 .docx 后再上传",
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise _damaged(file_name, ".docx") from None
    if "[Content_Types].xml" not in {info.filename for info in infos}:
        raise _damaged(file_name, ".docx")
    # Declared sizes can be trusted as upper bounds: zipfile never inflates a member beyond its
    # declared size (a member that claims less than it holds fails its CRC check).
    if sum(info.file_size for info in infos) > limits.max_docx_unzipped_bytes:
        raise _unpacks_too_large(file_name, limits.max_docx_unzipped_bytes)
    xml_parts = [info for info in infos if info.filename.lower().endswith((".xml", ".rels"))]
    if sum(info.file_size for info in xml_parts) > limits.max_docx_xml_bytes:
        raise _unpacks_too_large(file_name, limits.max_docx_xml_bytes, "the text and layout parts", "正文和版式部分")
    _scan_docx_xml(file_name, data, xml_parts, limits)


def _unpacks_too_large(file_name: str, limit: int, what: str = "file", what_zh: str = "文件") -> IngestError:
    return IngestError(
        file_name,
        f"{what} would unpack to more than {_mb(limit)} MB (the DOCX limit); refusing to read it",
        f"{what_zh}解压后超过 {_mb(limit)} MB 的上限，无法读取（请删除过大的图片或拆分文件后再上传）",
    )


# A paragraph or table-row start tag, whatever the namespace prefix: <w:p>, <w:p w:rsidR=…>, <w:tr>
_DOCX_BLOCK_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,15}:)?(?:p|tr)[\s/>]")
_SCAN_PIECE = 1024 * 1024


def _scan_docx_xml(file_name: str, data: bytes, xml_parts: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Stream through the XML parts (bounded memory) and refuse a package python-docx would choke on.

    python-docx parses every XML part into an in-memory tree, so the cost of a DOCX is its
    number of XML elements, and the cost of indexing it is its number of paragraphs and rows.
    A 100 KB DOCX of 300,000 empty-looking paragraphs is refused here, before any parsing.
    """
    elements = 0
    blocks = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in xml_parts:
            is_body = info.filename == "word/document.xml"
            carry = b""
            with zf.open(info) as stream:
                while True:
                    piece = stream.read(_SCAN_PIECE)
                    if not piece:
                        break
                    elements += piece.count(b"<") - piece.count(b"</") - piece.count(b"<?") - piece.count(b"<!")
                    if elements > limits.max_docx_xml_elements:
                        raise IngestError(
                            file_name,
                            f"document structure is too complex: more than {limits.max_docx_xml_elements:,} "
                            "XML elements (the DOCX limit)",
                            f"文件结构过于复杂（XML 元素超过 {limits.max_docx_xml_elements:,} 个的上限），"
                            "无法读取，请另存为新的 DOCX 或拆分后再上传",
                        )
                    if is_body:
                        buf = carry + piece
                        cut = max(0, len(buf) - 32)  # a tag is never longer than this
                        blocks += sum(1 for m in _DOCX_BLOCK_TAG.finditer(buf) if m.start() < cut)
                        carry = buf[cut:]
                        if blocks > limits.max_blocks:
                            raise too_many_blocks(file_name, limits.max_blocks)
            if is_body and len(_DOCX_BLOCK_TAG.findall(carry)) + blocks > limits.max_blocks:
                raise too_many_blocks(file_name, limits.max_blocks)


def _docx_body_items(container):
    """Yield w:p / w:tbl elements of a body in document order, descending into content controls."""
    from docx.oxml.ns import qn

    p_tag, tbl_tag, sdt_tag, content_tag = qn("w:p"), qn("w:tbl"), qn("w:sdt"), qn("w:sdtContent")
    for child in container.iterchildren():
        if child.tag in (p_tag, tbl_tag):
            yield child
        elif child.tag == sdt_tag:
            for content in child.iterchildren(content_tag):
                yield from _docx_body_items(content)


def _cell_text(cell) -> str:
    parts = [line.strip() for line in cell.text.splitlines()]
    return " ".join(part for part in parts if part)


def _docx_table(table, budget: Budget) -> TableBlock | None:
    from docx.table import _Cell

    matrix: list[list[str]] = []
    for row in table.rows:
        try:
            cells = list(row.cells)
        except Exception:  # irregular grid python-docx cannot lay out: take the raw cells
            cells = [_Cell(tc, table) for tc in row._tr.tc_lst]
        texts: list[str] = []
        previous_tc = None
        for cell in cells:
            # python-docx repeats a horizontally merged cell once per grid column it spans.
            # Keep its text once, in its first column, and blank the repeats so that columns
            # stay aligned with the header.
            texts.append("" if cell._tc is previous_tc else _cell_text(cell))
            previous_tc = cell._tc
        budget.add(" ".join(texts))
        if any(texts):
            matrix.append(texts)
    if not matrix:
        return None
    width = max(len(r) for r in matrix)
    matrix = [_fit(r, width) for r in matrix]
    return TableBlock(header=matrix[0], rows=matrix[1:])


def _docx_title(doc, paragraphs) -> str | None:
    from docx.opc.constants import RELATIONSHIP_TYPE as RT

    package = doc.part.package
    # Only trust core properties that really exist: python-docx invents "Word Document" otherwise.
    if any(rel.reltype == RT.CORE_PROPERTIES for rel in package.rels.values()):
        core_title = (doc.core_properties.title or "").strip()
        if core_title:
            return core_title
    for paragraph in paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        try:
            style_name = (paragraph.style.name or "") if paragraph.style is not None else ""
        except Exception:
            style_name = ""
        if style_name.strip().lower() in ("title", "heading 1", "标题", "标题 1"):
            return " ".join(text.split())
        return None
    return None


def _read_docx(file_name: str, data: bytes, limits: Limits) -> Extracted:
    _check_docx_container(file_name, data, limits)
    budget = Budget(file_name, limits)
    try:
        import docx
        from docx.oxml.ns import qn
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        doc = docx.Document(io.BytesIO(data))
        body = doc.element.body
        blocks: list[Block] = []
        paragraphs: list[Paragraph] = []
        for item in _docx_body_items(body):
            if item.tag == qn("w:p"):
                paragraph = Paragraph(item, doc)
                paragraphs.append(paragraph)
                text = paragraph.text.rstrip()
                budget.add(text)
                if text.strip():
                    blocks.append(TextBlock(text))
            else:
                table = _docx_table(Table(item, doc), budget)
                if table is not None:
                    blocks.append(table)
        title = _docx_title(doc, paragraphs)
    except IngestError:
        raise
    except Exception:
        log.debug("could not parse DOCX %s", file_name, exc_info=True)
        raise _damaged(file_name, ".docx") from None

    if not blocks:
        raise _no_text(file_name)
    return Extracted(
        file_name=file_name,
        title=title or _stem(file_name),
        blocks=blocks,
        hard_wrapped=False,
    )


# --------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------


def _meaningful_chars(text: str) -> int:
    count = 0
    for ch in text:
        if ch.isspace() or ch == "\ufffd":
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Co", "Cs", "Cn"):  # controls, private use, unassigned: glyph junk
            continue
        count += 1
    return count


class _QuietPypdf:
    """pypdf logs a warning for every oddity of a damaged file ("EOF marker not found"); the user
    gets one clear reason from us instead, so pypdf is silenced (below ERROR) while we read.
    Reference-counted: concurrent readers restore the level only when the last one is done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = logging.NOTSET

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                logger = logging.getLogger("pypdf")
                self._saved = logger.level
                logger.setLevel(logging.ERROR)
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                logging.getLogger("pypdf").setLevel(self._saved)


_quiet_pypdf = _QuietPypdf()


def _pdf_configuration(limits: Limits):
    """pypdf's own resource limits (pypdf >= 6), tightened to ours; a no-op on older versions."""
    import pypdf

    apply = getattr(pypdf, "apply_configuration", None)
    configuration = getattr(pypdf, "Configuration", None)
    if apply is None or configuration is None:
        return contextlib.nullcontext()
    stream = limits.max_pdf_stream_bytes
    wanted = {
        "maximum_declared_stream_length": stream,
        "zlib_maximum_output_length": stream,
        "lzw_maximum_output_length": stream,
        "run_length_maximum_output_length": stream,
        "brotli_maximum_output_length": stream,
        "array_based_stream_maximum_output_length": stream,
        "page_tree_maximum_entries": 2 * limits.max_pdf_pages + 1_000,
        "xform_maximum_invocations_per_extraction": 1_000,
    }
    fields = {f.name for f in dataclasses.fields(configuration)}
    return apply(**{k: v for k, v in wanted.items() if k in fields})


def _too_many_pages(file_name: str, pages: int | None, limit: int) -> IngestError:
    count = f"{pages:,} pages" if pages else "too many pages"
    count_zh = f"共 {pages:,} 页" if pages else "页数过多"
    return IngestError(
        file_name,
        f"PDF has {count}, more than the {limit:,}-page limit; please split it into several files",
        f"PDF {count_zh}，超过 {limit:,} 页的上限，请拆分为几个文件后再上传",
    )


def _pdf_too_large(file_name: str, detail: str, detail_zh: str) -> IngestError:
    return IngestError(
        file_name,
        f"PDF {detail} (the limit for reading PDFs safely); please export it again or split it",
        f"PDF {detail_zh}，超出安全读取上限，无法读取；请重新导出或拆分后再上传",
    )


def _declared_page_count(reader) -> int | None:
    try:
        return int(reader.trailer["/Root"].get_object()["/Pages"].get_object()["/Count"])
    except Exception:
        return None


def _page_content_bytes(page) -> int:
    """Decoded size of a page's content streams and of the form XObjects it draws."""
    size = 0
    contents = page.get("/Contents")
    if contents is not None:
        contents = contents.get_object()
        streams = contents if isinstance(contents, list) else [contents]
        size += sum(len(s.get_object().get_data()) for s in streams)
    resources = page.get("/Resources")
    xobjects = resources.get_object().get("/XObject") if resources is not None else None
    if xobjects is not None:
        for ref in xobjects.get_object().values():
            xobject = ref.get_object()
            if xobject.get("/Subtype") == "/Form":
                size += len(xobject.get_data())
    return size


def _read_pdf(file_name: str, data: bytes, limits: Limits) -> Extracted:
    if b"%PDF-" not in data[:1024]:
        raise _damaged(file_name, ".pdf")
    with _quiet_pypdf, _pdf_configuration(limits):
        return _read_pdf_quietly(file_name, data, limits)


def _read_pdf_quietly(file_name: str, data: bytes, limits: Limits) -> Extracted:
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError

    limit_reached = getattr(pypdf.errors, "LimitReachedError", ())
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                unlocked = reader.decrypt("")
            except DependencyError:  # AES without a crypto backend: we cannot open it either way
                raise _encrypted(file_name) from None
            if not unlocked:
                raise _encrypted(file_name)
        declared = _declared_page_count(reader)
        if declared is not None and declared > limits.max_pdf_pages:
            raise _too_many_pages(file_name, declared, limits.max_pdf_pages)
        try:
            pages = list(reader.pages)
        except limit_reached as exc:
            if "page tree" in str(exc).lower():  # larger than its /Count said
                raise _too_many_pages(file_name, None, limits.max_pdf_pages) from None
            raise
    except IngestError:
        raise
    except FileNotDecryptedError:
        raise _encrypted(file_name) from None
    except limit_reached:
        raise _pdf_too_large(file_name, "contains an object too large to read", "中有过大的数据对象") from None
    except Exception:
        log.debug("could not parse PDF %s", file_name, exc_info=True)
        raise _damaged(file_name, ".pdf") from None
    if not pages:
        raise _damaged(file_name, ".pdf")
    if len(pages) > limits.max_pdf_pages:
        raise _too_many_pages(file_name, len(pages), limits.max_pdf_pages)

    # What text extraction will have to parse, measured first (decoding is fast, parsing is
    # not): a page or a file with absurd amounts of content is refused before parsing any.
    total = 0
    for number, page in enumerate(pages, start=1):
        try:
            size = _page_content_bytes(page)
        except limit_reached:
            raise _pdf_too_large(
                file_name, f"page {number} holds a stream too large to read", f"第 {number} 页的数据流过大"
            ) from None
        except FileNotDecryptedError:
            raise _encrypted(file_name) from None
        except Exception:  # damaged page: extraction below will skip it
            continue
        if size > limits.max_pdf_page_content_bytes:
            raise _pdf_too_large(
                file_name,
                f"page {number} holds more than {_mb(limits.max_pdf_page_content_bytes)} MB of content data",
                f"第 {number} 页的内容数据超过 {_mb(limits.max_pdf_page_content_bytes)} MB",
            )
        total += size
        if total > limits.max_pdf_content_bytes:
            raise _pdf_too_large(
                file_name,
                f"pages hold more than {_mb(limits.max_pdf_content_bytes)} MB of content data in total",
                f"页面内容数据合计超过 {_mb(limits.max_pdf_content_bytes)} MB",
            )

    budget = Budget(file_name, limits)
    lines: list[str] = []
    failed = 0
    for number, page in enumerate(pages, start=1):
        try:
            page_text = page.extract_text() or ""
        except FileNotDecryptedError:
            raise _encrypted(file_name) from None
        except limit_reached:
            raise _pdf_too_large(
                file_name, f"page {number} is too complex to read", f"第 {number} 页的数据过于复杂"
            ) from None
        except Exception:
            log.debug("could not extract page %d of %s", number, file_name, exc_info=True)
            failed += 1
            continue
        # Trim blank lines at page edges so a page break does not look like a paragraph break.
        page_lines = _split_lines(page_text.replace("\x00", ""))
        for block in _line_blocks(page_lines):
            if isinstance(block, TextBlock):
                budget.add(block.text)
                lines.append(block.text)
    if failed == len(pages):
        raise _damaged(file_name, ".pdf")
    if _meaningful_chars("".join(lines)) < MIN_PDF_TEXT_CHARS:
        raise IngestError(
            file_name,
            "no text layer (scanned PDF?); please upload a PDF with selectable text, or DOCX/TXT",
            "PDF 中没有可提取的文字（可能是扫描件），请上传可以选中文字的 PDF，或 DOCX/TXT 文件",
        )
    return Extracted(
        file_name=file_name,
        title=_stem(file_name),
        blocks=_line_blocks(lines),
        hard_wrapped=True,
    )
