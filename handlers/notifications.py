"""Notifications to staff other than the sender: the piece referrals and reminders share.

``notify(session, router, items)`` runs in the caller's transaction (the referral that caused a
notification and the notification itself commit together, or neither does):

1. every ``Outgoing`` is kept in the recipient's web inbox (``storage.referrals.add_notification``),
   once per ``dedupe_key`` — a repeated call sends nothing again;
2. the ``ChannelRouter`` (``bot.notify.ChannelNotifier`` in a running assistant) queues it in the
   persistent outbox for each chat channel the person can be reached on (WeCom userid, bound
   Telegram chat; the last-used one first) and says which ones it used.

A recipient without any chat channel still has the web inbox; ``Delivery.unreached`` names such
people, so that the sender can be told nobody could be reached by chat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from handlers.messages import Outgoing
from storage import referrals as store
from storage.models import Staff


class ChannelRouter(Protocol):
    def route(self, session: Session, staff: Staff, item: Outgoing, dedupe_key: str) -> list[str]:
        """Queue ``item`` for ``staff``'s chat channels in ``session``; the channels used."""
        ...


@dataclass
class Delivery:
    #: staff id → chat channels the notification was queued for (``[]``: web inbox only).
    channels: dict[int, list[str]] = field(default_factory=dict)
    #: Recipients no chat channel reaches (they only have the web inbox).
    unreached: list[Staff] = field(default_factory=list)
    #: Notifications skipped because they had been sent before (same dedupe key).
    repeated: int = 0


def _key(item: Outgoing) -> str:
    if item.dedupe_key:
        return item.dedupe_key
    digest = hashlib.sha256(f"{item.staff_id}:{item.kind}:{item.reply.text}".encode()).hexdigest()[:32]
    return f"{item.kind}:{digest}"


def notify(session: Session, router: ChannelRouter | None, items: Iterable[Outgoing], *,
           now: datetime | None = None) -> Delivery:
    delivery = Delivery()
    for item in items:
        staff = session.get(Staff, item.staff_id)
        if staff is None or not staff.active:
            continue
        key = _key(item)
        choices = [[c.label, c.value] for c in item.reply.choices]
        if not store.add_notification(session, staff.id, item.kind, key, item.reply.text, choices, [], now=now):
            delivery.repeated += 1
            continue
        used = router.route(session, staff, item, key) if router is not None else []
        if used:
            store.set_notification_channels(session, key, used)
        else:
            delivery.unreached.append(staff)
        delivery.channels[staff.id] = used
    return delivery


def names(people: Sequence[Staff]) -> str:
    return "、".join(p.name for p in people)


__all__ = ["ChannelRouter", "Delivery", "names", "notify"]
