"""The registration point for chat channels started by ``yilian serve``.

A channel is described by a ``ChannelPlugin``:

* ``enabled(settings)`` — whether its settings are present (e.g. ``settings.telegram_enabled``);
* ``setup_routes(app, ctx, engine)`` — optional: add HTTP routes to the shared aiohttp application
  (e.g. ``/wecom/callback``, a Telegram webhook). Called before the server starts;
* ``start(ctx, engine, app)`` — optional coroutine: start background work (polling, an outbox
  sender) and return a coroutine function that stops it. Called after the HTTP server is up;
  stop functions run in reverse order on shutdown (SIGINT/SIGTERM).

Channel modules expose their plugin as a module attribute ``CHANNEL`` and are listed in
``CHANNEL_MODULES`` below; a module that is not installed (yet) is skipped. Tests or extensions
can also call ``register_channel`` directly.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from bot.config import Settings
from bot.context import AppContext

if TYPE_CHECKING:
    from handlers.engine import ConversationEngine

log = logging.getLogger(__name__)

StopFn = Callable[[], Awaitable[None]]
RouteSetup = Callable[[web.Application, AppContext, "ConversationEngine"], None]
StartFn = Callable[[AppContext, "ConversationEngine", web.Application], Awaitable[StopFn | None]]


@dataclass(frozen=True)
class ChannelPlugin:
    name: str
    enabled: Callable[[Settings], bool]
    setup_routes: RouteSetup | None = None
    start: StartFn | None = None


#: Modules that define ``CHANNEL: ChannelPlugin``. Add a channel here.
CHANNEL_MODULES: tuple[str, ...] = (
    "bot.telegram_channel",  # Telegram (python-telegram-bot): polling or webhook
    "bot.wecom_channel",  # WeCom self-built app: /wecom/callback + message/send
)

_registered: list[ChannelPlugin] = []


def register_channel(plugin: ChannelPlugin) -> ChannelPlugin:
    """Add a channel plugin (replacing one of the same name)."""
    _registered[:] = [p for p in _registered if p.name != plugin.name]
    _registered.append(plugin)
    return plugin


def unregister_channel(name: str) -> None:
    _registered[:] = [p for p in _registered if p.name != name]


def available_channels() -> list[ChannelPlugin]:
    """Registered plugins plus those of the installed ``CHANNEL_MODULES`` (by name, no dupes)."""
    plugins: dict[str, ChannelPlugin] = {}
    for module_name in CHANNEL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # the channel is simply not part of this build (yet)
                continue
            raise
        plugin = getattr(module, "CHANNEL", None)
        if isinstance(plugin, ChannelPlugin):
            plugins[plugin.name] = plugin
        else:
            log.warning("channel module has no CHANNEL plugin", extra={"channel_module": module_name})
    for plugin in _registered:
        plugins[plugin.name] = plugin
    return list(plugins.values())


def enabled_channels(settings: Settings) -> list[ChannelPlugin]:
    return [p for p in available_channels() if p.enabled(settings)]


__all__ = [
    "CHANNEL_MODULES",
    "ChannelPlugin",
    "StopFn",
    "available_channels",
    "enabled_channels",
    "register_channel",
    "unregister_channel",
]
