"""YILIAN_CHROMA_URL: the same knowledge base against a real Chroma server on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.context import build_context
from tests.conftest import make_settings

CHROMA = Path(sys.executable).parent / "chroma"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(path: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("chroma server did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def chroma_server(tmp_path):
    if not CHROMA.exists() and shutil.which("chroma") is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not installed")
    port = _free_port()
    proc = _start(tmp_path / "chroma-server", port)
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


def test_answers_come_from_a_chroma_server(tmp_path, chroma_server):
    ctx = build_context(make_settings(tmp_path / "var", chroma_url=chroma_server))
    try:
        kb = ctx.kb
        kb.ingest_bytes(
            "联络员会议制度.txt", "联络员会议制度\n一、会议安排\n（一）例会。联络员例会每月召开一次。\n".encode()
        )
        assert not (tmp_path / "var" / "chroma").exists(), "nothing may be written to the embedded store"
        assert len(kb._vectors.ids()) == 1
        answer = kb.ask("联络员例会多久开一次？")
        assert "每月召开一次" in answer.text
        assert answer.hits[0].dense > 0  # the vector came back from the server
    finally:
        ctx.close()


def test_with_the_chroma_server_down_answers_fall_back_to_the_lexical_index(tmp_path, caplog):
    """Issue 12: a stopped Chroma server costs the dense signal, not the answer; /readyz-style
    status says degraded, one warning is logged, and the server's return is noticed."""
    if not CHROMA.exists() and shutil.which("chroma") is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not installed")
    port = _free_port()
    proc = _start(tmp_path / "chroma-server", port)
    ctx = build_context(make_settings(tmp_path / "var", chroma_url=f"http://127.0.0.1:{port}"))
    try:
        kb = ctx.kb
        kb.ingest_bytes("联络员会议制度.txt",
                        "联络员会议制度\n一、会议安排\n（一）例会。联络员例会每月召开一次。\n".encode())
        assert kb.ask("联络员例会多久开一次？").hits[0].dense > 0 and kb.degraded is None
        _stop(proc)
        from knowledge.extract_types import IngestError

        with pytest.raises(IngestError) as refused:  # uploads wait for the vector store; nothing changes
            kb.ingest_bytes("联络员会议制度.txt", "联络员会议制度\n一、会议安排\n（一）例会。每周召开一次。\n".encode())
        assert "未改变" in refused.value.reason_zh
        for _ in range(3):
            answer = kb.ask("联络员例会多久开一次？")
            assert "每月召开一次" in answer.text and not answer.refused
            assert answer.hits[0].dense == 0.0
        assert kb.degraded and "lexical" in kb.degraded
        from handlers.engine import ConversationEngine

        engine = ConversationEngine(ctx, kb=kb)
        assert engine.degraded() == kb.degraded and engine.knowledge_status() == (True, None)  # still ready
        warnings = [r for r in caplog.records if "answering from the lexical index" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not per question
        proc = _start(tmp_path / "chroma-server", port)
        deadline = time.monotonic() + 20
        while kb.ask("联络员例会多久开一次？").hits[0].dense == 0.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kb.degraded is None
    finally:
        ctx.close()
        _stop(proc)


def test_a_worker_starting_while_the_chroma_server_is_down_still_answers(tmp_path):
    """The collection is connected on first use: down at start → lexical answers; up → dense."""
    if not CHROMA.exists() and shutil.which("chroma") is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not installed")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path / "chroma-server", port)
    first = build_context(make_settings(tmp_path / "var", chroma_url=url))
    try:
        first.kb.ingest_bytes("联络员会议制度.txt",
                              "联络员会议制度\n一、会议安排\n（一）例会。联络员例会每月召开一次。\n".encode())
    finally:
        first.close()
    _stop(proc)
    ctx = build_context(make_settings(tmp_path / "var", chroma_url=url))  # a new worker, server down
    proc = None
    try:
        answer = ctx.kb.ask("联络员例会多久开一次？")
        assert "每月召开一次" in answer.text and ctx.kb.degraded
        proc = _start(tmp_path / "chroma-server", port)
        deadline = time.monotonic() + 20
        while ctx.kb.ask("联络员例会多久开一次？").hits[0].dense == 0.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ctx.kb.degraded is None
    finally:
        ctx.close()
        if proc is not None:
            _stop(proc)
