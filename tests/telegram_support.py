"""Test doubles for the Telegram channel: a fake Bot API server on loopback, and update builders.

``FakeTelegram`` is an aiohttp server on 127.0.0.1 (random port) that answers the real
python-telegram-bot client the way the Bot API does: requests are ``POST {base}{token}/{method}``
with form-encoded (or multipart, or JSON) parameters, answers are ``{"ok": true, "result": …}`` or
``{"ok": false, "error_code": …, "description": …, "parameters": …}``. It implements

* ``getMe``, ``deleteWebhook``, ``setWebhook`` (recorded);
* ``getUpdates``: long polling (waits up to ``timeout`` seconds for an update), serving queued
  updates in order and dropping those below ``offset`` as confirmed — like Telegram;
  ``push(update, redeliver=True)`` serves an update once regardless of the offset, which is how a
  redelivery after a lost confirmation looks to a client;
* ``sendMessage`` / ``sendDocument``: checked against the real limits (4096 characters,
  callback_data 1–64 bytes) and recorded; ``fail_next("429", retry_after=1)`` makes the next call
  answer HTTP 429 with ``retry_after`` (nothing delivered);
* ``editMessageReplyMarkup`` (a keyboard removed; removing it twice is refused "message is not
  modified", as Telegram does);
* ``answerCallbackQuery``, ``getFile`` (with the 20 MB limit) and the file download path
  ``/file/bot{token}/{file_path}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghijk"
BOT_ID = 123456789
BOT_USERNAME = "yilian_test_bot"
MAX_DOWNLOAD = 20 * 1024 * 1024


@dataclass
class Sent:
    method: str
    chat_id: int
    text: str
    keyboard: list[list[dict[str, Any]]]
    message_id: int
    at: float
    file_name: str | None = None
    data: bytes | None = None

    @property
    def buttons(self) -> list[str]:
        return [b["text"] for row in self.keyboard for b in row]

    @property
    def callback_data(self) -> list[str]:
        return [b.get("callback_data", "") for row in self.keyboard for b in row]


@dataclass
class FakeTelegram:
    token: str = TOKEN
    url: str = ""  # the API base to configure: http://127.0.0.1:PORT/bot
    file_url: str = ""
    queue: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    #: (chat id, message id) of every keyboard removed with editMessageReplyMarkup.
    edited: list[tuple[int, int]] = field(default_factory=list)
    #: Keyboards asked to be removed again (answered 400 "message is not modified").
    edit_refused: list[tuple[int, int]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    #: File ids whose getFile reports a size (without having the bytes).
    file_sizes: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: (method, time) of every call answered with an injected failure.
    failed: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self._ids = itertools.count(1001)
        self._message_ids = itertools.count(1)

    # -- control ---------------------------------------------------------------------------

    def next_update_id(self) -> int:
        return next(self._ids)

    def push(self, update: dict[str, Any], *, redeliver: bool = False) -> dict[str, Any]:
        """Queue ``update`` for getUpdates; ``redeliver`` serves it once even below the offset."""
        self.queue.append((update, redeliver))
        self._changed.set()
        return update

    def fail_next(self, kind: str = "429", *, retry_after: int = 1, method: str = "sendMessage") -> None:
        self.failures.append((method, {"kind": kind, "retry_after": retry_after}))

    def add_file(self, file_id: str, name: str, data: bytes) -> None:
        self.files[file_id] = (name, data)

    def to(self, chat_id: int) -> list[Sent]:
        return [s for s in self.sent if s.chat_id == chat_id]

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in self.calls if m == method]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout}s; sent={self.sent!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass

    async def wait_sent(self, chat_id: int, count: int, timeout: float = 10.0) -> list[Sent]:
        await self.wait_for(lambda: len(self.to(chat_id)) >= count, timeout)
        return self.to(chat_id)

    async def wait_consumed(self, timeout: float = 5.0) -> None:
        """Until every queued update has been handed out (and confirmed)."""
        await self.wait_for(lambda: not self.queue, timeout)

    # -- server ----------------------------------------------------------------------------

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{bot}/{method}", self._dispatch)
        app.router.add_get("/file/{bot}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/bot"
        self.file_url = f"http://127.0.0.1:{port}/file/bot"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def error(status: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        out: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                out[key] = value
            else:
                out[key] = value
        return out

    @staticmethod
    def _json(value: Any, default: Any = None) -> Any:
        """Parameters arrive JSON-encoded in forms (strings as they are)."""
        if value is None or value == "":
            return default
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def _bot_user(self) -> dict[str, Any]:
        return {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "医联助手",
                "username": BOT_USERNAME, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    async def _dispatch(self, request: web.Request) -> web.Response:
        if request.match_info["bot"] != f"bot{self.token}":
            return self.error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, {k: v for k, v in params.items() if not isinstance(v, web.FileField)}))
        self._changed.set()
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self.error(404, "Not Found: method not found")
        for i, (m, failure) in enumerate(self.failures):
            if m == method:
                del self.failures[i]
                self.failed.append((method, time.time()))
                if failure["kind"] == "429":
                    return self.error(429, f"Too Many Requests: retry after {failure['retry_after']}",
                                      retry_after=failure["retry_after"])
                if failure["kind"] == "500":
                    return self.error(500, "Internal Server Error")
        return await handler(params)

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self.ok(self._bot_user())

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        return self.ok(True)

    async def _m_setWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhooks.append({"url": params.get("url"), "secret_token": params.get("secret_token"),
                              "allowed_updates": self._json(params.get("allowed_updates"))})
        return self.ok(True)

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        offset = int(self._json(params.get("offset"), 0) or 0)
        timeout = float(self._json(params.get("timeout"), 0) or 0)
        limit = int(self._json(params.get("limit"), 100) or 100)
        deadline = time.monotonic() + min(timeout, 5.0)
        while True:
            if offset:
                self.queue = [(u, r) for u, r in self.queue if r or u["update_id"] >= offset]
            batch = self.queue[:limit]
            if batch or time.monotonic() >= deadline:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass
        for item in batch:
            if item[1]:  # a redelivery is served once
                self.queue.remove(item)
        return self.ok([u for u, _ in batch])

    def _message(self, chat_id: int, **extra: Any) -> dict[str, Any]:
        return {"message_id": next(self._message_ids), "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": self._bot_user(), **extra}

    def _keyboard(self, params: dict[str, Any]) -> list[list[dict[str, Any]]] | web.Response:
        markup = self._json(params.get("reply_markup"))
        if not markup:
            return []
        rows = markup.get("inline_keyboard", [])
        for row in rows:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode("utf-8")) <= 64:
                    return self.error(400, "Bad Request: BUTTON_DATA_INVALID")
        return rows

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        chat_id = int(self._json(params.get("chat_id")))
        text = str(params.get("text") or "")
        if not text.strip():
            return self.error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self.error(400, "Bad Request: message is too long")
        keyboard = self._keyboard(params)
        if isinstance(keyboard, web.Response):
            return keyboard
        message = self._message(chat_id, text=text)
        self.sent.append(Sent("sendMessage", chat_id, text, keyboard, message["message_id"], time.time()))
        self._changed.set()
        return self.ok(message)

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> web.Response:
        """Records ``(chat_id, message_id)`` of each keyboard removed (``edited``). Removing it
        again is refused as Telegram does ("message is not modified", ``edit_refused``)."""
        chat_id = int(self._json(params.get("chat_id")))
        message_id = int(self._json(params.get("message_id")))
        self._changed.set()
        if (chat_id, message_id) in self.edited and not self._json(params.get("reply_markup")):
            self.edit_refused.append((chat_id, message_id))
            return self.error(400, "Bad Request: message is not modified: specified new message content and reply "
                                   "markup are exactly the same as a current content and reply markup of the message")
        self.edited.append((chat_id, message_id))
        return self.ok(self._message(chat_id, text="(edited)") | {"message_id": message_id})

    async def _m_sendDocument(self, params: dict[str, Any]) -> web.Response:
        chat_id = int(self._json(params.get("chat_id")))
        document = params.get("document")
        if not isinstance(document, web.FileField):
            return self.error(400, "Bad Request: there is no document in the request")
        data = document.file.read()
        keyboard = self._keyboard(params)
        if isinstance(keyboard, web.Response):
            return keyboard
        caption = str(params.get("caption") or "")
        message = self._message(chat_id, caption=caption,
                                document={"file_id": "sent", "file_unique_id": "sent", "file_name": document.filename})
        self.sent.append(Sent("sendDocument", chat_id, caption, keyboard, message["message_id"], time.time(),
                              file_name=document.filename, data=data))
        self._changed.set()
        return self.ok(message)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        self.answered.append(str(params.get("callback_query_id")))
        self._changed.set()
        return self.ok(True)

    async def _m_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params.get("file_id"))
        if file_id in self.file_sizes:
            size = self.file_sizes[file_id]
        elif file_id in self.files:
            size = len(self.files[file_id][1])
        else:
            return self.error(400, "Bad Request: invalid file_id")
        if size > MAX_DOWNLOAD:
            return self.error(400, "Bad Request: file is too big")
        return self.ok({"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size,
                        "file_path": f"documents/{file_id}.bin"})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["bot"] != f"bot{self.token}":
            return web.Response(status=401)
        path = request.match_info["path"]
        file_id = path.removeprefix("documents/").removesuffix(".bin")
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id][1], content_type="application/octet-stream")


# ------------------------------------------------------------------------------------------------
# updates as Telegram sends them

_message_ids = itertools.count(50_000)
_query_ids = itertools.count(7_000)


def user(user_id: int, first_name: str = "测试", language_code: str = "zh-hans") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": language_code}


def _message(user_id: int, chat_id: int | None = None, **fields: Any) -> dict[str, Any]:
    chat = ({"id": user_id, "type": "private", "first_name": "测试"} if chat_id is None
            else {"id": chat_id, "type": "supergroup", "title": "医联体工作群"})
    return {"message_id": next(_message_ids), "date": int(time.time()), "chat": chat, "from": user(user_id), **fields}


def text_update(update_id: int, user_id: int, text: str, *, chat_id: int | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"text": text}
    if text.startswith("/"):
        command = text.split()[0]
        fields["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"update_id": update_id, "message": _message(user_id, chat_id, **fields)}


def callback_update(update_id: int, user_id: int, data: str | None, *, message_id: int = 1,
                    message_text: str = "请选择：") -> dict[str, Any]:
    query: dict[str, Any] = {
        "id": str(next(_query_ids)), "from": user(user_id), "chat_instance": "-42",
        "message": {"message_id": message_id, "date": int(time.time()),
                    "chat": {"id": user_id, "type": "private"},
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "医联助手", "username": BOT_USERNAME},
                    "text": message_text},
    }
    if data is not None:
        query["data"] = data
    return {"update_id": update_id, "callback_query": query}


def document_update(update_id: int, user_id: int, file_id: str, file_name: str, size: int,
                    mime_type: str = "application/pdf", caption: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"document": {"file_id": file_id, "file_unique_id": f"u{file_id}",
                                           "file_name": file_name, "mime_type": mime_type, "file_size": size}}
    if caption:
        fields["caption"] = caption
    return {"update_id": update_id, "message": _message(user_id, **fields)}


def sticker_update(update_id: int, user_id: int) -> dict[str, Any]:
    return {"update_id": update_id, "message": _message(user_id, sticker={
        "file_id": "stk1", "file_unique_id": "ustk1", "type": "regular", "width": 512, "height": 512,
        "is_animated": False, "is_video": False})}


def telegram_settings(data_dir: Any, api_base: str, **overrides: Any):
    from bot.config import Settings

    values: dict[str, Any] = {"data_dir": data_dir, "web_chat": False, "telegram_token": TOKEN, "telegram_api_base": api_base}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def fast_options(**overrides: Any):
    """Channel options with test-sized waits (production defaults are seconds to minutes)."""
    from bot.outbox import OutboxOptions
    from bot.telegram import TelegramOptions

    outbox = OutboxOptions(poll_interval_s=0.05, lease_s=3.0, backoff_base_s=0.02, backoff_max_s=0.1,
                           per_minute=60)
    values: dict[str, Any] = {"poll_timeout_s": 0.5, "connect_timeout_s": 2.0, "read_timeout_s": 3.0,
                                  "boot_retry_s": 0.05, "recovery_interval_s": 0.1, "inbound_retry_s": 0.02,
                                  "inbound_lease_s": 3.0, "accept_retry_s": 0.02, "outbox": outbox}
    values.update(overrides)
    return TelegramOptions(**values)
