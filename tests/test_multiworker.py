"""Three `yilian serve` workers on one private PostgreSQL cluster, as production runs them.

A burst of signed WeCom callbacks from many members goes to the workers round robin; every
tenth is delivered again to another worker (as WeCom retries). Mid-burst one worker is killed
with SIGKILL and the database is restarted. Like WeCom, the sender retries a callback that got
no 200 (connection refused, 5xx) on another worker. Afterwards every message has been stored
once and answered once: no reply lost, none sent twice.

The same over the Telegram webhook: an update posted to two workers, one worker killed, the
database restarted; each update answered once.

Then freshness: a policy replaced through the CLI is quoted by every worker within 10 s.

Skipped, with the reason, where no PostgreSQL server binaries are installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, func, select

from bot.outbox import OutboxOptions
from pg_cluster import PrivateCluster, free_port
from storage.models import InboundMessage, OutboxMessage
from tests.telegram_support import TOKEN as TELEGRAM_TOKEN
from tests.telegram_support import FakeTelegram, text_update
from tests.wecom_support import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, FakeWeCom, WeComSender, text_xml

REPO = Path(__file__).resolve().parents[1]
YILIAN = str(Path(sys.executable).parent / "yilian")

pytestmark = pytest.mark.skipif(PrivateCluster.unavailable() is not None,
                                reason=PrivateCluster.unavailable() or "")

MEMBERS = 40
PER_MEMBER = 4
QUESTIONS = ["联席会议多久开一次？", "双向转诊的原则是什么？", "进修要交钱吗？", "城市医疗集团成员享有哪些权利？"]


@pytest.fixture
def cluster():
    pg = PrivateCluster().start()
    yield pg
    pg.stop()


@pytest.fixture
async def fake_wecom():
    fake = await FakeWeCom().start()
    yield fake
    await fake.close()


def _env(cluster: PrivateCluster, data_dir: Path, api_base: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_")}
    env.update({
        "YILIAN_DATABASE_URL": cluster.url, "YILIAN_DATA_DIR": str(data_dir), "YILIAN_LOG_LEVEL": "WARNING",
        "YILIAN_WEB_CHAT": "false", "YILIAN_SCHEDULER_ENABLED": "false",
        "YILIAN_WECOM_CORP_ID": CORP_ID, "YILIAN_WECOM_AGENT_ID": str(AGENT_ID), "YILIAN_WECOM_SECRET": SECRET,
        "YILIAN_WECOM_TOKEN": TOKEN, "YILIAN_WECOM_AES_KEY": AES_KEY, "YILIAN_WECOM_API_BASE": api_base,
        # test-sized leases: a killed worker's messages are taken over after seconds, not minutes
        "YILIAN_INBOUND_LEASE_S": "6", "YILIAN_RECOVERY_INTERVAL_S": "0.5", "YILIAN_OUTBOX_LEASE_S": "6",
        "YILIAN_RATE_LIMIT_PER_MINUTE": "0",
    })
    env.update(extra)
    return env


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {**env, "YILIAN_HTTP_PORT": str(self.port)}
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        self.proc = subprocess.Popen([YILIAN, "serve"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("ab"))
        return self

    async def ready(self, http: aiohttp.ClientSession, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                async with http.get(self.url + "/readyz") as res:
                    if res.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
        raise AssertionError(f"worker on {self.port} not ready: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([YILIAN, *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _post_until_acknowledged(http: aiohttp.ClientSession, workers: list[Worker], first: int, request,
                                   stats: Counter) -> None:
    """Post as the platforms do: no 200 (refused, 5xx, timeout) → again, on the next worker.
    ``request(worker)`` gives the keyword arguments of one attempt (signed afresh each time)."""
    for attempt in range(40):
        worker = workers[(first + attempt) % len(workers)]
        try:
            async with http.post(timeout=aiohttp.ClientTimeout(total=5), **request(worker)) as res:
                if res.status == 200:
                    stats["acked"] += 1
                    return
                stats[f"http_{res.status}"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            stats["refused"] += 1
        await asyncio.sleep(0.25)
    raise AssertionError("a delivery was never acknowledged")


def _wecom_callback(wecom: WeComSender, xml: str):  # noqa: ANN202
    def request(worker: Worker) -> dict:
        encrypted, body = wecom.envelope(xml)
        return {"url": f"{worker.url}/wecom/callback", "params": wecom.signed_query(encrypted), "data": body,
                "headers": {"Content-Type": "text/xml"}}

    return request


def _telegram_update(update: dict):  # noqa: ANN202
    return lambda worker: {"url": f"{worker.url}/telegram/webhook", "json": update,
                           "headers": {"X-Telegram-Bot-Api-Secret-Token": "webhook-secret-1"}}


async def _burst_with_faults(http: aiohttp.ClientSession, workers: list[Worker], cluster: PrivateCluster,
                             requests: list, stats: Counter) -> None:
    """Every request posted (every tenth twice, to another worker, as the platforms redeliver);
    worker 0 SIGKILLed after 50 and the database restarted after 100."""
    sent: list[asyncio.Task] = []
    for n, request in enumerate(requests):
        sent.append(asyncio.create_task(_post_until_acknowledged(http, workers, n, request, stats)))
        if n % 10 == 0:
            sent.append(asyncio.create_task(_post_until_acknowledged(http, workers, n + 1, request, stats)))
        if n == 50:
            workers[0].kill()  # mid-burst, with messages accepted and not yet answered
        if n == 100:
            await asyncio.to_thread(cluster.restart, 1.0)
        await asyncio.sleep(0.01)
    await asyncio.gather(*sent)


async def _all_answered(cluster: PrivateCluster, timeout: float = 60):  # noqa: ANN202 - an Engine
    """Wait until every stored message is answered and every reply sent; the engine to read with."""
    engine = create_engine(cluster.url)
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            pending = conn.scalar(select(func.count()).select_from(InboundMessage).where(InboundMessage.status != "done"))
            unsent = conn.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status != "sent"))
        if pending == 0 and unsent == 0:
            return engine
        assert time.monotonic() < deadline, f"{pending} messages unanswered, {unsent} replies unsent"
        await asyncio.sleep(0.5)


async def test_killed_worker_and_database_restart_lose_and_repeat_nothing(cluster, fake_wecom, tmp_path):
    seed = _env(cluster, tmp_path / "seed", fake_wecom.url)
    _cli(seed, "db", "upgrade")
    _cli(seed, "ingest", *[str(p) for p in sorted((REPO / "knowledge" / "samples").glob("*.txt"))])
    workers = [Worker(_env(cluster, tmp_path / f"w{i}", fake_wecom.url), tmp_path / f"w{i}.log") for i in range(3)]
    wecom = WeComSender(workers[0].url)
    stats: Counter = Counter()
    async with aiohttp.ClientSession() as http:
        try:
            for w in workers:
                w.start()
            await asyncio.gather(*(w.ready(http) for w in workers))
            messages = []
            for n in range(MEMBERS * PER_MEMBER):
                user = f"member{n % MEMBERS:03d}"
                messages.append((user, text_xml(user, QUESTIONS[n // MEMBERS], 7_000_000 + n)))
            await _burst_with_faults(http, workers, cluster, [_wecom_callback(wecom, xml) for _, xml in messages],
                                     stats)

            engine = await _all_answered(cluster)
            with engine.connect() as conn:
                inbound = conn.execute(select(InboundMessage.external_id, InboundMessage.user_key)).all()
                outbox = conn.execute(select(OutboxMessage.dedupe_key, OutboxMessage.recipient)).all()
            engine.dispose()
        finally:
            for w in workers:
                w.stop()
    # every message stored exactly once ...
    assert len(inbound) == len(messages) == len({key for key, _ in inbound})
    # ... answered: each has its replies, queued once (the keys derive from the message)
    answered = {key.rsplit(":", 1)[0].split(":", 1)[1] for key, _ in outbox}
    assert answered == {key for key, _ in inbound}
    # ... and each reply reached the member exactly once
    delivered = Counter((d.touser, json.dumps(d.body, sort_keys=True, ensure_ascii=False))
                        for d in fake_wecom.delivered)
    assert max(delivered.values()) == 1
    per_member = Counter(d.touser for d in fake_wecom.delivered)
    assert per_member == Counter(recipient for _, recipient in outbox)
    assert sum(per_member.values()) == len(outbox) >= len(messages)
    # the faults really happened: refused connections to the killed worker, 5xx while the
    # database restarted, and WeCom's retries acknowledged without a second answer
    assert stats["refused"] > 0 and stats["http_500"] > 0, stats


async def test_a_replaced_policy_is_served_by_every_worker_within_ten_seconds(cluster, fake_wecom, tmp_path):
    seed = _env(cluster, tmp_path / "seed", fake_wecom.url, YILIAN_HTTP_PORT="1")
    _cli(seed, "db", "upgrade")
    policy = tmp_path / "进修管理办法.txt"
    policy.write_text("进修管理办法\n\n第一条 进修人员每月补助八百元。\n", encoding="utf-8")
    _cli(seed, "ingest", str(policy))
    workers = [Worker(_env(cluster, tmp_path / f"w{i}", fake_wecom.url, YILIAN_WECOM_CORP_ID="", YILIAN_WEB_CHAT="true",
                           YILIAN_DEMO="true"), tmp_path / f"w{i}.log") for i in range(3)]
    for w in workers:
        for key in [k for k in w.env if k.startswith("YILIAN_WECOM_")]:
            del w.env[key]
    async with aiohttp.ClientSession() as http:
        try:
            for w in workers:
                w.start()
            await asyncio.gather(*(w.ready(http) for w in workers))
            sessions = []
            for w in workers:
                jar = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
                res = await jar.post(w.url + "/api/demo/login", json={"as": "guest"})
                sessions.append((w, jar, (await res.json())["csrf"]))

            async def ask(w, jar, csrf) -> str:
                res = await jar.post(w.url + "/api/chat", json={"text": "进修人员每月补助多少？"},
                                     headers={"X-CSRF-Token": csrf})
                return json.dumps(await res.json(), ensure_ascii=False)

            for s in sessions:
                assert "八百元" in await ask(*s)
            policy.write_text("进修管理办法\n\n第一条 进修人员每月补助一千二百元。\n", encoding="utf-8")
            _cli(seed, "ingest", str(policy))
            replaced = time.monotonic()
            fresh = set()
            while len(fresh) < len(sessions):
                for i, s in enumerate(sessions):
                    if i not in fresh:
                        text = await ask(*s)
                        assert "八百元" not in text or "一千二百元" not in text  # never a mix of versions
                        if "一千二百元" in text:
                            fresh.add(i)
                assert time.monotonic() - replaced < 10, f"workers serving the new version: {sorted(fresh)}"
                await asyncio.sleep(0.2)
            for _, jar, _ in sessions:
                await jar.close()
        finally:
            for w in workers:
                w.stop()


@pytest.fixture
async def fake_telegram():
    fake = await FakeTelegram().start()
    yield fake
    await fake.close()


async def test_telegram_webhook_workers_survive_the_same_faults(cluster, fake_wecom, fake_telegram, tmp_path):
    def env(name: str) -> dict[str, str]:
        values = _env(cluster, tmp_path / name, fake_wecom.url, YILIAN_TELEGRAM_TOKEN=TELEGRAM_TOKEN,
                      YILIAN_TELEGRAM_API_BASE=fake_telegram.url,
                      YILIAN_TELEGRAM_WEBHOOK_URL="https://bot.example.org/telegram/webhook",
                      YILIAN_TELEGRAM_WEBHOOK_SECRET="webhook-secret-1")
        return {k: v for k, v in values.items() if not k.startswith("YILIAN_WECOM_")}

    seed = env("seed")
    _cli(seed, "db", "upgrade")
    _cli(seed, "ingest", *[str(p) for p in sorted((REPO / "knowledge" / "samples").glob("*.txt"))])
    workers = [Worker(env(f"w{i}"), tmp_path / f"w{i}.log") for i in range(3)]
    stats: Counter = Counter()
    updates = [text_update(900_000 + n, 500_000 + n % MEMBERS, QUESTIONS[n // MEMBERS])
               for n in range(MEMBERS * PER_MEMBER)]
    async with aiohttp.ClientSession() as http:
        try:
            for w in workers:
                w.start()
            await asyncio.gather(*(w.ready(http) for w in workers))
            await _burst_with_faults(http, workers, cluster, [_telegram_update(u) for u in updates], stats)
            engine = await _all_answered(cluster)
            with engine.connect() as conn:
                inbound = conn.execute(select(InboundMessage.external_id)).scalars().all()
                outbox = conn.execute(select(OutboxMessage.recipient)).scalars().all()
            engine.dispose()
        finally:
            for w in workers:
                w.stop()
    assert len(inbound) == len(updates) == len(set(inbound))
    answers = [m for m in fake_telegram.sent if m.method == "sendMessage"]
    sent, queued = Counter(str(m.chat_id) for m in answers), Counter(outbox)
    assert len(outbox) >= len(updates) and not queued - sent  # every reply went out
    assert set(sent) == set(queued)
    # The Bot API has no idempotency key: a reply the SIGKILLed worker had sent but not yet
    # recorded goes out again when its lease runs out (at least once; WeCom drops such repeats
    # with enable_duplicate_check). Only the killed worker's in-flight batch can repeat, and a
    # database restart repeats nothing (the record of a send is retried until it is back).
    repeats = sum((sent - queued).values())
    assert repeats <= OutboxOptions().batch_size, repeats
    assert len(answers) - len({(m.chat_id, m.text) for m in answers}) == repeats  # repeats only, no strays
    assert stats["refused"] > 0 and any(k.startswith("http_5") for k in stats), stats
