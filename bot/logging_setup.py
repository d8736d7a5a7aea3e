"""Structured logging on the standard library: ``key=value`` lines, or JSON with YILIAN_LOG_JSON.

Fields passed with ``extra={...}`` are rendered. Phone and ID numbers are masked on the way out
as a last line of defence, even if a caller forgot to mask them.
"""

from __future__ import annotations

import json
import logging
import re
import sys

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_ID_NUMBER = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")
_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def mask_sensitive(text: str) -> str:
    """Mask mainland ID numbers (18 digits) and mobile phone numbers in free text."""
    text = _ID_NUMBER.sub(r"\1********\2", text)
    return _PHONE.sub(r"\1****\2", text)


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}
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
                payload["exc"] = self.formatException(record.exc_info)
            return json.dumps(payload, ensure_ascii=False)
        extras = " ".join(f"{k}={mask_sensitive(str(v))}" for k, v in fields.items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {message}"
        if extras:
            line += f" | {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
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
    for noisy in ("httpx", "chromadb", "jieba", "pypdf", "alembic", "telegram.ext.Updater"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
