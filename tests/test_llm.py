"""LLM synthesis through LangChain against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from knowledge.llm import LlmSynthesizer, checked_citations


class FakeOpenAI:
    """Answers /v1/chat/completions with a scripted reply, or fails as told; records requests."""

    def __init__(self) -> None:
        self.reply = "联席会议原则上每年至少组织一次 [1]。"
        self.status = 200
        self.delay = 0.0
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                time.sleep(fake.delay)
                if fake.status != 200:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "boom"}}')
                    return
                payload = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": fake.reply}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(payload, ensure_ascii=False).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def fake_llm():
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def extractive(app_context):
    answer = app_context.kb.ask("联席会议多久开一次？")
    assert not answer.refused
    return answer


def test_grounded_llm_answer_with_checked_citations(fake_llm, extractive):
    synth = LlmSynthesizer(fake_llm.base_url, "policy-model", "sk-test", timeout_s=5)
    answer = synth.improve(extractive)
    assert answer.synthesized
    assert answer.text.startswith("联席会议原则上每年至少组织一次 [1]。")
    assert "出处：\n[1] 《德阳市人民医院城市医疗集团工作制度》 › 3.标准 › 3.3 联席会议" in answer.text
    request = fake_llm.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    prompt = request["body"]["messages"][1]["content"]
    assert "每年至少组织一次联席会议" in prompt  # the model only sees retrieved clauses


@pytest.mark.parametrize(
    "reply",
    [
        "联席会议每月召开一次 [7]。",  # cites a clause it was never given
        "联席会议每月召开一次。",  # no citation at all
        "NOT_FOUND",
    ],
)
def test_unchecked_llm_answers_fall_back_to_the_extractive_answer(fake_llm, extractive, reply):
    fake_llm.reply = reply
    answer = LlmSynthesizer(fake_llm.base_url, "m", None, timeout_s=5).improve(extractive)
    assert answer is extractive
    assert "每月" not in answer.text


def test_server_error_and_timeout_fall_back(fake_llm, extractive):
    fake_llm.status = 500
    assert LlmSynthesizer(fake_llm.base_url, "m", None, timeout_s=5).improve(extractive) is extractive
    fake_llm.status, fake_llm.delay = 200, 2.0
    started = time.perf_counter()
    assert LlmSynthesizer(fake_llm.base_url, "m", None, timeout_s=0.5).improve(extractive) is extractive
    assert time.perf_counter() - started < 1.9


def test_refusals_never_reach_the_llm(fake_llm, app_context):
    refused = app_context.kb.ask("医院停车场收费标准是什么？")
    assert LlmSynthesizer(fake_llm.base_url, "m", None, timeout_s=5).improve(refused) is refused
    assert fake_llm.requests == []


def test_citation_check():
    assert checked_citations("A [1] B [2]", 2) == [1, 2]
    assert checked_citations("A [3]", 2) == []
    assert checked_citations("no citation", 2) == []


def test_configured_llm_is_used_by_ask(fake_llm, app_context):
    from bot.context import build_context
    from tests.conftest import make_settings

    ctx = build_context(
        make_settings(app_context.settings.data_dir, llm_base_url=fake_llm.base_url, llm_model="m", llm_timeout_s=5)
    )
    try:
        answer = ctx.kb.ask("联席会议多久开一次？")
        assert answer.synthesized and "[1]" in answer.text
    finally:
        ctx.close()
