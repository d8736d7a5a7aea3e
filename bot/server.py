"""The HTTP side of the assistant: one aiohttp application per process.

``create_app(ctx, engine)`` serves

* ``GET /healthz`` — 200 while the process is alive;
* ``GET /metrics`` — Prometheus metrics (``bot.metrics``), to private addresses only;
* ``GET /readyz`` — 200 when the database answers and the knowledge base is loaded and has
  documents, else 503 with ``{"ready": false, "reason": ...}``;
* the local web chat at ``/`` (``bot.webchat``) unless ``settings.web_chat`` is false.

Other channels add their routes with ``add_channel_routes(app, setup_fn)`` before the server
starts (``setup_fn(app)`` receives the application; ``app[CTX_KEY]`` / ``app[ENGINE_KEY]`` hold
the context and engine), or declare a ``ChannelPlugin`` (``bot.channels``) so that ``serve`` does it.

``serve(ctx, engine)`` runs the server with ``AppRunner``/``TCPSite`` on
``settings.http_host:http_port``, starts every enabled channel, and shuts everything down in
order on SIGINT/SIGTERM (or when ``stop`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.channels import ChannelPlugin, StopFn, enabled_channels
from bot.config import Settings
from bot.context import AppContext
from handlers.engine import ConversationEngine

log = logging.getLogger(__name__)

CTX_KEY: web.AppKey[AppContext] = web.AppKey("yilian_ctx", AppContext)
ENGINE_KEY: web.AppKey[ConversationEngine] = web.AppKey("yilian_engine", ConversationEngine)
#: Names of the channels whose routes were added (for logging and tests).
CHANNELS_KEY: web.AppKey[list[str]] = web.AppKey("yilian_channels", list)

SetupFn = Callable[[web.Application], None]


class ServeError(RuntimeError):
    """The server cannot start; the message says why in one line (the CLI prints it, no traceback)."""


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _public_host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url if "://" in url else "//" + url).hostname or url
    except ValueError:
        return url


def demo_mode_problem(settings: Settings, channels: Iterable[str] = ()) -> str | None:
    """Why demo mode may not run with these settings, or None. Demo mode lets any visitor pick
    any identity, admins included: only a person at this very machine may reach it, and no real
    chat channel may be wired to it."""
    if not settings.demo:
        return None
    if not _is_loopback(settings.http_host):
        return (f"demo mode (YILIAN_DEMO=true) serves only on a loopback address, not {settings.http_host}: "
                "anyone reaching it could act as any staff member. Unset YILIAN_DEMO for a real deployment.")
    public = _public_host(settings.public_url)
    if public is not None and not _is_loopback(public):
        return (f"demo mode (YILIAN_DEMO=true) cannot be served through YILIAN_PUBLIC_URL ({settings.public_url}): "
                "a reverse proxy would let anyone act as any staff member. Unset YILIAN_DEMO or YILIAN_PUBLIC_URL.")
    configured = sorted(set(settings.channels_configured) | set(channels))
    if configured:
        return (f"demo mode (YILIAN_DEMO=true) cannot run with chat channels configured ({', '.join(configured)}): "
                "its identity picker would let a visitor act as real staff. Unset YILIAN_DEMO.")
    return None


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]

    def check() -> tuple[bool, str | None]:
        ok, reason = engine.database_status()
        if not ok:
            return ok, reason
        return engine.knowledge_status()

    try:
        ok, reason = await asyncio.to_thread(check)
    except Exception as exc:
        log.warning("readiness check failed", exc_info=True)
        ok, reason = False, f"readiness check failed: {type(exc).__name__}"
    if ok:
        # Still ready when degraded (answers fall back to the lexical index): a load balancer
        # must not pull every worker at once because the vector store is down.
        degraded = engine.degraded()
        return web.json_response({"ready": True, "degraded": degraded} if degraded else {"ready": True})
    return web.json_response({"ready": False, "reason": reason}, status=503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus exposition. Served to loopback and private addresses only, unless
    ``YILIAN_METRICS_PUBLIC`` (the proxy in deploy/nginx.conf does not forward it at all)."""
    from bot import metrics

    ctx = request.app[CTX_KEY]
    if not ctx.settings.metrics_public and not _is_private(request.remote):
        raise web.HTTPNotFound()
    body, content_type = await asyncio.to_thread(metrics.render, ctx.sessions)
    return web.Response(body=body, headers={"Content-Type": content_type})


def _is_private(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private


@web.middleware
async def request_id_middleware(request: web.Request, handler):  # noqa: ANN001 - aiohttp's signature
    """Every HTTP request gets an id for its log lines (a channel callback replaces it with the
    id of the message it carries); the response says it in ``X-Request-ID`` for support."""
    import secrets

    from bot.logging_setup import REQUEST_ID, request_scope

    with request_scope("ht-" + secrets.token_hex(6)):
        response = await handler(request)
        response.headers.setdefault("X-Request-ID", REQUEST_ID.get() or "")
        return response


def add_channel_routes(app: web.Application, setup_fn: SetupFn, *, name: str | None = None) -> None:
    """Let a channel add its routes (call before the server starts: the router freezes then)."""
    setup_fn(app)
    app[CHANNELS_KEY].append(name or getattr(setup_fn, "__name__", "channel"))


def create_app(
    ctx: AppContext,
    engine: ConversationEngine,
    *,
    channels: Iterable[ChannelPlugin] = (),
    web_chat: bool | None = None,
    warm_up: bool = False,
) -> web.Application:
    """The application with health, readiness, the web chat and the given channels' routes.

    ``warm_up`` loads the knowledge base in a background thread at start-up (``/readyz`` says 503
    until it is done).
    """
    from bot.webauth import setup_security, setup_webauth

    app = web.Application(client_max_size=1024 * 1024, middlewares=[request_id_middleware])
    app[CTX_KEY] = ctx
    app[ENGINE_KEY] = engine
    app[CHANNELS_KEY] = []
    setup_security(app, ctx)  # Host and Origin checks on every route
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    if ctx.settings.web_chat if web_chat is None else web_chat:
        from bot.webchat import setup_webchat

        from bot.console import setup_console

        setup_webauth(app, ctx)
        add_channel_routes(app, lambda a: setup_webchat(a, ctx, engine), name="web")
        setup_console(app, ctx, engine)  # /admin, on the same sign-in
    for plugin in channels:
        if plugin.setup_routes is not None:
            add_channel_routes(app, lambda a, p=plugin: p.setup_routes(a, ctx, engine), name=plugin.name)
    if warm_up:  # i.e. a real server (``serve``), not a test client
        app.on_startup.append(_start_warm_up)
        app.on_cleanup.append(_stop_warm_up)
        app.on_startup.append(_start_sweeper)
        app.on_startup.append(_start_escalation)
        app.on_startup.append(_start_scheduler)
        app.on_cleanup.append(_stop_sweeper)
    return app


_WARM_UP_KEY: web.AppKey[asyncio.Task] = web.AppKey("yilian_warm_up", asyncio.Task)
_SWEEP_KEY: web.AppKey[asyncio.Task] = web.AppKey("yilian_sweep", asyncio.Task)
SWEEP_INTERVAL_S = 3600.0


def sweep_expired(ctx: AppContext) -> dict[str, int]:
    """Delete web sign-in state and dialogs that ended long ago (channels prune their own rows)."""
    from datetime import timedelta

    from storage import repositories as repo
    from storage import signin
    from storage.types import utcnow

    with ctx.sessions.begin() as session:
        # A dialog that timed out is announced when its user next writes: keep it a day for that.
        return {"signin": signin.prune_expired(session),
                "dialogs": repo.purge_expired_dialogs(session, now=utcnow() - timedelta(days=1))}


def _every(key: web.AppKey[asyncio.Task], interval_s: Callable[[AppContext], float],
           work: Callable[[AppContext], Any], done: Callable[[Any], None], what: str):
    """An ``on_startup`` hook running ``work(ctx)`` in a thread now and then every
    ``interval_s(ctx)`` seconds; ``done`` logs a result; a failure is logged and retried."""

    async def start(app: web.Application) -> None:
        ctx = app[CTX_KEY]

        async def loop() -> None:
            while True:
                try:
                    done(await asyncio.to_thread(work, ctx))
                except Exception:
                    log.exception("%s failed; retried at the next interval", what)
                await asyncio.sleep(interval_s(ctx))

        app[key] = asyncio.get_running_loop().create_task(loop())

    return start


async def _stop_sweeper(app: web.Application) -> None:
    for key in (_SWEEP_KEY, _ESCALATE_KEY, _SCHEDULER_KEY):
        task = app.get(key)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


_ESCALATE_KEY: web.AppKey[asyncio.Task] = web.AppKey("yilian_escalate", asyncio.Task)


def escalate_referrals(ctx: AppContext) -> int:
    """Tell receiving admins about referrals nobody answered in time (any worker may run this:
    each referral is claimed once in the database)."""
    from handlers.referral.rules import rules_for
    from handlers.referral.service import escalate_due
    from storage.types import utcnow

    rules = rules_for(str(ctx.settings.referral_rules) if ctx.settings.referral_rules else None)
    with ctx.sessions.begin() as session:
        return escalate_due(session, ctx.router, now=utcnow(), rules=rules)


def _log_deleted(deleted: dict[str, int]) -> None:
    if any(deleted.values()):
        log.info("expired sign-in state and dialogs deleted", extra=deleted)


def _log_escalated(count: int) -> None:
    if count:
        log.info("unanswered referrals escalated", extra={"count": count})


_start_sweeper = _every(_SWEEP_KEY, lambda _ctx: SWEEP_INTERVAL_S, sweep_expired, _log_deleted,
                        "sweep of expired rows")
_start_escalation = _every(_ESCALATE_KEY, lambda ctx: ctx.settings.referral_escalation_interval_s,
                           escalate_referrals, _log_escalated, "referral escalation")


_SCHEDULER_KEY: web.AppKey[asyncio.Task] = web.AppKey("yilian_scheduler", asyncio.Task)


async def _start_scheduler(app: web.Application) -> None:
    """Meeting reminders and quota nudges (``bot.scheduler``): every process runs one; only the
    holder of the database lease works."""
    from bot.scheduler import Scheduler

    if not app[CTX_KEY].settings.scheduler_enabled:
        log.info("scheduler disabled (YILIAN_SCHEDULER_ENABLED=false)")
        return
    scheduler = Scheduler(app[CTX_KEY])
    app[_SCHEDULER_KEY] = asyncio.get_running_loop().create_task(scheduler.run())


async def _start_warm_up(app: web.Application) -> None:
    engine = app[ENGINE_KEY]

    async def run() -> None:
        try:
            await asyncio.to_thread(engine.warm_up)
            log.info("knowledge base loaded")
        except Exception:
            log.exception("knowledge base failed to load; /readyz will report it")

    app[_WARM_UP_KEY] = asyncio.get_running_loop().create_task(run())


async def _stop_warm_up(app: web.Application) -> None:
    task = app.get(_WARM_UP_KEY)
    if task is not None and not task.done():
        # The thread cannot be interrupted; wait for it so the process exits cleanly.
        with contextlib.suppress(Exception):
            await task


async def serve(
    ctx: AppContext,
    engine: ConversationEngine,
    *,
    stop: asyncio.Event | None = None,
    channels: list[ChannelPlugin] | None = None,
    install_signal_handlers: bool = True,
    started: Callable[[str], None] | None = None,
) -> None:
    """Run the HTTP server and every enabled channel until SIGINT/SIGTERM (or ``stop`` is set).

    ``channels`` defaults to ``bot.channels.enabled_channels(settings)``. ``started(url)`` is
    called once the server listens.
    """
    settings = ctx.settings
    stop = stop or asyncio.Event()
    plugins = enabled_channels(settings) if channels is None else channels
    problem = demo_mode_problem(settings, [p.name for p in plugins])
    if problem:
        raise ServeError(problem)
    app = create_app(ctx, engine, channels=plugins, warm_up=True)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            reason = {errno.EADDRINUSE: "is already in use (is another yilian serve running?)",
                      errno.EACCES: "needs privileges this user does not have",
                      errno.EADDRNOTAVAIL: "is not an address of this machine"}[exc.errno]
            raise ServeError(f"cannot listen on {settings.http_host}:{settings.http_port}: the address {reason}. "
                             "Set YILIAN_HTTP_PORT (or YILIAN_HTTP_HOST) to another value.") from None
        raise
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{settings.http_port}/"
    log.info("server listening", extra={"url": url, "channels": ",".join(app[CHANNELS_KEY]) or "-"})

    loop = asyncio.get_running_loop()
    installed: list[int] = []
    if install_signal_handlers:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)

    stops: list[tuple[str, StopFn]] = []
    try:
        for plugin in plugins:
            if plugin.start is None:
                continue
            stop_fn = await plugin.start(ctx, engine, app)
            log.info("channel started", extra={"channel": plugin.name})
            if stop_fn is not None:
                stops.append((plugin.name, stop_fn))
        if started is not None:
            started(url)
        await stop.wait()
        log.info("shutting down")
    finally:
        for name, stop_fn in reversed(stops):
            try:
                await stop_fn()
                log.info("channel stopped", extra={"channel": name})
            except Exception:
                log.exception("channel failed to stop cleanly", extra={"channel": name})
        await runner.cleanup()
        for sig in installed:
            loop.remove_signal_handler(sig)


__all__ = ["CHANNELS_KEY", "CTX_KEY", "ENGINE_KEY", "ServeError", "add_channel_routes", "create_app",
           "demo_mode_problem", "healthz", "readyz", "serve"]
