"""Builds the long-lived objects of a process from Settings: database, knowledge base, etc.

Expensive pieces (the embedder, Chroma) are created on first use so that commands which do not
need them (``yilian db upgrade``, ``yilian directory import``) start instantly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.config import Settings
from storage.db import init_db, make_engine, make_session_factory


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    _kb_lock: threading.Lock = field(default_factory=threading.Lock)
    _kb: object | None = None
    _router: object | None = None

    @property
    def router(self):
        """Queues notifications for staff's chat channels (``bot.notify.ChannelNotifier``)."""
        if self._router is None:
            from bot.notify import ChannelNotifier

            self._router = ChannelNotifier(self.settings)
        return self._router

    @property
    def kb(self):
        """The knowledge base (loads the embedder and opens Chroma on first use, once per process
        even when several threads ask at the same time)."""
        if self._kb is None:
            with self._kb_lock:
                if self._kb is None:
                    self._kb = self._build_kb()
        return self._kb

    def _build_kb(self):
        from knowledge.embeddings import make_embedder
        from knowledge.llm import make_synthesizer
        from knowledge.service import KnowledgeBase
        from knowledge.vector_index import ChromaIndex

        models = self.settings.resolved_data_dir / "models"
        embedder = make_embedder(self.settings.embedding_model, models)
        vectors = ChromaIndex(path=self.settings.chroma_path, url=self.settings.chroma_url, collection=embedder.name)
        from bot import metrics

        kb = KnowledgeBase(
            self.sessions,
            embedder,
            vectors,
            max_upload_bytes=self.settings.max_upload_bytes,
            max_document_chars=self.settings.max_document_chars,
            max_document_chunks=self.settings.max_document_chunks,
            max_pdf_pages=self.settings.max_pdf_pages,
            synthesizer=make_synthesizer(self.settings),
            embedder_factory=partial(make_embedder, self.settings.embedding_model, models),
        )
        kb.answer_observers.append(metrics.observe_answer)
        kb.ingest_observers.append(metrics.observe_ingest)
        return kb

    def close(self) -> None:
        self.engine.dispose()


def build_context(settings: Settings, *, migrate: bool = True) -> AppContext:
    engine = make_engine(settings.resolved_database_url)
    if migrate:
        init_db(engine)
    return AppContext(settings=settings, engine=engine, sessions=make_session_factory(engine))
