"""Dense vectors in Chroma: embedded (persistent, in the data dir) or a Chroma server.

Vectors are computed by our own embedder and handed to Chroma, so Chroma never loads (or
downloads) an embedding function of its own. One collection per embedder, because vectors of
different models are not comparable.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np


class ChromaIndex:
    def __init__(self, *, path: Path | None = None, url: str | None = None, collection: str) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if url:
            parsed = urlparse(url)
            self._client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=settings,
            )
        else:
            assert path is not None
            path.mkdir(parents=True, exist_ok=True)
            self._client = chromadb.PersistentClient(path=str(path), settings=settings)
        name = re.sub(r"[^a-zA-Z0-9._-]", "-", f"policy-chunks-{collection}")[:60].strip("-._")
        self._collection = self._client.get_or_create_collection(
            name, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

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

    def query(self, vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity) pairs, best first."""
        count = self._collection.count()
        if count == 0:
            return []
        res = self._collection.query(
            query_embeddings=[vector.tolist()], n_results=min(n, count), include=["distances"]
        )
        return [(cid, 1.0 - float(d)) for cid, d in zip(res["ids"][0], res["distances"][0])]
