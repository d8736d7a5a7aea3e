"""Retrying a database write through a short outage (a PostgreSQL restart takes seconds).

Used where work is already done and only its record is missing: the replies made for a message
(``InboxStore.finish_patiently``), the delivery of an outgoing message (``OutboxSender``). Giving
up early would redo the work when a lease runs out: answer the message again, send the reply
again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def through_outage(call: Callable[[], T], *, what: str, gave_up: str, budget_s: float,
                         first_delay_s: float = 0.2, max_delay_s: float = 5.0) -> tuple[bool, T | None]:
    """``call()`` in a worker thread, tried again while it raises, with a doubling pause, for at
    most ``budget_s``. Returns (True, its result), or (False, None) once the budget is spent.
    Each retry is a warning and the giving up an error, both naming ``what`` failed; ``gave_up``
    says what happens then."""
    deadline = time.monotonic() + budget_s
    delay = first_delay_s
    while True:
        try:
            return True, await asyncio.to_thread(call)
        except Exception as exc:  # noqa: BLE001 - database trouble: wait and try again
            if time.monotonic() + delay > deadline:
                log.error("%s failed (%s); %s", what, type(exc).__name__, gave_up)
                return False, None
            log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
