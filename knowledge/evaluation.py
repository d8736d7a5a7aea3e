"""Evaluation of retrieval and answers against a question set (format: tests/data/EVAL_FORMAT.md).

Matching follows the set's rules: both sides NFKC-normalised, all white space removed, then a
substring test. An evidence alternative that is a list must match entirely within one passage.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from knowledge.textnorm import fold, utf8_len


@dataclass
class EvalSummary:
    n: int
    hit_at_1: float
    hit_at_5: float
    mrr: float
    answer_accuracy: float
    refusal_rate: float
    false_refusal_rate: float
    max_answer_bytes: int
    p50_ms: float
    p95_ms: float
    #: Per question ``kind`` (when the set labels them): n, answer accuracy or refusal rate.
    by_kind: dict | None = None

    def to_json(self) -> str:
        data = asdict(self)
        if data["by_kind"] is None:  # the dev format's output stays exactly as it was
            del data["by_kind"]
        return json.dumps(data, ensure_ascii=False)


def load_questions(path: Path) -> list[dict]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def evidence_found(evidence: list, passage: str) -> bool:
    text = fold(passage)
    for alternative in evidence:
        parts = [alternative] if isinstance(alternative, str) else list(alternative)
        if parts and all(fold(p) in text for p in parts):
            return True
    return False


def answer_correct(expected: list[str], answer: str) -> bool:
    text = fold(answer)
    return any(fold(e) in text for e in expected)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def evaluate(kb, questions: list[dict], details_path: Path | None = None) -> EvalSummary:
    """Run every question through retrieval and the answer a user would get."""
    kb.ask("预热")  # load indexes and the encoder before timing
    answerable = [q for q in questions if q.get("answerable", True)]
    h1 = h5 = 0
    rr = 0.0
    correct = refused_ok = false_refusals = 0
    latencies: list[float] = []
    max_bytes = 0
    details = []
    kinds: dict[str, list[bool]] = {}
    for q in questions:
        # ``consortium``: the asker's own consortium (their documents come first, as in chat)
        answer = kb.ask(q["question"], consortium=q.get("consortium"))
        latencies.append(answer.ms)
        max_bytes = max(max_bytes, utf8_len(answer.text))
        passages = [h.chunk.text for h in answer.hits[:10]]
        ok: bool
        if q.get("answerable", True):
            rank = next((i for i, p in enumerate(passages) if evidence_found(q["evidence"], p)), None)
            if rank == 0:
                h1 += 1
            if rank is not None and rank < 5:
                h5 += 1
            if rank is not None:
                rr += 1.0 / (rank + 1)
            ok = not answer.refused and answer_correct(q.get("answer_contains", []), answer.text)
            if answer.refused:
                false_refusals += 1
            elif ok:
                correct += 1
        else:
            ok = answer.refused
            if ok:
                refused_ok += 1
        if q.get("kind"):
            kinds.setdefault(q["kind"], []).append(ok)
        row = {
            "id": q.get("id"),
            "question": q["question"],
            "passages": passages,
            "answer": answer.text,
            "refused": answer.refused,
            "ms": round(answer.ms, 2),
        }
        if "kind" in q or "consortium" in q:  # the extended format: say how each question went
            row.update(ok=ok, kind=q.get("kind"), consortium=q.get("consortium"))
        details.append(row)
    if details_path is not None:
        with Path(details_path).open("w", encoding="utf-8") as fh:
            for row in details:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_ans = len(answerable) or 1
    n_unans = (len(questions) - len(answerable)) or 1
    return EvalSummary(
        n=len(questions),
        hit_at_1=round(h1 / n_ans, 4),
        hit_at_5=round(h5 / n_ans, 4),
        mrr=round(rr / n_ans, 4),
        answer_accuracy=round(correct / n_ans, 4),
        refusal_rate=round(refused_ok / n_unans, 4) if len(questions) > len(answerable) else 1.0,
        false_refusal_rate=round(false_refusals / n_ans, 4),
        max_answer_bytes=max_bytes,
        p50_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
        p95_ms=round(percentile(latencies, 0.95), 2),
        by_kind={k: {"n": len(v), "ok": round(sum(v) / len(v), 4)} for k, v in sorted(kinds.items())} or None,
    )
