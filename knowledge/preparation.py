"""The slow, pure part of an ingest: read a file, chunk it, tokenise and embed its clauses.

Nothing here touches the database or the vector index, so the work can run in the ingesting
thread or, for a folder of many files, in a pool of worker processes (``process_file``): the
jieba and sentencepiece tokenisers are pure Python and hold the GIL, so threads alone keep a
second core only a third busy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from knowledge.chunking import chunk_document
from knowledge.embeddings import Embedder
from knowledge.extract_types import Extracted, IngestError, Limits
from knowledge.textnorm import clean_title, title_key
from knowledge.tokenize import tokenize

MAX_TITLE_CHARS = 200  # Document.title is a String(300)
#: Clauses are embedded this many at a time, so that a question (which needs the embedder for
#: its own vector) waits for one small batch at most, never for a whole large document.
EMBED_BATCH = 32


@dataclass
class Processed:
    """A document's clauses ready to be written: drafts, their search tokens and vectors."""

    file_name: str
    title: str
    key: str
    sha: str
    drafts: list
    token_rows: list[str]
    vectors: np.ndarray


def clean_file_name(file_name: str) -> str:
    return clean_title(file_name) or "(unnamed file)"


def read_document(file_name: str, data: bytes, title: str | None, limits: Limits) -> tuple[Extracted, str]:
    """The extracted text and the title it will be registered under. Raises IngestError."""
    from knowledge.readers import extract

    extracted = extract(file_name, data, limits=limits)
    return extracted, registered_title(file_name, title, extracted.title)


def process(extracted: Extracted, file_name: str, title: str, data: bytes, consortium: str | None,
            limits: Limits, embed: Callable[[list[str]], np.ndarray]) -> Processed:
    drafts = chunk_document(extracted, consortium, max_chunks=limits.max_chunks)
    if not drafts:
        raise IngestError(file_name, "no readable text found", "文件中没有可识别的正文文字")
    texts = [d.text(title) for d in drafts]
    token_rows = [" ".join(tokenize(text)) for text in texts]
    return Processed(file_name, title, title_key(title), hashlib.sha256(data).hexdigest(), drafts, token_rows,
                     embed(texts))


def embed_in_batches(embedder: Embedder, texts: list[str], pause_s: float = 0.0) -> np.ndarray:
    """Vectors for ``texts``, a small batch at a time; with ``pause_s``, a pause between batches
    lets a question waiting for the same embedder take it."""
    parts = []
    for start in range(0, len(texts), EMBED_BATCH):
        parts.append(np.asarray(embedder.encode(texts[start : start + EMBED_BATCH]), dtype=np.float32))
        if pause_s:
            time.sleep(pause_s)
    return np.vstack(parts)


# -- in an ingest worker process ----------------------------------------------------------

_worker_embedder: Embedder | None = None


def start_worker(embedder_factory: Callable[[], Embedder]) -> None:
    """Pool initializer: load the embedder and the tokeniser's dictionary before the first file."""
    global _worker_embedder
    _worker_embedder = embedder_factory()
    tokenize("预热")


def process_file(file_name: str, data: bytes, title: str | None, consortium: str | None, limits: Limits) -> Processed:
    """All of ``read_document`` and ``process`` for one file, in a worker process."""
    assert _worker_embedder is not None, "start_worker() runs first"
    file_name = clean_file_name(file_name)
    extracted, title = read_document(file_name, data, title, limits)
    return process(extracted, file_name, title, data, consortium, limits,
                   lambda texts: embed_in_batches(_worker_embedder, texts))


def registered_title(file_name: str, given: str | None, extracted: str) -> str:
    """The title a document is registered and shown under (``clean_title``)."""
    if given is not None and given.strip():
        title = clean_title(given)
        if not title:
            raise IngestError(
                file_name,
                "the title given is empty once invisible characters are removed",
                "给定的标题去除不可见字符后为空，请提供有效的标题",
            )
        if len(title) > MAX_TITLE_CHARS:
            raise IngestError(
                file_name,
                f"the title given is longer than {MAX_TITLE_CHARS} characters",
                f"给定的标题超过 {MAX_TITLE_CHARS} 字，请使用较短的标题",
            )
        return title
    title = clean_title(extracted)
    if not title:
        raise IngestError(
            file_name,
            "the document has no usable title (its name is only invisible characters); please give one",
            "文件没有可用的标题（文件名只含不可见字符），请提供标题",
        )
    return title[:MAX_TITLE_CHARS].rstrip()
