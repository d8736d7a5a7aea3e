"""``GET /metrics``: what an operator scrapes, summed over the workers of a host, with no patient
data, user or question in it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from bot.server import _is_private, create_app
from web_support import Browser

pytest_plugins = ("engine_support", "web_support")

REPO = Path(__file__).resolve().parents[1]


def _value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the exposition text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(\{{{re.escape(want)}\}})? ([0-9.e+-]+)$" if want else rf"^{re.escape(name)} ([0-9.e+-]+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.groups()[-1])
    return 0.0


async def test_answers_and_latency_are_counted_without_personal_data(demo_client):
    before = await (await demo_client.get("/metrics")).text()
    browser = Browser(demo_client)
    await browser.demo_login("dr_wang_sy")
    status, _ = await browser.say(text="联席会议多久开一次？")
    assert status == 200
    status, _ = await browser.say(text="医院停车场收费标准是什么？")  # refused: not in any policy
    assert status == 200
    res = await demo_client.get("/metrics")
    assert res.status == 200 and res.content_type == "text/plain"
    text = await res.text()
    answered = _value(text, "yilian_answers_total", language="zh", outcome="answered")
    refused = _value(text, "yilian_answers_total", language="zh", outcome="refused")
    assert answered - _value(before, "yilian_answers_total", language="zh", outcome="answered") >= 1
    assert refused - _value(before, "yilian_answers_total", language="zh", outcome="refused") >= 1
    assert _value(text, "yilian_answer_seconds_count") >= 2
    assert "yilian_answer_seconds_bucket" in text
    # shared state is read from the database, the same on every worker
    assert "# TYPE yilian_outbox_depth gauge" in text
    assert "# TYPE yilian_scheduler_lease_held gauge" in text
    # no person, chat or question text in the labels
    for leak in ("dr_wang_sy", "联席会议", "停车场", "王"):
        assert leak not in text


async def test_metrics_are_for_private_networks_only(engine_ctx, engine):
    assert _is_private("127.0.0.1") and _is_private("10.1.2.3") and _is_private("::1")
    assert not _is_private("8.8.8.8") and not _is_private(None) and not _is_private("bogus")
    engine_ctx.settings.metrics_public = False
    async with TestClient(TestServer(create_app(engine_ctx, engine, web_chat=False), host="127.0.0.1")) as c:
        assert (await c.get("/metrics")).status == 200  # the test client is loopback


def test_counters_of_several_worker_processes_are_summed(tmp_path):
    """prometheus-client multiprocess mode: two workers count, a third one's scrape sums them."""
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared), "YILIAN_DATA_DIR": str(tmp_path / "var")}
    worker = textwrap.dedent("""
        import sys
        from bot import metrics
        metrics.MESSAGES_IN.labels("wecom").inc(int(sys.argv[1]))
        metrics.ANSWER_SECONDS.observe(0.01)
    """)
    for n in ("3", "4"):
        subprocess.run([sys.executable, "-c", worker, n], env=env, cwd=REPO, check=True)
    scrape = textwrap.dedent("""
        from bot.config import Settings
        from bot.context import build_context
        from bot import metrics
        ctx = build_context(Settings())
        print(metrics.render(ctx.sessions)[0].decode())
    """)
    out = subprocess.run([sys.executable, "-c", scrape], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    assert _value(out, "yilian_messages_in_total", channel="wecom") == 7
    assert _value(out, "yilian_answer_seconds_count") == 2
