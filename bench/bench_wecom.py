"""WeCom channel figures, on loopback only.

1. Callback acknowledgement under a burst: 200 callbacks (policy questions from 200 users), each
   encrypted and signed as WeCom does, written at once on 200 open connections by a separate
   process (raw HTTP/1.1, so that the load generator's own cost stays out of the figures) to the
   real server application (``bot.server.create_app`` + the WeCom channel, real engine, sample policies);
   p50/p95/p99/max of the time to the empty 200. Also how long until all 200 answers had reached
   the fake WeCom API's ``message/send``.
2. End to end for one policy question at a time: from posting the callback to the answer arriving
   at ``message/send``; p50/p95 over a bounded number of questions.

Run: ``.venv/bin/python bench/bench_wecom.py [--burst 200] [--questions 40]``. Prints figures and
asserts nothing (targets from issue 4: ack p99 < 100 ms, end-to-end p95 < 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from tests.wecom_support import FakeWeCom, WeComSender, text_xml, wecom_settings  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _raw_request(host: str, port: int, query: dict[str, str], body: str) -> bytes:
    data = body.encode("utf-8")
    head = (f"POST /wecom/callback?{urlencode(query)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {len(data)}\r\n\r\n")
    return head.encode("ascii") + data


def _burst_client(host: str, port: int, requests: list[bytes], out: "mp.Queue") -> None:
    """Runs in its own process, like WeCom's many senders: one keep-alive connection per callback,
    all opened beforehand; the pre-built requests are written at once and each response timed from
    its own write."""

    async def main() -> list[tuple[int, float]]:
        conns = [await asyncio.open_connection(host, port) for _ in requests]

        async def read_response(reader: asyncio.StreamReader) -> int:
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            return int(status_line.split()[1])

        async def one(conn, request: bytes, started: float) -> tuple[int, float]:
            status = await read_response(conn[0])
            return status, time.perf_counter() - started

        out.put(time.time())
        tasks = []
        for conn, request in zip(conns, requests):
            started = time.perf_counter()
            conn[1].write(request)
            tasks.append(asyncio.ensure_future(one(conn, request, started)))
        results = await asyncio.gather(*tasks)
        for _reader, writer in conns:
            writer.close()
        return results

    out.put(asyncio.run(main()))


def questions() -> list[str]:
    rows = [json.loads(line) for line in (REPO / "tests/data/dev.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [r["question"] for r in rows if r.get("answerable", True)]


async def run(burst: int, sequential: int) -> None:
    from bot.context import build_context
    from bot.server import create_app
    from bot.wecom import WECOM_CHANNEL_KEY, setup_wecom
    from bot.channels import ChannelPlugin
    from handlers.engine import ConversationEngine
    from knowledge.samples import sample_policies
    from aiohttp import web

    logging.basicConfig(level=logging.ERROR)
    fake = await FakeWeCom().start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-wecom-"))
    ctx = build_context(wecom_settings(tmp / "var", fake.url))
    t0 = time.perf_counter()
    for path, consortium in sample_policies():
        ctx.kb.ingest_path(path, uploaded_by="bench", consortium=consortium)
    print(f"setup: sample policies indexed in {time.perf_counter() - t0:.1f}s")
    engine = ConversationEngine(ctx)
    engine.warm_up()
    plugin = ChannelPlugin(name="wecom", enabled=lambda s: True,
                           setup_routes=lambda app, c, e: setup_wecom(app, c, e) and None)
    app = create_app(ctx, engine, channels=[plugin], web_chat=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    channel = app[WECOM_CHANNEL_KEY]
    wecom = WeComSender(url)
    qs = questions()
    msg_id = iter(range(10**15, 10**16))

    # -- 1. burst ------------------------------------------------------------------------------
    host, port = "127.0.0.1", site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    requests = []
    for i in range(burst):
        encrypted, body = wecom.envelope(text_xml(f"bench{i:04d}", qs[i % len(qs)], next(msg_id)))
        requests.append(_raw_request(host, port, wecom.signed_query(encrypted), body))
    out: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_burst_client, args=(host, port, requests, out))
    proc.start()
    fired_at = await asyncio.to_thread(out.get, True, 60)
    results = await asyncio.to_thread(out.get, True, 120)
    proc.join(10)
    acks = [s for status, s in results if status == 200]
    await fake.wait_for(lambda: len({d.touser for d in fake.delivered if d.touser.startswith("bench")}) >= burst,
                        timeout=300)
    all_delivered = max(d.at for d in fake.delivered) - fired_at
    print(f"\ncallback acknowledgement, burst of {burst} concurrent signed callbacks (loopback):")
    print(f"  {len(acks)}/{len(results)} answered 200;  p50 {percentile(acks, 50) * 1000:.1f} ms  "
          f"p95 {percentile(acks, 95) * 1000:.1f} ms  p99 {percentile(acks, 99) * 1000:.1f} ms  "
          f"max {max(acks) * 1000:.1f} ms   (target p99 < 100 ms)")
    print(f"  all {burst} answers at message/send {all_delivered:.1f}s after the burst "
          f"({burst / all_delivered:.0f} answers/s)")

    # -- 2. end to end, one question at a time ----------------------------------------------------
    latencies = []
    async with aiohttp.ClientSession() as http:
        for i in range(sequential):
            user = f"e2e{i:04d}"
            xml = text_xml(user, qs[i % len(qs)], next(msg_id))
            started = time.time()
            status, _body, _s = await wecom.post(http, xml)
            assert status == 200
            await fake.wait_for(lambda: bool(fake.to(user)), timeout=30)
            latencies.append(fake.to(user)[0].at - started)
    print(f"\nend to end, callback → message/send, {sequential} policy questions one at a time:")
    print(f"  p50 {percentile(latencies, 50) * 1000:.0f} ms  p95 {percentile(latencies, 95) * 1000:.0f} ms  "
          f"max {max(latencies) * 1000:.0f} ms   (target p95 < 1 s)")

    await channel.idle()
    await runner.cleanup()
    await fake.close()
    ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--questions", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(run(min(args.burst, 2000), min(args.questions, 500)))


if __name__ == "__main__":
    main()
