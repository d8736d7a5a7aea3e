"""What a format reader hands to the normaliser and chunker.

Readers only extract; they do not interpret headings or clauses. ``hard_wrapped`` tells the
normaliser whether lines may have been broken mid-sentence (TXT exported from PDF, PDF) or are
already whole paragraphs (DOCX).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """A file could not be ingested. The message names the file and says why, in plain words."""

    def __init__(self, file_name: str, reason: str, reason_zh: str | None = None) -> None:
        self.file_name = file_name
        self.reason = reason
        self.reason_zh = reason_zh or reason
        super().__init__(f"{file_name}: {reason}")
