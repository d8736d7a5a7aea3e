"""Per-file resource limits, and indexing that does not stop the assistant.

A policy file an admin sends must never make the assistant slow or unavailable for everyone
else: oversized, inflated or pathological files are refused early (while reading, before any
clause is built or embedded) with a clear reason, the index stays as it was, and while a large
legitimate file is indexed, answers and other database writes keep flowing.

Time bounds are generous (a loaded 2-core machine); without the limits these files take many
minutes and gigabytes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from knowledge.extract_types import IngestError
from knowledge.samples import SAMPLES_DIR, sample_policies
from tests.fixtures_docs import _pdf_from_objects, _stream, make_docx

REPO = Path(__file__).resolve().parents[1]
DEYANG = "德阳市人民医院城市医疗集团工作制度"
DEYANG_QUESTION = "联席会议多久开一次？"
DEYANG_ANSWER = "每年至少组织一次联席会议"

# --------------------------------------------------------------------------------------------
# pathological files


def _docx_parts() -> tuple[bytes, bytes, bytes]:
    """A real DOCX, and its document.xml split around the body content."""
    base = make_docx(paragraphs_before=["占位"])
    xml = zipfile.ZipFile(io.BytesIO(base)).read("word/document.xml")
    head, rest = xml.split(b"<w:body>", 1)
    tail = rest[rest.index(b"<w:sectPr") :]
    return base, head + b"<w:body>", tail


def _docx_with_document_xml(write_body) -> bytes:
    """Copy a DOCX, streaming a new document.xml whose body ``write_body(out)`` writes."""
    base, head, tail = _docx_parts()
    src = zipfile.ZipFile(io.BytesIO(base))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename == "word/document.xml":
                member = zipfile.ZipInfo("word/document.xml")
                member.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(member, "w", force_zip64=True) as out:
                    out.write(head)
                    write_body(out)
                    out.write(tail)
            else:
                dst.writestr(info, src.read(info))
    return buf.getvalue()


def tiny_paragraphs_docx(count: int = 300_000) -> bytes:
    """~1 MB of DOCX whose every paragraph is a numbered clause: 300,000 chunks once indexed."""

    clause = "、例会每月召开，纪要存档。".encode()

    def body(out):
        for start in range(0, count, 10_000):
            out.write(b"".join(
                b"<w:p><w:r><w:t>%d%s</w:t></w:r></w:p>" % (n % 99 + 1, clause)
                for n in range(start, min(count, start + 10_000))
            ))

    return _docx_with_document_xml(body)


def zip_bomb_docx(megabytes: int = 300) -> bytes:
    """A few hundred KB that unpack to ``megabytes`` MB of document.xml."""

    def body(out):
        out.write(b"<w:p><w:r><w:t>")
        block = b"a" * (1024 * 1024)
        for _ in range(megabytes):
            out.write(block)
        out.write(b"</w:t></w:r></w:p>")

    return _docx_with_document_xml(body)


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"


def many_pages_pdf(pages: int = 5_000, *, declared: int | None = None) -> bytes:
    """A PDF of ``pages`` pages sharing one small content stream (``declared`` may lie)."""
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages if declared is None else declared),
        _FONT,
        _stream(b"BT /F1 12 Tf 72 720 Td (Article 1. The green channel for referrals is open.) Tj ET"),
    ]
    objects += [_PAGE % 4 for _ in range(pages)]
    return _pdf_from_objects(objects)


def huge_streams_pdf(megabytes_per_page: int, pages: int = 1) -> bytes:
    """Pages whose compressed content streams inflate to ``megabytes_per_page`` MB of text operators."""
    op = b"BT /F1 12 Tf 72 720 Td (Article text of the referral policy) Tj ET\n"
    packed = zlib.compress(op * (megabytes_per_page * 1024 * 1024 // len(op)), 9)
    kids = b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)]
    font = 3 + 2 * pages
    for i in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> "
            b"/Contents %d 0 R >>" % (font, 4 + 2 * i)
        )
        objects.append(_stream(packed, b"/Filter /FlateDecode "))
    objects.append(_FONT)
    return _pdf_from_objects(objects)


def long_txt(chars: int = 3_000_000) -> bytes:
    line = "各成员单位应当按照本方案要求落实双向转诊和远程会诊工作并定期报告进展。\n"
    return (line * (chars // len(line) + 1)).encode()


def many_lines_txt(lines: int = 150_000) -> bytes:
    return "".join(f"第{n}条。\n" for n in range(lines)).encode()


def clauses_txt(title: str, clauses: int, *, body: str = "联络员例会每月召开一次，由牵头医院医务部组织，通报双向转诊与远程会诊工作进展") -> bytes:
    lines = [title]
    for n in range(1, clauses + 1):
        lines.append(f"第{n}条 {body}（第{n}项）。")
    return ("\n".join(lines) + "\n").encode()


PATHOLOGICAL = {
    "docx-300k-tiny-paragraphs": ("条款.docx", tiny_paragraphs_docx, "段落"),
    "docx-zip-bomb": ("炸弹.docx", zip_bomb_docx, "解压后"),
    "pdf-5000-pages": ("汇编.pdf", many_pages_pdf, "页"),
    "pdf-page-count-lies": ("汇编.pdf", lambda: many_pages_pdf(5_000, declared=1), "页"),
    "pdf-huge-stream": ("巨流.pdf", lambda: huge_streams_pdf(60), "数据"),
    "pdf-many-large-streams": ("巨流.pdf", lambda: huge_streams_pdf(4, pages=40), "数据"),
    "txt-3m-characters": ("长文.txt", long_txt, "字"),
    "txt-150k-lines": ("长文.txt", many_lines_txt, "行"),
}


# --------------------------------------------------------------------------------------------
# helpers


def ingest_within(kb, seconds: float, *args, **kwargs):
    """Run ``kb.ingest_bytes`` and fail if it has not finished after ``seconds``."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = kb.ingest_bytes(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    started = time.perf_counter()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still indexing after {seconds} s"
    box["seconds"] = time.perf_counter() - started
    return box


def registry(kb) -> list[tuple[str, int, int]]:
    return [(d.title, d.version, d.chunk_count) for d in kb.documents()]


@pytest.fixture
def deyang_kb(fresh_context):
    kb = fresh_context.kb
    kb.ingest_path(SAMPLES_DIR / f"{DEYANG}.txt", consortium="deyang")
    return kb


# --------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("case", PATHOLOGICAL)
def test_pathological_file_is_refused_quickly_and_changes_nothing(deyang_kb, case):
    kb = deyang_kb
    file_name, build, word_zh = PATHOLOGICAL[case]
    data = build()
    before = registry(kb)
    vectors_before = kb._vectors.ids()

    box = ingest_within(kb, 60, file_name, data, uploaded_by="admin_dy", consortium="deyang")

    error = box.get("error")
    assert isinstance(error, IngestError), f"accepted: {box.get('result')!r}"
    assert error.file_name == file_name
    assert "limit" in error.reason and word_zh in error.reason_zh and "上限" in error.reason_zh
    assert "\n" not in error.reason and "\n" not in error.reason_zh
    assert box["seconds"] < 30
    assert registry(kb) == before
    assert kb._vectors.ids() == vectors_before
    assert DEYANG_ANSWER in kb.ask(DEYANG_QUESTION).text


def test_real_policies_are_far_below_the_limits(fresh_context):
    from knowledge.extract_types import MAX_DOCUMENT_CHARS, MAX_DOCUMENT_CHUNKS

    total_chunks = 0
    for path, consortium in sample_policies():
        result = fresh_context.kb.ingest_path(path, consortium=consortium)
        total_chunks += result.chunk_count
        assert len(path.read_text(encoding="utf-8")) * 50 < MAX_DOCUMENT_CHARS
    assert total_chunks * 20 < MAX_DOCUMENT_CHUNKS


class CountingEmbedder:
    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.texts = 0

    def encode(self, texts):
        self.texts += len(texts)
        return self.inner.encode(texts)


def test_limits_are_constructor_arguments_and_trip_before_anything_is_embedded(fresh_context):
    from knowledge.service import KnowledgeBase

    base = fresh_context.kb
    embedder = CountingEmbedder(base._embedder)
    kb = KnowledgeBase(fresh_context.sessions, embedder, base._vectors, max_document_chunks=40, max_document_chars=5_000)

    with pytest.raises(IngestError) as err:
        kb.ingest_bytes("联络员制度.txt", clauses_txt("联络员制度", 60))
    assert "40" in err.value.reason and "40" in err.value.reason_zh and "上限" in err.value.reason_zh
    with pytest.raises(IngestError) as err:
        kb.ingest_bytes("联络员制度.txt", clauses_txt("联络员制度", 30, body="会议" * 200))
    assert "5,000" in err.value.reason and "字" in err.value.reason_zh
    assert embedder.texts == 0 and kb.documents() == []

    result = kb.ingest_bytes("联络员制度.txt", clauses_txt("联络员制度", 30))
    assert result.chunk_count == 30 and embedder.texts >= 30


def test_a_file_larger_than_the_upload_limit_is_refused_before_it_is_read(fresh_context, tmp_path):
    from knowledge.service import KnowledgeBase

    base = fresh_context.kb
    kb = KnowledgeBase(fresh_context.sessions, base._embedder, base._vectors, max_upload_bytes=1024 * 1024)
    big = tmp_path / "大文件.txt"
    with big.open("wb") as out:
        out.seek(3 * 1024 * 1024)
        out.write(b"\n")
    with pytest.raises(IngestError) as err:
        kb.ingest_path(big)
    assert err.value.file_name == "大文件.txt" and "1 MB" in err.value.reason_zh


_MEMORY_PROBE = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from tests.conftest import make_settings
from bot.context import build_context
from knowledge.extract_types import IngestError
from knowledge.samples import SAMPLES_DIR
import tests.test_ingest_limits as t

ctx = build_context(make_settings(Path(tempfile.mkdtemp()) / "var"))
ctx.kb.ingest_path(SAMPLES_DIR / "德阳市人民医院城市医疗集团工作制度.txt")
ctx.kb.ask("联席会议多久开一次？")
cases = sys.argv[1:]
built = {case: t.PATHOLOGICAL[case][1]() for case in cases}
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = {}
for case in cases:
    started = time.perf_counter()
    try:
        ctx.kb.ingest_bytes(t.PATHOLOGICAL[case][0], built[case])
        report[case] = "accepted"
    except IngestError as exc:
        report[case] = exc.reason
    report[case + ".s"] = round(time.perf_counter() - started, 2)
report["growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
print(json.dumps(report))
"""


def test_memory_stays_bounded_while_refusing_inflated_files(tmp_path):
    cases = ["docx-300k-tiny-paragraphs", "docx-zip-bomb", "pdf-huge-stream", "txt-150k-lines"]
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, *cases], cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for case in cases:
        assert "limit" in report[case], report
    assert report["growth_mb"] < 400, report


# --------------------------------------------------------------------------------------------
# indexing a large file while the assistant keeps working


class HashEmbedder:
    """Instant 8-dimensional vectors: lets a test index ~15,000 clauses in seconds."""

    name = "test-hash8"
    dim = 8

    def encode(self, texts):
        rows = np.array([[(hash((t, i)) % 997) + 1 for i in range(self.dim)] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_database_writes_and_answers_keep_flowing_while_a_large_policy_is_indexed(fresh_context, tmp_path):
    """Only the final swap is a write transaction, and questions never wait for the new snapshot
    to be loaded: WeCom inbox/outbox writes and answers keep flowing during the whole ingest."""
    from knowledge.service import KnowledgeBase
    from knowledge.vector_index import ChromaIndex
    from storage import repositories as repo

    kb = KnowledgeBase(fresh_context.sessions, HashEmbedder(), ChromaIndex(path=tmp_path / "chroma8", collection="hash8"))
    kb.ingest_path(SAMPLES_DIR / f"{DEYANG}.txt", consortium="deyang")
    big = clauses_txt("大型医联体运行管理规定", 15_000)
    done = threading.Event()
    waits: list[float] = []
    answers: list[float] = []

    def writer() -> None:
        n = 0
        while not done.is_set():
            started = time.perf_counter()
            with fresh_context.sessions.begin() as session:
                repo.claim_update(session, "wecom", f"msg-{n}")
            waits.append(time.perf_counter() - started)
            n += 1
            time.sleep(0.02)

    def asker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            kb.ask(DEYANG_QUESTION, consortium="deyang")
            answers.append(time.perf_counter() - started)
            time.sleep(0.02)

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=asker, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        box = ingest_within(kb, 240, "大型医联体运行管理规定.txt", big)
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert "result" in box, box.get("error")
    assert box["result"].chunk_count == 15_000
    assert len(waits) > 20 and len(answers) > 20
    assert max(waits) < 2.5, f"a write waited {max(waits):.1f} s (ingest took {box['seconds']:.1f} s)"
    assert max(answers) < 2.5, f"a question waited {max(answers):.1f} s (ingest took {box['seconds']:.1f} s)"
    assert DEYANG_ANSWER in kb.ask(DEYANG_QUESTION, consortium="deyang").text


class WatchedEmbedder:
    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.bulk = threading.Event()

    def encode(self, texts):
        if len(texts) > 1:
            self.bulk.set()
        return self.inner.encode(texts)


def test_answers_keep_flowing_while_a_large_policy_is_embedded(fresh_context):
    from knowledge.service import KnowledgeBase

    base = fresh_context.kb
    base.ingest_path(SAMPLES_DIR / f"{DEYANG}.txt", consortium="deyang")
    embedder = WatchedEmbedder(base._embedder)
    kb = KnowledgeBase(fresh_context.sessions, embedder, base._vectors)
    assert DEYANG_ANSWER in kb.ask(DEYANG_QUESTION).text  # warm

    box: dict = {}
    ingest = threading.Thread(
        target=lambda: box.update(result=kb.ingest_bytes("大型规定.txt", clauses_txt("大型规定", 2_000))), daemon=True
    )
    ingest.start()
    assert embedder.bulk.wait(120), "embedding never started"
    latencies = []
    for _ in range(3):
        started = time.perf_counter()
        answer = kb.ask(DEYANG_QUESTION)
        latencies.append(time.perf_counter() - started)
        assert DEYANG_ANSWER in answer.text
    still_indexing = ingest.is_alive()
    ingest.join(300)
    assert box["result"].chunk_count == 2_000
    assert still_indexing, "the ingest finished before the questions: the test proves nothing"
    assert max(latencies) < 4, f"answers took {[round(x, 2) for x in latencies]} s during the ingest"


# --------------------------------------------------------------------------------------------
# `yilian ingest` on bad files: one clear line each, exit code 1


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    from tests.fixtures_docs import make_encrypted_pdf, make_text_pdf

    pdf = make_text_pdf([["Two-way referral measures", "Article 1. The green channel is open to all members."]])
    docx = make_docx(paragraphs_before=["一、总则", "（一）例会。联络员例会每月召开一次。"])
    files = {
        "truncated.pdf": pdf[: len(pdf) // 2],
        "not-a-pdf.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 20,
        "encrypted.pdf": make_encrypted_pdf(pdf, "secret"),
        "corrupt.docx": docx[: len(docx) // 2],
        "empty.txt": b"",
        "program.exe": b"MZ\x90\x00" * 100,
        "binary.txt": bytes(range(256)) * 200,
        "too-large.txt": "各成员单位按要求落实。\n".encode() * 200_000,
        "bomb.docx": zip_bomb_docx(200),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    paths["missing.pdf"] = tmp_path / "missing.pdf"
    return paths


@pytest.fixture
def cli(tmp_path):
    from tests.conftest import cli_runner

    return cli_runner(tmp_path / "var", YILIAN_LOG_LEVEL="INFO", YILIAN_MAX_UPLOAD_BYTES="2000000")


def test_cli_reports_each_bad_file_on_one_line_and_exits_1(cli, tmp_path):
    bad = _bad_files(tmp_path)
    for name, path in bad.items():
        result = cli("ingest", str(path))
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1, (name, result.output)
        assert "Traceback" not in result.output, result.output
        assert len(lines) == 1 and lines[0].startswith(f"✗ {name}: "), (name, result.output)
        assert "（" in lines[0] or "(" in lines[0]  # the reason in English and Chinese
    assert "(no documents)" in cli("docs", "list").output


def test_cli_indexes_the_good_files_and_names_every_bad_one(cli, tmp_path):
    bad = _bad_files(tmp_path)
    good = SAMPLES_DIR / f"{DEYANG}.txt"
    result = cli("ingest", str(bad["truncated.pdf"]), str(good), str(bad["corrupt.docx"]), str(bad["too-large.txt"]))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    for name in ("truncated.pdf", "corrupt.docx", "too-large.txt"):
        assert len([line for line in result.output.splitlines() if name in line]) == 1, result.output
    assert f"✓ added     {DEYANG}" in result.output
    assert f"{DEYANG}\tv1" in cli("docs", "list").output


def test_yilian_ingest_of_a_truncated_pdf_prints_one_line_and_exits_1(tmp_path):
    """The real command in its own process, with the logging set-up it has in production."""
    bad = _bad_files(tmp_path)["truncated.pdf"]
    env = {**os.environ, "YILIAN_DATA_DIR": str(tmp_path / "var"), "YILIAN_LOG_LEVEL": "INFO"}
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "ingest", str(bad)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=180,
    )
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert output == [
        "✗ truncated.pdf: file is damaged or not a real PDF (文件已损坏或不是有效的 PDF 文件，无法读取)"
    ], output
