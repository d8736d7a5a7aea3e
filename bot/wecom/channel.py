"""The WeCom channel: callback endpoint, processing of accepted messages, and the reply sender.

Request path (``POST /wecom/callback``), all within a few milliseconds:

1. ``timestamp`` within ``clock_skew_s`` of our clock, else 403; body must be XML with an
   ``Encrypt`` element, else 400; ``msg_signature`` (SHA-1 over token, timestamp, nonce, Encrypt)
   compared in constant time, else 403; the plaintext decrypted (AES) and parsed, else 400.
2. Callbacks that need no answer (opening the app, location reports …) are acknowledged at once.
3. Others are stored (``inbound_messages`` + the shared dedupe claim, group-committed), then
   acknowledged with an empty 200. A retry of a message already stored is only acknowledged. If
   the database cannot store it within ``persist_timeout_s`` the answer is 500, so WeCom retries.

Processing (in the background, one message at a time per user, in arrival order): the message is
turned into an ``Incoming`` (text; voice → its Recognition text; button click → ``choice``; file →
downloaded with ``media/get`` under the size limit and type checks → an ``Attachment``) and given to
the conversation engine in a thread; unsupported types get a short note instead. The replies are
rendered to WeCom messages and queued in the outbox in the same transaction that marks the inbound
row done. The outbox sender delivers them (see ``bot/outbox.py``).

Rate limits (``bot.ratelimit.RatePolicy``, from settings): decided when a callback is stored, from
the user's rows in the database (so across workers). A message over the limit is acknowledged like
any other; the first one gets the polite notice "您发送得太快了，请稍后再试。" (English when the user
writes English) instead of an answer, the next ones are dropped until the user's allowance is back.

Rows left behind by a crash are picked up by a recovery loop once their lease has expired. The same
loop runs the housekeeping (``bot.inbox.Housekeeping``: old dedupe claims, answered inbound rows,
sent outbox rows), at once and then every ``housekeeping_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

import xmltodict
from aiohttp import web

from bot.inbox import ClaimedInbound, Housekeeping, InboxStore, LeaseKeeper, NewInbound
from bot.logging_setup import REQUEST_ID, request_id_for, request_scope
from bot.keyed_locks import KeyedLocks
from bot.outbox import OutboxOptions, OutboxSender, OutboxStore
from bot.ratelimit import RatePolicy, looks_english, rate_limit_notice
from bot.wecom.api import MediaTooLarge, WeComAPI, WeComError
from bot.wecom.crypto import WeComCrypto, WeComCryptoError
from bot.wecom.inbound import (
    Action,
    MalformedMessage,
    classify,
    dedupe_key,
    parse_plaintext,
)
from bot.wecom.render import render_replies
from bot.wecom.transport import WeComTransport
from handlers.messages import Attachment, Incoming, MessageHandler, Reply

log = logging.getLogger(__name__)

CHANNEL = "wecom"

ENGINE_ERROR_ZH = "抱歉，处理您的消息时出现了问题，请稍后再试。如多次出现，请联系管理员。"
FILE_TYPE_ZH = "暂不支持“{name}”这种文件类型。请发送 PDF、DOCX、TXT 或 MD 格式的政策文件。"
FILE_TOO_LARGE_ZH = "文件过大（超过 {mb} MB），请拆分或压缩后再发送。"
FILE_DOWNLOAD_FAILED_ZH = "文件下载失败，请稍后重新发送。"


@dataclass
class WeComOptions:
    #: Callbacks whose timestamp is further than this from our clock are refused (403).
    clock_skew_s: float = 300.0
    api_timeout_s: float = 10.0
    #: ``card`` (template card buttons) or ``markdown`` (choices listed; no buttons).
    choice_style: str = "card"
    #: How long a worker may process one inbound message before another may take it over.
    inbound_lease_s: float = 30.0
    #: Period of the loop that picks up inbound messages left behind by a crashed worker.
    recovery_interval_s: float = 15.0
    inbound_retry_s: float = 5.0
    max_inbound_attempts: int = 5
    #: Processed inbound rows are deleted after this many days.
    keep_inbound_days: float = 7.0
    #: Dedupe claims (``processed_updates``) are deleted after this many days.
    keep_updates_days: float = 7.0
    #: How often this process deletes old rows (inbound, outbox, dedupe claims).
    housekeeping_interval_s: float = 3600.0
    #: Per-user limits; None = from settings (``RatePolicy.from_settings``).
    rate_limit: RatePolicy | None = None
    #: Engine calls running at once (each in a thread).
    max_concurrent: int = 4
    #: Longest time processing waits for a burst of callbacks to be acknowledged first.
    burst_yield_s: float = 0.25
    #: Longest wait for the database on the acknowledgement path before answering 500.
    persist_timeout_s: float = 3.0
    duplicate_check_interval_s: int = 1800
    rate_limit_pause_s: float = 10.0
    #: Run the outbox sender in this process (one or more processes may do so).
    run_sender: bool = True
    outbox: OutboxOptions = field(default_factory=OutboxOptions)

    @classmethod
    def from_settings(cls, settings: Any) -> "WeComOptions":
        """Defaults, with the choice style and per-member pacing from Settings."""
        options = cls(inbound_lease_s=settings.inbound_lease_s, recovery_interval_s=settings.recovery_interval_s)
        options.outbox.lease_s = settings.outbox_lease_s
        options.choice_style = settings.wecom_choice_style
        options.outbox.per_minute = settings.wecom_per_user_per_minute
        options.rate_limit = RatePolicy.from_settings(settings)
        return options


class WeComChannel:
    def __init__(self, ctx: Any, engine: MessageHandler, options: WeComOptions | None = None) -> None:
        settings = ctx.settings
        if not settings.wecom_enabled or settings.wecom_agent_id is None:
            raise ValueError("WeCom is not configured (YILIAN_WECOM_CORP_ID, _AGENT_ID, _SECRET, _TOKEN, _AES_KEY)")
        self.ctx = ctx
        self.settings = settings
        self.engine = engine
        self.options = options or WeComOptions.from_settings(settings)
        self.agent_id = int(settings.wecom_agent_id)
        self.crypto = WeComCrypto(settings.wecom_token.get_secret_value(), settings.wecom_aes_key.get_secret_value(),
                                  settings.wecom_corp_id)
        self.api = WeComAPI(corp_id=settings.wecom_corp_id, secret=settings.wecom_secret.get_secret_value(),
                            sessions=ctx.sessions, api_base=settings.wecom_api_base, agent_id=self.agent_id,
                            timeout_s=self.options.api_timeout_s)
        self.rate_policy = self.options.rate_limit or RatePolicy.from_settings(settings)
        self.inbox = InboxStore(ctx.sessions, CHANNEL, rate_policy=self.rate_policy)
        self.leases = LeaseKeeper(self.inbox, self.options.inbound_lease_s)
        self.outbox = OutboxStore(ctx.sessions)
        self.housekeeping = Housekeeping(ctx.sessions, CHANNEL, keep_updates_days=self.options.keep_updates_days,
                                         keep_inbound_days=self.options.keep_inbound_days,
                                         keep_outbox_days=self.options.outbox.keep_days,
                                         interval_s=self.options.housekeeping_interval_s)
        self.transport = WeComTransport(self.api, self.agent_id,
                                        duplicate_check_interval_s=self.options.duplicate_check_interval_s,
                                        rate_limit_pause_s=self.options.rate_limit_pause_s)
        self.sender = OutboxSender(self.outbox, {CHANNEL: self.transport}, self.options.outbox)
        self._accept_queue: queue.SimpleQueue[tuple[NewInbound, asyncio.Future[int | None]] | None] = \
            queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._accepting = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._user_locks = KeyedLocks()
        self._sem: asyncio.Semaphore | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._stopping = False
        self._active_posts = 0

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._sem = asyncio.Semaphore(self.options.max_concurrent)
        self._writer = threading.Thread(target=self._write_loop, args=(asyncio.get_running_loop(),),
                                        name="wecom-accept", daemon=True)
        self._writer.start()
        if self.options.run_sender:
            await self.sender.start()
        self._recovery = asyncio.create_task(self._keep_leases_and_recover(), name="wecom-inbound-recovery")
        log.info("wecom channel started", extra={"agent_id": self.agent_id, "api_base": self.api.api_base})

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping = True
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
            self._recovery = None
        if self._writer is not None:
            self._accept_queue.put(None)
            await asyncio.to_thread(self._writer.join, timeout_s)
            self._writer = None
        if self._tasks:  # let messages being processed finish: their replies get queued
            done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
        await self.sender.stop(timeout_s)
        await self.api.close()
        log.info("wecom channel stopped")

    async def on_startup(self, app: web.Application) -> None:
        await self.start()

    async def on_cleanup(self, app: web.Application) -> None:
        await self.stop()

    # -- HTTP ------------------------------------------------------------------------------------

    def _timestamp_ok(self, timestamp: str) -> bool:
        try:
            return abs(time.time() - int(timestamp)) <= self.options.clock_skew_s
        except (TypeError, ValueError):
            return False

    @staticmethod
    def _reject(request: web.Request, status: int, reason: str) -> web.Response:
        log.warning("wecom callback rejected (%s): %s", status, reason,
                    extra={"remote": request.remote, "method": request.method})
        return web.Response(status=status, text="")

    async def handle_get(self, request: web.Request) -> web.Response:
        """URL verification: answer the decrypted echostr, as plain text, nothing else."""
        q = request.query
        sig, ts, nonce, echostr = (q.get("msg_signature"), q.get("timestamp"), q.get("nonce"), q.get("echostr"))
        if not sig or not ts or not nonce:
            return self._reject(request, 403, "signature parameters missing")
        if not self._timestamp_ok(ts):
            return self._reject(request, 403, f"timestamp {ts!r} outside the allowed window")
        if not echostr:
            return self._reject(request, 400, "echostr missing")
        echostr = echostr.replace(" ", "+")  # a '+' decoded as a space by a proxy
        if not self.crypto.check_signature(sig, ts, nonce, echostr):
            return self._reject(request, 403, "bad signature")
        try:
            plain = self.crypto.decrypt(echostr)
        except WeComCryptoError as exc:
            return self._reject(request, 400, f"echostr cannot be decrypted: {exc}")
        return web.Response(body=plain.encode("utf-8"), content_type="text/plain")

    async def handle_post(self, request: web.Request) -> web.Response:
        self._active_posts += 1
        try:
            return await self._handle_post(request)
        finally:
            self._active_posts -= 1

    async def _handle_post(self, request: web.Request) -> web.Response:
        q = request.query
        sig, ts, nonce = q.get("msg_signature"), q.get("timestamp"), q.get("nonce")
        if not sig or not ts or not nonce:
            return self._reject(request, 403, "signature parameters missing")
        if not self._timestamp_ok(ts):
            return self._reject(request, 403, f"timestamp {ts!r} outside the allowed window")
        body = await request.read()
        try:
            envelope = xmltodict.parse(body.decode("utf-8"))["xml"]
            encrypted = envelope["Encrypt"]
            if not isinstance(encrypted, str) or not encrypted.strip():
                raise ValueError("empty Encrypt")
        except Exception as exc:  # ExpatError, UnicodeDecodeError, KeyError, TypeError ...
            return self._reject(request, 400, f"body is not a WeCom XML envelope ({type(exc).__name__})")
        encrypted = encrypted.strip()
        if not self.crypto.check_signature(sig, ts, nonce, encrypted):
            return self._reject(request, 403, "bad signature")
        try:
            fields = parse_plaintext(self.crypto.decrypt(encrypted))
        except (WeComCryptoError, MalformedMessage) as exc:
            return self._reject(request, 400, f"payload cannot be decrypted or parsed: {exc}")
        agent = str(fields.get("AgentID") or "").strip()
        if agent and agent != str(self.agent_id):
            log.warning("wecom callback for another agent (%s) ignored", agent)
            return web.Response(status=200, text="")
        key = dedupe_key(fields)
        REQUEST_ID.set(request_id_for(CHANNEL, key))  # this request's task only
        if classify(fields, key).kind == "ignore":
            return web.Response(status=200, text="")
        item = NewInbound(external_id=key, user_key=str(fields["FromUserName"]), payload=fields)
        try:
            row_id = await asyncio.wait_for(self._accept(item), timeout=self.options.persist_timeout_s)
        except Exception:
            log.exception("wecom callback could not be stored; WeCom will retry")
            return web.Response(status=500, text="")
        if row_id is None:
            log.info("wecom callback %s is a repeat or over its user's rate limit; acknowledged only", key)
        else:
            self._spawn(self._process_new(row_id, item.user_key))
        return web.Response(status=200, text="")

    # -- acknowledgement path: group commit -----------------------------------------------------

    async def _accept(self, item: NewInbound) -> int | None:
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._accepting += 1
        try:
            self._accept_queue.put((item, fut))
            return await fut
        finally:
            self._accepting -= 1

    def _write_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The writer thread: stores whatever callbacks have queued up, one transaction per batch,
        and starts on the next batch at once (no round trip through the busy event loop)."""

        def resolve(batch: list[tuple[NewInbound, asyncio.Future[int | None]]], ids: list[int | None] | None,
                    error: BaseException | None) -> None:
            for n, (_, fut) in enumerate(batch):
                if fut.done():
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(ids[n])  # type: ignore[index]

        while True:
            first = self._accept_queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < 500:
                try:
                    nxt = self._accept_queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                ids = self.inbox.accept_batch([i for i, _ in batch], lease_s=self.options.inbound_lease_s)
                error = None
            except Exception as exc:
                ids, error = None, exc
            try:
                loop.call_soon_threadsafe(resolve, batch, ids, error)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                return
            if stop:
                return

    # -- processing ------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _calm(self) -> None:
        """Let a burst of callbacks be acknowledged before engine work competes with it for the
        interpreter (the engine runs in threads, the acknowledgements on the event loop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.burst_yield_s
        while self._active_posts and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def _keep_leases_and_recover(self) -> None:
        await asyncio.gather(self.leases.run(), self._recovery_loop())

    async def _process_new(self, row_id: int, user: str) -> None:
        async def run() -> None:
            assert self._sem is not None
            await self._calm()
            async with self._sem:
                row = await asyncio.to_thread(self.inbox.claim, row_id, lease_s=self.options.inbound_lease_s)
                if row is not None:
                    await self._process(row)

        with self.leases.holding(row_id):  # accepted by this worker: ours until answered
            await self._user_locks.run(user, run)

    async def _process_claimed(self, row: ClaimedInbound) -> None:
        async def run() -> None:
            assert self._sem is not None
            async with self._sem:
                await self._process(row)

        with self.leases.holding(row.id):
            await self._user_locks.run(row.user_key, run)

    async def _process(self, row: ClaimedInbound) -> None:
        with request_scope(request_id_for(CHANNEL, row.external_id)):
            await self._process_row(row)

    async def _process_row(self, row: ClaimedInbound) -> None:
        started = time.perf_counter()
        try:
            if row.rate_limited:  # over the user's rate limit: the notice, not an answer
                replies = [Reply(text=rate_limit_notice(_writes_english(row.payload)))]
            else:
                replies = await self._replies_for(classify(row.payload, row.external_id))
            payloads = render_replies(replies, style=self.options.choice_style)
            settle = next((r.settle for r in replies if r.settle), None)
            code = row.payload.get("ResponseCode")
            if settle and isinstance(code, str) and code:
                # the clicked notification is dealt with: its card shows so (``Reply.settle``)
                payloads.insert(0, {"msgtype": "update_template_card", "response_code": code,
                                    "button": {"replace_name": settle[:20]}})
        except Exception as exc:  # download failed, database trouble …: try again later
            if row.attempts < self.options.max_inbound_attempts:
                log.warning("wecom message %s: attempt %s failed (%s); will retry", row.external_id, row.attempts, exc)
                try:
                    await asyncio.to_thread(self.inbox.retry, row, self.options.inbound_retry_s * row.attempts, str(exc))
                except Exception:
                    log.exception("wecom message %s: could not schedule a retry", row.external_id)
                return
            log.error("wecom message %s: giving up after %s attempts (%s)", row.external_id, row.attempts, exc)
            payloads = render_replies([Reply(text=ENGINE_ERROR_ZH)])
        finished = await self.inbox.finish_patiently(row, payloads, budget_s=self.options.inbound_lease_s * 0.5)
        if finished is None:
            return  # the lease runs out and the recovery loop processes the message again
        if not finished:
            log.warning("wecom message %s: claim lost before the replies were queued", row.external_id)
            return
        self.sender.wake()
        log.info("wecom message processed", extra={"external_id": row.external_id, "parts": len(payloads),
                                                    "ms": round((time.perf_counter() - started) * 1000, 1)})

    async def _replies_for(self, action: Action) -> list[Reply]:
        if action.kind == "note":
            return [Reply(text=action.note or "")]
        if action.kind == "ignore":
            return []
        incoming = action.incoming
        if action.kind == "file":
            incoming_or_note = await self._download(action)
            if isinstance(incoming_or_note, Reply):
                return [incoming_or_note]
            incoming = incoming_or_note
        assert incoming is not None
        try:
            return list(await asyncio.to_thread(self.engine.handle, incoming))
        except Exception:
            # The engine may have done part of its work: never run it twice for one message.
            log.exception("conversation engine failed on a wecom message", extra={"user": incoming.user_key})
            return [Reply(text=ENGINE_ERROR_ZH)]

    async def _download(self, action: Action) -> Incoming | Reply:
        from knowledge.readers import SUPPORTED_SUFFIXES

        def unsupported(name: str) -> bool:
            return PurePosixPath(name.replace("\\", "/")).suffix.lower() not in SUPPORTED_SUFFIXES

        if action.file_name and unsupported(action.file_name):
            return Reply(text=FILE_TYPE_ZH.format(name=action.file_name))
        limit = int(self.settings.max_upload_bytes)
        try:
            media = await self.api.get_media(action.media_id or "", max_bytes=limit)
        except MediaTooLarge:
            return Reply(text=FILE_TOO_LARGE_ZH.format(mb=max(1, round(limit / 1024 / 1024))))
        except WeComError as exc:
            if exc.retryable:
                raise
            log.warning("wecom media/get failed for good: %s", exc)
            return Reply(text=FILE_DOWNLOAD_FAILED_ZH)
        name = action.file_name or media.file_name
        if unsupported(name):
            return Reply(text=FILE_TYPE_ZH.format(name=name))
        assert action.incoming is not None
        return replace(action.incoming, attachments=(
            Attachment(file_name=name, data=media.data, mime_type=media.content_type),))

    # -- recovery --------------------------------------------------------------------------------

    async def recover_once(self) -> int:
        rows = await asyncio.to_thread(self.inbox.claim_due, 50, lease_s=self.options.inbound_lease_s)
        for row in rows:
            log.info("wecom message %s picked up again (attempt %s)", row.external_id, row.attempts)
            self._spawn(self._process_claimed(row))
        return len(rows)

    async def _recovery_loop(self) -> None:
        while not self._stopping:
            try:
                await self.recover_once()
            except Exception:
                log.exception("wecom inbound recovery failed")
            await self.housekeeping.maybe_run()
            await asyncio.sleep(self.options.recovery_interval_s)

    # -- tests and status ------------------------------------------------------------------------

    async def idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no message is being processed (tests)."""
        deadline = time.monotonic() + timeout_s
        while (self._tasks or self._accepting) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def _writes_english(fields: dict[str, Any]) -> bool:
    """Whether a WeCom message's text (or recognised speech) is English."""
    value = fields.get("Content") or fields.get("Recognition") or ""
    if isinstance(value, dict):
        value = value.get("#text", "")
    return looks_english(str(value))
