"""The admin console at ``/admin``: server-rendered pages on the same HTTP server and sign-in.

Pages (their headings and main buttons carry the labels operators and outside checks use):
文档 (documents: list, 上传, 删除), 命中测试 (hit test), 转诊 (referrals, 导出CSV / 导出FHIR),
会议 (meetings and attendance), 配额 (quota progress with inline SVG bars), 人员 (directory),
审计 (audit log). Who may open which page, and what each sees, is decided by
``storage.access`` (``CONSOLE_PAGES``, ``CONSOLE_ACTIONS``, ``console_scope``): admins their
consortium, liaison officers their own institution read-only; physicians are sent back to the
chat. Forms carry the session's CSRF token; every asset is served by the app (no CDN).
"""

from __future__ import annotations

from aiohttp import web

from bot.console.views import routes


def setup_console(app: web.Application, ctx, engine) -> None:  # noqa: ANN001 - AppContext, engine
    from bot.console.views import CONSOLE_CTX_KEY, CONSOLE_ENGINE_KEY

    app[CONSOLE_CTX_KEY] = ctx
    app[CONSOLE_ENGINE_KEY] = engine
    for method, path, handler in routes():
        app.router.add_route(method, path, handler)


__all__ = ["setup_console"]
