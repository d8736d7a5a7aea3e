"""Dense vectors in Chroma: embedded (persistent, in the data dir) or a Chroma server.

Vectors are computed by our own embedder and handed to Chroma, so Chroma never loads (or
downloads) an embedding function of its own. One collection per embedder, because vectors of
different models are not comparable.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np


class ChromaIndex:
    """The vector collection, connected on first use: a worker that starts while the Chroma
    server is down still starts (answers fall back to the lexical index, see
    ``KnowledgeBase._dense_candidates``) and connects once the server is back."""

    def __init__(self, *, path: Path | None = None, url: str | None = None, collection: str) -> None:
        self._path, self._url = path, url
        self._name = re.sub(r"[^a-zA-Z0-9._-]", "-", f"policy-chunks-{collection}")[:60].strip("-._")
        self._lock = threading.Lock()
        self._client = None
        self._collection_obj = None
        if not url:  # the embedded store is local: open it now, so a bad data dir fails at start
            self._connect()

    def _connect(self):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if self._url:
            parsed = urlparse(self._url)
            client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=settings,
            )
        else:
            assert self._path is not None
            self._path.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(self._path), settings=settings)
        collection = client.get_or_create_collection(
            self._name, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        self._client, self._collection_obj = client, collection
        return collection

    @property
    def _collection(self):
        if self._collection_obj is not None:
            return self._collection_obj
        with self._lock:
            return self._collection_obj if self._collection_obj is not None else self._connect()

    def upsert(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        for start in range(0, len(ids), 1000):
            end = start + 1000
            self._collection.upsert(
                ids=ids[start:end], embeddings=vectors[start:end].tolist(), metadatas=metadatas[start:end]
            )

    def delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), 1000):
            self._collection.delete(ids=ids[start : start + 1000])

    def ids(self) -> set[str]:
        return set(self._collection.get(include=[])["ids"])

    def query(self, vector: np.ndarray, n: int, where: dict | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity) pairs, best first; ``where`` filters on the metadata."""
        count = self._collection.count()
        if count == 0:
            return []
        res = self._collection.query(
            query_embeddings=[vector.tolist()], n_results=min(n, count), include=["distances"], where=where
        )
        return [(cid, 1.0 - float(d)) for cid, d in zip(res["ids"][0], res["distances"][0])]
