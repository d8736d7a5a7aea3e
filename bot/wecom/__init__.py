"""WeCom (企业微信) self-built app channel.

Wire it into an aiohttp application with one call::

    from bot.wecom import setup_wecom
    setup_wecom(app, ctx, engine)   # adds /wecom/callback, starts/stops the sender with the app

It does nothing (and returns None) when WeCom is not configured (``YILIAN_WECOM_CORP_ID``,
``_AGENT_ID``, ``_SECRET``, ``_TOKEN``, ``_AES_KEY``). Modules: ``crypto`` (signature + AES),
``inbound`` (parsing, dedupe keys, what to do), ``inbox`` (accepted messages), ``api`` (HTTP
client honouring ``YILIAN_WECOM_API_BASE``), ``render`` (replies → messages), ``transport`` (the
outbox transport), ``channel`` (the endpoint and processing).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bot.wecom.channel import CHANNEL, WeComChannel, WeComOptions

log = logging.getLogger(__name__)

WECOM_CHANNEL_KEY: web.AppKey[WeComChannel] = web.AppKey("wecom_channel", WeComChannel)
CALLBACK_PATH = "/wecom/callback"


def setup_wecom(app: web.Application, ctx: Any, engine: Any, *, options: WeComOptions | None = None,
                path: str = CALLBACK_PATH) -> WeComChannel | None:
    """Add the callback routes to ``app`` and tie the channel's background work to its life cycle."""
    settings = ctx.settings
    if not settings.wecom_enabled:
        log.info("WeCom not configured; /wecom/callback not served")
        return None
    if settings.wecom_agent_id is None:
        log.error("YILIAN_WECOM_AGENT_ID is not set; WeCom disabled (replies could not be sent)")
        return None
    channel = WeComChannel(ctx, engine, options)
    app[WECOM_CHANNEL_KEY] = channel
    app.router.add_get(path, channel.handle_get)
    app.router.add_post(path, channel.handle_post)
    app.on_startup.append(channel.on_startup)
    app.on_cleanup.append(channel.on_cleanup)
    return channel


__all__ = ["CALLBACK_PATH", "CHANNEL", "WECOM_CHANNEL_KEY", "WeComChannel", "WeComOptions", "setup_wecom"]
