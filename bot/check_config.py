"""``yilian check-config``: validate the settings and reach every service before a deploy.

Each check yields one ``Finding`` — ok or a problem — in one line an operator can act on
("database: cannot connect to 10.0.0.5:5432 (connection refused)"), never a traceback. Network
checks use short timeouts and only ask whether the service answers: any HTTP status from the
WeCom or Telegram API base proves the route and TLS work; credentials are tried by the channels
themselves at start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bot.config import Settings

TIMEOUT_S = 3.0
_TELEGRAM_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{30,}$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


@dataclass(frozen=True)
class Finding:
    ok: bool
    subject: str
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.subject}: {self.detail}"


def _reason(exc: BaseException) -> str:
    exc = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def check_database(settings: Settings) -> Iterator[Finding]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from storage import migrate

    url = settings.resolved_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    args = {"connect_timeout": int(TIMEOUT_S)} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = migrate.current_revision(engine), migrate.head_revision()
    except Exception as exc:  # noqa: BLE001 - any failure is one line
        yield Finding(False, "database", f"cannot connect to {shown} ({_reason(exc)})")
        return
    finally:
        engine.dispose()
    if current != head:
        yield Finding(False, "database", f"schema at {current or 'none'}, code expects {head}: run `yilian db upgrade`")
    else:
        yield Finding(True, "database", f"{shown} reachable, schema up to date")


def check_vectors(settings: Settings) -> Iterator[Finding]:
    if not settings.chroma_url:
        path = settings.chroma_path
        parent = next((p for p in [path, *path.parents] if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            yield Finding(False, "vector store", f"embedded Chroma directory {path} is not writable")
        else:
            yield Finding(True, "vector store", f"embedded Chroma in {path}")
        return
    base = settings.chroma_url.rstrip("/")
    for path in ("/api/v2/heartbeat", "/api/v1/heartbeat"):
        try:
            res = httpx.get(base + path, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            yield Finding(False, "vector store", f"Chroma server {base} unreachable ({_reason(exc)}); "
                                                 "answers would fall back to the lexical index")
            return
        if res.status_code == 200:
            yield Finding(True, "vector store", f"Chroma server {base} answers")
            return
    yield Finding(False, "vector store", f"{base} answers HTTP {res.status_code}: is it a Chroma server?")


def _reachable(name: str, url: str) -> Finding:
    try:
        res = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Finding(False, name, f"API base {url} unreachable ({_reason(exc)})")
    return Finding(True, name, f"API base {url} reachable (HTTP {res.status_code})")


def check_wecom(settings: Settings) -> Iterator[Finding]:
    if "wecom" not in settings.channels_configured:
        return
    needed = {"YILIAN_WECOM_CORP_ID": settings.wecom_corp_id, "YILIAN_WECOM_SECRET": settings.wecom_secret,
              "YILIAN_WECOM_TOKEN": settings.wecom_token, "YILIAN_WECOM_AES_KEY": settings.wecom_aes_key}
    missing = [name for name, value in needed.items() if value is None]
    if missing:
        yield Finding(False, "wecom", f"half configured: set {', '.join(missing)} (or unset all WeCom settings)")
        return
    if len(settings.wecom_aes_key.get_secret_value()) != 43:
        yield Finding(False, "wecom", "YILIAN_WECOM_AES_KEY must be the 43-character EncodingAESKey of the app")
    if settings.wecom_agent_id is None:
        yield Finding(False, "wecom", "YILIAN_WECOM_AGENT_ID is not set: replies cannot be sent")
    if not (settings.public_url or "").startswith("https://"):
        yield Finding(False, "wecom", "YILIAN_PUBLIC_URL must be the https:// address WeCom calls back")
    yield _reachable("wecom", settings.wecom_api_base)


def check_telegram(settings: Settings) -> Iterator[Finding]:
    if settings.telegram_token is None:
        return
    if not _TELEGRAM_TOKEN.match(settings.telegram_token.get_secret_value()):
        yield Finding(False, "telegram", "YILIAN_TELEGRAM_TOKEN does not look like a bot token (digits:secret)")
    if settings.telegram_webhook_url:
        if not settings.telegram_webhook_url.startswith("https://"):
            yield Finding(False, "telegram", "YILIAN_TELEGRAM_WEBHOOK_URL must be https:// (Telegram calls only TLS)")
        secret = settings.telegram_webhook_secret
        if secret is None:
            yield Finding(False, "telegram", "YILIAN_TELEGRAM_WEBHOOK_SECRET is not set: anyone could post updates")
        elif not _WEBHOOK_SECRET.match(secret.get_secret_value()):
            yield Finding(False, "telegram", "YILIAN_TELEGRAM_WEBHOOK_SECRET may hold only A-Z a-z 0-9 _ - (1-256)")
    yield _reachable("telegram", settings.telegram_api_base.rsplit("/bot", 1)[0] or settings.telegram_api_base)


def check_process(settings: Settings) -> Iterator[Finding]:
    from bot.server import demo_mode_problem

    problem = demo_mode_problem(settings)
    if problem:
        yield Finding(False, "demo mode", problem)
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if shared and not (Path(shared).is_dir() and os.access(shared, os.W_OK)):
        yield Finding(False, "metrics", f"PROMETHEUS_MULTIPROC_DIR={shared} is not a writable directory")


def check_all(settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    for check in (check_process, check_database, check_vectors, check_wecom, check_telegram):
        findings.extend(check(settings))
    return findings


__all__ = ["Finding", "check_all"]
