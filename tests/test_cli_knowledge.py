"""The knowledge commands' exact interface: other tooling relies on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from knowledge.samples import SAMPLES_DIR
from tests.conftest import DATA, cli_runner


@pytest.fixture
def cli(tmp_path):
    return cli_runner(tmp_path / "var", YILIAN_LOG_LEVEL="WARNING")


def test_ingest_list_ask_remove(cli, tmp_path):
    deyang = SAMPLES_DIR / "德阳市人民医院城市医疗集团工作制度.txt"
    result = cli("ingest", str(deyang))
    assert result.exit_code == 0
    assert "added" in result.output and "德阳市人民医院城市医疗集团工作制度" in result.output
    assert "unchanged" in cli("ingest", str(deyang)).output

    listing = json.loads(cli("docs", "list", "--json").output)
    assert [d["title"] for d in listing] == ["德阳市人民医院城市医疗集团工作制度"]
    assert listing[0]["version"] == 1 and listing[0]["chunks"] > 10

    answer = json.loads(cli("ask", "联席会议多久开一次？", "--json").output)
    assert answer["refused"] is False
    assert "每年至少组织一次联席会议" in answer["answer"]
    assert answer["citations"][0].startswith("《德阳市人民医院城市医疗集团工作制度》")

    assert cli("docs", "remove", "德阳市人民医院城市医疗集团工作制度").exit_code == 0
    assert cli("docs", "remove", "德阳市人民医院城市医疗集团工作制度").exit_code == 1
    assert "(no documents)" in cli("docs", "list").output


def test_bad_files_are_reported_by_name_and_exit_nonzero(cli, tmp_path):
    bad = tmp_path / "扫描件.pdf"
    bad.write_bytes(b"not a pdf at all")
    empty = tmp_path / "空文件.txt"
    empty.write_bytes(b"")
    result = cli("ingest", str(bad), str(empty))
    assert result.exit_code == 1
    assert "扫描件.pdf" in result.output and "空文件.txt" in result.output


def test_eval_prints_one_json_object_and_writes_details(cli, tmp_path):
    for path in sorted(SAMPLES_DIR.glob("*.txt")):
        cli("ingest", str(path))
    details = tmp_path / "details.jsonl"
    result = cli("eval", "--questions", str(DATA / "dev.jsonl"), "--details", str(details))
    summary = json.loads(result.output)
    assert set(summary) == {
        "n", "hit_at_1", "hit_at_5", "mrr", "answer_accuracy", "refusal_rate", "false_refusal_rate",
        "max_answer_bytes", "p50_ms", "p95_ms",
    }
    assert summary["n"] == 28
    rows = [json.loads(line) for line in details.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 28
    assert set(rows[0]) == {"id", "question", "passages", "answer", "refused", "ms"}
    assert len(rows[0]["passages"]) == 10
    unanswerable = next(r for r in rows if r["id"] == "du1")
    assert unanswerable["refused"] is True


def test_reindex_rebuilds_a_lost_vector_store_from_the_database(cli, tmp_path):
    from bot.context import build_context
    from tests.conftest import make_settings

    deyang = SAMPLES_DIR / "德阳市人民医院城市医疗集团工作制度.txt"
    assert cli("ingest", str(deyang)).exit_code == 0
    ctx = build_context(make_settings(tmp_path / "var"))
    try:
        vectors = ctx.kb._vectors
        vectors.delete(sorted(vectors.ids()))  # the vector store is lost; the database is not
        vectors.upsert(["orphan-1"], np.ones((1, 512), dtype=np.float32), [{"document": "gone"}])
        assert not any(h.dense > 0 for h in ctx.kb.retrieve("联席会议多久开一次？"))
        result = cli("reindex")
        assert result.exit_code == 0, result.output
        live = {c.id for c in ctx.kb.snapshot().chunks}
        assert f"✓ {len(live)} chunk vectors written, 1 stale vectors deleted" in result.output
        assert vectors.ids() == live
        assert any(h.dense > 0 for h in ctx.kb.retrieve("联席会议多久开一次？"))  # dense retrieval is back
    finally:
        ctx.close()


FOLDER = {
    "1/例会制度.txt": "例会制度\n\n一、例会\n医疗集团每月召开一次例会。\n",
    "2/损坏.pdf": "%PDF-1.4 truncated",
    "3/例会制度.txt": "例会制度\n\n一、例会\n医疗集团每季度召开一次例会。\n",
    "4/联席会议制度.txt": "联席会议制度\n\n一、联席会议\n联席会议每半年召开一次。\n",
}


def _policy_folder(tmp_path):
    folder = tmp_path / "policies"
    for name, text in FOLDER.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_a_folder_is_ingested_in_order_while_files_are_prepared_in_parallel(cli, tmp_path):
    """Files are prepared two at a time but committed in the order listed: of two files with the
    same title the later one is the current version, and a bad file between them stops nothing."""
    folder = _policy_folder(tmp_path)
    result = cli("ingest", str(folder))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == ["✓", "✗", "✓", "✓"]
    assert "损坏.pdf" in lines[1]
    assert "added" in lines[0] and "updated" in lines[2] and "v2" in lines[2]

    listing = {d["title"]: d["version"] for d in json.loads(cli("docs", "list", "--json").output)}
    assert listing == {"例会制度": 2, "联席会议制度": 1}
    answer = json.loads(cli("ask", "例会多久召开一次？", "--json").output)
    assert "每季度" in answer["answer"] and "每月" not in answer["answer"]


def test_files_prepared_in_worker_processes_are_committed_as_in_one_process(tmp_path):
    """A large folder is prepared in worker processes: same order, same versions, the bad file
    reported by name with its reason, vectors as good as this process's; a second run finds
    every file unchanged without sending any to a worker."""
    from conftest import make_settings
    from bot.context import build_context
    from knowledge.extract_types import IngestError

    folder = _policy_folder(tmp_path)
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    ctx = build_context(make_settings(tmp_path / "var"))
    try:
        kb = ctx.kb
        results = list(kb.ingest_many(paths, processes=True))
        assert [p for p, _ in results] == paths
        outcomes = [r if isinstance(r, Exception) else (r.title, r.status, r.version) for _, r in results]
        assert outcomes[0] == ("例会制度", "added", 1) and outcomes[2] == ("例会制度", "updated", 2)
        assert outcomes[3] == ("联席会议制度", "added", 1)
        assert isinstance(outcomes[1], IngestError) and outcomes[1].file_name == "损坏.pdf" and outcomes[1].reason

        hits = kb.retrieve("例会多久召开一次？")
        assert "每季度" in hits[0].chunk.body and hits[0].dense > 0.3
        assert "每季度" in kb.ask("例会多久召开一次？").text

        again = [r for _, r in kb.ingest_many(paths[2:], processes=True)]
        assert [r.status for r in again] == ["unchanged", "unchanged"]
    finally:
        ctx.close()


def test_a_killed_ingest_worker_loses_no_file_and_the_rest_are_prepared_here(tmp_path, monkeypatch):
    """SIGKILL the worker processes mid-folder: the files they held are reported as not ingested
    (one clear line each), the rest are prepared in this process, and a re-run adds the missing
    ones and finds the others unchanged."""
    import os
    import signal

    import knowledge.service as service
    from conftest import make_settings
    from bot.context import build_context
    from knowledge.extract_types import IngestError

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}号制度.txt").write_text(f"第{i}号制度\n\n一、例会\n第{i}医疗集团每{i + 1}个月召开一次例会。\n",
                                              encoding="utf-8")
    paths = sorted(folder.iterdir())
    pools = []
    real_pool = service._process_pool
    monkeypatch.setattr(service, "_process_pool", lambda *a: pools.append(real_pool(*a)) or pools[-1])
    ctx = build_context(make_settings(tmp_path / "var"))
    try:
        results = []
        for path, result in ctx.kb.ingest_many(paths, processes=True):
            results.append(result)
            if len(results) == 1:
                for pid in list(pools[0]._processes):
                    os.kill(pid, signal.SIGKILL)
        assert len(pools) == 1 and len(results) == 8
        failed = [r for r in results if isinstance(r, Exception)]
        assert all(isinstance(r, IngestError) and "worker process" in r.reason for r in failed)
        assert results[-1].status == "added"  # prepared here after the pool broke

        monkeypatch.setattr(service, "_process_pool", lambda *a: pytest.fail("nothing is left to prepare"))
        statuses = [r.status for _, r in ctx.kb.ingest_many(paths[:1], processes=True)]
        assert statuses == ["unchanged"]
        again = [r for _, r in ctx.kb.ingest_many(paths, processes=False)]
        assert sorted(r.status for r in again) == sorted(["added"] * len(failed) + ["unchanged"] * (8 - len(failed)))
        assert len(ctx.kb.documents()) == 8
    finally:
        ctx.close()
