"""Cost growth with the corpus: 5, 50 and 500 policy documents, measured in one run.

    .venv/bin/python bench/bench_scale.py [--sizes 5 50 500]

For each size a fresh data directory gets the five sample policies plus policy-like documents
made by recombining the samples' sections (seeded, so every run builds the same corpus); each
names its own city where its sections named the sample's place (``--keep-names`` keeps them:
then 495 documents claim to be 临沧's or 张店's rules, and questions naming a place lose the
one document that is really about it). Two
processes per size, as in production:

1. the *ingesting* process (what ``yilian ingest`` does: commit each file, load nothing) —
   documents per second;
2. an *answering* process opening that data directory as a worker does — warm answer latency
   over the dev questions (p50 / p95, three rounds), its peak RSS, and the dev-set quality
   (hit@1, accuracy) beside the timings, which must not change with the corpus size.

Prints one JSON object; asserts nothing (targets: p95@500 ≤ 2 × p95@5 and ≤ 80 ms, RSS@500 ≤
400 MB, ingest ≥ 10 documents/s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CITIES = ["成都", "绵阳", "宜宾", "泸州", "南充", "达州", "遂宁", "内江", "乐山", "眉山", "广安", "雅安"]
KINDS = ["实施方案", "工作制度", "管理办法", "实施细则", "考核方案", "工作规范"]
_HEADING = re.compile(r"^\s*([一二三四五六七八九十]+、|（[一二三四五六七八九十]+）|\d+(\.\d+)*[.、．])")


def _sections(text: str) -> list[list[str]]:
    """A sample's lines cut at its headings: the units recombined into new documents."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if _HEADING.match(line) or not sections:
            sections.append([])
        sections[-1].append(line.strip())
    return [s for s in sections if sum(len(x) for x in s) > 40]


#: The place each sample governs, as its text names it: a recombined document names its own city
#: instead (a city's plan does not call itself 临沧's), unless ``keep_names``.
_PLACES = re.compile("临沧|张店|德阳|松原|资阳|雁江")


def synthetic_documents(count: int, seed: int = 12, *, keep_names: bool = False) -> list[tuple[str, str, str]]:
    """(file name, text, consortium) of ``count`` policy-like documents."""
    from knowledge.samples import sample_policies

    rng = random.Random(seed)
    pools = [(_sections(p.read_text(encoding="utf-8")), c) for p, c in sample_policies()]
    docs = []
    for i in range(count):
        sections, consortium = rng.choice(pools)
        picked = rng.sample(sections, k=min(len(sections), rng.randint(8, 16)))
        city, kind = rng.choice(CITIES), rng.choice(KINDS)
        title = f"{city}市医疗联合体{kind}（第{i + 1}号）"
        body = "\n\n".join("\n".join(s) for s in picked)
        if not keep_names:
            body = _PLACES.sub(city, body)
        docs.append((f"{title}.txt", f"{title}\n\n{body}\n", consortium))
    return docs


def _settings(data_dir: Path):
    from bot.config import Settings

    return Settings(_env_file=None, data_dir=data_dir, log_level="WARNING")


def ingest(data_dir: Path, size: int, keep_names: bool = False, workers: int = 2) -> dict:
    """Child process 1: the samples, then ``size - 5`` recombined documents as files in a folder,
    ingested as ``yilian ingest <folder>`` does (``KnowledgeBase.ingest_many``), timed."""
    from bot.context import build_context
    from knowledge.samples import sample_policies

    ctx = build_context(_settings(data_dir))
    for path, consortium in sample_policies():
        ctx.kb.ingest_path(path, consortium=consortium)
    extra = synthetic_documents(max(0, size - 5), keep_names=keep_names)
    folder = data_dir / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    by_consortium: dict[str, list[Path]] = {}
    for name, text, consortium in extra:
        (folder / name).write_text(text, encoding="utf-8")
        by_consortium.setdefault(consortium, []).append(folder / name)
    started = time.perf_counter()
    chunks = 0
    for consortium, paths in by_consortium.items():  # one `yilian ingest --consortium C` per consortium
        for path, result in ctx.kb.ingest_many(paths, consortium=consortium, workers=workers):
            if isinstance(result, Exception):
                raise result
            chunks += result.chunk_count
    seconds = time.perf_counter() - started
    ctx.close()
    return {"documents": size, "ingested": len(extra), "chunks_ingested": chunks, "ingest_workers": workers,
            "ingest_docs_per_s": round(len(extra) / seconds, 1) if extra else None}


def answer(data_dir: Path) -> dict:
    """Child process 2: a worker's view of the data directory: latency, RSS, dev quality."""
    from bot.context import build_context
    from knowledge.evaluation import evaluate, load_questions, percentile

    ctx = build_context(_settings(data_dir))
    questions = load_questions(REPO / "tests/data/dev.jsonl")
    quality = evaluate(ctx.kb, questions)  # also warms the snapshot and the encoder
    latencies = []
    for _ in range(3):
        for q in questions:
            started = time.perf_counter()
            ctx.kb.ask(q["question"], consortium=q.get("consortium"))
            latencies.append((time.perf_counter() - started) * 1000)
    out = {
        "chunks": len(ctx.kb.snapshot().chunks),
        "ask_p50_ms": round(statistics.median(latencies), 1),
        "ask_p95_ms": round(percentile(latencies, 0.95), 1),
        "answer_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "dev_hit_at_1": quality.hit_at_1,
        "dev_accuracy": quality.answer_accuracy,
    }
    ctx.close()
    return out


def _child(role: str, data_dir: Path, size: int, keep_names: bool, workers: int) -> dict:
    env = {**os.environ, "YILIAN_LOG_LEVEL": "WARNING"}
    res = subprocess.run([sys.executable, __file__, "--child", role, "--data-dir", str(data_dir), "--size", str(size),
                          "--ingest-workers", str(workers), *(["--keep-names"] if keep_names else [])],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 50, 500])
    parser.add_argument("--child", choices=["ingest", "answer"])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--keep-names", action="store_true")
    parser.add_argument("--ingest-workers", type=int, default=2, help="files prepared at once (1: one at a time)")
    args = parser.parse_args()
    if args.child:
        result = ingest(args.data_dir, args.size, args.keep_names, args.ingest_workers) if args.child == "ingest" else answer(args.data_dir)
        print(json.dumps(result))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data_dir = Path(tmp) / f"n{size}"
            rows.append({**_child("ingest", data_dir, size, args.keep_names, args.ingest_workers),
                         **_child("answer", data_dir, size, args.keep_names, args.ingest_workers)})
    base, top = rows[0], rows[-1]
    print(json.dumps({
        "place_names": "kept from the samples" if args.keep_names else "each document names its own city",
        "rows": rows,
        "p95_ratio_largest_to_smallest": round(top["ask_p95_ms"] / base["ask_p95_ms"], 2),
        "targets": "p95 ratio <= 2 and p95 <= 80 ms at 500; answer RSS <= 400 MB; ingest >= 10 docs/s",
    }, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
