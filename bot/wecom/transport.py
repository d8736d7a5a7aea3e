"""The outbox transport for WeCom: one outbox row → one ``message/send`` call (or, for a row
``{"msgtype": "update_template_card", "response_code", "button": {"replace_name"}}`` queued when a
clicked notification was settled, one ``message/update_template_card`` call).

Retries (``OutboxItem.attempts > 1``) carry ``enable_duplicate_check`` so that WeCom drops a copy
of a message whose first attempt did reach it (an answer lost on the way back, a worker that died
after sending). WeCom errors are mapped onto ``DeliveryError``: rate limits and busy answers retry
after a longer pause, token errors are handled inside the client, bad recipients or content fail
for good.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from bot.outbox import DeliveryError, OutboxItem
from bot.wecom.api import WeComAPI, WeComAPIError, WeComError

log = logging.getLogger(__name__)


class WeComTransport:
    def __init__(self, api: WeComAPI, agent_id: int, *, duplicate_check_interval_s: int = 1800,
                 rate_limit_pause_s: float = 10.0) -> None:
        self.api = api
        self.agent_id = int(agent_id)
        self.duplicate_check_interval_s = int(duplicate_check_interval_s)
        self.rate_limit_pause_s = rate_limit_pause_s

    async def body_for(self, item: OutboxItem) -> dict[str, Any]:
        payload = dict(item.payload)
        if payload.get("msgtype") == "file" and "data_b64" in payload.get("file", {}):
            f = payload["file"]
            media_id = await self.api.upload_media("file", f["file_name"], base64.b64decode(f["data_b64"]),
                                                   f.get("mime_type"))
            payload["file"] = {"media_id": media_id}
        body: dict[str, Any] = {**payload, "touser": item.recipient, "agentid": self.agent_id}
        if item.is_retry:
            body["enable_duplicate_check"] = 1
            body["duplicate_check_interval"] = self.duplicate_check_interval_s
        return body

    async def send(self, item: OutboxItem) -> str | None:
        if item.payload.get("msgtype") == "update_template_card":
            return await self._update_card(item)
        try:
            result = await self.api.send_message(await self.body_for(item))
        except WeComAPIError as exc:
            pause = self.rate_limit_pause_s if exc.rate_limited else None
            raise DeliveryError(str(exc), retryable=exc.retryable, retry_after_s=pause) from None
        except WeComError as exc:
            raise DeliveryError(str(exc), retryable=exc.retryable) from None
        invalid = {k: result[k] for k in ("invaliduser", "invalidparty", "invalidtag", "unlicenseduser")
                   if result.get(k)}
        if invalid:
            log.warning("wecom message %s accepted with invalid recipients: %s", item.id, invalid)
            return f"accepted with {invalid}"
        return None

    async def _update_card(self, item: OutboxItem) -> str | None:
        """Replace the buttons of a clicked card (``message/update_template_card``).

        A response code works once and for 72 hours. When WeCom refuses the call with any errcode
        other than "busy / rate limited" (token errors are already retried inside the client), the
        code is used up or expired, or the card is gone: repeating cannot help, so the refusal is
        logged and the row closed with a note — the card simply keeps its buttons (pressing one
        again is answered with who handled it). Network and HTTP failures are retried as usual."""
        body = {"userids": [item.recipient], "agentid": self.agent_id,
                "response_code": item.payload.get("response_code"), "button": item.payload.get("button")}
        try:
            await self.api.update_template_card(body)
        except WeComAPIError as exc:
            if exc.rate_limited or exc.token_problem:  # WeCom busy, or still no valid token: later
                pause = self.rate_limit_pause_s if exc.rate_limited else None
                raise DeliveryError(str(exc), retryable=True, retry_after_s=pause) from None
            log.warning("wecom card of outbox row %s not updated (permanent): %s", item.id, exc)
            return f"card not updated: {exc}"
        except WeComError as exc:
            raise DeliveryError(str(exc), retryable=exc.retryable) from None
        return None


__all__ = ["WeComTransport"]
