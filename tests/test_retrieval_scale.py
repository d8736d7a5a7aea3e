"""Retrieval in a corpus where many documents copy the same kind of clause: the document a
question names, and the asker's own consortium, are still found (not crowded out of the
candidates by dozens of near copies)."""

from __future__ import annotations

import pytest

import knowledge.service as service
from conftest import make_settings
from bot.context import build_context

CITIES = [f"{a}{b}" for a in "东西南北中" for b in "江山河湖城原川阳岭台"][:46]
NUMBERS = "一二三四五六七八九十"


def _plain_document(city: str) -> str:
    return f"{city}市医疗集团工作规范\n\n一、考核\n{city}医疗集团成员单位每年考核一次。\n"


def _neighbour_document(city: str) -> str:
    """A neighbouring city's plan: many clauses that match the questions' words more often than
    the real clauses do, mentioning the named district in passing, as such plans do."""
    clauses = []
    for i in range(16):
        clauses.append(
            f"（{NUMBERS[i % 10]}）第{i + 1}项\n{city}医疗集团参照青羊区中医院医疗集团完善签约服务技术体系，"
            f"签约服务技术体系与签约服务团队模式由{city}医疗集团第{i + 1}工作组统一制定。"
        )
    return f"{city}市医疗集团签约服务实施细则\n\n一、签约服务\n" + "\n".join(clauses) + "\n"


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    ctx = build_context(make_settings(tmp_path_factory.mktemp("crowded")))
    kb = ctx.kb
    kb.ingest_bytes(
        "青羊区医疗集团实施方案.txt",
        ("青羊区医疗集团实施方案\n\n一、家庭医生\n青羊区医疗集团推行“1+2+N”签约服务技术体系，由全科医生牵头组建团队。\n\n"
         "二、例会\n青羊区医疗集团每月召开一次例会。\n").encode(),
        consortium="qingyang",
    )
    kb.ingest_bytes(
        "石桥县医共体管理办法.txt",
        "石桥县医共体管理办法\n\n一、签约\n县医共体推行“3+1”签约服务团队模式，乡镇卫生院负责组织。\n".encode(),
        consortium="shiqiao",
    )
    for city in CITIES:
        kb.ingest_bytes(f"{city}市医疗集团工作规范.txt", _plain_document(city).encode(), consortium="other",
                        install=False)
    for city in ("锦江", "双流", "温江", "新都"):
        kb.ingest_bytes(f"{city}市医疗集团签约服务实施细则.txt", _neighbour_document(city).encode(),
                        consortium="other", install=False)
    yield kb
    ctx.close()


def test_a_named_documents_clause_is_found_among_many_copies(crowded, monkeypatch):
    question = "青羊医疗集团的签约服务技术体系叫什么？"
    hits = crowded.retrieve(question)
    assert hits and hits[0].chunk.document_title == "青羊区医疗集团实施方案"
    assert "1+2+N" in crowded.ask(question).text

    # lexical candidates only (as with the vector index down): still found, but without
    # searching the named document on its own the copies crowd it out of the candidates
    monkeypatch.setattr(crowded, "_dense_candidates", lambda question, scopes=(): [])
    assert crowded.retrieve(question)[0].chunk.document_title == "青羊区医疗集团实施方案"
    monkeypatch.setattr(service, "SCOPED_CANDIDATES", 0)
    assert all(h.chunk.document_title != "青羊区医疗集团实施方案" for h in crowded.retrieve(question, k=40))


def test_the_askers_own_consortium_is_found_among_many_copies(crowded, monkeypatch):
    question = "签约服务团队模式是怎样的？"
    hits = crowded.retrieve(question, consortium="shiqiao")
    assert hits and hits[0].chunk.document_title == "石桥县医共体管理办法"
    assert "3+1" in crowded.ask(question, consortium="shiqiao").text

    monkeypatch.setattr(crowded, "_dense_candidates", lambda question, scopes=(): [])
    assert crowded.retrieve(question, consortium="shiqiao")[0].chunk.document_title == "石桥县医共体管理办法"
    monkeypatch.setattr(service, "SCOPED_CANDIDATES", 0)
    ranked = [h.chunk.document_title for h in crowded.retrieve(question, consortium="shiqiao", k=40)]
    assert "石桥县医共体管理办法" not in ranked


def test_a_named_documents_clauses_keep_their_vector_similarity_beyond_the_global_nearest(crowded, monkeypatch):
    """With the global nearest clauses all elsewhere (here: only one asked for), the named
    document's clauses still get their cosine similarity from a search within that document,
    and so do the asker's own consortium's."""
    monkeypatch.setattr(service, "DENSE_CANDIDATES", 1)
    question = "青羊医疗集团的签约服务技术体系叫什么？"

    def clause(hits):
        return next(h for h in hits if "1+2+N" in h.chunk.body)

    scoped = clause(crowded.retrieve(question, k=40))
    assert scoped.named and scoped.dense > 0
    assert clause(crowded.retrieve("签约服务技术体系叫什么？", consortium="qingyang", k=40)).dense > 0

    monkeypatch.setattr(service, "SCOPED_DENSE", 0)  # without the scoped search: no similarity at all
    assert clause(crowded.retrieve(question, k=40)).dense == 0.0
    assert clause(crowded.retrieve("签约服务技术体系叫什么？", consortium="qingyang", k=40)).dense == 0.0
