"""Helpers shared by the channel tests (WeCom, Telegram, rate limits, safety, secrets)."""

from __future__ import annotations

import asyncio
import time
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
