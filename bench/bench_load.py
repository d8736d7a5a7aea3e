"""Load run: three `yilian serve` workers on one PostgreSQL, 200 members, 2,000 WeCom callbacks.

    .venv/bin/python bench/bench_load.py [--members 200] [--callbacks 2000] [--faults]

A private PostgreSQL cluster (initdb/pg_ctl, as in tests/test_multiworker.py) and a fake WeCom
API on loopback; the workers are real processes with the sample policies. Callbacks are signed
and encrypted as WeCom does, posted round robin over the workers by a pool of concurrent
connections; every tenth is delivered again to another worker (WeCom's retry). With
``--faults`` one worker is killed with SIGKILL at a third of the run and the database restarted
at two thirds (the sender retries a callback without a 200 on another worker, as WeCom does).

Prints: throughput (answers delivered per second), acknowledgement p50/p99, answer p50/p95 (from
a member's callback to their answer at ``message/send``), and the exactly-once check (stored,
answered, delivered, duplicates). Asserts nothing. The per-member rate limit is switched off:
ten questions from one member in a few seconds would be over it by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import aiohttp  # noqa: E402

from pg_cluster import PrivateCluster  # noqa: E402
from tests.test_multiworker import Worker, _cli, _env  # noqa: E402
from tests.wecom_support import FakeWeCom, WeComSender, text_xml  # noqa: E402


#: Distinct questions (each member asks them in turn), so that each answer differs from the last.
QUESTIONS = [json.loads(line)["question"] for line in (REPO / "tests/data/dev.jsonl").read_text(encoding="utf-8")
             .splitlines() if json.loads(line).get("answerable", True)][:12]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


async def run(members: int, callbacks: int, faults: bool, concurrency: int) -> dict:
    import tempfile

    from sqlalchemy import create_engine, func, select

    from storage.models import InboundMessage, OutboxMessage

    tmp = Path(tempfile.mkdtemp(prefix="yilian-load-"))
    cluster = PrivateCluster().start()
    fake = await FakeWeCom().start()
    out: dict = {"workers": 3, "members": members, "callbacks": callbacks, "faults": faults}
    try:
        # production leases and recovery period (the tests shorten them to seconds)
        production = {"YILIAN_INBOUND_LEASE_S": "30", "YILIAN_RECOVERY_INTERVAL_S": "15", "YILIAN_OUTBOX_LEASE_S": "60"}
        seed = _env(cluster, tmp / "seed", fake.url, **production)
        _cli(seed, "db", "upgrade")
        _cli(seed, "ingest", *[str(p) for p in sorted((REPO / "knowledge" / "samples").glob("*.txt"))])
        workers = [Worker(_env(cluster, tmp / f"w{i}", fake.url, **production), tmp / f"w{i}.log") for i in range(3)]
        wecom = WeComSender(workers[0].url)
        posted_at: dict[str, list[float]] = defaultdict(list)
        acks: list[float] = []
        stats: Counter = Counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            for w in workers:
                w.start()
            await asyncio.gather(*(w.ready(http) for w in workers))
            messages = []
            for n in range(callbacks):
                user = f"member{n % members:04d}"
                messages.append((user, text_xml(user, QUESTIONS[(n // members) % len(QUESTIONS)], 8_000_000 + n)))
            jobs: asyncio.Queue = asyncio.Queue()
            for n, (user, xml) in enumerate(messages):
                jobs.put_nowait((n, user, xml, True))
                if n % 10 == 0:
                    jobs.put_nowait((n + 1, user, xml, False))
            done_count = 0

            async def client() -> None:
                nonlocal done_count
                while not jobs.empty():
                    n, user, xml, first_copy = jobs.get_nowait()
                    started = time.perf_counter()
                    if first_copy:
                        posted_at[user].append(time.monotonic())
                    for attempt in range(60):
                        worker = workers[(n + attempt) % 3]
                        encrypted, body = wecom.envelope(xml)
                        t0 = time.perf_counter()
                        try:
                            async with http.post(f"{worker.url}/wecom/callback", params=wecom.signed_query(encrypted),
                                                 data=body, headers={"Content-Type": "text/xml"},
                                                 timeout=aiohttp.ClientTimeout(total=5)) as res:
                                await res.read()
                                if res.status == 200:
                                    acks.append((time.perf_counter() - t0) * 1000)
                                    break
                                stats[f"http_{res.status}"] += 1
                        except (aiohttp.ClientError, asyncio.TimeoutError):
                            stats["refused"] += 1
                        await asyncio.sleep(0.25)
                    stats["retried_posts"] += attempt
                    done_count += 1
                    del started

            async def fault_plan() -> None:
                total = jobs.qsize()
                while done_count < total // 3:
                    await asyncio.sleep(0.05)
                workers[0].kill()
                while done_count < 2 * total // 3:
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(cluster.restart, 1.0)

            started = time.monotonic()
            tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
            if faults:
                tasks.append(asyncio.create_task(fault_plan()))
            await asyncio.gather(*tasks)
            acked_s = time.monotonic() - started
            engine = create_engine(cluster.url)
            deadline = time.monotonic() + 300
            while True:  # every message answered and every reply sent (or give up, and say so)
                with engine.connect() as conn:
                    pending = conn.scalar(select(func.count()).select_from(InboundMessage)
                                          .where(InboundMessage.status != "done"))
                    unsent = conn.scalar(select(func.count()).select_from(OutboxMessage)
                                         .where(OutboxMessage.status != "sent"))
                if (pending == 0 and unsent == 0) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            out["unfinished_after_300s"] = {"inbound": pending, "outbox": unsent} if pending or unsent else None
            answered_s = time.monotonic() - started
            delivered_at: dict[str, list[float]] = defaultdict(list)
            for d in fake.delivered:
                delivered_at[d.touser].append(d.at)
            # the k-th answer of a member answers their k-th question (one part each, in order)
            wall_offset = time.time() - time.monotonic()
            answer_ms = [(at - wall_offset - posted) * 1000
                         for user, times in posted_at.items()
                         for posted, at in zip(sorted(times), sorted(delivered_at[user]))]
            with engine.connect() as conn:
                stored = conn.scalar(select(func.count()).select_from(InboundMessage))
                queued = conn.scalar(select(func.count()).select_from(OutboxMessage))
            engine.dispose()
            for w in workers:
                w.stop()
        duplicates = sum(n - 1 for n in Counter((d.touser, json.dumps(d.body, sort_keys=True)) for d in fake.delivered)
                         .values() if n > 1)
        out.update({
            "callbacks_posted_incl_redeliveries": len(acks),
            "ack_ms_p50": pct(acks, 0.50), "ack_ms_p99": pct(acks, 0.99),
            "all_acknowledged_s": round(acked_s, 1), "all_answered_s": round(answered_s, 1),
            "throughput_answers_per_s": round(len(fake.delivered) / answered_s, 1),
            "answer_ms_p50": pct(answer_ms, 0.50), "answer_ms_p95": pct(answer_ms, 0.95),
            "stored": stored, "replies_queued": queued, "delivered": len(fake.delivered),
            "duplicates_delivered": duplicates, "lost": callbacks - min(stored, len(fake.delivered)),
            "sender_saw": dict(stats),
            "mean_answer_ms": round(statistics.mean(answer_ms), 1) if answer_ms else None,
        })
    finally:
        for w in locals().get("workers", []):
            w.stop()
        await fake.close()
        cluster.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--callbacks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--faults", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.members, args.callbacks, args.faults, args.concurrency)),
                     ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
