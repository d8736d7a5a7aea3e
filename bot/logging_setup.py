"""Structured logging on the standard library: ``key=value`` lines, or JSON with YILIAN_LOG_JSON.

Fields passed with ``extra={...}`` are rendered. Phone and ID numbers are masked on the way out
as a last line of defence, even if a caller forgot to mask them.

Every line written while a message is handled carries its ``request_id``: the channel sets it
when a callback or update arrives (``request_id_for(channel, external id)``), it follows the
work into the engine's thread (``asyncio.to_thread`` copies the context), and the outbox sets the
same id again when it sends that message's replies, derived from the outbox row's dedupe key. So
one grep follows a message from WeCom through the engine to ``message/send``. The id is a hash,
never the platform's message id or user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The id of the message (or HTTP request) being handled, for every log line meanwhile.
REQUEST_ID: ContextVar[str | None] = ContextVar("yilian_request_id", default=None)


@contextmanager
def request_scope(request_id: str | None) -> Iterator[None]:
    """Log lines inside carry ``request_id`` (restored afterwards)."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def request_id_for(channel: str, external_id: str) -> str:
    """A stable, opaque id of one inbound message: the same in every worker and in the outbox."""
    return f"{channel[:2]}-" + hashlib.sha256(f"{channel}:{external_id}".encode()).hexdigest()[:12]


def request_id_of_outbox_key(dedupe_key: str) -> str | None:
    """The request id of the inbound message an outbox row answers (``channel:external_id:part``)."""
    channel, _, rest = dedupe_key.partition(":")
    external_id, _, part = rest.rpartition(":")
    if not channel or not external_id or not part.isdigit():
        return None
    return request_id_for(channel, external_id)

from storage.privacy import scrub_text as mask_sensitive

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}
        request_id = REQUEST_ID.get()
        if request_id is not None:
            fields.setdefault("request_id", request_id)
        message = mask_sensitive(record.getMessage())
        if self.as_json:
            payload = {
                "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": message,
                **{k: mask_sensitive(str(v)) for k, v in fields.items()},
            }
            if record.exc_info:
                payload["exc"] = mask_sensitive(self.formatException(record.exc_info))
            return json.dumps(payload, ensure_ascii=False)
        extras = " ".join(f"{k}={mask_sensitive(str(v))}" for k, v in fields.items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {message}"
        if extras:
            line += f" | {extras}"
        if record.exc_info:
            line += "\n" + mask_sensitive(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_yilian", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._yilian = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter(as_json))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "chromadb", "jieba", "pypdf", "alembic", "bm25s", "telegram.ext.Updater"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
