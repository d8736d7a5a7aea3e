"""What a format reader hands to the normaliser and chunker.

Readers only extract; they do not interpret headings or clauses. ``hard_wrapped`` tells the
normaliser whether lines may have been broken mid-sentence (TXT exported from PDF, PDF) or are
already whole paragraphs (DOCX).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knowledge.textnorm import clean_title

# Per-file limits. No real policy comes near them (the sample policies have 2-8k characters and
# 25-95 clauses; a long provincial policy has ~500k characters and, at the densest sample's
# ~60 characters per clause, ~8,000 clauses); a file beyond them is refused while it is being
# read, before any clause is built or embedded, so that one upload can never slow the assistant
# down for everyone (see tests/test_ingest_limits.py).
MAX_DOCUMENT_CHARS = 2_000_000  # characters of extracted text
MAX_DOCUMENT_CHUNKS = 20_000  # clauses and table rows indexed
MAX_DOCUMENT_BLOCKS = 100_000  # non-blank lines / paragraphs / table rows while reading
MAX_PDF_PAGES = 3_000
MAX_PDF_PAGE_CONTENT_BYTES = 8 * 1024 * 1024  # one page's decoded content streams
MAX_PDF_CONTENT_BYTES = 64 * 1024 * 1024  # all pages' decoded content streams together
MAX_PDF_STREAM_BYTES = 16 * 1024 * 1024  # any single stream, decoded (decompression bombs)
MAX_DOCX_UNZIPPED_BYTES = 128 * 1024 * 1024  # all parts of the package, unpacked
MAX_DOCX_XML_BYTES = 48 * 1024 * 1024  # the XML parts python-docx parses, unpacked
MAX_DOCX_XML_ELEMENTS = 2_000_000  # XML elements in those parts (each costs memory when parsed)


@dataclass(frozen=True)
class Limits:
    """What one file may cost to read and index (defaults above; KnowledgeBase passes its own)."""

    max_bytes: int | None = None
    max_chars: int = MAX_DOCUMENT_CHARS
    max_chunks: int = MAX_DOCUMENT_CHUNKS
    max_blocks: int = MAX_DOCUMENT_BLOCKS
    max_pdf_pages: int = MAX_PDF_PAGES
    max_pdf_page_content_bytes: int = MAX_PDF_PAGE_CONTENT_BYTES
    max_pdf_content_bytes: int = MAX_PDF_CONTENT_BYTES
    max_pdf_stream_bytes: int = MAX_PDF_STREAM_BYTES
    max_docx_unzipped_bytes: int = MAX_DOCX_UNZIPPED_BYTES
    max_docx_xml_bytes: int = MAX_DOCX_XML_BYTES
    max_docx_xml_elements: int = MAX_DOCX_XML_ELEMENTS


@dataclass(frozen=True)
class TextBlock:
    text: str


@dataclass(frozen=True)
class TableBlock:
    header: list[str]
    rows: list[list[str]]
    caption: str | None = None


Block = TextBlock | TableBlock


@dataclass
class Extracted:
    file_name: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    hard_wrapped: bool = True


class IngestError(Exception):
    """A file could not be ingested. The message names the file and says why, in plain words.

    The file name is shown as a user reads it: no control or invisible characters (a file name
    must not be able to break the one line that reports it, or hide part of itself).
    """

    def __init__(self, file_name: str, reason: str, reason_zh: str | None = None) -> None:
        file_name = clean_title(file_name) or "(unnamed file)"
        self.file_name = file_name
        self.reason = reason
        self.reason_zh = reason_zh or reason
        super().__init__(f"{file_name}: {reason}")

    def __reduce__(self):  # raised in an ingest worker process, re-raised in the parent
        return type(self), (self.file_name, self.reason, self.reason_zh)


def too_many_chars(file_name: str, limit: int) -> IngestError:
    return IngestError(
        file_name,
        f"document has more than {limit:,} characters of text (the per-file limit); please split it into several files",
        f"文件文字超过 {limit:,} 字的单个文件上限，请拆分为几个文件后再上传",
    )


def too_many_blocks(file_name: str, limit: int) -> IngestError:
    return IngestError(
        file_name,
        f"document has more than {limit:,} paragraphs, lines or table rows (the per-file limit); "
        "please split it into several files",
        f"文件的段落、行或表格行超过 {limit:,} 个的单个文件上限，请拆分为几个文件后再上传",
    )


def too_many_chunks(file_name: str, limit: int) -> IngestError:
    return IngestError(
        file_name,
        f"document splits into more than {limit:,} clauses (the per-file limit); please split it into several files",
        f"文件拆分后超过 {limit:,} 个条款的单个文件上限，请拆分为几个文件后再上传",
    )


class Budget:
    """Counts what a reader has extracted so far and refuses the file the moment it is over a limit."""

    def __init__(self, file_name: str, limits: Limits) -> None:
        self.file_name = file_name
        self.limits = limits
        self.chars = 0
        self.blocks = 0

    def add(self, text: str) -> None:
        """One line, paragraph or table row of extracted text."""
        self.chars += len(text)
        if self.chars > self.limits.max_chars:
            raise too_many_chars(self.file_name, self.limits.max_chars)
        if text.strip():
            self.blocks += 1
            if self.blocks > self.limits.max_blocks:
                raise too_many_blocks(self.file_name, self.limits.max_blocks)
