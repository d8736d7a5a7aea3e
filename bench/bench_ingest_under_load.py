"""Answers and database writes while a very large policy is being indexed.

Builds an assistant on a temporary directory with the five sample policies, then indexes a
generated policy-like file as large as the per-file limits allow (by default 1.7M characters,
~5 MB of UTF-8, which this generator's ~87 characters per clause turn into ~19,500 clauses, just
under ``MAX_DOCUMENT_CHUNKS``; a 20 MB text file would be refused by ``MAX_DOCUMENT_CHARS``;
``--chars`` to choose) while

* one thread asks the dev questions in a loop (as users in WeCom would), and
* one thread writes to the database in short transactions (as the WeCom inbox/outbox does).

Prints answer latency p50/p95/max before and during the ingest, the longest database write,
the ingest duration and peak memory. Asserts nothing (tests/test_ingest_limits.py does).

    .venv/bin/python bench/bench_ingest_under_load.py [--chars 1900000] [--format txt|docx]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.config import Settings  # noqa: E402
from bot.context import build_context  # noqa: E402
from knowledge.evaluation import load_questions, percentile  # noqa: E402
try:
    from knowledge.extract_types import MAX_DOCUMENT_CHARS, MAX_DOCUMENT_CHUNKS  # noqa: E402
except ImportError:  # an older checkout without per-file limits (to compare before/after)
    MAX_DOCUMENT_CHARS, MAX_DOCUMENT_CHUNKS = 2_000_000, 20_000
from knowledge.samples import sample_policies  # noqa: E402
from storage import repositories as repo  # noqa: E402

TITLE = "某省紧密型医疗联合体建设运行管理办法（汇编）"
SUBJECTS = ["牵头医院", "各成员单位", "基层医疗卫生机构", "医务部", "质控中心", "医联体管理委员会", "县级医院",
            "乡镇卫生院", "村卫生室", "专科联盟", "远程医疗中心", "药学部", "护理部", "信息中心"]
ACTIONS = ["应当建立", "负责完善", "定期组织开展", "统一落实", "按季度报告", "协调推进", "逐步实现", "严格执行",
           "牵头制定", "共同承担"]
OBJECTS = ["双向转诊制度", "远程会诊平台建设", "专家下沉坐诊工作", "检查检验结果互认", "药品目录衔接",
           "医疗质量同质化管理", "绩效考核办法", "人才培养计划", "家庭医生签约服务", "慢病管理随访",
           "急诊急救绿色通道", "医保支付方式改革", "信息系统互联互通", "院感防控措施"]
CONDITIONS = ["每季度至少召开一次专题会议", "按照国家和省有关规定执行", "由管委会统一协调解决",
              "所需经费由财政和医院共同承担", "纳入年度目标责任考核", "确保群众就近获得优质服务",
              "不得以任何理由推诿患者", "相关情况报县级卫生健康行政部门备案"]
CN = "零一二三四五六七八九"


def cn_number(n: int) -> str:
    if n < 10:
        return CN[n]
    if n < 20:
        return "十" + (CN[n % 10] if n % 10 else "")
    if n < 100:
        return CN[n // 10] + "十" + (CN[n % 10] if n % 10 else "")
    return str(n)


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)}{rng.choice(ACTIONS)}{rng.choice(OBJECTS)}，{rng.choice(CONDITIONS)}。"


def generate_policy_lines(chars: int, seed: int = 7) -> list[str]:
    """A policy-like text: chapters, numbered articles of 1-6 sentences, items, some tables."""
    rng = random.Random(seed)
    lines = [TITLE]
    total = 0
    chapter = article = 0
    while total < chars:
        chapter += 1
        lines.append(f"第{cn_number(chapter)}章 {rng.choice(OBJECTS)}")
        for _ in range(rng.randint(8, 20)):
            article += 1
            body = "".join(sentence(rng) for _ in range(rng.randint(1, 6)))
            lines.append(f"第{article}条 {body}")
            if rng.random() < 0.2:
                for item in range(1, rng.randint(2, 5)):
                    lines.append(f"（{cn_number(item)}）{sentence(rng)}")
            total = sum(len(line) for line in lines)
            if total >= chars:
                break
    return lines


def as_docx(lines: list[str]) -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(lines[0], style="Title")
    for line in lines[1:]:
        document.add_paragraph(line)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def stats(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.5), 1), "p95_ms": round(percentile(ms, 0.95), 1),
            "max_ms": round(max(ms), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars", type=int, default=min(1_700_000, MAX_DOCUMENT_CHARS))
    parser.add_argument("--format", choices=["txt", "docx"], default="txt")
    parser.add_argument("--before-seconds", type=float, default=20.0)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between two questions")
    args = parser.parse_args()

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = build_context(Settings(_env_file=None, data_dir=Path(tmp) / "var"))
        kb = ctx.kb
        started = time.perf_counter()
        for path, consortium in sample_policies():
            kb.ingest_path(path, consortium=consortium)
        out["ingest_5_samples_s"] = round(time.perf_counter() - started, 2)

        lines = generate_policy_lines(args.chars)
        data = ("\n".join(lines) + "\n").encode() if args.format == "txt" else as_docx(lines)
        file_name = f"{TITLE}.{args.format}"
        out["big_file"] = {"format": args.format, "mb": round(len(data) / 1024 / 1024, 2),
                           "chars": sum(len(x) for x in lines), "lines": len(lines),
                           "limits": {"chars": MAX_DOCUMENT_CHARS, "chunks": MAX_DOCUMENT_CHUNKS}}

        questions = [(q["question"], q.get("consortium")) for q in load_questions(REPO / "tests/data/dev.jsonl")]
        phase = {"name": "before"}
        latencies: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        writes: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        stop = threading.Event()

        def asker() -> None:
            i = 0
            while not stop.is_set():
                question, consortium = questions[i % len(questions)]
                current = phase["name"]
                t0 = time.perf_counter()
                kb.ask(question, consortium=consortium)
                latencies[current].append((time.perf_counter() - t0) * 1000)
                i += 1
                time.sleep(args.pause)

        def writer() -> None:
            n = 0
            while not stop.is_set():
                current = phase["name"]
                t0 = time.perf_counter()
                with ctx.sessions.begin() as session:
                    repo.claim_update(session, "wecom", f"bench-{n}")
                writes[current].append((time.perf_counter() - t0) * 1000)
                n += 1
                time.sleep(0.05)

        threads = [threading.Thread(target=asker, daemon=True), threading.Thread(target=writer, daemon=True)]
        for thread in threads:
            thread.start()
        time.sleep(args.before_seconds)

        phase["name"] = "during"
        started = time.perf_counter()
        result = kb.ingest_bytes(file_name, data, uploaded_by="bench", consortium="songyuan")
        out["ingest_big_file_s"] = round(time.perf_counter() - started, 1)
        out["ingest_result"] = {"status": result.status, "version": result.version, "chunks": result.chunk_count}
        phase["name"] = "after"
        time.sleep(5)
        stop.set()
        for thread in threads:
            thread.join(30)

        out["ask_latency"] = {name: stats(values) for name, values in latencies.items()}
        out["db_write_latency"] = {name: stats(values) for name, values in writes.items()}
        out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        ctx.close()
    print(json.dumps(out, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
