"""The knowledge base: one object that ingests, removes, retrieves and answers.

SQL holds the documents and the live chunk set; Chroma holds their vectors; BM25 lives in memory
and is rebuilt whenever ``knowledge_state.generation`` moves (any process may have changed the
documents). A document swap writes the new vectors first, then switches the live chunk set in one
SQL transaction, then deletes the old vectors: at no moment can an old chunk be served, because
retrieval only returns ids that SQL says are live.

Ingestion does all the slow work (read, extract, chunk, tokenise, embed) outside any database
transaction and outside any lock that questions need: the only write transaction is the final
swap, which takes milliseconds, so inbox/outbox writes and answers keep flowing while a large
file is indexed. Per-file limits (``extract_types.Limits``) refuse pathological files early.

Titles are registered and shown in their ``clean_title`` form and compared by ``title_key``: a
title that only looks different (zero-width characters, compatibility look-alikes, blanks) is the
same title, and it may not take over another consortium's document.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import threading
import time
from collections import Counter
from sys import intern
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from knowledge.answerability import features, is_answerable
from knowledge.bilingual import BilingualIndex
from knowledge.homophones import HomophoneCorrector
from knowledge.memory import release_free_memory
from knowledge.preparation import (
    Processed,
    clean_file_name,
    embed_in_batches,
    process,
    process_file,
    read_document,
    start_worker,
)
from knowledge.answer import EMPTY_KB_EN, EMPTY_KB_ZH, EN_HEADER, MAX_ANSWER_BYTES, Answer, compose
from knowledge.counting import asks_count, count_in_sentence, count_in_tables, stated_count
from knowledge.listing import asks_list, whole_list
from knowledge.chunking import chunk_document
from knowledge.embeddings import Embedder
from knowledge.extract_types import (
    MAX_DOCUMENT_BLOCKS,
    MAX_DOCUMENT_CHARS,
    MAX_DOCUMENT_CHUNKS,
    MAX_PDF_PAGES,
    IngestError,
    Limits,
)
from knowledge.textnorm import clean_title, is_mostly_latin, title_key, truncate_utf8
from knowledge.tokenize import (
    answer_cue,
    concept_word,
    english_concepts,
    expand_query,
    general_rarity,
    inner_bigrams,
    register_forms,
    sub_words,
    tokenize,
    unanswered_kind,
    words,
)
from knowledge.vector_index import ChromaIndex
from storage import repositories as audit
from storage.models import Chunk, Document, DocumentVersion, KnowledgeState

log = logging.getLogger(__name__)

DENSE_CANDIDATES = 40
LEXICAL_CANDIDATES = 40
#: Files from which ``ingest_many`` prepares them in worker processes (each costs seconds to start).
PROCESS_POOL_MIN_FILES = 12
SCOPED_CANDIDATES = 20  # more of the named document's, or the asker's consortium's, clauses
#: The nearest clauses by vector within each such scope (a filtered Chroma query): in a large
#: corpus the global nearest 40 can all be copies elsewhere, and a scoped clause would then be
#: ranked without its dense similarity. Few, so that with a handful of documents, where the
#: global 40 already hold them, the ranking is as before.
SCOPED_DENSE = 8
# Relevance = a weighted sum of four normalised signals, plus a bonus for the document the user
# names or their own consortium (weights fitted on the dev questions and a second, self-written
# set, tests/data/extra.jsonl; bench/bench_knowledge.py prints both):
W_BM25 = 1.0  # BM25 over jieba words and character bigrams, divided by the best score
W_DENSE = 0.5  # cosine similarity of the multilingual sentence vectors
W_COVERAGE = 3.0  # IDF-weighted share of the question's terms present in the clause
W_HEADING = 0.5  # share of the question's terms in the clause's own title
CUE_BONUS = 0.25  # a clause or sentence with the kind of answer asked for (每季度, 由…担任)
NAMED_DOCUMENT_BONUS = 1.0  # the question names a document ("临沧…", "油田医院…")
OWN_CONSORTIUM_BONUS = 1.5  # the asker's own consortium's documents win near-ties…
OWN_MIN_COVERAGE_RATIO = 0.6  # …when their clause covers most of what the best covers
OWN_MIN_SCORE_RATIO = 0.6  # …or scores most of the best score


@dataclass(frozen=True)
class ChunkView:
    """One live clause as the answering side holds it: its body once, its tokens as one string.

    Every worker holds every clause; with hundreds of documents a set of token strings per
    clause, and a second copy of each body with its citation, were most of a worker's memory.
    ``tokens`` and ``text`` are worked out when asked for, which happens for a question's
    candidates only.
    """

    id: str
    document_title: str
    consortium: str | None
    heading_path: tuple[str, ...]
    clause_no: str | None
    kind: str
    body: str
    token_text: str

    @property
    def tokens(self) -> frozenset[str]:
        return frozenset(self.token_text.split())

    @property
    def text(self) -> str:
        """Title, headings and body: what was embedded and indexed, and what evaluation reads."""
        return " › ".join([self.document_title, *self.heading_path]) + "\n" + self.body

    @cached_property
    def heading_tokens(self) -> frozenset[str]:
        """The words of the clause's own title (worked out when first needed: only candidates
        of a question need them, and tokenising every heading would slow a reload down)."""
        if self.heading_path and self.kind == "clause":
            return frozenset(tokenize(self.heading_path[-1]))
        return frozenset()

    @property
    def citation(self) -> str:
        """《document》 › section › clause — where a quoted rule comes from."""
        return " › ".join([f"《{self.document_title}》", *self.heading_path])


@dataclass
class Hit:
    chunk: ChunkView
    score: float
    bm25: float = 0.0
    dense: float = 0.0
    coverage: float = 0.0
    heading: float = 0.0
    unknown_share: float = 0.0  # of the question's weight, on words no document uses
    named: bool = False  # the question names this clause's document ("临沧…")


@dataclass(frozen=True)
class IngestResult:
    title: str
    status: str  # "added" | "updated" | "unchanged"
    version: int
    chunk_count: int


@dataclass
class _Prepared:
    """A document read, chunked, tokenised and embedded, not yet written (``KnowledgeBase._commit``)."""

    file_name: str
    title: str
    key: str
    sha: str
    data: bytes
    consortium: str | None
    meta_consortium: str | None
    uploaded_by: str | None
    may_replace: Callable[[str | None], bool] | None
    version: int  # as guessed from the registry; the swap decides the real one
    drafts: list
    ids: list[str]
    token_rows: list[str]
    vectors: np.ndarray | None


@dataclass(frozen=True)
class UploadPreview:
    title: str
    clauses: int
    replaces_version: int | None  # the current version it would replace, None for a new document
    unchanged: bool  # the very same file as the current version
    added: list[str]  # clause labels (heading path)
    changed: list[str]
    removed: list[str]


def _clause_map(items: Iterable[tuple[list[str], str | None, str]]) -> dict[str, str]:
    """Clause label → normalised body. The label is where the clause sits: its sections and its
    number (第三条, 3.2.1), not its own title, which is often the clause's first sentence and
    changes with it; ``#2`` … tell repeats apart."""
    out: dict[str, str] = {}
    for path, clause_no, body in items:
        parts = [*path[:-1], clause_no] if clause_no and path else list(path)
        label = " › ".join(parts) or "（正文）"
        key, n = label, 1
        while key in out:
            n += 1
            key = f"{label} #{n}"
        out[key] = "".join(body.split())
    return out


@dataclass(frozen=True)
class VersionInfo:
    version: int
    file_name: str
    uploaded_by: str | None
    chunk_count: int
    created_at: datetime
    sha256: str


@dataclass(frozen=True)
class DocumentInfo:
    title: str
    file_name: str
    version: int
    consortium: str | None
    chunk_count: int
    uploaded_by: str | None
    updated_at: datetime
    sha256: str


class Query:
    """A question as weighted concepts: what coverage, refusals and quote selection measure.

    A concept is one word of the question (Chinese) or one English phrase with its Chinese
    terms. It is found in a clause when one of its *forms* is: the word itself, or all of the
    word's character bigrams (the word inside a longer compound: "张店" in "张店区", "市医联会"
    however jieba split it). A concept weighs its rarest known form; one the corpus never uses
    weighs the most, as it is the best evidence that the policies do not speak about the subject.
    """

    def __init__(self, concepts: list[list[frozenset[str]]], search_tokens: list[str], snap: _Snapshot,
                 *, english: bool = False, cue: re.Pattern[str] | None = None) -> None:
        self.english = english
        #: homophone typos read as the policies' words: [(typed, read as)]
        self.corrections: list[tuple[str, str]] = []
        #: what a sentence that answers the question tends to look like (``tokenize.answer_cue``)
        self.cue = cue
        self.concepts = [c for c in concepts if c]
        self.search_tokens = search_tokens
        known = [[form for form in c if all(t in snap.idf for t in form)] for c in self.concepts]
        # a known concept weighs its rarest form in the corpus; an unknown one weighs the most,
        # scaled by how specific the word is in general Chinese (停车场 more than 门口)
        #: per concept: how specific its word is in general Chinese (``tokenize.general_rarity``)
        self.rarity = [general_rarity(concept_word(c)) for c in self.concepts]
        self.weights = [
            max((max(snap.idf[t] for t in form) for form in forms), default=0.0) or snap.unknown_idf * rarity
            for forms, rarity in zip(known, self.rarity)
        ]
        self.total = sum(self.weights) or 1.0
        self.unknown_share = sum(w for forms, w in zip(known, self.weights) if not forms) / self.total
        #: per concept: does any policy use one of its forms?
        self.known = [bool(forms) for forms in known]
        words_asked = {t for c in self.concepts for form in c for t in form if not t.startswith("#")}
        self.named_documents = {title for title, names in snap.title_words.items() if names & words_asked}

    @classmethod
    def parse(cls, question: str, snap: _Snapshot) -> Query:
        if is_mostly_latin(question):
            # the glossary's domain phrases first; any other word through the dictionary
            units = [(en, zh or " ".join(snap.bilingual.chinese(en))) for en, zh in english_concepts(question)]
            search_text = question + " " + " ".join(zh for _, zh in units)
            # "how often" helps the search (每年, 定期) but is not a subject the policies must cover
            concepts = [
                [frozenset([t]) for t in tokenize(en)] + [form for w in words(zh) for form in _forms(w)]
                for en, zh in units
                if tokenize(en)
            ]
        else:
            # a word typed with other characters of the same sound (连席会议) is read as the
            # policies' word (联席会议); ``corrections`` lets the answer say so
            question, corrections = snap.homophones.correct(question)
            search_text = expand_query(question)
            # judged on what the user asked, not on our synonym expansions; an everyday word is
            # found as any of the policy words it stands for (大夫 → 医师)
            asked = [w for w in (_content_part(w, snap) for w in words(question)) if w]
            concepts = [_forms(w) + [f for syn in register_forms(w) for f in _forms(syn)] for w in asked]
            query = cls(concepts, tokenize(search_text), snap, cue=answer_cue(question))
            query.corrections = corrections
            return query
        return cls(concepts, tokenize(search_text), snap, english=True, cue=answer_cue(question))

    def share(self, tokens: frozenset[str]) -> float:
        """The weighted share of the question's concepts present among ``tokens``."""
        return sum(w for c, w in zip(self.concepts, self.weights) if any(form <= tokens for form in c)) / self.total

    def relevance(self, text: str) -> float:
        """How well ``text`` (a sentence to quote) answers: its share of the question's concepts,
        plus a little when it has the kind of answer asked for (a frequency, a person …)."""
        score = self.share(frozenset(tokenize(text)))
        if self.cue is not None and score > 0 and self.cue.search(text):
            score += CUE_BONUS
        return score


# Characters that, glued to a verb by the segmenter ("得开", "能干", "会派", "转得", "顺点"), make
# a "word" no policy uses; what is left after them is the content, if anything.
_FUNCTION_CHARS = frozenset("得能会要该想个来去点些下上每一几了着过的地把被让给就都还也很再又才")


def _content_part(word: str, snap: _Snapshot) -> str | None:
    """``word`` if the policies know it; else what remains of it without the spoken register's
    function characters, if that is a word (None when nothing of substance is left)."""
    if word in snap.idf or register_forms(word):
        return word
    rest = "".join(ch for ch in word if ch not in _FUNCTION_CHARS)
    if rest == word:
        return word  # a word no policy uses: itself evidence the question is off-topic
    if len(rest) >= 2 and (rest in snap.idf or register_forms(rest)):
        return rest
    return None


def _forms(word: str) -> list[frozenset[str]]:
    """The word itself; all of its inner bigrams together; all of its sub-words together."""
    forms = [frozenset([word])]
    for parts in (inner_bigrams(word), sub_words(word)):
        if parts:
            forms.append(frozenset(parts))
    return forms


@dataclass
class _Snapshot:
    generation: int
    chunks: list[ChunkView] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    bm25: LexicalIndex | None = None
    idf: dict[str, float] = field(default_factory=dict)
    unknown_idf: float = 1.0
    # words that single out one document by name ("临沧", "油田医院"), per document title
    title_words: dict[str, frozenset[str]] = field(default_factory=dict)

    @cached_property
    def positions_by_document(self) -> dict[str, np.ndarray]:
        """Chunk positions of each document (a question naming one searches all its clauses)."""
        return _group_positions(c.document_title for c in self.chunks)

    @cached_property
    def positions_by_consortium(self) -> dict[str | None, np.ndarray]:
        """Chunk positions of each consortium's documents (the asker's own rules are searched
        whatever other consortia's copies rank above them)."""
        return _group_positions(c.consortium for c in self.chunks)

    @cached_property
    def homophones(self) -> HomophoneCorrector:
        """Pinyin-IME typo correction against this corpus (built on the first Chinese question)."""
        corrector = HomophoneCorrector(c.text for c in self.chunks)
        release_free_memory()  # the build's temporary arrays
        return corrector

    @cached_property
    def bilingual(self) -> BilingualIndex:
        """English words → this corpus's Chinese words (built on the first English question)."""
        return BilingualIndex((t for t in self.idf if not t.startswith("#")), romanise=self.homophones.romanised)


def _group_positions(keys: Iterable) -> dict:
    groups: dict = {}
    for pos, key in enumerate(keys):
        groups.setdefault(key, []).append(pos)
    return {key: np.asarray(positions, dtype=np.int64) for key, positions in groups.items()}


def _process_pool(workers: int, embedder_factory: Callable[[], Embedder]):
    """Worker processes for ``ingest_many``, started by a fork server (a clean process: forking
    this one would copy the vector store's and the database driver's threads and locks), each
    loading the embedder once."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=start_worker, initargs=(embedder_factory,))


def _in_order(commit: Callable, paths: list[Path], submit: Callable, workers: int):
    """``commit(path, future)`` for each path in order, with up to ``workers`` more submitted
    ahead (so at most ``workers + 1`` prepared files are held in memory)."""
    from collections import deque

    pending: deque = deque()
    for path in paths:
        pending.append((path, submit(path)))
        if len(pending) > workers:
            yield commit(*pending.popleft())
    while pending:
        yield commit(*pending.popleft())


def _done(value: object):
    from concurrent.futures import Future

    future: Future = Future()
    future.set_result(value)
    return future


def _failed(exc: BaseException):
    from concurrent.futures import Future

    future: Future = Future()
    future.set_exception(exc)
    return future


class _FromWorker:
    """A file being prepared in a worker process: its ``result()`` (asked for in the committing
    thread) is the worker's ``Processed`` passed through ``adopt``."""

    def __init__(self, future, file_name: str, adopt: Callable) -> None:
        self._future, self._file_name, self._adopt = future, file_name, adopt

    def result(self):
        from concurrent.futures.process import BrokenProcessPool

        try:
            done = self._future.result()
        except BrokenProcessPool:
            raise IngestError(self._file_name, "the worker process preparing it stopped; nothing was changed, "
                              "please ingest this file again", "准备该文件的工作进程意外退出，文件未收录，请重新导入该文件") from None
        return self._adopt(done)


def _scope_filters(documents: list[str], consortium: str | None) -> list[dict]:
    """Chroma metadata filters for the scoped vector searches: the named documents (one filter
    for all of them), and the asker's consortium."""
    filters: list[dict] = []
    if documents:
        filters.append({"document": documents[0]} if len(documents) == 1 else {"document": {"$in": documents}})
    if consortium is not None:
        filters.append({"consortium": consortium})
    return filters


def _best_positions(scores: np.ndarray, positions: np.ndarray | None, n: int) -> set[int]:
    """The ``n`` best-scoring of ``positions`` (all when None) that score above 0, by top-k
    selection, not a full sort."""
    pool = scores if positions is None else scores[positions]
    if len(pool) > n:
        best = np.argpartition(-pool, n - 1)[:n]
    else:
        best = np.arange(len(pool))
    chosen = best if positions is None else positions[best]
    return {int(p) for p in chosen if scores[p] > 0}


class KnowledgeBase:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        embedder: Embedder,
        vectors: ChromaIndex,
        *,
        max_upload_bytes: int = 20 * 1024 * 1024,
        max_document_chars: int = MAX_DOCUMENT_CHARS,
        max_document_chunks: int = MAX_DOCUMENT_CHUNKS,
        max_pdf_pages: int = MAX_PDF_PAGES,
        max_document_blocks: int = MAX_DOCUMENT_BLOCKS,
        synthesizer: object | None = None,
        embedder_factory: Callable[[], Embedder] | None = None,
    ) -> None:
        """``embedder_factory`` (picklable) makes ``embedder`` anew in a worker process: without
        it, ``ingest_many`` prepares files in threads only."""
        self._synthesizer = synthesizer
        self._embedder_factory = embedder_factory
        #: called with (answer, degraded) after every answer, and (status, seconds) after every
        #: ingest: how the application layer counts them (``bot.metrics``) without this layer
        #: knowing about Prometheus
        self.answer_observers: list[Callable[[Answer, bool], None]] = []
        self.ingest_observers: list[Callable[[str, float], None]] = []
        self._sessions = session_factory
        self._embedder = embedder
        self._vectors = vectors
        self._max_upload_bytes = max_upload_bytes
        self._limits = Limits(
            max_bytes=max_upload_bytes,
            max_chars=max_document_chars,
            max_chunks=max_document_chunks,
            max_blocks=max_document_blocks,
            max_pdf_pages=max_pdf_pages,
        )
        self._snapshot = _Snapshot(generation=-1)
        self._reload_lock = threading.Lock()
        self._write_lock = threading.Lock()  # serialises the swaps of this process
        self._installing: int | None = None  # the generation this process's ingest is loading
        #: When the vector index last failed a query (None: it answers). While it fails, answers
        #: come from the lexical signals alone instead of an error reply.
        self._dense_failed_at: float | None = None

    # ------------------------------------------------------------------------------------
    # documents

    def ingest_bytes(
        self,
        file_name: str,
        data: bytes,
        *,
        uploaded_by: str | None = None,
        consortium: str | None = None,
        title: str | None = None,
        may_replace: Callable[[str | None], bool] | None = None,
        install: bool = True,
    ) -> IngestResult:
        """Add or replace one document. Raises IngestError (index untouched) on bad input.

        ``install=False`` commits without loading the new snapshot into this process (the next
        question here loads it, as every other worker does): a bulk import of hundreds of files
        would otherwise rebuild the whole index after each one.

        ``may_replace(existing_consortium)`` is asked before an existing document of the same
        title (compared by ``title_key``) is replaced (an admin may only replace their own
        consortium's documents). Without it, a document of another consortium may not be taken
        over by an upload for a different ``consortium`` either; ``consortium=None`` keeps the
        existing document's consortium.
        """
        started = time.perf_counter()
        prepared = self._prepare(file_name, data, uploaded_by=uploaded_by, consortium=consortium, title=title,
                                 may_replace=may_replace)
        return self._complete(prepared, install=install, started=started)

    def _complete(self, prepared: IngestResult | _Prepared, *, install: bool, started: float) -> IngestResult:
        """Commit a prepared document (an "unchanged" result needs nothing) and tell the observers."""
        result = prepared if isinstance(prepared, IngestResult) else self._commit(prepared, install=install)
        _notify(self.ingest_observers, result.status, time.perf_counter() - started)
        return result

    def ingest_many(
        self,
        paths: Iterable[Path],
        *,
        uploaded_by: str | None = None,
        consortium: str | None = None,
        title: str | None = None,
        workers: int = 2,
        processes: bool | None = None,
    ) -> Iterable[tuple[Path, IngestResult | Exception]]:
        """Ingest files one after another as ``ingest_path(..., install=False)`` would, yielding
        ``(path, result or the exception it raised)`` in the order given; a bad file never stops
        the rest. What ``yilian ingest`` runs for a folder.

        Up to ``workers`` files are read, chunked, tokenised and embedded at the same time, but
        each is committed in order: a later file of the same title still replaces an earlier one,
        as when they are ingested one at a time. The preparing runs in worker processes when
        ``processes`` (by default: for ``PROCESS_POOL_MIN_FILES`` files or more, when this knowledge
        base was given an ``embedder_factory``): the tokenisers hold the GIL, so threads keep a
        second core only a third busy, while starting a worker costs a few seconds.
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        paths = list(paths)
        workers = max(1, workers)
        if processes is None:
            processes = workers > 1 and len(paths) >= PROCESS_POOL_MIN_FILES
        processes = processes and self._embedder_factory is not None

        def prepare_here(path: Path, began: float | None = None, read: tuple[str, bytes] | None = None
                         ) -> tuple[float, IngestResult | _Prepared]:
            began = time.perf_counter() if began is None else began
            name, data = read or self._read_path(Path(path))
            return began, self._prepare(name, data, uploaded_by=uploaded_by, consortium=consortium, title=title,
                                        may_replace=None)

        if not processes:
            with ThreadPoolExecutor(workers, thread_name_prefix="ingest") as threads:
                yield from _in_order(self._commit_prepared, paths, lambda path: threads.submit(prepare_here, path),
                                     workers)
            return

        from concurrent.futures.process import BrokenProcessPool

        pool = None  # started for the first file that needs preparing: a re-run finds all unchanged

        def submit(path: Path) -> Future:
            nonlocal pool
            began = time.perf_counter()
            try:
                name, data = self._read_path(Path(path))
                if pool is not False and not self._registered_sha(hashlib.sha256(data).hexdigest()):
                    pool = pool or _process_pool(workers, self._embedder_factory)
                    work = pool.submit(process_file, name, data, title, consortium, self._limits)
                    return _FromWorker(work, name, lambda done: (began, self._adopt(done, data, consortium,
                                                                                     uploaded_by)))
                # else the very same file is most likely registered ("unchanged"): nothing to send away
            except BrokenProcessPool:  # a worker died (killed, out of memory): the rest are prepared here
                log.warning("ingest worker process stopped; preparing the remaining files in this process")
                pool.shutdown(wait=False)
                pool = False
            except Exception as exc:  # noqa: BLE001 - reported per file, in order
                return _failed(exc)
            try:
                return _done(prepare_here(path, began, (name, data)))
            except Exception as exc:  # noqa: BLE001 - reported per file, in order
                return _failed(exc)

        try:
            yield from _in_order(self._commit_prepared, paths, submit, workers)
        finally:
            if pool:
                pool.shutdown()

    def _registered_sha(self, sha: str) -> bool:
        """Is a current document the very same file (then its ingest is most likely "unchanged")?"""
        with self._sessions() as session:
            return session.scalar(select(Document.id).where(Document.sha256 == sha).limit(1)) is not None

    def _adopt(self, done: Processed, data: bytes, consortium: str | None, uploaded_by: str | None
               ) -> IngestResult | _Prepared:
        """A document prepared in a worker process, checked against the registry as ``_prepare``
        checks it."""
        looked_up = self._look_up(done.file_name, done.title, done.sha, consortium, None)
        if isinstance(looked_up, IngestResult):
            return looked_up
        return self._prepared(done, data, consortium, uploaded_by, None, looked_up)

    def _commit_prepared(self, path: Path, future) -> tuple[Path, IngestResult | Exception]:
        try:
            began, prepared = future.result()
            return path, self._complete(prepared, install=False, started=began)
        except Exception as exc:  # noqa: BLE001 - reported per file by the caller
            return path, exc

    def _prepare(self, file_name: str, data: bytes, *, uploaded_by: str | None, consortium: str | None,
                 title: str | None, may_replace: Callable[[str | None], bool] | None) -> IngestResult | _Prepared:
        """The slow part of an ingest, outside any transaction and any lock a question needs:
        read, chunk, tokenise and embed. Returns the "unchanged" result when the very same file is
        registered already. Raises IngestError on bad input."""
        file_name = clean_file_name(file_name)
        extracted, title = read_document(file_name, data, title, self._limits)
        looked_up = self._look_up(file_name, title, hashlib.sha256(data).hexdigest(), consortium, may_replace)
        if isinstance(looked_up, IngestResult):
            return looked_up
        done = process(extracted, file_name, title, data, consortium, self._limits, self._embed)
        return self._prepared(done, data, consortium, uploaded_by, may_replace, looked_up)

    def _look_up(self, file_name: str, title: str, sha: str, consortium: str | None,
                 may_replace: Callable[[str | None], bool] | None) -> IngestResult | _DocRef | None:
        """Who holds this title now (a short read, no transaction kept open): the "unchanged"
        result for the very same file, else the current document or None. Raises IngestError
        when it may not be replaced."""
        with self._sessions() as session:
            existing = _find_document(session, title_key(title), title)
        if existing is not None:
            _check_may_replace(file_name, title, existing, consortium, may_replace)
            if existing.sha256 == sha and (consortium is None or consortium == existing.consortium):
                return IngestResult(clean_title(existing.title), "unchanged", existing.version, existing.chunk_count)
        return existing

    @staticmethod
    def _prepared(done: Processed, data: bytes, consortium: str | None, uploaded_by: str | None,
                  may_replace: Callable[[str | None], bool] | None, existing: _DocRef | None) -> _Prepared:
        version = existing.version + 1 if existing is not None else 1  # a guess: the swap decides
        nonce = secrets.token_hex(3)  # ids never collide with a concurrent upload of the same title
        prefix = f"{hashlib.sha1(done.key.encode('utf-8')).hexdigest()[:10]}-v{version}-{nonce}"
        return _Prepared(
            file_name=done.file_name, title=done.title, key=done.key, sha=done.sha, data=data, consortium=consortium,
            meta_consortium=consortium if consortium is not None else (existing.consortium if existing else None),
            uploaded_by=uploaded_by, may_replace=may_replace, version=version, drafts=done.drafts,
            ids=[f"{prefix}-{d.seq}" for d in done.drafts], token_rows=done.token_rows, vectors=done.vectors,
        )

    def _commit(self, p: _Prepared, *, install: bool) -> IngestResult:
        """Write a prepared document: its vectors first (never served before the swap), then the
        swap of the live clauses in one short transaction, then the old version's vectors go."""
        try:
            self._vectors.upsert(
                p.ids,
                p.vectors,
                [{"document": p.title, "version": p.version, "consortium": p.meta_consortium or ""} for _ in p.ids],
            )
        except Exception as exc:  # noqa: BLE001 - the vector store is down: nothing has changed yet
            log.warning("vector index unreachable during ingest", extra={"error": type(exc).__name__})
            try:
                self._vectors.delete(p.ids)  # a partly written batch
            except Exception:  # noqa: BLE001 - still down: the ids are unique and never served
                pass
            raise IngestError(p.file_name, "the vector index is unreachable; nothing was changed, please try again later",
                              "向量索引暂时无法连接，文件未收录、原有内容未改变，请稍后重试") from exc
        p.vectors = None  # released before the snapshot reload

        # The swap: one short write transaction.
        with self._write_lock:
            try:
                result, old_ids, generation = self._swap(
                    p.file_name, p.title, p.key, p.sha, p.consortium, p.uploaded_by, p.may_replace, p.drafts, p.ids,
                    p.token_rows, p.data
                )
            except IntegrityError:
                self._vectors.delete(p.ids)
                raise IngestError(
                    p.file_name,
                    f"another upload of “{p.title}” was registered at the same moment; please try again",
                    f"同名文件《{p.title}》正在被同时上传，请稍后重试",
                ) from None
            except BaseException:
                self._vectors.delete(p.ids)
                raise
            if generation is None:  # someone registered the very same content meanwhile
                self._vectors.delete(p.ids)
                return result
            if install:
                self._install(generation)  # committed: answers come from the new version from now on
            else:
                self._installing = None  # the next question reloads
        if old_ids:
            self._vectors.delete(old_ids)
        log.info("document %s", result.status, extra={"title": p.title, "version": result.version,
                                                       "chunks": result.chunk_count})
        return result

    def _swap(
        self,
        file_name: str,
        title: str,
        key: str,
        sha: str,
        consortium: str | None,
        uploaded_by: str | None,
        may_replace: Callable[[str | None], bool] | None,
        drafts: list,
        ids: list[str],
        token_rows: list[str],
        data: bytes,
    ) -> tuple[IngestResult, list[str], int | None]:
        """Switch the live chunk set to the new version in one short write transaction.

        Returns the result, the chunk ids of the replaced version, and the new generation (None
        when nothing was written). Sets ``_installing`` just before the commit, so that questions
        keep the current snapshot until ``_install`` has loaded the new one.
        """
        old_ids: list[str] = []
        try:
            with self._sessions.begin() as session:
                current = _find_document(session, key, title, lock=True)  # may have changed meanwhile
                doc = None
                if current is not None:
                    _check_may_replace(file_name, title, current, consortium, may_replace)
                    if current.sha256 == sha and (consortium is None or consortium == current.consortium):
                        unchanged = IngestResult(clean_title(current.title), "unchanged", current.version,
                                                 current.chunk_count)
                        return unchanged, [], None
                    doc = session.get(Document, current.id)
                replacing = doc is not None
                if doc is not None:
                    version = doc.version + 1
                else:  # new, or back after a removal: its history goes on (v1 … stay stored)
                    stored = session.scalar(select(func.max(DocumentVersion.version))
                                            .where(DocumentVersion.title == title))
                    version = (stored or 0) + 1
                consortium = consortium if consortium is not None else (doc.consortium if doc else None)
                now = datetime.now(timezone.utc)
                if doc is None:
                    doc = Document(title=title, created_at=now)
                    session.add(doc)
                else:
                    old_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
                    session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
                doc.title = title  # a legacy, un-normalised title is cleaned on replacement
                doc.file_name = file_name[:300]
                doc.sha256 = sha
                doc.version = version
                doc.consortium = consortium
                doc.uploaded_by = uploaded_by
                doc.chunk_count = len(drafts)
                doc.updated_at = now
                session.flush()
                session.execute(
                    insert(Chunk),
                    [
                        {
                            "id": cid,
                            "document_id": doc.id,
                            "seq": d.seq,
                            "kind": d.kind,
                            "clause_no": d.clause_no,
                            "heading_path": d.heading_path,
                            "text": d.body,
                            "tokens": tokens,
                        }
                        for cid, d, tokens in zip(ids, drafts, token_rows)
                    ],
                )
                session.add(DocumentVersion(
                    title=title, version=version, file_name=file_name[:300], sha256=sha, consortium=consortium,
                    uploaded_by=uploaded_by, chunk_count=len(drafts), data=data, created_at=now,
                ))
                audit.record(
                    session,
                    uploaded_by or "system",
                    "document.update" if replacing else "document.ingest",
                    title,
                    {"version": version, "chunks": len(drafts), "sha256": sha, "file": file_name},
                )
                generation = _bump_generation(session)
                self._installing = generation
        except BaseException:
            self._installing = None
            raise
        status = "updated" if replacing else "added"
        return IngestResult(title, status, version, len(drafts)), old_ids, generation

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Vectors for ``texts``, a small batch at a time so that questions are never kept waiting."""
        return embed_in_batches(self._embedder, texts, pause_s=0.002)

    def ingest_path(self, path: Path, **kwargs: object) -> IngestResult:
        name, data = self._read_path(Path(path))
        return self.ingest_bytes(name, data, **kwargs)  # type: ignore[arg-type]

    def _read_path(self, path: Path) -> tuple[str, bytes]:
        """(file name, content), refusing folders and oversized files before reading them."""
        name = path.name
        try:
            size = path.stat().st_size
            if path.is_dir():
                raise IngestError(name, "is a folder, not a file", "这是文件夹，不是文件")
            if self._max_upload_bytes and size > self._max_upload_bytes:
                # refused before reading: a huge file must not be loaded into memory first
                raise _file_too_large(name, size, self._max_upload_bytes)
            return name, path.read_bytes()
        except IngestError:
            raise
        except OSError as exc:
            raise IngestError(name, f"cannot read file: {exc.strerror or exc}", "无法读取文件") from exc

    def reindex(self) -> tuple[int, int]:
        """Rebuild the vector store from the database: every live chunk embedded and upserted,
        every vector of no live chunk deleted. After a restore of PostgreSQL, or a lost Chroma
        volume (answers fall back to BM25 meanwhile). Returns (vectors written, deleted)."""
        snap = self.snapshot()
        with self._sessions() as session:
            versions = dict(session.execute(select(Document.title, Document.version)).all())
        versions = {clean_title(t): v for t, v in versions.items()}
        live = snap.chunks
        for start in range(0, len(live), 256):
            batch = live[start : start + 256]
            self._vectors.upsert(
                [c.id for c in batch],
                self._embed([c.text for c in batch]),
                [{"document": c.document_title, "version": versions.get(c.document_title, 0),
                  "consortium": c.consortium or ""} for c in batch],
            )
        stale = sorted(self._vectors.ids() - {c.id for c in live})
        self._vectors.delete(stale)
        return len(live), len(stale)

    def preview(self, file_name: str, data: bytes, *, title: str | None = None) -> UploadPreview:
        """What uploading this file would do, without doing it: its title, the clauses found and,
        when it replaces a document, the clause-level diff (added / changed / removed). Raises
        IngestError for a file that could not be ingested, with the same reason."""
        file_name = clean_file_name(file_name)
        extracted, title = read_document(file_name, data, title, self._limits)
        drafts = chunk_document(extracted, None, max_chunks=self._limits.max_chunks)
        if not drafts:
            raise IngestError(file_name, "no readable text found", "文件中没有可识别的正文文字")
        new = _clause_map((d.heading_path, d.clause_no, d.body) for d in drafts)
        with self._sessions() as session:
            found = _find_document(session, title_key(title), title)
            old: dict[str, str] = {}
            version = None
            if found is not None:
                version = found.version
                rows = session.execute(select(Chunk.heading_path, Chunk.clause_no, Chunk.text)
                                       .where(Chunk.document_id == found.id).order_by(Chunk.seq)).all()
                old = _clause_map((path or [], no, text) for path, no, text in rows)
        return UploadPreview(
            title=clean_title(title), clauses=len(drafts), replaces_version=version,
            unchanged=found is not None and found.sha256 == hashlib.sha256(data).hexdigest(),
            added=[k for k in new if k not in old],
            changed=[k for k in new if k in old and new[k] != old[k]],
            removed=[k for k in old if k not in new],
        )

    def versions(self, title: str) -> list[VersionInfo]:
        """Every stored version of a document, newest first (the file itself is not loaded)."""
        with self._sessions() as session:
            rows = session.execute(
                select(DocumentVersion.version, DocumentVersion.file_name, DocumentVersion.uploaded_by,
                       DocumentVersion.chunk_count, DocumentVersion.created_at, DocumentVersion.sha256)
                .where(DocumentVersion.title == clean_title(title)).order_by(DocumentVersion.version.desc())
            ).all()
        return [VersionInfo(*row) for row in rows]

    def rollback(self, title: str, version: int, *, rolled_back_by: str | None = None,
                 may_replace: Callable[[str | None], bool] | None = None) -> IngestResult:
        """Serve ``version`` of ``title`` again: its stored file is ingested as the newest version
        (history is never rewritten). Raises IngestError when that version is not stored."""
        title = clean_title(title)
        with self._sessions() as session:
            row = session.scalars(select(DocumentVersion).where(
                DocumentVersion.title == title, DocumentVersion.version == version)).first()
            if row is None:
                raise IngestError(title, f"version {version} is not stored", f"没有找到第 {version} 版")
            file_name, data, consortium = row.file_name, bytes(row.data), row.consortium
        result = self.ingest_bytes(file_name, data, uploaded_by=rolled_back_by, consortium=consortium, title=title,
                                   may_replace=may_replace)
        with self._sessions.begin() as session:
            audit.record(session, rolled_back_by or "system", "document.rollback", title,
                         {"to_version": version, "now_version": result.version, "status": result.status})
        return result

    def remove(self, title: str, *, removed_by: str | None = None) -> bool:
        """Delete a document from SQL and the vector index. False if no such title.

        The title is matched as a user would read it (``title_key``).
        """
        with self._write_lock, self._sessions.begin() as session:
            found = _find_document(session, title_key(title), clean_title(title), lock=True)
            if found is None:
                return False
            doc = session.get(Document, found.id)
            ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == doc.id)))
            audit.record(session, removed_by or "system", "document.remove", clean_title(doc.title), {"version": doc.version})
            session.delete(doc)
            _bump_generation(session)
        self._vectors.delete(ids)
        return True

    def documents(self) -> list[DocumentInfo]:
        with self._sessions() as session:
            return [_info(d) for d in session.scalars(select(Document).order_by(Document.title))]

    def document(self, title: str) -> DocumentInfo | None:
        """The registered document with this title (as a user reads it: ``title_key``), or None."""
        with self._sessions() as session:
            found = _find_document(session, title_key(title), clean_title(title))
            return _info(session.get(Document, found.id)) if found is not None else None

    # ------------------------------------------------------------------------------------
    # retrieval

    def snapshot(self) -> _Snapshot:
        """The live chunk set, reloaded when another writer (or process) changed it.

        While this process's own ingest is loading the generation it has just committed,
        questions keep the previous snapshot instead of waiting for the reload: the swap
        completes, for this process, when the ingest installs the new snapshot (before it
        returns). A change made by another process makes questions wait for the reload.
        """
        with self._sessions() as session:
            generation = session.scalar(select(KnowledgeState.generation).where(KnowledgeState.id == 1)) or 0
            current = self._snapshot
            if generation == current.generation:
                return current
            if current.generation >= 0 and generation == self._installing:
                return current
            with self._reload_lock:
                if generation != self._snapshot.generation:
                    self._snapshot = _load_snapshot(session, generation)
        return self._snapshot

    def _install(self, generation: int) -> None:
        """Load the snapshot of ``generation`` (just committed by this process) and switch to it."""
        try:
            with self._reload_lock, self._sessions() as session:
                if self._snapshot.generation != generation:
                    self._snapshot = _load_snapshot(session, generation)
        except Exception:  # the swap is committed; the next question reloads instead
            log.warning("could not load the new knowledge snapshot", exc_info=True)
        finally:
            self._installing = None

    def _shape(self, answer: Answer, query: Query, hits: list[Hit], language: str) -> Answer:
        """Fit the quoted answer to what kind of answer the question wants."""
        question = answer.question
        chunks = self.snapshot().chunks
        # a count question: the policy's own number, and a count over the table it is about
        stated = table = None
        if asks_count(question):
            stated, table = stated_count(query, hits, chunks), count_in_tables(query, hits, chunks)
        # "多少张床位？" / "补助多少钱？": quotes without any number or amount do not answer it
        quoted = "\n".join(q.text for q in answer.quotes)
        if unanswered_kind(question, quoted) and stated is None and table is None:
            return compose(question, hits, language=language, relevance=query.relevance, covered=False)
        if asks_list(question):  # "协作内容包括哪几方面？": every item of the list
            listed = whole_list(query, hits, chunks)
            if listed is not None:
                answer.text = truncate_utf8(listed.text(language), MAX_ANSWER_BYTES)
        if asks_count(question):  # the policy's own number first, then our count, then the quotes
            counted = table
            if counted is None and answer.quotes:  # "联合了几家单位？" over the quoted enumeration
                counted = count_in_sentence(answer.quotes[0].text)
            parts = [p.text(language) for p in (stated, counted) if p is not None]
            if parts:
                header = EN_HEADER if answer.text.startswith(EN_HEADER) else ""
                body = answer.text[len(header):].lstrip("\n")
                answer.text = truncate_utf8("\n\n".join([*([header] if header else []), *parts, body]),
                                            MAX_ANSWER_BYTES)
        if query.corrections:  # say how a typed homophone was read
            read_as = "、".join(f"“{new}”" for _, new in query.corrections)
            answer.text = truncate_utf8(f"（按{read_as}理解您的问题）\n" + answer.text, MAX_ANSWER_BYTES)
        return answer

    def retrieve(self, question: str, *, consortium: str | None = None, k: int = 10) -> list[Hit]:
        return self._retrieve(question, consortium=consortium, k=k)[1]

    def _retrieve(self, question: str, *, consortium: str | None, k: int) -> tuple[Query | None, list[Hit]]:
        snap = self.snapshot()
        if not snap.chunks:
            return None, []
        query = Query.parse(question, snap)
        bm25_scores = np.asarray(snap.bm25.get_scores(query.search_tokens))
        best_bm25 = float(bm25_scores.max()) or 1.0
        named = sorted(t for t in query.named_documents if t in snap.positions_by_document)
        own = consortium is not None and consortium in snap.positions_by_consortium
        dense_by_pos = {
            snap.position[cid]: sim
            for cid, sim in self._dense_candidates(question, _scope_filters(named, consortium if own else None))
            if cid in snap.position  # only live chunks, whatever the vector index still holds
        }
        candidates = _best_positions(bm25_scores, None, LEXICAL_CANDIDATES)
        # In a large corpus, copies of a clause in other documents can fill the top of the
        # ranking: the documents the question names, and the asker's own consortium, are
        # searched on their own as well (by words here, by vector in _dense_candidates).
        scoped = [snap.positions_by_document[t] for t in named]
        if own:
            scoped.append(snap.positions_by_consortium[consortium])
        for positions in scoped:
            candidates |= _best_positions(bm25_scores, positions, SCOPED_CANDIDATES)
        candidates.update(dense_by_pos)
        hits = []
        for pos in candidates:
            chunk = snap.chunks[pos]
            coverage = query.share(chunk.tokens)
            heading = query.share(chunk.heading_tokens)
            dense = float(dense_by_pos.get(pos, 0.0))
            score = W_BM25 * bm25_scores[pos] / best_bm25 + W_DENSE * dense + W_COVERAGE * coverage + W_HEADING * heading
            if query.cue is not None and coverage > 0 and query.cue.search(chunk.body):
                score += CUE_BONUS
            named = chunk.document_title in query.named_documents
            hits.append(
                Hit(chunk, float(score), float(bm25_scores[pos]), dense, coverage, heading, query.unknown_share, named)
            )
        best_score = max((h.score for h in hits), default=0.0)
        best_coverage = max((h.coverage for h in hits), default=0.0)
        for hit in hits:
            if query.named_documents:  # the user named a policy: its clauses first
                hit.score += NAMED_DOCUMENT_BONUS if hit.named else 0.0
            elif (
                consortium
                and hit.chunk.consortium == consortium
                and (hit.coverage >= OWN_MIN_COVERAGE_RATIO * best_coverage or hit.score >= OWN_MIN_SCORE_RATIO * best_score)
            ):
                # the asker's own rules first, but only where they are nearly as relevant as the
                # best clause: otherwise another consortium's rule, named as such, answers better
                # than an unrelated one of their own
                hit.score += OWN_CONSORTIUM_BONUS
        hits.sort(key=lambda h: h.score, reverse=True)
        # a clause copied word for word into several documents (a city plan repeating the
        # province's) counts once, from its best-ranked document: the copies would crowd out
        # the next different clause, and the gap to it is what says how clear the answer is
        unique, seen = [], set()
        for hit in hits:
            body = "".join(hit.chunk.body.split())
            if body not in seen:
                seen.add(body)
                unique.append(hit)
                if len(unique) == k:
                    break
        return query, unique

    def _dense_candidates(self, question: str, scopes: Sequence[dict] = ()) -> list[tuple[str, float]]:
        """Chroma's nearest chunks, overall and within each metadata filter of ``scopes``; or
        none while it cannot be reached (a Chroma server down or restarting): the answer then
        rests on BM25, coverage and headings, and one warning per outage is logged instead of an
        error reply to every user."""
        try:
            vector = self._embedder.encode([question])[0]
            found = self._vectors.query(vector, DENSE_CANDIDATES)
            for where in scopes if SCOPED_DENSE > 0 else ():
                found = found + self._vectors.query(vector, SCOPED_DENSE, where=where)
        except Exception as exc:  # noqa: BLE001 - any failure of the vector store degrades, never breaks
            if self._dense_failed_at is None:
                log.warning("vector index unreachable; answering from the lexical index only",
                            extra={"error": type(exc).__name__})
            self._dense_failed_at = time.monotonic()
            return []
        if self._dense_failed_at is not None:
            log.info("vector index reachable again")
            self._dense_failed_at = None
        return found

    @property
    def degraded(self) -> str | None:
        """Why answers are degraded right now (the vector index failed its last query), or None."""
        return "vector index unreachable: lexical retrieval only" if self._dense_failed_at is not None else None

    def ask(self, question: str, *, consortium: str | None = None) -> Answer:
        """Answer a policy question from the indexed documents (extractive, or LLM when set)."""
        started = time.perf_counter()
        question = question.strip()
        language = "en" if is_mostly_latin(question) else "zh"
        query, hits = self._retrieve(question, consortium=consortium, k=10)
        if query is None:  # no documents at all
            text = EMPTY_KB_EN if language == "en" else EMPTY_KB_ZH
            return Answer(question, text, True, language, ms=(time.perf_counter() - started) * 1000)
        covered = bool(hits) and is_answerable(features(query, hits))
        answer = compose(question, hits, language=language, relevance=query.relevance, covered=covered,
                         consortium=consortium)
        if not answer.refused:
            answer = self._shape(answer, query, hits, language)
        if self._synthesizer is not None and not answer.refused:
            answer = self._synthesizer.improve(answer)
        answer.ms = (time.perf_counter() - started) * 1000
        _notify(self.answer_observers, answer, self.degraded is not None)
        return answer


def _notify(observers: list[Callable[..., None]], *args: object) -> None:
    for observe in observers:
        try:
            observe(*args)
        except Exception:  # noqa: BLE001 - counting must never break an answer or an upload
            log.debug("observer %r failed", observe, exc_info=True)


@dataclass(frozen=True)
class _DocRef:
    id: int
    title: str
    consortium: str | None
    version: int
    sha256: str
    chunk_count: int


def _info(d: Document) -> DocumentInfo:
    return DocumentInfo(clean_title(d.title), d.file_name, d.version, d.consortium, d.chunk_count, d.uploaded_by,
                        d.updated_at, d.sha256)


@lru_cache(maxsize=65536)
def _title_key_of(title: str) -> str:
    """``title_key`` of a registered title, remembered: with hundreds of documents every upload
    compares its key with all of them, twice."""
    return title_key(title)


def _find_document(session: Session, key: str, title: str, *, lock: bool = False) -> _DocRef | None:
    """The registered document whose title has this ``title_key``, if any.

    Titles registered before normalisation may differ from their clean form, so every title is
    compared by its key (the registry holds hundreds of documents, not millions). Should several
    legacy titles share a key, the one written exactly like ``title`` wins, then the oldest.
    """
    rows = session.execute(
        select(Document.id, Document.title, Document.consortium, Document.version, Document.sha256, Document.chunk_count)
        .order_by(Document.id)
    ).all()
    matches = [_DocRef(*row) for row in rows if _title_key_of(row.title) == key]
    if not matches:
        return None
    found = next((m for m in matches if m.title == title), matches[0])
    if lock and session.get_bind().dialect.name != "sqlite":
        session.execute(select(Document.id).where(Document.id == found.id).with_for_update())
    return found


def _check_may_replace(
    file_name: str,
    title: str,
    existing: _DocRef,
    consortium: str | None,
    may_replace: Callable[[str | None], bool] | None,
) -> None:
    if may_replace is not None:
        allowed = may_replace(existing.consortium)
    else:
        allowed = existing.consortium is None or consortium is None or consortium == existing.consortium
    if allowed:
        return
    shown = clean_title(existing.title)
    raise IngestError(
        file_name,
        f"a document titled “{shown}” already belongs to another consortium and you may not replace it; "
        "if this is your own consortium's document, please upload it under a different title",
        f"已有同名文件《{shown}》属于其他医联体，您无权替换；如为本单位的文件，请更换标题后再上传",
    )


def _file_too_large(file_name: str, size: int, limit: int) -> IngestError:
    def mb(n: int) -> str:
        text = f"{n / (1024 * 1024):.1f}"
        return text[:-2] if text.endswith(".0") else text

    return IngestError(
        file_name,
        f"file is {mb(size)} MB, larger than the {mb(limit)} MB limit",
        f"文件过大（{mb(size)} MB），超过 {mb(limit)} MB 的上限，请拆分或压缩后再上传",
    )


def _bump_generation(session: Session) -> int:
    state = session.get(KnowledgeState, 1, with_for_update=True)  # no lost update across processes
    if state is None:
        session.add(KnowledgeState(id=1, generation=1))
        return 1
    state.generation += 1
    return state.generation


# words that say what kind of document it is, not which one
_DOCUMENT_KIND_WORDS = {"意见", "实施意见", "方案", "实施方案", "工作方案", "制度", "工作制度", "通知", "办法",
                        "规定", "细则", "试点", "试点工作", "指南", "规范", "决定", "章程"}


def _distinctive_title_words(chunks: list[ChunkView]) -> dict[str, frozenset[str]]:
    """Words of each title that single its document out: place and hospital names.

    A title word counts when the document's own clauses use it and nearly no other document's
    do ("临沧", "油田"), which excludes generic title words ("医疗机构", "实施方案"). In a large
    corpus a place is also mentioned in passing by other documents ("…张店区中医院医疗集团…" in
    a neighbouring city's plan): a word of no other title still counts while at most a tenth of
    the documents use it.
    """
    title_words = {
        title: {w for w in tokenize(title) if not w.startswith("#") and len(w) >= 2} - _DOCUMENT_KIND_WORDS
        for title in {c.document_title for c in chunks}
    }
    wanted = set().union(*title_words.values())
    # one pass over the chunks: for each title word, how many clauses of each document use it
    uses: dict[str, dict[str, int]] = {w: {} for w in wanted}
    for chunk in chunks:
        for w in wanted & chunk.tokens:
            uses[w][chunk.document_title] = uses[w].get(chunk.document_title, 0) + 1
    titles_with = Counter(w for words in title_words.values() for w in words)
    documents = len(title_words)
    result = {}
    for title, candidates in title_words.items():
        keep = set()
        for w in candidates:
            own = uses[w].get(title, 0)
            other = sum(uses[w].values()) - own
            only_this_title = titles_with[w] == 1 and len(uses[w]) <= 0.1 * documents
            if own and (other <= 0.1 * (own + other) or only_this_title):
                keep.add(w)
                if len(w) >= 3 and w[-1] in "市区县州":  # "张店区" is also asked about as "张店"
                    keep.add(w[:-1])
        result[title] = frozenset(keep)
    return result


class LexicalIndex:
    """BM25 over the chunks' jieba tokens as a sparse matrix (``bm25s``): a question touches only
    the postings of its own terms, so its cost barely grows with the corpus.

    Lucene's always-positive IDF, log(1 + (N - n + 0.5) / (n + 0.5)): the Okapi IDF goes to zero
    or below when a term is in half the chunks, which on a small knowledge base (one freshly
    uploaded policy) makes every term worthless. A term asked twice counts twice.
    """

    def __init__(self, corpus: list[list[str]]) -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG on import
        self._bm25 = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
        self._bm25.index(corpus, show_progress=False)
        self._ids = self._bm25.vocab_dict
        n = len(corpus)
        df = Counter(t for doc in corpus for t in set(doc))
        #: term → IDF (the weight of a question's concept, see ``Query``)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.size = n

    def get_scores(self, tokens: list[str]) -> np.ndarray:
        ids = [self._ids[t] for t in tokens if t in self._ids]
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return self._bm25.get_scores_from_ids(ids)


def _load_snapshot(session: Session, generation: int) -> _Snapshot:
    rows = session.execute(
        select(
            Chunk.id, Chunk.kind, Chunk.clause_no, Chunk.heading_path, Chunk.text, Chunk.tokens,
            Document.title, Document.consortium,
        )
        .join(Document)
        .order_by(Document.title, Chunk.seq)
        .execution_options(yield_per=2000)  # streamed: never all rows and all views at once
    )
    chunks = []
    corpus = []
    shown: dict[str, str] = {}
    for cid, kind, clause_no, heading_path, body, token_text, raw_title, consortium in rows:
        title = shown.get(raw_title) or shown.setdefault(raw_title, clean_title(raw_title))
        corpus.append([intern(t) for t in token_text.split()])  # one string per distinct token
        path = tuple(intern(h) for h in heading_path or ())
        chunks.append(ChunkView(cid, title, consortium, path, clause_no, kind, body, token_text))
    snap = _Snapshot(generation=generation, chunks=chunks, position={c.id: i for i, c in enumerate(chunks)})
    if corpus:
        bm25 = LexicalIndex(corpus)
        snap.bm25 = bm25
        snap.idf = bm25.idf
        snap.unknown_idf = max(snap.idf.values())
        snap.title_words = _distinctive_title_words(chunks)
    del corpus
    release_free_memory()  # the rows and token lists of the load are garbage now
    return snap
