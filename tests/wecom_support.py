"""Test doubles for the WeCom channel: a fake WeCom API server and a fake WeCom callback sender.

``FakeWeCom`` is an aiohttp server on 127.0.0.1 (random port) speaking the few API calls the
channel uses — ``gettoken``, ``message/send``, ``message/update_template_card`` (a response code
works once), ``media/get``, ``media/upload``, ``auth/getuserinfo`` — and recording them. It can
be told to fail ``message/send`` (and ``update_template_card``) in the ways WeCom does: HTTP 500,
errcode 45009 (rate limited), an expired token (42001), or "delivered, but the answer was lost"
(the message is recorded as delivered and a 500 is returned). Like WeCom, it drops a message sent with
``enable_duplicate_check`` when the same content reached the same user within the interval.

``WeComSender`` builds callbacks exactly as WeCom does: the message XML is AES-encrypted with
wechatpy's own ``PrpCrypto`` and signed with wechatpy's signer (not the code under test).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from wechatpy.crypto import _get_signature
from wechatpy.enterprise.crypto import PrpCrypto

CORP_ID = "wwtestcorp0001"
AGENT_ID = 1000002
SECRET = "test-secret-do-not-use"
TOKEN = "yilianTestToken"
AES_KEY = base64.b64encode(b"0123456789abcdef0123456789ABCDEF").decode().rstrip("=")  # 43 chars


def wecom_settings(data_dir: Path, api_base: str, **overrides: Any):
    from bot.config import Settings

    values: dict[str, Any] = dict(
        data_dir=data_dir, web_chat=False, wecom_corp_id=CORP_ID, wecom_agent_id=AGENT_ID, wecom_secret=SECRET,
        wecom_token=TOKEN, wecom_aes_key=AES_KEY, wecom_api_base=api_base,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


def fast_options(**overrides: Any):
    """Channel options with test-sized delays (production defaults are seconds to minutes)."""
    from bot.outbox import OutboxOptions
    from bot.wecom import WeComOptions

    outbox = OutboxOptions(poll_interval_s=0.05, lease_s=3.0, backoff_base_s=0.02, backoff_max_s=0.1,
                           per_minute=25)
    values: dict[str, Any] = dict(recovery_interval_s=0.1, inbound_retry_s=0.02, rate_limit_pause_s=0.02,
                                  inbound_lease_s=3.0, api_timeout_s=2.0, outbox=outbox)
    values.update(overrides)
    return WeComOptions(**values)


# ------------------------------------------------------------------------------------------------
# fake WeCom API


@dataclass
class Delivered:
    touser: str
    body: dict[str, Any]
    at: float

    @property
    def msgtype(self) -> str:
        return self.body.get("msgtype", "")

    @property
    def text(self) -> str:
        kind = self.msgtype
        if kind in ("text", "markdown"):
            return self.body[kind]["content"]
        if kind == "template_card":
            card = self.body["template_card"]
            return card.get("main_title", {}).get("title", "") + "\n" + card.get("sub_title_text", "")
        return ""


@dataclass
class FakeWeCom:
    corp_id: str = CORP_ID
    secret: str = SECRET
    token_ttl: int = 7200
    #: Behaviours for the next message/send calls: "500", "45009", "expire", "lost", "timeout".
    failures: list[str] = field(default_factory=list)
    #: Fail every message/send with this behaviour until cleared (None = healthy).
    down: str | None = None
    media: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)
    delivered: list[Delivered] = field(default_factory=list)
    send_calls: list[dict[str, Any]] = field(default_factory=list)
    media_calls: list[str] = field(default_factory=list)
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    #: Bodies of accepted message/update_template_card calls (a clicked card's buttons replaced).
    card_updates: list[dict[str, Any]] = field(default_factory=list)
    #: Every update_template_card call, and those refused because their response code was used.
    card_update_calls: list[dict[str, Any]] = field(default_factory=list)
    card_update_refusals: list[dict[str, Any]] = field(default_factory=list)
    #: What a used (or expired) response code is answered with. The errcode WeCom really uses is
    #: not pinned down here, so the fake deliberately answers one outside ``PERMANENT_ERRCODES``:
    #: the transport must treat any refusal but "busy / rate limited" as final.
    used_code_errcode: int = 40099
    #: Behaviours for the next update_template_card calls: "45009" (rate limited), "500".
    card_update_failures: list[str] = field(default_factory=list)
    token_fetches: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    #: Web-authorisation codes the fake WeCom would hand a browser: code -> userid (each works once).
    oauth_codes: dict[str, str] = field(default_factory=dict)
    url: str = ""

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self._used_codes: set[str] = set()

    # -- control ---------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def to(self, user: str) -> list[Delivered]:
        return [d for d in self.delivered if d.touser == user]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout}s; delivered={self.delivered!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            except asyncio.TimeoutError:
                pass

    async def wait_delivered(self, user: str, count: int, timeout: float = 10.0) -> list[Delivered]:
        await self.wait_for(lambda: len(self.to(user)) >= count, timeout)
        return self.to(user)

    # -- server ----------------------------------------------------------------------------

    async def start(self) -> "FakeWeCom":
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/message/send", self._send)
        app.router.add_get("/cgi-bin/media/get", self._media_get)
        app.router.add_post("/cgi-bin/media/upload", self._media_upload)
        app.router.add_get("/cgi-bin/auth/getuserinfo", self._getuserinfo)
        app.router.add_post("/cgi-bin/message/update_template_card", self._update_card)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/cgi-bin/"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _token_ok(self, request: web.Request) -> web.Response | None:
        token = request.query.get("access_token")
        if not token:
            return web.json_response({"errcode": 41001, "errmsg": "access_token missing"})
        if token not in self.valid_tokens:
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        return None

    async def _update_card(self, request: web.Request) -> web.Response:
        """``message/update_template_card``: a response code works once (as WeCom's do); a used
        one is refused with ``used_code_errcode`` and recorded in ``card_update_refusals``."""
        refused = self._token_ok(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.card_update_calls.append(body)
        self._changed.set()
        behaviour = self.card_update_failures.pop(0) if self.card_update_failures else None
        if behaviour == "45009":
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        if behaviour == "500":
            return web.Response(status=500, text="Internal Server Error")
        code = body.get("response_code")
        if not code or not body.get("userids") or body.get("agentid") != AGENT_ID \
                or not (body.get("button") or {}).get("replace_name"):
            return web.json_response({"errcode": 40058, "errmsg": "invalid parameter"})
        if code in self._used_codes:
            self.card_update_refusals.append(body)
            return web.json_response({"errcode": self.used_code_errcode,
                                      "errmsg": "response_code has been used or expired"})
        self._used_codes.add(code)
        self.card_updates.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok", "invaliduser": []})

    async def _getuserinfo(self, request: web.Request) -> web.Response:
        """Web authorisation: a code from ``oauth_codes`` names a member once (as WeCom's does)."""
        refused = self._token_ok(request)
        if refused is not None:
            return refused
        userid = self.oauth_codes.pop(request.query.get("code", ""), None)
        if userid is None:
            return web.json_response({"errcode": 40029, "errmsg": "invalid code"})
        return web.json_response({"errcode": 0, "errmsg": "ok", "userid": userid})

    async def _gettoken(self, request: web.Request) -> web.Response:
        if request.query.get("corpid") != self.corp_id or request.query.get("corpsecret") != self.secret:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        self.token_fetches += 1
        token = f"TOKEN-{self.token_fetches}-{uuid.uuid4().hex[:6]}"
        self.valid_tokens.add(token)
        return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.token_ttl})

    def _duplicate(self, body: dict[str, Any]) -> bool:
        if not body.get("enable_duplicate_check"):
            return False
        interval = float(body.get("duplicate_check_interval", 1800))
        key = {k: v for k, v in body.items() if k not in ("enable_duplicate_check", "duplicate_check_interval")}
        now = time.time()
        return any(d.body == key and now - d.at <= interval for d in self.delivered)

    def _deliver(self, body: dict[str, Any]) -> None:
        clean = {k: v for k, v in body.items() if k not in ("enable_duplicate_check", "duplicate_check_interval")}
        if not self._duplicate(body):
            self.delivered.append(Delivered(str(body.get("touser")), clean, time.time()))
        self._changed.set()

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.send_calls.append(body)
        self._changed.set()
        behaviour = self.failures.pop(0) if self.failures else self.down
        if behaviour == "expire":
            self.expire_tokens()
        denied = self._token_ok(request)
        if denied is not None:
            return denied
        if behaviour == "500":
            return web.Response(status=500, text="Internal Server Error")
        if behaviour == "45009":
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        if behaviour == "timeout":
            await asyncio.sleep(30)
        kind = body.get("msgtype")
        if kind in ("text", "markdown") and len(body[kind]["content"].encode("utf-8")) > 2048:
            return web.json_response({"errcode": 45002, "errmsg": "content size out of limit"})
        if body.get("agentid") != AGENT_ID or not body.get("touser"):
            return web.json_response({"errcode": 40056, "errmsg": "invalid agentid"})
        self._deliver(body)
        if behaviour == "lost":  # delivered, but the answer never reaches the caller
            return web.Response(status=502, text="Bad Gateway")
        return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": uuid.uuid4().hex})

    async def _media_get(self, request: web.Request) -> web.StreamResponse:
        denied = self._token_ok(request)
        if denied is not None:
            return denied
        media_id = request.query.get("media_id", "")
        self.media_calls.append(media_id)
        if media_id not in self.media:
            return web.json_response({"errcode": 40007, "errmsg": "invalid media_id"})
        name, data, ctype = self.media[media_id]
        return web.Response(body=data, content_type=ctype, headers={
            "Content-Disposition": f"attachment; filename=\"{quote(name)}\"; filename*=UTF-8''{quote(name)}"})

    async def _media_upload(self, request: web.Request) -> web.Response:
        denied = self._token_ok(request)
        if denied is not None:
            return denied
        reader = await request.multipart()
        part = await reader.next()
        data = await part.read()  # type: ignore[union-attr]
        self.uploads.append((part.filename or "", bytes(data)))  # type: ignore[union-attr]
        return web.json_response({"errcode": 0, "errmsg": "ok", "type": "file", "media_id": f"M{len(self.uploads)}"})


# ------------------------------------------------------------------------------------------------
# callbacks as WeCom sends them


def cdata(value: Any) -> str:
    return f"<![CDATA[{value}]]>"


def message_xml(user: str, msg_type: str, *, msg_id: int | None = None, create_time: int | None = None,
                **fields: Any) -> str:
    parts = [f"<ToUserName>{cdata(CORP_ID)}</ToUserName>", f"<FromUserName>{cdata(user)}</FromUserName>",
             f"<CreateTime>{create_time or int(time.time())}</CreateTime>", f"<MsgType>{cdata(msg_type)}</MsgType>"]
    for name, value in fields.items():
        parts.append(f"<{name}>{value if isinstance(value, int) else cdata(value)}</{name}>")
    if msg_id is not None:
        parts.append(f"<MsgId>{msg_id}</MsgId>")
    parts.append(f"<AgentID>{AGENT_ID}</AgentID>")
    return "<xml>" + "".join(parts) + "</xml>"


def text_xml(user: str, content: str, msg_id: int) -> str:
    return message_xml(user, "text", msg_id=msg_id, Content=content)


def card_click_xml(user: str, key: str, task_id: str, create_time: int | None = None, *,
                   response_code: str | None = None) -> str:
    return message_xml(user, "event", create_time=create_time, Event="template_card_event", EventKey=key,
                       TaskId=task_id, CardType="button_interaction",
                       ResponseCode=response_code or "RC" + uuid.uuid4().hex[:8])


_ids = iter(range(7_000_000_000_000_000_000, 8_000_000_000_000_000_000))


def next_msg_id() -> int:
    return next(_ids) + os.getpid() * 1_000_000


@dataclass
class WeComSender:
    """Posts callbacks to ``base_url``/wecom/callback the way WeCom does."""

    base_url: str
    token: str = TOKEN
    aes_key: str = AES_KEY
    corp_id: str = CORP_ID

    def __post_init__(self) -> None:
        self.key = base64.b64decode(self.aes_key + "=")

    def encrypt(self, plaintext: str) -> str:
        return PrpCrypto(self.key).encrypt(plaintext, self.corp_id).decode()

    def signed_query(self, data: str, *, timestamp: int | None = None, nonce: str | None = None,
                     bad_signature: bool = False) -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = nonce or uuid.uuid4().hex[:10]
        sig = _get_signature(self.token, ts, nonce, data)
        if bad_signature:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        return {"msg_signature": sig, "timestamp": ts, "nonce": nonce}

    def envelope(self, plaintext: str) -> tuple[str, str]:
        encrypted = self.encrypt(plaintext)
        body = (f"<xml><ToUserName>{cdata(self.corp_id)}</ToUserName><AgentID>{cdata(AGENT_ID)}</AgentID>"
                f"<Encrypt>{cdata(encrypted)}</Encrypt></xml>")
        return encrypted, body

    async def post(self, http: aiohttp.ClientSession, plaintext: str, **kw: Any) -> tuple[int, str, float]:
        """(status, body, seconds) of one callback."""
        encrypted, body = self.envelope(plaintext)
        return await self.post_raw(http, body, self.signed_query(encrypted, **kw))

    async def post_raw(self, http: aiohttp.ClientSession, body: str | bytes,
                       query: dict[str, str]) -> tuple[int, str, float]:
        started = time.perf_counter()
        async with http.post(self.base_url + "/wecom/callback", params=query, data=body,
                             headers={"Content-Type": "text/xml"}) as resp:
            text = await resp.text()
            return resp.status, text, time.perf_counter() - started

    async def verify_url(self, http: aiohttp.ClientSession, echo: str, **kw: Any) -> tuple[int, str]:
        encrypted = self.encrypt(echo)
        query = {**self.signed_query(encrypted, **kw), "echostr": encrypted}
        async with http.get(self.base_url + "/wecom/callback", params=query) as resp:
            return resp.status, await resp.text()


# ------------------------------------------------------------------------------------------------
# running the real server application


@asynccontextmanager
async def serve_app(ctx: Any, engine: Any, options: Any):
    """The real ``bot.server.create_app`` with the WeCom channel, on 127.0.0.1 (random port)."""
    from bot.channels import ChannelPlugin
    from bot.server import create_app
    from bot.wecom import WECOM_CHANNEL_KEY, setup_wecom

    plugin = ChannelPlugin(name="wecom", enabled=lambda s: s.wecom_enabled,
                           setup_routes=lambda app, c, e: setup_wecom(app, c, e, options=options) and None)
    app = create_app(ctx, engine, channels=[plugin], web_chat=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app[WECOM_CHANNEL_KEY]
    finally:
        await runner.cleanup()


def json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
