"""The Telegram channel: a python-telegram-bot ``Application`` feeding the conversation engine.

Receiving. Long polling by default (``Updater.start_polling`` with a short offset-confirming stop);
webhook mode when ``YILIAN_TELEGRAM_WEBHOOK_URL`` is set: the route (the URL's path) lives on the
shared aiohttp application, checks ``X-Telegram-Bot-Api-Secret-Token`` in constant time (403
otherwise) and hands the update to ``Application.process_update``; ``setWebhook`` (with
``secret_token``) is called at start. Either way every update reaches one PTB ``TypeHandler``.

Accepting (the handler, a few milliseconds). Updates nobody needs to answer are dropped. Others
are claimed by ``update_id`` (``storage.repositories.claim_update``, shared by all workers and
restarts) and stored in ``inbound_messages`` in one transaction; a redelivered or duplicate
update finds its claim taken and is ignored. A webhook request is answered 200 only once the
update is stored (500 otherwise, so that Telegram delivers it again).

Processing (in the background; one update at a time per chat, in arrival order; at most
``max_concurrent`` at once). The update becomes an ``Incoming`` (``bot.telegram.inbound``); a
document is downloaded with ``getFile`` under the size limit first; the engine runs in a thread.
Its replies are rendered to outbox payloads (``bot.telegram.render``) and queued in the outbox in
the same transaction that marks the inbound row done. A row left behind by a crash is processed
again by the recovery loop once its lease has run out.

Sending. The outbox sender (``bot.outbox``) delivers the payloads through
``bot.telegram.transport`` — in order per chat, surviving flood limits (``RetryAfter``), network
errors and restarts.

Rate limits (``bot.ratelimit.RatePolicy``, from settings), per chat (= per user in a private chat):
decided when an update is stored, from the chat's rows in the database (so across workers). The
first update over the limit is answered with the polite notice "您发送得太快了，请稍后再试。"
(English for users whose Telegram language is English), the next ones are dropped until the chat's
allowance is back.

Housekeeping (``bot.inbox.Housekeeping``: old dedupe claims, answered inbound rows, sent outbox
rows) runs in the recovery loop, at once and then every ``housekeeping_interval_s``.

Start-up never fails because Telegram is unreachable: ``start`` boots in the background and retries
with back-off (an invalid token is logged and ends the attempts).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import CallbackQuery, Update
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler

from bot.inbox import ClaimedInbound, Housekeeping, InboxStore, LeaseKeeper, NewInbound
from bot.logging_setup import REQUEST_ID, request_id_for, request_scope
from bot.keyed_locks import KeyedLocks
from bot.outbox import OutboxOptions, OutboxSender, OutboxStore
from bot.ratelimit import RATE_LIMITED_EN, RATE_LIMITED_ZH, RatePolicy
from bot.telegram.inbound import ALLOWED_UPDATES, Action, chat_key, classify, english
from bot.telegram.render import render_replies
from bot.telegram.transport import TelegramTransport, redact
from handlers.messages import Attachment, Incoming, MessageHandler, Reply

log = logging.getLogger(__name__)

CHANNEL = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Bots can download files up to 20 MB with getFile.
DOWNLOAD_LIMIT_BYTES = 20 * 1024 * 1024
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

ENGINE_ERROR = ("抱歉，处理您的消息时出现了问题，请稍后再试。如多次出现，请联系管理员。",
                "Sorry, something went wrong while handling your message. Please try again later.")
FILE_TYPE = ("暂不支持“{name}”这种文件类型。请发送 PDF、DOCX、TXT 或 MD 格式的政策文件。",
             "Files like \"{name}\" are not supported. Please send policy documents as PDF, DOCX, TXT or MD.")
FILE_TOO_LARGE = ("文件过大（超过 {mb} MB），请拆分或压缩后再发送。",
                  "The file is too large (over {mb} MB). Please split or compress it and send it again.")
RATE_LIMITED = (RATE_LIMITED_ZH, RATE_LIMITED_EN)
FILE_DOWNLOAD_FAILED = ("文件下载失败，请稍后重新发送。", "The file could not be downloaded. Please send it again later.")


@dataclass
class TelegramOptions:
    #: Long-poll timeout of getUpdates (Telegram holds the request open this long when idle).
    poll_timeout_s: float = 25.0
    poll_interval_s: float = 0.0
    connect_timeout_s: float = 10.0
    #: Read timeout of ordinary Bot API calls (getUpdates adds its long-poll timeout to it).
    read_timeout_s: float = 15.0
    write_timeout_s: float = 30.0
    #: Back-off between attempts to start (getMe, setWebhook / deleteWebhook) while Telegram is unreachable.
    boot_retry_s: float = 2.0
    boot_retry_max_s: float = 60.0
    #: Polling mode: how long to keep trying to store a fetched update while the database is down.
    accept_deadline_s: float = 60.0
    accept_retry_s: float = 0.5
    #: How long a worker may process one update before another may take it over.
    inbound_lease_s: float = 30.0
    recovery_interval_s: float = 15.0
    inbound_retry_s: float = 5.0
    max_inbound_attempts: int = 5
    #: Engine calls running at once (each in a thread).
    max_concurrent: int = 4
    webhook_max_connections: int = 40
    #: Processed inbound rows and dedupe claims are deleted after this many days.
    keep_inbound_days: float = 7.0
    keep_updates_days: float = 7.0
    #: How often this process deletes old rows (inbound, outbox, dedupe claims).
    housekeeping_interval_s: float = 3600.0
    #: Per-chat limits; None = from settings (``RatePolicy.from_settings``).
    rate_limit: RatePolicy | None = None
    #: Run the outbox sender in this process.
    run_sender: bool = True
    #: Telegram allows about one message per second in a chat and 20 per minute in a group.
    outbox: OutboxOptions = field(default_factory=lambda: OutboxOptions(per_minute=20))

    @classmethod
    def from_settings(cls, settings: Any) -> "TelegramOptions":
        """Defaults, with the leases and the recovery period from Settings."""
        options = cls(inbound_lease_s=settings.inbound_lease_s, recovery_interval_s=settings.recovery_interval_s)
        options.outbox.lease_s = settings.outbox_lease_s
        return options


def file_api_base(api_base: str, configured: str | None = None) -> str:
    """The file download base (``…/file/bot``) belonging to an API base (``…/bot``)."""
    if configured:
        return configured
    if api_base.endswith("/bot"):
        return api_base[: -len("/bot")] + "/file/bot"
    return api_base.rstrip("/") + "/file/bot"


def webhook_secret(settings: Any) -> str:
    """The configured secret, or one derived from the bot token (the same in every worker)."""
    if settings.telegram_webhook_secret is not None:
        secret = settings.telegram_webhook_secret.get_secret_value()
        if not _SECRET_RE.match(secret):
            raise ValueError("YILIAN_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return secret
    token = settings.telegram_token.get_secret_value()
    return hmac.new(token.encode("utf-8"), b"yilian-telegram-webhook", hashlib.sha256).hexdigest()


class TelegramChannel:
    def __init__(self, ctx: Any, engine: MessageHandler, options: TelegramOptions | None = None) -> None:
        settings = ctx.settings
        if settings.telegram_token is None:
            raise ValueError("Telegram is not configured (YILIAN_TELEGRAM_TOKEN)")
        self.ctx = ctx
        self.settings = settings
        self.engine = engine
        self.options = options or TelegramOptions.from_settings(settings)
        token = settings.telegram_token.get_secret_value()
        self._token = token
        #: update_ids are per bot: the dedupe key includes the bot's id so a new token starts afresh.
        self.bot_id = token.split(":", 1)[0]
        self.webhook_url: str | None = settings.telegram_webhook_url or None
        self.webhook_path: str | None = None
        self.secret: str | None = None
        if self.webhook_url:
            self.webhook_path = urlsplit(self.webhook_url).path or "/"
            self.secret = webhook_secret(settings)
        self.api_base = settings.telegram_api_base
        self.application: Application = self._build_application(token)
        self.application.add_handler(TypeHandler(Update, self._on_update))
        self.application.add_error_handler(self._on_error)
        self.rate_policy = self.options.rate_limit or RatePolicy.from_settings(settings)
        self.inbox = InboxStore(ctx.sessions, CHANNEL, rate_policy=self.rate_policy)
        self.leases = LeaseKeeper(self.inbox, self.options.inbound_lease_s)
        self.outbox = OutboxStore(ctx.sessions)
        self.housekeeping = Housekeeping(ctx.sessions, CHANNEL, keep_updates_days=self.options.keep_updates_days,
                                         keep_inbound_days=self.options.keep_inbound_days,
                                         keep_outbox_days=self.options.outbox.keep_days,
                                         interval_s=self.options.housekeeping_interval_s)
        self.transport = TelegramTransport(self.application.bot)
        self.sender = OutboxSender(self.outbox, {CHANNEL: self.transport}, self.options.outbox)
        self._locks = KeyedLocks()
        self._sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._acks: dict[int, asyncio.Future[int | None]] = {}
        self._boot: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    def _build_application(self, token: str) -> Application:
        o = self.options
        builder = (
            ApplicationBuilder()
            .token(token)
            .base_url(self.api_base)
            .base_file_url(file_api_base(self.api_base, self.settings.telegram_file_api_base))
            .connect_timeout(o.connect_timeout_s)
            .read_timeout(o.read_timeout_s)
            .write_timeout(o.write_timeout_s)
            .get_updates_connect_timeout(o.connect_timeout_s)
            .get_updates_read_timeout(o.read_timeout_s)
        )
        if self.webhook_url:
            builder = builder.updater(None)
        return builder.build()

    @property
    def mode(self) -> str:
        return "webhook" if self.webhook_url else "polling"

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start in the background (returns at once; ``wait_ready`` waits for Telegram)."""
        self._stopping = False
        self._sem = asyncio.Semaphore(self.options.max_concurrent)
        self._boot = asyncio.create_task(self._boot_loop(), name="telegram-boot")

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def _boot_loop(self) -> None:
        delay = self.options.boot_retry_s
        while not self._stopping:
            try:
                await self._boot_once()
            except InvalidToken as exc:
                log.error("telegram refused the bot token (%s); the Telegram channel stays off", self._redact(exc))
                return
            except Exception as exc:  # noqa: BLE001 - network down, Telegram unavailable …: retry
                log.warning("telegram channel could not start (%s: %s); retrying in %.1fs",
                            type(exc).__name__, self._redact(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.boot_retry_max_s)
                continue
            self._ready.set()
            bot = self.application.bot
            log.info("telegram channel started", extra={"mode": self.mode, "bot": bot.username,
                                                         "api_base": self.api_base})
            return

    async def _boot_once(self) -> None:
        app = self.application
        o = self.options
        await app.initialize()  # getMe; does nothing when done before
        if not app.running:
            await app.start()
        if o.run_sender:
            await self.sender.start()
        if self._recovery is None:
            self._recovery = asyncio.create_task(self._keep_leases_and_recover(), name="telegram-inbound-recovery")
        if self.webhook_url:
            await app.bot.set_webhook(url=self.webhook_url, secret_token=self.secret,
                                      allowed_updates=ALLOWED_UPDATES,
                                      max_connections=o.webhook_max_connections)
        else:
            assert app.updater is not None
            if not app.updater.running:
                await app.updater.start_polling(poll_interval=o.poll_interval_s, timeout=o.poll_timeout_s,
                                                allowed_updates=ALLOWED_UPDATES,
                                                error_callback=self._polling_error)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop fetching, finish the updates already fetched (their replies are queued), stop
        sending, close the client. The webhook stays set: other workers may still serve it."""
        self._stopping = True
        if self._boot is not None and not self._boot.done():
            self._boot.cancel()
            await asyncio.gather(self._boot, return_exceptions=True)
        app = self.application
        if app.updater is not None and app.updater.running:
            try:
                await app.updater.stop()  # confirms the fetched updates to Telegram
            except Exception:
                log.exception("telegram updater did not stop cleanly")
        if app.running:
            await app.stop()  # the handler accepts the updates still queued
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
            self._recovery = None
        if self._tasks:  # let updates being processed finish: their replies get queued
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
        await self.sender.stop(timeout_s)
        try:
            await app.shutdown()
        except Exception:
            log.exception("telegram application did not shut down cleanly")
        self._ready.clear()
        log.info("telegram channel stopped")

    def _polling_error(self, exc: TelegramError) -> None:
        if isinstance(exc, Conflict):
            log.error("telegram getUpdates conflict: another process polls with this token, or a webhook "
                      "is set (%s); retrying", self._redact(exc))
        else:
            log.warning("telegram getUpdates failed (%s: %s); retrying", type(exc).__name__, self._redact(exc))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = getattr(update, "update_id", None)
        log.error("telegram update %s could not be handled", update_id, exc_info=context.error)

    # -- webhook -----------------------------------------------------------------------------------

    async def handle_webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        assert self.secret is not None
        if not hmac.compare_digest(given.encode("utf-8"), self.secret.encode("utf-8")):
            log.warning("telegram webhook request with a %s secret token refused",
                        "wrong" if given else "missing", extra={"remote": request.remote})
            return web.Response(status=403, text="")
        if not self.application.running:
            return web.Response(status=503, text="")  # Telegram delivers it again later
        try:
            data = await request.json()
            update = Update.de_json(data, self.application.bot)
            if not isinstance(update, Update):
                raise TypeError("not an update")
        except Exception as exc:  # noqa: BLE001 - invalid JSON or not an Update: 400
            log.warning("telegram webhook body is not an update (%s: %s)", type(exc).__name__, exc)
            return web.Response(status=400, text="")
        ack: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._acks[id(update)] = ack
        try:
            await self.application.process_update(update)
        finally:
            self._acks.pop(id(update), None)
        if ack.done() and ack.exception() is not None:
            return web.Response(status=500, text="")  # not stored: let Telegram retry
        return web.Response(status=200, text="")

    # -- accepting ---------------------------------------------------------------------------------

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ack = self._acks.get(id(update))
        try:
            # A webhook update is retried by Telegram if we fail; a polled one is ours alone.
            row_id = await self.accept(update, retry=ack is None)
        except Exception as exc:
            if ack is not None and not ack.done():
                ack.set_exception(exc)
                return
            raise
        if ack is not None and not ack.done():
            ack.set_result(row_id)

    def _redact(self, exc: BaseException | str) -> str:
        return redact(str(exc), self._token)

    def _username(self) -> str | None:
        try:
            return self.application.bot.username
        except RuntimeError:  # getMe has not been answered yet
            return None

    def external_id(self, update: Update) -> str:
        return f"{self.bot_id}:{update.update_id}"

    async def accept(self, update: Update, *, retry: bool = False) -> int | None:
        """Store ``update`` once and start processing it; None when it needs no answer, was seen
        before (by any worker) or is dropped by the chat's rate limit."""
        chat = chat_key(update)
        if chat is None or classify(update, bot_username=self._username()).kind == "ignore":
            log.debug("telegram update %s ignored", update.update_id)
            return None
        sender = update.effective_user
        # in a group the chat is where replies go, but limits are per person
        sender_key = str(sender.id) if sender is not None and str(sender.id) != chat else None
        REQUEST_ID.set(request_id_for(CHANNEL, self.external_id(update)))
        item = NewInbound(external_id=self.external_id(update), user_key=chat, payload=update.to_dict(),
                          sender_key=sender_key)
        deadline = time.monotonic() + self.options.accept_deadline_s
        while True:
            try:
                ids = await asyncio.to_thread(self.inbox.accept_batch, [item], lease_s=self.options.inbound_lease_s)
                break
            except Exception as exc:
                if not retry or time.monotonic() >= deadline:
                    log.error("telegram update %s could not be stored: %s", update.update_id, self._redact(exc))
                    raise
                log.warning("telegram update %s could not be stored (%s); retrying", update.update_id,
                            self._redact(exc))
                await asyncio.sleep(self.options.accept_retry_s)
        row_id = ids[0]
        if row_id is None:
            log.info("telegram update %s seen before or over its chat's rate limit; not answered", update.update_id)
            return None
        self._spawn(self._process_new(row_id, chat))
        return row_id

    # -- processing --------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_leases_and_recover(self) -> None:
        await asyncio.gather(self.leases.run(), self._recovery_loop())

    async def _process_new(self, row_id: int, chat: str) -> None:
        async def run() -> None:
            assert self._sem is not None
            async with self._sem:
                row = await asyncio.to_thread(self.inbox.claim, row_id, lease_s=self.options.inbound_lease_s)
                if row is not None:
                    await self._process(row)

        with self.leases.holding(row_id):  # accepted by this worker: ours until answered
            await self._locks.run(chat, run)

    async def _process_claimed(self, row: ClaimedInbound) -> None:
        async def run() -> None:
            assert self._sem is not None
            async with self._sem:
                await self._process(row)

        with self.leases.holding(row.id):
            await self._locks.run(row.user_key, run)

    async def _process(self, row: ClaimedInbound) -> None:
        with request_scope(request_id_for(CHANNEL, row.external_id)):
            await self._process_row(row)

    async def _process_row(self, row: ClaimedInbound) -> None:
        started = time.perf_counter()
        update = Update.de_json(row.payload, self.application.bot)
        if update.callback_query is not None and row.attempts == 1:
            await self._answer(update.callback_query)
        try:
            if row.rate_limited:  # over the chat's rate limit: the notice, not an answer
                replies = [Reply(_pick(RATE_LIMITED, update))]
            else:
                action = classify(update, row.external_id, bot_username=self._username())
                replies = await self._replies_for(action, update)
            payloads = render_replies(replies)
            query = update.callback_query
            if query is not None and query.message is not None and any(r.settle for r in replies):
                # the pressed notification is dealt with: its buttons go (``Reply.settle``)
                payloads.insert(0, {"kind": "edit_markup", "message_id": query.message.message_id})
        except Exception as exc:  # noqa: BLE001 - download failed, database trouble …: try again later
            if row.attempts < self.options.max_inbound_attempts:
                log.warning("telegram update %s: attempt %s failed (%s); will retry", row.external_id,
                            row.attempts, self._redact(exc))
                try:
                    await asyncio.to_thread(self.inbox.retry, row, self.options.inbound_retry_s * row.attempts,
                                            self._redact(exc))
                except Exception:
                    log.exception("telegram update %s: could not schedule a retry", row.external_id)
                return
            log.error("telegram update %s: giving up after %s attempts (%s)", row.external_id, row.attempts,
                      self._redact(exc))
            payloads = render_replies([Reply(_pick(ENGINE_ERROR, update))])
        finished = await self.inbox.finish_patiently(row, payloads, budget_s=self.options.inbound_lease_s * 0.5)
        if finished is None:
            return  # the lease runs out and the recovery loop processes the update again
        if not finished:
            log.warning("telegram update %s: claim lost before the replies were queued", row.external_id)
            return
        self.sender.wake()
        log.info("telegram update processed", extra={"external_id": row.external_id, "parts": len(payloads),
                                                     "ms": round((time.perf_counter() - started) * 1000, 1)})

    async def _answer(self, query: CallbackQuery) -> None:
        """Stop the button's spinner (best effort: an old query can no longer be answered)."""
        try:
            await query.answer()
        except TelegramError as exc:
            log.info("telegram callback query %s not answered: %s", query.id, self._redact(exc))

    async def _replies_for(self, action: Action, update: Update) -> list[Reply]:
        if action.kind == "note":
            return [Reply(text=action.note or "")]
        if action.kind == "ignore":
            return []
        incoming = action.incoming
        assert incoming is not None
        if action.kind == "file":
            got = await self._download(action, update)
            if isinstance(got, Reply):
                return [got]
            incoming = got
        try:
            return list(await asyncio.to_thread(self.engine.handle, incoming))
        except Exception:
            # The engine may have done part of its work: never run it twice for one update.
            log.exception("conversation engine failed on a telegram update", extra={"user": incoming.user_key})
            return [Reply(text=_pick(ENGINE_ERROR, update))]

    async def _download(self, action: Action, update: Update) -> Incoming | Reply:
        from knowledge.readers import SUPPORTED_SUFFIXES

        limit = min(DOWNLOAD_LIMIT_BYTES, int(self.settings.max_upload_bytes))
        too_large = Reply(_pick(FILE_TOO_LARGE, update, mb=max(1, round(limit / 1024 / 1024))))
        name = action.file_name or "file"
        if PurePosixPath(name.replace("\\", "/")).suffix.lower() not in SUPPORTED_SUFFIXES:
            return Reply(_pick(FILE_TYPE, update, name=name[:80]))
        if action.file_size is not None and action.file_size > limit:
            return too_large
        try:
            tg_file = await self.application.bot.get_file(action.file_id or "")
            if tg_file.file_size is not None and tg_file.file_size > limit:
                return too_large
            data = bytes(await tg_file.download_as_bytearray())
        except (BadRequest, Forbidden, InvalidToken) as exc:  # "file is too big", gone, 404 …
            if "too big" in str(exc).lower():
                return too_large
            log.warning("telegram file %s could not be downloaded: %s", action.file_id, self._redact(exc))
            return Reply(_pick(FILE_DOWNLOAD_FAILED, update))
        if len(data) > limit:
            return too_large
        assert action.incoming is not None
        return replace(action.incoming, attachments=(Attachment(file_name=name, data=data,
                                                                mime_type=action.mime_type),))

    # -- recovery ----------------------------------------------------------------------------------

    async def recover_once(self) -> int:
        rows = await asyncio.to_thread(self.inbox.claim_due, 50, lease_s=self.options.inbound_lease_s)
        for row in rows:
            log.info("telegram update %s picked up again (attempt %s)", row.external_id, row.attempts)
            self._spawn(self._process_claimed(row))
        return len(rows)

    async def _recovery_loop(self) -> None:
        while not self._stopping:
            try:
                await self.recover_once()
            except Exception:
                log.exception("telegram inbound recovery failed")
            await self.housekeeping.maybe_run()
            await asyncio.sleep(self.options.recovery_interval_s)

    # -- tests and status --------------------------------------------------------------------------

    async def idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no update is being processed (tests)."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def _pick(pair: tuple[str, str], update: Update, **fmt: object) -> str:
    text = pair[1] if english(update) else pair[0]
    return text.format(**fmt) if fmt else text


__all__ = ["CHANNEL", "DOWNLOAD_LIMIT_BYTES", "SECRET_HEADER", "TelegramChannel", "TelegramOptions",
           "file_api_base", "webhook_secret"]
