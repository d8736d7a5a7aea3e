"""Telegram channel (python-telegram-bot v22).

Wire it into an aiohttp application and start it::

    from bot.telegram import setup_telegram
    channel = setup_telegram(app, ctx, engine)   # adds the webhook route in webhook mode
    await channel.start()                        # after the server is up; ``await channel.stop()``

Modules: ``inbound`` (updates → what to do), ``render`` (replies → outbox payloads, inline
keyboards), ``transport`` (the outbox transport: sendMessage / sendDocument, RetryAfter),
``channel`` (the PTB Application: polling or webhook, dedupe, processing, recovery).
The ``yilian serve`` plugin is ``bot.telegram_channel.CHANNEL``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bot.telegram.channel import TelegramChannel, TelegramOptions

log = logging.getLogger(__name__)

TELEGRAM_CHANNEL_KEY: web.AppKey[TelegramChannel] = web.AppKey("telegram_channel", TelegramChannel)


def setup_telegram(app: web.Application, ctx: Any, engine: Any, *,
                   options: TelegramOptions | None = None) -> TelegramChannel | None:
    """Create the channel, keep it on ``app`` and, in webhook mode, add the webhook route (the
    path of ``YILIAN_TELEGRAM_WEBHOOK_URL``). None when Telegram is not configured."""
    if not ctx.settings.telegram_enabled:
        log.info("Telegram not configured (YILIAN_TELEGRAM_TOKEN); channel off")
        return None
    channel = TelegramChannel(ctx, engine, options)
    app[TELEGRAM_CHANNEL_KEY] = channel
    if channel.webhook_path is not None:
        app.router.add_post(channel.webhook_path, channel.handle_webhook)
    return channel


__all__ = ["TELEGRAM_CHANNEL_KEY", "TelegramChannel", "TelegramOptions", "setup_telegram"]
