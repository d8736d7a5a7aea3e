"""Helpers shared by the channel tests (WeCom, Telegram, rate limits, safety, secrets)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select

from storage.models import InboundMessage, OutboxMessage


def count_rows(ctx: Any, model: Any, *conditions: Any) -> int:
    with ctx.sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*conditions))


async def settled(channel: Any, ctx: Any, timeout: float = 10.0) -> None:
    """Wait until nothing is being processed and nothing is left to send."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await channel.idle()
        if count_rows(ctx, OutboxMessage, OutboxMessage.status.in_(("pending", "sending"))) == 0 and \
                count_rows(ctx, InboundMessage, InboundMessage.status.in_(("pending", "processing"))) == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("channel did not settle")


@asynccontextmanager
async def serve_telegram(ctx, engine, options):
    """The real server app with the Telegram plugin on 127.0.0.1 (polling the fake Bot API)."""
    from aiohttp import web

    from bot.server import create_app
    from bot.telegram import TELEGRAM_CHANNEL_KEY
    from bot.telegram_channel import make_plugin

    plugin = make_plugin(options)
    app = create_app(ctx, engine, channels=[plugin], web_chat=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stop = None
    try:
        stop = await plugin.start(ctx, engine, app)
        channel = app[TELEGRAM_CHANNEL_KEY]
        await channel.wait_ready(5.0)
        yield channel
    finally:
        if stop is not None:
            await stop()
        await runner.cleanup()
