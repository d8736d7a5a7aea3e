"""The web chat: the same assistant as in WeCom or Telegram, for a signed-in browser.

Routes (added by ``setup_webchat``; sign-in itself is ``bot.webauth``):

* ``GET /`` — the chat page (``bot/static/index.html``, no external assets); without a session it
  sends the browser to ``/login`` (in demo mode it offers the identity picker instead);
* ``GET /api/session`` — who is signed in, the CSRF token for this session, whether demo mode is on;
* ``GET /api/identities`` — demo mode only: the sample identities to pick from (no contact data);
* ``POST /api/chat`` — ``{"text": "..."}`` or ``{"choice": VALUE}`` (a pressed button); answers
  ``{"replies": [{"text", "choices": [{"label", "value"}], "file"?}]}``;
* ``POST /api/upload`` — an admin's policy file (multipart field ``file``).

Who speaks is the session's staff member (or, in demo mode, its guest), never a field of the
request: both POSTs need the session cookie and its ``X-CSRF-Token``. Bad JSON or an empty
message get a 400 with a polite Chinese ``error``. The engine runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.context import AppContext
from bot.ratelimit import RateLimiter, looks_english, rate_limit_notice
from bot.uploads import UploadRefused, read_upload
from bot.webauth import WebUser, client_address, request_session, require_session
from handlers.engine import MAX_TEXT_CHARS, ConversationEngine
from handlers.messages import Attachment, Incoming, Reply
from storage.models import Consortium, Institution, Staff

STATIC_DIR = Path(__file__).parent / "static"
GUEST = "guest"
DEMO_BANNER = ('<div class="demo" role="note">演示模式 · 可任选示例身份体验，数据均为示例，'
               '请勿录入真实患者信息</div>')

WEB_ENGINE_KEY: web.AppKey[ConversationEngine] = web.AppKey("webchat_engine", ConversationEngine)
WEB_CTX_KEY: web.AppKey[AppContext] = web.AppKey("webchat_ctx", AppContext)
WEB_LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("webchat_limiter", RateLimiter)


_dumps = partial(json.dumps, ensure_ascii=False)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _error(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status=status)


def list_identities(ctx: AppContext) -> list[dict[str, Any]]:
    """Active staff grouped in directory order, without any contact data."""
    from sqlalchemy import select

    with ctx.sessions() as session:
        rows = session.execute(
            select(Staff, Institution, Consortium)
            .join(Institution, Staff.institution_id == Institution.id)
            .join(Consortium, Institution.consortium_id == Consortium.id)
            .where(Staff.active.is_(True))
            .order_by(Consortium.id, Institution.id, Staff.code)
        ).unique().all()
        people = [
            {
                "code": staff.code,
                "name": staff.name,
                "roles": staff.roles_zh,
                "institution": inst.name,
                "consortium": cons.name,
                "consortium_code": cons.code,
            }
            for staff, inst, cons in rows
        ]
    guest = {"code": GUEST, "name": "未绑定访客", "roles": "只能咨询政策", "institution": "", "consortium": "",
             "consortium_code": ""}
    return [guest, *people]


def reply_json(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {
        "text": reply.text,
        "choices": [{"label": c.label, "value": c.value} for c in reply.choices],
    }
    if reply.file is not None:
        out["file"] = {
            "name": reply.file.file_name,
            "mime": reply.file.mime_type,
            "data": base64.b64encode(reply.file.data).decode("ascii"),
        }
    return out


async def index(request: web.Request) -> web.StreamResponse:
    ctx = request.app[WEB_CTX_KEY]
    if not ctx.settings.demo and await request_session(request) is None:
        raise web.HTTPSeeOther("/login")
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if ctx.settings.demo:
        page = page.replace("<!--DEMO_BANNER-->", DEMO_BANNER, 1)
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
        "Cache-Control": "no-cache",
        "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
                                   "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    })


def _user_json(user: WebUser) -> dict[str, Any]:
    if user.staff_code is None:
        return {"code": GUEST, "name": "未绑定访客", "roles": "只能咨询政策", "institution": "", "consortium": "",
                "is_admin": False, "console": False}
    return {"code": user.staff_code, "name": user.staff_name, "roles": user.roles_zh,
            "institution": user.institution, "consortium": user.consortium, "is_admin": user.is_admin,
            "console": user.console}


async def session_info(request: web.Request) -> web.Response:
    ctx = request.app[WEB_CTX_KEY]
    user = await request_session(request)
    out: dict[str, Any] = {"signed_in": user is not None, "demo": ctx.settings.demo}
    if user is not None:
        out["user"] = _user_json(user)
        out["csrf"] = user.csrf_token
    return _json(out)


async def identities(request: web.Request) -> web.Response:
    ctx = request.app[WEB_CTX_KEY]
    if not ctx.settings.demo:
        raise web.HTTPNotFound()
    people = await asyncio.to_thread(list_identities, ctx)
    return _json({"identities": people})


def _over_limit(request: web.Request, user: WebUser, text: str = "") -> web.Response | None:
    """The same per-user limit as in WeCom and Telegram: one polite notice, then empty 429s."""
    decision = request.app[WEB_LIMITER_KEY].check("web", user.user_key)
    if decision == "ok":
        return None
    if decision == "warn":
        return _json({"replies": [{"text": rate_limit_notice(looks_english(text)), "choices": []}]}, status=429)
    return web.Response(status=429)


def _incoming(user: WebUser, request: web.Request, **fields: Any) -> Incoming:
    return Incoming(channel="web", user_key=user.user_key, client_address=client_address(request), **fields)


async def chat(request: web.Request) -> web.Response:
    engine = request.app[WEB_ENGINE_KEY]
    user = await require_session(request)
    if isinstance(user, web.Response):
        return user
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return _error("请求格式不正确：需要 JSON 格式的消息，例如 {\"text\": \"你好\"}。")
    if not isinstance(body, dict):
        return _error("请求格式不正确：消息应是一个 JSON 对象。")
    text = body.get("text")
    choice = body.get("choice")
    if text is not None and not isinstance(text, str):
        return _error("消息内容应为文字。")
    if choice is not None and not isinstance(choice, str):
        return _error("按钮选项格式不正确。")
    text = (text or "").strip()
    if not text and not choice:
        return _error("请输入消息内容。")
    if len(text) > MAX_TEXT_CHARS:
        return _error(f"消息太长了（最多 {MAX_TEXT_CHARS} 个字），请精简后再发送。")
    if choice is not None and len(choice.encode("utf-8")) > 64:
        return _error("按钮选项格式不正确。")
    limited = _over_limit(request, user, text)
    if limited is not None:
        return limited
    incoming = _incoming(user, request, text=text, choice=choice or None)
    replies = await asyncio.to_thread(engine.handle, incoming)
    return _json({"replies": [reply_json(r) for r in replies]})


async def upload(request: web.Request) -> web.Response:
    """An admin's policy file: the same engine rules as a file sent in any chat (admins only,
    their consortium's documents only). Who sends it is checked before a byte of the body is
    read, and its size while it streams in."""
    ctx = request.app[WEB_CTX_KEY]
    engine = request.app[WEB_ENGINE_KEY]
    user = await require_session(request)
    if isinstance(user, web.Response):
        return user
    if not user.is_admin:
        return _error("抱歉，只有管理员可以上传政策文件。", status=403)
    limited = _over_limit(request, user)
    if limited is not None:
        return limited
    try:
        form = await read_upload(request, ctx.settings.max_upload_bytes)
    except UploadRefused as exc:
        return _error(exc.message, status=exc.status)
    if form.file_name is None:
        return _error("没有收到文件，请重新选择文件。")
    incoming = _incoming(user, request, attachments=(Attachment(form.file_name, form.data),))
    replies = await asyncio.to_thread(engine.handle, incoming)
    return _json({"replies": [reply_json(r) for r in replies]})


def _inbox_items(ctx: AppContext, staff_code: str, mark_read: bool) -> list[dict[str, Any]]:
    from storage import referrals as store
    from storage import repositories as repo

    with ctx.sessions.begin() as session:
        staff = repo.get_staff_by_code(session, staff_code)
        if staff is None:
            return []
        items = store.inbox(session, staff.id)
        if mark_read:
            store.mark_read(session, staff.id)
    return [{"id": i.id, "kind": i.kind, "text": i.text, "choices": [{"label": c[0], "value": c[1]} for c in i.choices],
             "channels": i.channels, "created_at": i.created_at.isoformat(), "read": i.read} for i in items]


async def inbox(request: web.Request) -> web.Response:
    """The signed-in staff member's notifications (the web inbox); the session decides whose."""
    user = await require_session(request)
    if isinstance(user, web.Response):
        return user
    if user.staff_code is None:
        return _json({"items": []})
    items = await asyncio.to_thread(_inbox_items, request.app[WEB_CTX_KEY], user.staff_code, False)
    return _json({"items": items, "unread": sum(not i["read"] for i in items)})


async def inbox_read(request: web.Request) -> web.Response:
    user = await require_session(request)  # POST: CSRF-checked
    if isinstance(user, web.Response):
        return user
    if user.staff_code is not None:
        await asyncio.to_thread(_inbox_items, request.app[WEB_CTX_KEY], user.staff_code, True)
    return _json({"ok": True})


def setup_webchat(app: web.Application, ctx: AppContext, engine: ConversationEngine) -> None:
    app[WEB_CTX_KEY] = ctx
    app[WEB_ENGINE_KEY] = engine
    app[WEB_LIMITER_KEY] = RateLimiter.from_settings(ctx.settings)
    app.router.add_get("/", index)
    app.router.add_get("/api/session", session_info)
    app.router.add_get("/api/identities", identities)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/upload", upload)
    app.router.add_get("/api/inbox", inbox)
    app.router.add_post("/api/inbox/read", inbox_read)


__all__ = ["list_identities", "reply_json", "setup_webchat"]
