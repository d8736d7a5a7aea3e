"""Who is at the other end of a web request, decided by the server alone.

Three layers, added by ``setup_webauth``:

* ``security_middleware`` (every request but ``/healthz`` and ``/readyz``): the ``Host`` must be
  this server's own (loopback names, the configured bind address, the hosts of
  ``YILIAN_PUBLIC_URL`` and of the Telegram webhook URL) — a DNS-rebinding page gets 421; a
  state-changing request with a foreign ``Origin`` gets 403; every response carries
  ``Referrer-Policy: same-origin`` (a login link never leaks to another site through ``Referer``,
  while our own forms still carry a real ``Origin``),
  ``X-Frame-Options`` and ``nosniff``.
* the session: an ``HttpOnly``, ``SameSite=Lax`` cookie (``Secure`` behind TLS) naming a row of
  ``web_sessions``; ``request_session`` resolves it, ``require_session`` also checks the CSRF
  token (``X-CSRF-Token``) of state-changing requests.
* the sign-in routes: ``/login`` (the page), ``/login/{token}`` (a one-time link from ``/login``
  in a private chat: GET shows a confirmation, POST signs in — so a chat app's link preview
  cannot use the link up), ``/login/password`` (admins' argon2 password), ``/auth/wecom`` and
  ``/auth/wecom/callback`` (WeCom web authorisation), ``/logout``, and in demo mode
  ``/api/demo/login`` (the identity picker). Pre-session forms carry a double-submit CSRF token.

Every sign-in, failure and sign-out is audited with the channel ``web`` and the client address.
Anonymous clients are throttled (``SignInLimits``: password guesses per address and per account,
counted before they are checked; audited link failures per address). Sessions made by the demo
picker count only while demo mode is on.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from bot.config import Settings
from bot.context import AppContext
from storage import access
from storage import repositories as repo
from storage import signin

log = logging.getLogger(__name__)

SESSION_COOKIE = "yilian_session"
PRE_CSRF_COOKIE = "yilian_csrf"
OAUTH_STATE_COOKIE = "yilian_oauth_state"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Paths that answer whatever the Host (load balancers and container health checks use IPs).
HOST_EXEMPT = frozenset({"/healthz", "/readyz"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
STATIC_DIR = Path(__file__).parent / "static"

AUTH_CTX_KEY: web.AppKey[AppContext] = web.AppKey("webauth_ctx", AppContext)
PASSWORD_LIMIT_KEY: web.AppKey[Any] = web.AppKey("webauth_password_limit", object)
ALLOWED_HOSTS_KEY: web.AppKey[frozenset] = web.AppKey("webauth_allowed_hosts", frozenset)


# ------------------------------------------------------------------------------------------------
# Host and Origin


def _hostname(value: str | None) -> str | None:
    """``example.org`` of ``https://example.org:8443/x``, ``Example.org:80`` or ``[::1]:8080``."""
    if not value:
        return None
    if "://" not in value:
        value = "//" + value
    try:
        return (urlsplit(value).hostname or "").lower() or None
    except ValueError:
        return None


#: A ``Host`` header as a browser or proxy sends it: ``name[:port]`` or ``[v6][:port]``, nothing else.
_HOST_RE = re.compile(r"(?:(?P<name>[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?)"
                      r"|\[(?P<v6>[0-9A-Fa-f:.]{2,45})\])(?::[0-9]{1,5})?")


def request_hostname(host: str | None) -> str | None:
    """The lower-cased host name of a ``Host`` header, or None when it is not well-formed: a
    lenient parse would read ``127.0.0.1/evil.example`` or ``[::1]evil.example`` as loopback."""
    match = _HOST_RE.fullmatch(host or "")
    if match is None:
        return None
    return (match.group("name") or match.group("v6")).lower()


def allowed_hosts(settings: Settings) -> frozenset[str]:
    hosts = set(LOOPBACK_HOSTS)
    if settings.http_host not in ("0.0.0.0", "::", ""):
        hosts.add(settings.http_host.lower().strip("[]"))
    for url in (settings.public_url, settings.telegram_webhook_url):
        name = _hostname(url)
        if name:
            hosts.add(name)
    return frozenset(hosts)


def _trusted_proxy(peer: str | None, trusted: list[str]) -> bool:
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
        return any(address in ipaddress.ip_network(net, strict=False) for net in trusted)
    except ValueError:
        return False


def client_address(request: web.Request) -> str | None:
    """The peer's address; when the peer is a trusted reverse proxy (``YILIAN_TRUSTED_PROXIES``),
    the client address it reports in ``X-Real-IP``. Nobody else can set it."""
    peer = request.remote
    if _trusted_proxy(peer, request.app[AUTH_CTX_KEY].settings.trusted_proxies):
        forwarded = request.headers.get("X-Real-IP", "").strip()
        if forwarded and len(forwarded) <= 64:
            try:
                return str(ipaddress.ip_address(forwarded))
            except ValueError:
                pass
    return peer


def is_secure(request: web.Request) -> bool:
    settings = request.app[AUTH_CTX_KEY].settings
    return request.secure or (settings.public_url or "").lower().startswith("https://")


def _refuse(status: int, zh: str, en: str) -> web.Response:
    return web.json_response({"error": zh, "error_en": en}, status=status,
                             dumps=partial(json.dumps, ensure_ascii=False))


def _loggable_path(path: str) -> str:
    """The path for a log line: a login link's token is a credential for ten minutes, so
    ``/login/<token>`` is logged as ``/login/…``."""
    if path.startswith("/login/") and path != "/login/password":
        return "/login/…"
    return path[:200]


@web.middleware
async def security_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path not in HOST_EXEMPT:
        hosts = request.app[ALLOWED_HOSTS_KEY]
        host = request_hostname(request.host)
        if host is None or host not in hosts:
            log.warning("request refused: foreign Host",
                        extra={"host": request.host[:100], "path": _loggable_path(request.path)})
            return _refuse(421, "请求的主机名不属于本服务。", "This server does not serve that host name.")
        origin = request.headers.get("Origin")
        if request.method in UNSAFE_METHODS and origin is not None:
            origin_host = _hostname(origin) if origin != "null" else None
            if origin_host is None or origin_host not in hosts or \
                    origin.split("://", 1)[-1].lower().rstrip("/") != request.host.lower():
                log.warning("request refused: foreign Origin",
                            extra={"origin": origin[:100], "path": _loggable_path(request.path)})
                return _refuse(403, "拒绝跨站请求。请直接在医联助手的页面中操作。",
                               "Cross-site request refused. Please use the assistant's own page.")
    response = await handler(request)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


# ------------------------------------------------------------------------------------------------
# sessions


@dataclass(frozen=True)
class WebUser:
    """The signed-in visitor of one request."""

    session_id: int
    csrf_token: str
    method: str
    staff_code: str | None  # None: a demo-mode guest
    staff_name: str | None = None
    roles_zh: str = ""
    institution: str = ""
    consortium: str = ""
    is_admin: bool = False
    #: has an admin console page (admins, liaison officers): the chat shows the way there
    console: bool = False

    @property
    def user_key(self) -> str:
        """How the engine knows this visitor (channel ``web``): the staff code, or a per-session
        guest key that no other browser can name."""
        return self.staff_code or f"guest-s{self.session_id}"


def _lookup(ctx: AppContext, token: str | None) -> WebUser | None:
    with ctx.sessions.begin() as session:
        row = signin.get_session(session, token)
        if row is None:
            return None
        if row.method == "demo" and not ctx.settings.demo:
            # Made by the identity picker, which proves nothing: such a session must not outlive
            # demo mode (the same data directory served for real would keep whoever picked an
            # admin as that admin).
            return None
        staff = row.staff
        if staff is None:
            return WebUser(session_id=row.id, csrf_token=row.csrf_token, method=row.method, staff_code=None)
        inst = staff.institution
        return WebUser(
            session_id=row.id, csrf_token=row.csrf_token, method=row.method, staff_code=staff.code,
            staff_name=staff.name, roles_zh=staff.roles_zh, institution=inst.name if inst else "",
            consortium=inst.consortium.name if inst and inst.consortium else "",
            is_admin=staff.has_role("admin"), console=access.console_home(staff) is not None,
        )


async def request_session(request: web.Request) -> WebUser | None:
    """The live session named by the request's cookie, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await asyncio.to_thread(_lookup, request.app[AUTH_CTX_KEY], token)


def csrf_ok(request: web.Request, user: WebUser) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return bool(sent) and hmac.compare_digest(sent.encode(), user.csrf_token.encode())


async def require_session(request: web.Request) -> WebUser | web.Response:
    """The signed-in user, or the 401/403 response to send (no session; missing CSRF token)."""
    user = await request_session(request)
    if user is None:
        return _refuse(401, "请先登录：在企业微信或 Telegram 中私聊我发送“登录”，获取一次性登录链接。",
                       "Please sign in first: send /login to the assistant in a private chat.")
    if request.method in UNSAFE_METHODS and not csrf_ok(request, user):
        return _refuse(403, "页面已过期，请刷新后重试。", "The page has expired; please reload it and try again.")
    return user


def _set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    settings = request.app[AUTH_CTX_KEY].settings
    response.set_cookie(SESSION_COOKIE, token, max_age=settings.session_ttl_hours * 3600, path="/",
                        httponly=True, samesite="Lax", secure=is_secure(request))


def _start_session(request: web.Request, staff: Any, method: str) -> signin.NewSession:
    ctx = request.app[AUTH_CTX_KEY]
    with ctx.sessions.begin() as session:
        return signin.create_session(
            session, staff, method=method, client_address=client_address(request),
            user_agent=request.headers.get("User-Agent"), ttl=timedelta(hours=ctx.settings.session_ttl_hours),
        )


# ------------------------------------------------------------------------------------------------
# pages


def _page(title: str, body: str, *, demo: bool, status: int = 200) -> web.Response:
    template = Template((STATIC_DIR / "login.html").read_text(encoding="utf-8"))
    banner = '<div class="demo" role="note">演示模式 · 数据均为示例，请勿录入真实患者信息</div>' if demo else ""
    text = template.substitute(title=html.escape(title), body=body, banner=banner)
    return web.Response(text=text, content_type="text/html", charset="utf-8", status=status, headers={
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                   "base-uri 'none'; frame-ancestors 'none'",
    })


def _pre_csrf(request: web.Request) -> str:
    return request.cookies.get(PRE_CSRF_COOKIE) or secrets.token_urlsafe(24)


def _with_pre_csrf(request: web.Request, response: web.Response, value: str) -> web.Response:
    response.set_cookie(PRE_CSRF_COOKIE, value, max_age=3600, path="/", httponly=True, samesite="Strict",
                        secure=is_secure(request))
    return response


async def _pre_csrf_ok(request: web.Request) -> tuple[bool, Any]:
    form = await request.post()
    sent = str(form.get("csrf", ""))
    cookie = request.cookies.get(PRE_CSRF_COOKIE, "")
    ok = bool(sent) and bool(cookie) and hmac.compare_digest(sent.encode(), cookie.encode())
    return ok, form


def _redirect_home(request: web.Request, token: str) -> web.Response:
    response = web.HTTPSeeOther("/")
    _set_session_cookie(request, response, token)
    response.del_cookie(PRE_CSRF_COOKIE, path="/")
    return response


async def login_page(request: web.Request) -> web.Response:
    ctx = request.app[AUTH_CTX_KEY]
    settings = ctx.settings
    if await request_session(request) is not None:
        raise web.HTTPSeeOther("/")
    csrf = _pre_csrf(request)
    error = request.query.get("error", "")
    messages = {
        "password": "人员代码或密码不正确。",
        "expired": "页面已过期，请重新登录。",
        "wecom": "企业微信登录未完成，请重试，或在企业微信中私聊医联助手发送“登录”。",
        "unknown": "您的企业微信账号不在医联体人员名录中，请联系本医联体管理员。",
        "busy": "尝试次数过多，请稍后再试。",
    }
    parts = ["<h1>登录医联助手</h1>"]
    if error in messages:
        parts.append(f'<p class="error" role="alert">{html.escape(messages[error])}</p>')
    parts.append("<p>在<b>企业微信</b>或 <b>Telegram</b> 中私聊医联助手，发送“<b>登录</b>”（或 /login），"
                 "点击收到的一次性链接即可登录。链接 "
                 f"{settings.login_link_ttl_minutes} 分钟内有效，只能使用一次。</p>")
    if settings.wecom_enabled:
        parts.append('<p><a class="button" href="/auth/wecom">企业微信授权登录</a></p>')
    parts.append(
        '<details><summary>管理员密码登录</summary>'
        '<form method="post" action="/login/password">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        '<label>人员代码<input name="code" autocomplete="username" required maxlength="50"></label>'
        '<label>密码<input name="password" type="password" autocomplete="current-password" required maxlength="200">'
        '</label><button type="submit">登录</button></form>'
        '<p class="hint">密码只为首位管理员设置（yilian users set-password）。</p></details>'
    )
    if settings.demo:
        parts.append('<p><a class="button" href="/">返回演示聊天</a></p>')
    return _with_pre_csrf(request, _page("登录 · 医联助手", "\n".join(parts), demo=settings.demo), csrf)


def _peek(ctx: AppContext, token: str) -> tuple[str, str] | None:
    with ctx.sessions() as session:
        staff = signin.peek_login_token(session, token)
        return (staff.name, staff.institution.name if staff.institution else "") if staff else None


_LINK_INVALID = ("<h1>登录链接无效</h1><p>这个登录链接已使用、已过期或不完整。请在企业微信或 Telegram 中私聊医联助手，"
                 "重新发送“登录”获取新的链接。</p>")


async def login_link_page(request: web.Request) -> web.Response:
    ctx = request.app[AUTH_CTX_KEY]
    token = request.match_info["token"]
    who = await asyncio.to_thread(_peek, ctx, token) if len(token) <= 100 else None
    if who is None:
        return _page("登录链接无效", _LINK_INVALID, demo=ctx.settings.demo, status=404)
    csrf = _pre_csrf(request)
    name, institution = (html.escape(v) for v in who)
    body = (f"<h1>登录医联助手</h1><p>将以 <b>{name}</b>（{institution}）的身份登录。"
            "如果这不是您本人申请的链接，请关闭此页面。</p>"
            f'<form method="post"><input type="hidden" name="csrf" value="{html.escape(csrf)}">'
            '<button type="submit">登录</button></form>')
    return _with_pre_csrf(request, _page("登录 · 医联助手", body, demo=ctx.settings.demo), csrf)


async def login_link_submit(request: web.Request) -> web.Response:
    ctx = request.app[AUTH_CTX_KEY]
    ok, _form = await _pre_csrf_ok(request)
    if not ok:
        raise web.HTTPSeeOther("/login?error=expired")
    token = request.match_info["token"]
    address = client_address(request) or "-"
    limits: SignInLimits = request.app[PASSWORD_LIMIT_KEY]
    # Every failure is audited, but an anonymous client must not be able to write audit rows as
    # fast as it can send requests: past its allowance, failures from its address are not
    # recorded (a valid link still works: a hospital's users share one NAT address).
    audit_failure = limits.links.take(address)

    def redeem() -> signin.NewSession | None:
        with repo.audit_origin("web", client_address(request)):
            with ctx.sessions.begin() as session:
                staff = signin.redeem_login_token(session, token, audit=audit_failure) if len(token) <= 100 else None
                if staff is None:
                    return None
            return _start_session(request, staff, "link")

    new = await asyncio.to_thread(redeem)
    if new is None:
        return _page("登录链接无效", _LINK_INVALID, demo=ctx.settings.demo, status=404)
    if audit_failure:
        limits.links.forgive(address)
    return _redirect_home(request, new.token)


class _Attempts:
    """Attempts per key (a client address, an account): at most ``limit`` per ``window_s``.

    ``take`` counts an attempt *before* it is checked (and refuses it when the key has no room
    left), so that guesses sent all at once cannot each pass the check before any of them has
    failed; ``forgive`` gives a successful attempt back. Keys whose attempts have all left the
    window are swept now and then, so rotating addresses cannot grow the table without bound.
    Per process, in memory (the event loop runs ``take`` and ``forgive`` without interleaving).
    """

    def __init__(self, limit: int = 5, window_s: float = 300.0, *, clock: Any = time.monotonic,
                 sweep_every: int = 1000) -> None:
        self.limit, self.window_s = limit, window_s
        self._clock = clock
        self._seen: dict[str, list[float]] = {}
        self._calls = 0
        self._sweep_every = sweep_every

    def _recent(self, key: str, now: float) -> list[float]:
        recent = [t for t in self._seen.get(key, ()) if now - t < self.window_s]
        if recent:
            self._seen[key] = recent
        else:
            self._seen.pop(key, None)
        return recent

    def blocked(self, key: str) -> bool:
        return len(self._recent(key, self._clock())) >= self.limit

    def take(self, key: str) -> bool:
        """Count one attempt for ``key``; False (and nothing counted) when it has no room left."""
        now = self._clock()
        self._calls += 1
        if self._calls % self._sweep_every == 0:
            for stale in [k for k, times in self._seen.items() if not times or now - times[-1] >= self.window_s]:
                del self._seen[stale]
        recent = self._recent(key, now)
        if len(recent) >= self.limit:
            return False
        self._seen[key] = [*recent, now]
        return True

    def forgive(self, key: str) -> None:
        """Give back the latest attempt of ``key`` (it succeeded)."""
        times = self._seen.get(key)
        if times:
            times.pop()


@dataclass
class SignInLimits:
    """How hard anonymous clients may push the sign-in routes (per process).

    * password guesses: 5 per client address per 5 minutes, and 20 per account per 15 minutes
      whatever the address (a botnet, IPv6 address rotation or a spoofing proxy gets no more);
      at most 2 argon2 checks at a time, so guesses cannot fill the worker threads that answer
      everyone's chat;
    * failed login links: 20 audited failures per client address per 5 minutes.
    """

    by_address: _Attempts
    by_account: _Attempts
    links: _Attempts
    checks: asyncio.Semaphore

    @classmethod
    def default(cls) -> SignInLimits:
        return cls(by_address=_Attempts(5, 300.0), by_account=_Attempts(20, 900.0), links=_Attempts(20, 300.0),
                   checks=asyncio.Semaphore(2))


async def login_password(request: web.Request) -> web.Response:
    ctx = request.app[AUTH_CTX_KEY]
    ok, form = await _pre_csrf_ok(request)
    if not ok:
        raise web.HTTPSeeOther("/login?error=expired")
    address = client_address(request) or "-"
    code, password = str(form.get("code", ""))[:50], str(form.get("password", ""))[:200]
    account = code.strip().lower()
    limits: SignInLimits = request.app[PASSWORD_LIMIT_KEY]
    # Counted before the check (no await in between): concurrent guesses are counted too.
    if limits.by_address.blocked(address) or limits.by_account.blocked(account):
        raise web.HTTPSeeOther("/login?error=busy")
    limits.by_address.take(address)
    limits.by_account.take(account)

    def check() -> signin.NewSession | None:
        with ctx.sessions.begin() as session:
            staff = signin.check_password(session, code, password, client_address=address)
        return _start_session(request, staff, "password") if staff is not None else None

    async with limits.checks:
        new = await asyncio.to_thread(check)
    if new is None:
        raise web.HTTPSeeOther("/login?error=password")
    limits.by_address.forgive(address)
    limits.by_account.forgive(account)
    return _redirect_home(request, new.token)


async def logout(request: web.Request) -> web.Response:
    user = await require_session(request)
    if isinstance(user, web.Response):
        return user
    ctx = request.app[AUTH_CTX_KEY]
    token = request.cookies.get(SESSION_COOKIE)

    def revoke() -> None:
        with repo.audit_origin("web", client_address(request)):
            with ctx.sessions.begin() as session:
                signin.revoke_session(session, token)

    await asyncio.to_thread(revoke)
    response = web.json_response({"signed_out": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# ------------------------------------------------------------------------------------------------
# WeCom web authorisation (网页授权)


async def wecom_start(request: web.Request) -> web.Response:
    settings: Settings = request.app[AUTH_CTX_KEY].settings
    if not settings.wecom_enabled:
        raise web.HTTPNotFound()
    state = secrets.token_hex(16)  # a-zA-Z0-9, ≤ 128 bytes as WeCom requires
    redirect_uri = f"{settings.web_base_url}/auth/wecom/callback"
    query = urlencode({"appid": settings.wecom_corp_id, "redirect_uri": redirect_uri, "response_type": "code",
                       "scope": "snsapi_base", "state": state, "agentid": settings.wecom_agent_id or ""})
    base = settings.wecom_oauth_base if settings.wecom_oauth_base.endswith("/") else settings.wecom_oauth_base + "/"
    response = web.HTTPFound(f"{base}connect/oauth2/authorize?{query}#wechat_redirect")
    response.set_cookie(OAUTH_STATE_COOKIE, state, max_age=600, path="/auth/wecom", httponly=True, samesite="Lax",
                        secure=is_secure(request))
    raise response


async def _wecom_userid(settings: Settings, ctx: AppContext, code: str) -> str | None:
    from bot.wecom.api import WeComAPI, WeComError

    api = WeComAPI(corp_id=settings.wecom_corp_id or "", secret=settings.wecom_secret.get_secret_value()
                   if settings.wecom_secret else "", sessions=ctx.sessions, api_base=settings.wecom_api_base,
                   agent_id=settings.wecom_agent_id)
    try:
        data = await api.call("GET", "auth/getuserinfo", params={"code": code})
    except WeComError as exc:
        log.warning("wecom oauth: getuserinfo failed", extra={"error": type(exc).__name__})
        return None
    finally:
        await api.close()
    userid = data.get("userid") or data.get("UserId")
    return str(userid) if userid else None


async def wecom_callback(request: web.Request) -> web.Response:
    ctx = request.app[AUTH_CTX_KEY]
    settings: Settings = ctx.settings
    if not settings.wecom_enabled:
        raise web.HTTPNotFound()
    state = request.query.get("state", "")
    expected = request.cookies.get(OAUTH_STATE_COOKIE, "")
    code = request.query.get("code", "")
    if not state or not expected or not hmac.compare_digest(state.encode(), expected.encode()) or \
            not code or len(code) > 512:
        raise web.HTTPSeeOther("/login?error=wecom")
    userid = await _wecom_userid(settings, ctx, code)
    if userid is None:
        raise web.HTTPSeeOther("/login?error=wecom")

    def start() -> signin.NewSession | None:
        with ctx.sessions.begin() as session:
            staff = repo.get_staff_by_wecom_userid(session, userid)
            if staff is None:
                repo.record(session, f"wecom:{userid[:60]}", "login.failed",
                            details={"method": "wecom_oauth", "reason": "not in directory"}, channel="web",
                            client_address=client_address(request))
                return None
        return _start_session(request, staff, "wecom_oauth")

    new = await asyncio.to_thread(start)
    if new is None:
        raise web.HTTPSeeOther("/login?error=unknown")
    response = _redirect_home(request, new.token)
    response.del_cookie(OAUTH_STATE_COOKIE, path="/auth/wecom")
    return response


# ------------------------------------------------------------------------------------------------
# demo mode: the identity picker


async def demo_login(request: web.Request) -> web.Response:
    """Demo only: become a sample staff member (or a guest). ``serve`` allows demo mode only on
    loopback with no chat channel configured, so nobody else can reach this."""
    ctx = request.app[AUTH_CTX_KEY]
    if not ctx.settings.demo:
        raise web.HTTPNotFound()
    try:
        body = await request.json()
    except ValueError:
        body = None
    who = body.get("as") if isinstance(body, dict) else None
    if not isinstance(who, str) or not who.strip():
        return _refuse(400, "请选择一个演示身份。", "Please pick a demo identity.")
    who = who.strip().lower()

    def start() -> signin.NewSession | None:
        staff = None
        if who != "guest":
            with ctx.sessions() as session:
                staff = repo.get_staff_by_code(session, who)
            if staff is None:
                return None
        return _start_session(request, staff, "demo")

    new = await asyncio.to_thread(start)
    if new is None:
        return _refuse(400, "没有找到这个身份，请刷新页面后从列表中重新选择。", "Unknown identity; reload the page.")
    response = web.json_response({"signed_in": True, "csrf": new.csrf_token})
    _set_session_cookie(request, response, new.token)
    return response


def setup_security(app: web.Application, ctx: AppContext) -> None:
    """The Host/Origin middleware: every application gets it, whatever else it serves."""
    app[AUTH_CTX_KEY] = ctx
    app[ALLOWED_HOSTS_KEY] = allowed_hosts(ctx.settings)
    app.middlewares.append(security_middleware)


def setup_webauth(app: web.Application, ctx: AppContext) -> None:
    """The sign-in routes (``setup_security`` must have run)."""
    app[PASSWORD_LIMIT_KEY] = SignInLimits.default()
    app.router.add_get("/login", login_page)
    app.router.add_post("/login/password", login_password)
    app.router.add_get("/login/{token}", login_link_page)
    app.router.add_post("/login/{token}", login_link_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/auth/wecom", wecom_start)
    app.router.add_get("/auth/wecom/callback", wecom_callback)
    app.router.add_post("/api/demo/login", demo_login)


__all__ = [
    "CSRF_HEADER", "SESSION_COOKIE", "WebUser", "allowed_hosts", "client_address", "request_session",
    "require_session", "security_middleware", "setup_security", "setup_webauth",
]
