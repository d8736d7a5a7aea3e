"""Notifications → each recipient's chat channels, through the persistent outbox.

``ChannelNotifier`` is the ``handlers.notifications.ChannelRouter`` of a running assistant: the
engine (or the escalation loop) hands it one ``Outgoing`` for one staff member, inside the
transaction that caused it, and it queues that reply for every channel the person can be reached
on — WeCom (their ``wecom_userid``, when WeCom is configured) and Telegram (their bound private
chat, when Telegram is configured) — the channel they last wrote from first. The channels' own
outbox senders deliver the rows (retries, pacing, order) exactly as they deliver replies; the
outbox ``dedupe_key`` (``notice:<notification key>:<channel>:<part>``) keeps a notification from
being queued twice. A channel that is not configured in this deployment is never used, so no row
waits for a sender that does not exist.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy.orm import Session

from bot.outbox import enqueue_many
from handlers.messages import Outgoing
from storage.models import Staff

log = logging.getLogger(__name__)

#: Outbox dedupe keys hold 200 characters; room is left for ``:<channel>:<part>``.
_MAX_KEY_PREFIX = 180


def key_prefix(dedupe_key: str, channel: str) -> str:
    """``notice:<key>:<channel>`` (the outbox adds ``:<part>``); a key too long for the outbox
    column is replaced by its digest, which is just as unique."""
    prefix = f"notice:{dedupe_key}:{channel}"
    if len(prefix) <= _MAX_KEY_PREFIX:
        return prefix
    return f"notice:h{hashlib.sha256(dedupe_key.encode('utf-8')).hexdigest()}:{channel}"


class ChannelNotifier:
    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def addresses(self, staff: Staff) -> list[tuple[str, str]]:
        """``(channel, recipient)`` pairs that reach ``staff``, the last-used channel first."""
        found: list[tuple[str, str]] = []
        # WeCom needs its agent id as well: without it the channel does not run (``setup_wecom``)
        if self.settings.wecom_enabled and self.settings.wecom_agent_id is not None and staff.wecom_userid:
            found.append(("wecom", staff.wecom_userid))
        if self.settings.telegram_enabled and staff.telegram_user_id:
            found.append(("telegram", str(staff.telegram_user_id)))
        found.sort(key=lambda pair: pair[0] != staff.last_channel)
        return found

    def payloads(self, channel: str, item: Outgoing) -> list[dict[str, Any]]:
        if channel == "wecom":
            from bot.wecom.render import render_reply as render_wecom

            return render_wecom(item.reply, style=self.settings.wecom_choice_style)
        from bot.telegram.render import render_reply as render_telegram

        return render_telegram(item.reply)

    def route(self, session: Session, staff: Staff, item: Outgoing, dedupe_key: str) -> list[str]:
        used: list[str] = []
        for channel, recipient in self.addresses(staff):
            enqueue_many(session, channel, recipient, self.payloads(channel, item), key_prefix(dedupe_key, channel))
            used.append(channel)
        log.info("notification queued", extra={"kind": item.kind, "staff": staff.code, "channels": used})
        return used


__all__ = ["ChannelNotifier", "key_prefix"]
