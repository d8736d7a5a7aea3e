"""``yilian serve`` plugin for the WeCom channel (listed in ``bot.channels.CHANNEL_MODULES``).

Everything lives in ``bot.wecom``; this module only declares the plugin. The callback routes and
the channel's background work (outbox sender, inbound recovery) are added by ``setup_wecom``, which
ties them to the aiohttp application's start-up and clean-up.
"""

from __future__ import annotations

from bot.channels import ChannelPlugin
from bot.wecom import setup_wecom

CHANNEL = ChannelPlugin(
    name="wecom",
    enabled=lambda settings: settings.wecom_enabled,
    setup_routes=lambda app, ctx, engine: setup_wecom(app, ctx, engine) and None,
)

__all__ = ["CHANNEL"]
