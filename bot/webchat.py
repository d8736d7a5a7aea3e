"""Local web chat: try the assistant in a browser with no credentials (``make run``).

Routes (added by ``setup_webchat``):

* ``GET /`` — the chat page (``bot/static/index.html``, no external assets);
* ``GET /api/identities`` — sample identities to chat as: code, name, role labels, institution,
  consortium (never phone numbers or account ids), plus the unbound guest;
* ``POST /api/chat`` — ``{"as": CODE | "guest", "text": "...", "session": "..."}`` or with
  ``"choice": VALUE`` (a pressed button) instead of ``text``; answers
  ``{"replies": [{"text", "choices": [{"label", "value"}], "file"?}]}``.

Web users are identified by staff code (channel ``web``); guests by ``guest-<session>`` so that two
browsers do not share a half-finished dialog. Bad JSON, an unknown identity or an empty message
get a 400 with a polite Chinese ``error``. The engine runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from bot.context import AppContext
from handlers.engine import MAX_TEXT_CHARS, ConversationEngine
from handlers.identity import GUEST_PREFIX
from handlers.messages import Attachment, Incoming, Reply
from storage import repositories as repo
from storage.models import Consortium, Institution, Staff

STATIC_DIR = Path(__file__).parent / "static"
GUEST = "guest"
_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")

WEB_ENGINE_KEY: web.AppKey[ConversationEngine] = web.AppKey("webchat_engine", ConversationEngine)
WEB_CTX_KEY: web.AppKey[AppContext] = web.AppKey("webchat_ctx", AppContext)


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


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={
        "Cache-Control": "no-cache",
        "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
                                   "base-uri 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
    })


async def identities(request: web.Request) -> web.Response:
    ctx = request.app[WEB_CTX_KEY]
    people = await asyncio.to_thread(list_identities, ctx)
    return _json({"identities": people})


async def chat(request: web.Request) -> web.Response:
    ctx = request.app[WEB_CTX_KEY]
    engine = request.app[WEB_ENGINE_KEY]
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return _error("请求格式不正确：需要 JSON 格式的消息，例如 {\"as\": \"guest\", \"text\": \"你好\"}。")
    if not isinstance(body, dict):
        return _error("请求格式不正确：消息应是一个 JSON 对象。")
    who = body.get("as")
    text = body.get("text")
    choice = body.get("choice")
    session_id = body.get("session")
    if not isinstance(who, str) or not who.strip():
        return _error("请先选择一个聊天身份。")
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

    who = who.strip().lower()
    if who == GUEST:
        if session_id is not None and (not isinstance(session_id, str) or not _SESSION_RE.match(session_id)):
            return _error("会话编号格式不正确，请刷新页面后重试。")
        user_key = f"{GUEST_PREFIX}-{session_id or 'web'}"
    else:
        def known(code: str) -> bool:
            with ctx.sessions() as session:
                return repo.get_staff_by_code(session, code) is not None

        if not await asyncio.to_thread(known, who):
            return _error("没有找到这个身份，请刷新页面后从列表中重新选择。")
        user_key = who

    incoming = Incoming(channel="web", user_key=user_key, text=text, choice=choice or None)
    replies = await asyncio.to_thread(engine.handle, incoming)
    return _json({"replies": [reply_json(r) for r in replies]})


async def upload(request: web.Request) -> web.Response:
    """The web console's document upload: a multipart form with ``as`` (a staff code) and ``file``.

    The file goes to the engine like a file sent in any chat, so the same rules apply (admins
    only, their consortium's documents only); its size is checked while it streams in.
    """
    ctx = request.app[WEB_CTX_KEY]
    engine = request.app[WEB_ENGINE_KEY]
    limit = ctx.settings.max_upload_bytes
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        return _error("请求格式不正确：请用表单上传文件（字段 as 和 file）。")
    who, name, data = None, None, bytearray()
    while (part := await reader.next()) is not None:
        if part.name == "as":
            who = (await part.text()).strip().lower()
        elif part.name == "file":
            # browsers send the name as UTF-8; some clients percent-encode it (RFC 5987)
            name = unquote(part.filename or "upload")
            while chunk := await part.read_chunk(64 * 1024):
                data += chunk
                if len(data) > limit:
                    return _error(f"文件过大：最大 {limit // (1024 * 1024)} MB。", status=413)
    if not who or who == GUEST:
        return _error("请先选择一个人员身份；上传政策文件需要管理员身份。")
    if name is None:
        return _error("没有收到文件，请重新选择文件。")

    def known(code: str) -> bool:
        with ctx.sessions() as session:
            return repo.get_staff_by_code(session, code) is not None

    if not await asyncio.to_thread(known, who):
        return _error("没有找到这个身份，请刷新页面后从列表中重新选择。")
    incoming = Incoming(channel="web", user_key=who, attachments=(Attachment(name, bytes(data)),))
    replies = await asyncio.to_thread(engine.handle, incoming)
    return _json({"replies": [reply_json(r) for r in replies]})


def setup_webchat(app: web.Application, ctx: AppContext, engine: ConversationEngine) -> None:
    app[WEB_CTX_KEY] = ctx
    app[WEB_ENGINE_KEY] = engine
    app.router.add_get("/", index)
    app.router.add_get("/api/identities", identities)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/upload", upload)


__all__ = ["list_identities", "reply_json", "setup_webchat"]
