"""``yilian serve`` plugin for the Telegram channel (listed in ``bot.channels.CHANNEL_MODULES``).

Everything lives in ``bot.telegram``; this module only declares the plugin:

* ``setup_routes`` creates the channel and, in webhook mode (``YILIAN_TELEGRAM_WEBHOOK_URL``), adds
  the webhook route at the URL's path on the shared aiohttp application;
* ``start`` (after the HTTP server is up) starts it — long polling, or ``setWebhook`` with the
  secret token — and returns its stop coroutine (stop polling and confirm the offset, finish the
  updates in hand, stop the outbox sender, close the Bot client).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.channels import ChannelPlugin, StopFn
from bot.telegram import (
    TELEGRAM_CHANNEL_KEY,
    TelegramChannel,
    TelegramOptions,
    setup_telegram,
)


def make_plugin(options: TelegramOptions | None = None) -> ChannelPlugin:
    """The plugin, with channel ``options`` (tests use short timeouts)."""

    def setup_routes(app: web.Application, ctx: Any, engine: Any) -> None:
        setup_telegram(app, ctx, engine, options=options)

    async def start(ctx: Any, engine: Any, app: web.Application) -> StopFn | None:
        channel = app.get(TELEGRAM_CHANNEL_KEY)
        if channel is None:  # routes were not set up through this plugin (polling needs none)
            if not ctx.settings.telegram_enabled:
                return None
            channel = TelegramChannel(ctx, engine, options)
            if channel.webhook_path is not None:
                raise RuntimeError("Telegram webhook mode needs the plugin's setup_routes before the server starts")
        await channel.start()
        return channel.stop

    return ChannelPlugin(name="telegram", enabled=lambda settings: settings.telegram_enabled,
                         setup_routes=setup_routes, start=start)


CHANNEL = make_plugin()

__all__ = ["CHANNEL", "make_plugin"]
