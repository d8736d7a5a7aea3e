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


@pytest.fixture
def chroma_server(tmp_path):
    if not CHROMA.exists() and shutil.which("chroma") is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("chroma server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


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
