"""WeCom server API client (aiohttp), honouring ``YILIAN_WECOM_API_BASE`` for every call.

wechatpy's ``WeChatClient`` hard-codes the ``gettoken`` and ``media/get`` URLs, has no timeout by
default and keeps the token in process memory, so the few calls we need are made here directly:

* ``gettoken`` — the access_token is cached in memory *and* in ``channel_tokens`` (shared by every
  worker, with its expiry), fetched again when it is about to expire or when an API call answers
  40014 / 42001 / 40001 (invalid or expired token), then the call is repeated once.
* ``message/send``, ``media/get`` (download with a size limit), ``media/upload``.

Errors: ``WeComAPIError`` (an ``errcode``), ``WeComHTTPError`` (a non-200 answer or a body that is
not JSON) and ``WeComNetworkError`` (connection failure or timeout); each tells whether retrying
later may help (``retryable``).

Secrets: ``gettoken`` carries ``corpsecret`` and every other call ``access_token`` in its query
string, and error texts (aiohttp's, a proxy's error page echoing the URL) may repeat them. Every
``WeComError`` message passes ``redact_secrets`` (query values of those parameters), and the client
also blanks the literal secret and tokens it knows, so neither a log line nor an error kept in the
database (``last_error``) can carry them. Redirects are never followed: a ``302`` to another host
would hand it the secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

import aiohttp
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage.models import ChannelToken
from storage.types import as_utc, utcnow

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin/"

#: The token is invalid or expired: fetch a new one and repeat the call.
TOKEN_ERRCODES = frozenset({40014, 42001, 40001})
#: Busy / rate limited: retry later, with a longer pause.
RATE_LIMIT_ERRCODES = frozenset({-1, 45009, 45011, 45033, 45035, 45047})
#: The request itself is wrong (recipient, content, app): repeating it cannot succeed.
PERMANENT_ERRCODES = frozenset({
    40003,  # invalid userid
    40007,  # invalid media_id (expired after 3 days)
    40008,  # invalid message type
    40056,  # invalid agentid
    40058,  # invalid parameter
    41001,  # missing access_token (our bug, not transient)
    44004,  # empty text
    45002,  # content too long
    48002,  # API forbidden for this app
    81013,  # user/department/tag all invalid
    82001,  # no valid recipient
    301002,  # no permission to send to this user
})


#: ``corpsecret=…``, ``access_token=…`` (also URL-encoded, as in ``corpsecret%3D…``) and the like.
_SECRET_PARAM_RE = re.compile(
    r"((?:corp)?secret|access_token|accesstoken|token)(=|%3[dD]|\\?[\"']?\s*:\s*\\?[\"']?)([^&\s\"'<>,;}]+)",
    re.IGNORECASE)
REDACTED = "***"


def redact_secrets(text: str, *literals: str | None) -> str:
    """``text`` with the values of secret-bearing query parameters (``corpsecret=``,
    ``access_token=`` …) and any of the ``literals`` (≥ 6 characters) replaced by ``***``."""
    for literal in literals:
        if literal and len(literal) >= 6:
            text = text.replace(literal, REDACTED)
    return _SECRET_PARAM_RE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


class WeComError(Exception):
    retryable: bool = True

    def __init__(self, message: str = "") -> None:
        super().__init__(redact_secrets(str(message)))


#: Operator hints for errors that only configuration can fix.
ERRCODE_HINTS = {
    60020: "this server's IP is not in the app's trusted IP list (企业可信IP) in the WeCom admin console",
    40001: "wrong YILIAN_WECOM_SECRET or YILIAN_WECOM_CORP_ID",
    40013: "wrong YILIAN_WECOM_CORP_ID",
    40056: "wrong YILIAN_WECOM_AGENT_ID",
    48002: "the app lacks permission for this API",
    81013: "the user is outside the app's visible range (可见范围)",
}


class WeComAPIError(WeComError):
    def __init__(self, errcode: int, errmsg: str, path: str = "") -> None:
        hint = ERRCODE_HINTS.get(int(errcode))
        super().__init__(f"{path} errcode {errcode}: {errmsg}".strip() + (f" — {hint}" if hint else ""))
        self.errcode = int(errcode)
        self.errmsg = errmsg
        self.retryable = self.errcode not in PERMANENT_ERRCODES

    @property
    def rate_limited(self) -> bool:
        return self.errcode in RATE_LIMIT_ERRCODES

    @property
    def token_problem(self) -> bool:
        return self.errcode in TOKEN_ERRCODES


class WeComHTTPError(WeComError):
    def __init__(self, status: int, path: str, detail: str = "") -> None:
        super().__init__(f"{path} HTTP {status} {detail}".strip())
        self.status = status
        # 5xx, 429, redirects (a proxy or portal in the way) and odd bodies may pass; a 4xx from
        # the API gateway will not
        self.retryable = status >= 500 or status in (200, 408, 429) or 300 <= status < 400


class WeComNetworkError(WeComError):
    retryable = True


@dataclass(frozen=True)
class Media:
    file_name: str
    data: bytes
    content_type: str | None


class MediaTooLarge(WeComError):
    retryable = False

    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(f"media larger than {limit} bytes" + (f" ({size})" if size else ""))
        self.size = size
        self.limit = limit


class TokenCache:
    """The access_token in ``channel_tokens`` (synchronous; call from a thread)."""

    def __init__(self, sessions: sessionmaker[Session], key: str) -> None:
        self.sessions = sessions
        self.key = key

    def load(self) -> tuple[str, datetime] | None:
        with self.sessions() as session:
            row = session.get(ChannelToken, self.key)
            return (row.token, as_utc(row.expires_at)) if row else None

    def store(self, token: str, expires_at: datetime) -> None:
        values = {"token": token, "expires_at": expires_at, "updated_at": utcnow()}
        with self.sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            if dialect in ("postgresql", "sqlite"):
                insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
                stmt = insert(ChannelToken).values(key=self.key, **values)
                session.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=values))
            else:  # pragma: no cover
                session.merge(ChannelToken(key=self.key, **values))

    def discard(self, token: str) -> None:
        """Forget ``token`` unless another worker has already replaced it."""
        with self.sessions.begin() as session:
            session.execute(delete(ChannelToken).where(ChannelToken.key == self.key, ChannelToken.token == token))


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", re.I)
_FILENAME = re.compile(r'filename\s*=\s*"?([^";]+)"?', re.I)


def filename_from_disposition(header: str | None) -> str | None:
    """The file name of a Content-Disposition header (RFC 5987 ``filename*`` or plain, which WeCom
    sends as raw UTF-8 or percent-encoded)."""
    if not header:
        return None
    m = _FILENAME_STAR.search(header)
    if m:
        try:
            return unquote(m.group(2).strip(), encoding=m.group(1) or "utf-8")
        except LookupError:
            return unquote(m.group(2).strip())
    m = _FILENAME.search(header)
    if m:
        name = m.group(1).strip()
        return unquote(name) if "%" in name else name
    return None


class WeComAPI:
    def __init__(self, *, corp_id: str, secret: str, sessions: sessionmaker[Session], api_base: str = DEFAULT_API_BASE,
                 agent_id: int | None = None, timeout_s: float = 10.0, token_margin_s: float = 300.0) -> None:
        self.corp_id = corp_id
        self._secret = secret
        self.api_base = api_base if api_base.endswith("/") else api_base + "/"
        self.agent_id = agent_id
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.token_margin = timedelta(seconds=token_margin_s)
        self.tokens = TokenCache(sessions, f"wecom:{corp_id}:{agent_id or ''}")
        self._token: tuple[str, datetime] | None = None
        self._token_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        #: Counters for tests and /status pages.
        self.token_fetches = 0

    # -- life cycle ------------------------------------------------------------------------

    async def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self.timeout, raise_for_status=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None and not self._http.closed:
            await self._http.close()
        self._http = None

    def url(self, path: str) -> str:
        return self.api_base + path.lstrip("/")

    def redact(self, text: str) -> str:
        """``text`` without the app secret or an access token this client holds."""
        token = self._token[0] if self._token else None
        return redact_secrets(text, self._secret, token)

    # -- access token ----------------------------------------------------------------------

    def _fresh(self, cached: tuple[str, datetime] | None) -> bool:
        return cached is not None and cached[1] - self.token_margin > utcnow()

    async def access_token(self, *, stale: str | None = None) -> str:
        """A valid token: memory, then the shared cache, then ``gettoken``. ``stale`` is a token the
        API just refused; it is never returned again."""
        cached = self._token
        if self._fresh(cached) and cached[0] != stale:  # type: ignore[index]
            return cached[0]  # type: ignore[index]
        async with self._token_lock:
            cached = self._token
            if self._fresh(cached) and cached[0] != stale:  # type: ignore[index]
                return cached[0]  # type: ignore[index]
            if stale is not None:
                await asyncio.to_thread(self.tokens.discard, stale)
            shared = await asyncio.to_thread(self.tokens.load)
            if self._fresh(shared) and shared[0] != stale:  # type: ignore[index]
                self._token = shared
                return shared[0]  # type: ignore[index]
            token, expires_in = await self._fetch_token()
            expires_at = utcnow() + timedelta(seconds=expires_in)
            await asyncio.to_thread(self.tokens.store, token, expires_at)
            self._token = (token, expires_at)
            return token

    async def _fetch_token(self) -> tuple[str, int]:
        data = await self._request("GET", "gettoken", params={"corpid": self.corp_id, "corpsecret": self._secret})
        errcode = int(data.get("errcode", 0) or 0)
        if errcode != 0 or not data.get("access_token"):
            raise WeComAPIError(errcode or -1, str(data.get("errmsg", "no access_token")), "gettoken")
        self.token_fetches += 1
        log.info("wecom access_token fetched", extra={"expires_in": data.get("expires_in")})
        return str(data["access_token"]), int(data.get("expires_in") or 7200)

    # -- calls -----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                       json_body: Any = None, data: Any = None) -> dict[str, Any]:
        http = await self.http()
        try:
            async with http.request(method, self.url(path), params=params, json=json_body, data=data,
                                    allow_redirects=False) as resp:
                if 300 <= resp.status < 400:
                    raise WeComHTTPError(resp.status, path, "redirect not followed (check YILIAN_WECOM_API_BASE "
                                                            "and any proxy in between)")
                body = await resp.read()
                if resp.status != 200:
                    raise WeComHTTPError(resp.status, path, self.redact(body[:200].decode("utf-8", "replace")))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise WeComNetworkError(self.redact(f"{path}: {type(exc).__name__}: {exc}")) from None
        try:
            parsed = json.loads(body)
        except ValueError:
            raise WeComHTTPError(200, path, "response is not JSON") from None
        if not isinstance(parsed, dict):
            raise WeComHTTPError(200, path, "response is not a JSON object")
        return parsed

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json_body: Any = None, data_factory: Any = None) -> dict[str, Any]:
        """Call ``path`` with the access token; one repeat with a new token on 40014/42001/40001.
        ``data_factory`` builds a fresh (multipart) body per attempt."""
        token = await self.access_token()
        for attempt in (1, 2):
            query = {**(params or {}), "access_token": token}
            data = data_factory() if data_factory is not None else None
            result = await self._request(method, path, params=query, json_body=json_body, data=data)
            errcode = int(result.get("errcode", 0) or 0)
            if errcode == 0:
                return result
            error = WeComAPIError(errcode, str(result.get("errmsg", "")), path)
            if error.token_problem and attempt == 1:
                log.info("wecom token refused (%s); fetching a new one", errcode)
                token = await self.access_token(stale=token)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    async def send_message(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", "message/send", json_body=body)

    async def update_template_card(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", "message/update_template_card", json_body=body)

    async def upload_media(self, kind: str, file_name: str, data: bytes, mime_type: str | None = None) -> str:
        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("media", data, filename=file_name, content_type=mime_type or "application/octet-stream")
            return fd

        result = await self.call("POST", "media/upload", params={"type": kind}, data_factory=form)
        return str(result["media_id"])

    async def get_media(self, media_id: str, *, max_bytes: int) -> Media:
        """Download a file by media_id, refusing more than ``max_bytes`` (without reading it all)."""
        http = await self.http()
        token = await self.access_token()
        for attempt in (1, 2):
            try:
                async with http.get(self.url("media/get"), params={"access_token": token, "media_id": media_id},
                                    allow_redirects=False) as resp:
                    if resp.status != 200:
                        body = await resp.content.read(200)
                        raise WeComHTTPError(resp.status, "media/get", self.redact(body.decode("utf-8", "replace")))
                    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower() or None
                    disposition = resp.headers.get("Content-Disposition")
                    if disposition is None and ctype in ("application/json", "text/plain"):
                        payload = await resp.content.read(64 * 1024)
                        try:
                            result = json.loads(payload)
                        except ValueError:
                            raise WeComHTTPError(200, "media/get", "unexpected text body") from None
                        error = WeComAPIError(int(result.get("errcode", -1) or -1), str(result.get("errmsg", "")),
                                              "media/get")
                        if error.token_problem and attempt == 1:
                            token = await self.access_token(stale=token)
                            continue
                        raise error
                    declared = resp.content_length
                    if declared is not None and declared > max_bytes:
                        raise MediaTooLarge(declared, max_bytes)
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        size += len(chunk)
                        if size > max_bytes:
                            raise MediaTooLarge(None, max_bytes)
                        chunks.append(chunk)
                    name = filename_from_disposition(disposition) or media_id
                    return Media(name, b"".join(chunks), ctype)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise WeComNetworkError(self.redact(f"media/get: {type(exc).__name__}: {exc}")) from None
        raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "DEFAULT_API_BASE",
    "Media",
    "MediaTooLarge",
    "PERMANENT_ERRCODES",
    "RATE_LIMIT_ERRCODES",
    "TOKEN_ERRCODES",
    "TokenCache",
    "WeComAPI",
    "WeComAPIError",
    "WeComError",
    "WeComHTTPError",
    "WeComNetworkError",
    "filename_from_disposition",
    "redact_secrets",
]
