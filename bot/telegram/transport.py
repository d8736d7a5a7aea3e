"""The outbox transport for Telegram: one outbox row → one ``sendMessage`` / ``sendDocument`` call
through the PTB ``Bot``.

Errors are mapped onto ``DeliveryError`` so that the outbox sender retries what can succeed later:

* ``RetryAfter`` (HTTP 429, flood control): retryable after ``retry_after`` seconds. The pause is
  also applied to every other row this transport is asked to send meanwhile (a bot's flood limit
  is mostly global), without calling Telegram; the rows stay queued in the database, so a restart
  in between loses nothing.
* ``TimedOut`` / ``NetworkError``: retryable with back-off. (A timed-out send may have reached
  Telegram; the Bot API has no idempotency key, so such a message can arrive twice. 429s and
  connection errors cannot cause that.)
* ``ChatMigrated`` (a group became a supergroup): sent again at once to the new chat id.
* ``BadRequest`` with a keyboard: sent again without the keyboard (the text must not be lost to a
  button Telegram refuses); other ``BadRequest`` and ``Forbidden`` (the user blocked the bot) are
  permanent.
"""

from __future__ import annotations

import base64
import logging
import time
import warnings
from datetime import timedelta
from typing import Any

from telegram import Bot
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)

from bot.outbox import DeliveryError, OutboxItem
from bot.telegram.render import markup_for

log = logging.getLogger(__name__)


def redact(text: str, token: str) -> str:
    """``text`` without the bot token (PTB error messages and URLs can contain it)."""
    if token:
        text = text.replace(token, "<token>")
        secret = token.partition(":")[2]
        if secret:
            text = text.replace(secret, "<token>")
    return text


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the type changes to timedelta
        warnings.simplefilter("ignore")
        value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return max(0.0, value.total_seconds())
    return max(0.0, float(value))


class TelegramTransport:
    def __init__(self, bot: Bot, *, clock: Any = time.monotonic) -> None:
        self.bot = bot
        self._clock = clock
        self._paused_until = 0.0
        self.sent = 0

    def _redact(self, exc: BaseException) -> str:
        return redact(str(exc), self.bot.token)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def _call(self, chat_id: int, payload: dict[str, Any], *, keyboard: bool = True) -> None:
        markup = markup_for(payload) if keyboard else None
        kind = payload.get("kind", "text")
        if kind == "text":
            # parse_mode=None: never interpret reply text as HTML/Markdown (whatever bot defaults say)
            await self.bot.send_message(chat_id=chat_id, text=payload["text"], reply_markup=markup,
                                        parse_mode=None)
        elif kind == "document":
            data = base64.b64decode(payload["data_b64"])
            await self.bot.send_document(
                chat_id=chat_id,
                document=data,
                filename=payload.get("file_name") or "file",
                caption=payload.get("caption"),
                parse_mode=None,
                reply_markup=markup,
            )
        elif kind == "edit_markup":
            # a notification button was acted on: drop the keyboard of the pressed message
            try:
                await self.bot.edit_message_reply_markup(chat_id=chat_id, message_id=int(payload["message_id"]),
                                                         reply_markup=None)
            except BadRequest as exc:  # "message is not modified", "message to edit not found": done already
                log.info("telegram keyboard of message %s not removed: %s", payload.get("message_id"),
                         self._redact(exc))
        else:
            raise DeliveryError(f"unknown payload kind {kind!r}", retryable=False)

    async def send(self, item: OutboxItem) -> str | None:
        waiting = self.paused_for
        if waiting > 0:
            raise DeliveryError(f"flood control: paused for {waiting:.1f}s", retryable=True, retry_after_s=waiting)
        try:
            chat_id = int(item.recipient)
        except ValueError:
            raise DeliveryError(f"bad chat id {item.recipient!r}", retryable=False) from None
        note: str | None = None
        try:
            try:
                await self._call(chat_id, item.payload)
            except ChatMigrated as exc:
                log.warning("telegram chat %s migrated to %s; sending there", chat_id, exc.new_chat_id)
                note = f"chat migrated to {exc.new_chat_id}"
                await self._call(int(exc.new_chat_id), item.payload)
            except BadRequest as exc:
                if not item.payload.get("keyboard"):
                    raise
                log.warning("telegram refused outbox row %s with its keyboard (%s); sending it without", item.id,
                            self._redact(exc))
                note = f"sent without keyboard: {self._redact(exc)}"
                await self._call(chat_id, item.payload, keyboard=False)
        except RetryAfter as exc:
            seconds = retry_after_seconds(exc)
            self.pause(seconds)
            raise DeliveryError(f"flood control: retry after {seconds:g}s", retryable=True,
                                retry_after_s=seconds) from None
        except (Forbidden, BadRequest) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {self._redact(exc)}", retryable=False) from None
        except InvalidToken as exc:
            raise DeliveryError(f"invalid bot token: {self._redact(exc)}", retryable=True) from None
        except TelegramError as exc:  # NetworkError, TimedOut, Conflict, anything new
            raise DeliveryError(f"{type(exc).__name__}: {self._redact(exc)}", retryable=True) from None
        self.sent += 1
        return note


__all__ = ["TelegramTransport", "redact", "retry_after_seconds"]
