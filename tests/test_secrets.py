"""Secrets stay out of logs and stored rows.

* Sent (and failed) outbox rows keep no message body: a one-time binding code an admin was sent
  is gone from the database once delivered.
* The WeCom app secret (``corpsecret=`` of ``gettoken``) and access tokens (``access_token=`` of
  every other call) never reach a log line or an error text kept in the database, whatever the
  API answers: a redirect, an HTTP error page echoing the URL, a body that is not JSON.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from bot.context import build_context
from bot.outbox import OutboxStore, enqueue, redacted_payload
from bot.wecom.api import WeComAPI, WeComHTTPError, WeComNetworkError, redact_secrets
from handlers.engine import ConversationEngine
from storage.db import make_session_factory
from storage.models import InboundMessage, OutboxMessage
from tests.wecom_support import (
    SECRET,
    FakeWeCom,
    WeComSender,
    fast_options,
    next_msg_id,
    serve_app,
    text_xml,
    wecom_settings,
)

from channel_support import settled as _settled  # noqa: E402

pytest_plugins = ("storage.testing",)  # db_engine, sqlite_template

REPO = Path(__file__).resolve().parents[1]
ADMIN = "duanzhiqiang"  # admin_lc, 段志强 (storage/samples/directory.yaml)


def _context(tmp_path: Path, sqlite_template: Path, api_base: str):
    from storage.directory_import import import_directory

    db = tmp_path / "secrets.sqlite3"
    shutil.copyfile(sqlite_template, db)
    ctx = build_context(wecom_settings(tmp_path / "var", api_base, database_url=f"sqlite:///{db}"))
    with ctx.sessions.begin() as session:
        assert import_directory(session, REPO / "storage" / "samples" / "directory.yaml", actor="test").ok
    return ctx


def _stored_text(ctx) -> str:
    """Everything the outbox and the inbox keep, as one string."""
    with ctx.sessions() as s:
        out = [json.dumps([o.payload, o.last_error], ensure_ascii=False) for o in s.scalars(select(OutboxMessage))]
        inbox = [json.dumps([i.payload, i.last_error], ensure_ascii=False) for i in s.scalars(select(InboundMessage))]
    return "\n".join(out + inbox)




# -- sent rows keep no message body ----------------------------------------------------------------


def test_sent_and_failed_rows_drop_their_body(db_engine):
    sessions = make_session_factory(db_engine)
    store = OutboxStore(sessions)
    with sessions.begin() as s:
        enqueue(s, "telegram", "1", {"kind": "text", "text": "绑定码：K7Q2-M9XD", "keyboard": [[["a", "b"]]]}, "k1")
        enqueue(s, "wecom", "u", {"msgtype": "text", "text": {"content": "绑定码：P3ZT-8HWA"}}, "k2")
        enqueue(s, "wecom", "v", {"msgtype": "file", "file": {"file_name": "a.pdf", "data_b64": "JVBERi0="}}, "k3")
    a, b, c = store.claim(10, lease_s=30)
    assert store.mark_sent(a) and store.mark_failed(b, "bad user")
    with sessions() as s:
        rows = {r.dedupe_key: r for r in s.scalars(select(OutboxMessage))}
    assert rows["k1"].payload == {"kind": "text", "redacted": True}
    assert rows["k2"].payload == {"msgtype": "text", "redacted": True}
    assert rows["k3"].payload["file"]["data_b64"] == "JVBERi0="  # still being sent: kept
    assert redacted_payload({"weird": 1}) == {"redacted": True}


async def test_invite_code_sent_to_an_admin_is_not_kept(tmp_path, sqlite_template, caplog):
    caplog.set_level(logging.DEBUG)
    fake = await FakeWeCom().start()
    ctx = _context(tmp_path, sqlite_template, fake.url)
    try:
        async with serve_app(ctx, ConversationEngine(ctx), fast_options()) as (url, channel), \
                aiohttp.ClientSession() as http:
            assert (await WeComSender(url).post(http, text_xml(ADMIN, "邀请 dr_li_lc", next_msg_id())))[0] == 200
            [reply] = await fake.wait_delivered(ADMIN, 1)
            await _settled(channel, ctx)
        match = re.search(r"绑定码：\s*(\S+)", reply.text)
        assert match, reply.text
        code = match.group(1)
        stored = _stored_text(ctx)
        assert code not in stored and "绑定码" not in stored
        assert '"redacted": true' in stored
        assert code not in caplog.text
    finally:
        ctx.close()
        await fake.close()


# -- no WeCom secret or token in logs or stored errors ---------------------------------------------


def test_redact_secrets_in_texts():
    url = f"http://h/cgi-bin/gettoken?corpid=ww1&corpsecret={SECRET}&x=1"
    assert SECRET not in redact_secrets(url) and "corpid=ww1" in redact_secrets(url)
    assert "TOKEN-9" not in redact_secrets("url='http://h/message/send?access_token=TOKEN-9-ab12cd'")
    assert "TOKEN-9" not in redact_secrets('{"access_token": "TOKEN-9-ab12cd"}')
    assert SECRET not in redact_secrets(f"corpsecret%3D{SECRET}%26")
    assert "plain-secret-value" not in redact_secrets("it was plain-secret-value here", "plain-secret-value")
    # every error of the client is redacted, whoever builds it
    assert SECRET not in str(WeComNetworkError(f"gettoken: ClientResponseError: url='{url}'"))
    assert SECRET not in str(WeComHTTPError(500, "gettoken", f"<h1>bad gateway {url}</h1>"))


class LeakyWeCom(FakeWeCom):
    """A WeCom API whose gateway misbehaves in ``mode``, echoing the request URL everywhere."""

    mode: str = "302"
    followed: int = 0

    async def start(self) -> LeakyWeCom:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/message/send", self._send)
        app.router.add_route("*", "/cgi-bin/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/cgi-bin/"  # type: ignore[union-attr]
        return self

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.followed += 1
        return web.Response(status=500, text=f"followed to {request.url}")

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.token_fetches += 1
        self._changed.set()
        if self.mode == "302":
            return web.Response(status=302, text=f"moved: {request.url}",
                                headers={"Location": f"{self.url}elsewhere?{request.query_string}"})
        if self.mode == "500":
            return web.Response(status=500, text=f"upstream failed for {request.url}")
        if self.mode == "not-json":
            return web.Response(status=200, text=f"<html>portal login, then {request.url}</html>",
                                content_type="text/html")
        self.token_fetches -= 1
        return await super()._gettoken(request)

    async def _send(self, request: web.Request) -> web.Response:
        if self.mode == "send-500":
            self.send_calls.append({})
            self._changed.set()
            return web.Response(status=500, text=f"send failed for {request.url}")
        return await super()._send(request)


@pytest.mark.parametrize("mode", ["302", "500", "not-json", "send-500"])
async def test_wecom_secret_and_token_never_logged_or_stored(tmp_path, sqlite_template, caplog, mode):
    caplog.set_level(logging.DEBUG)
    fake = await LeakyWeCom().start()
    fake.mode = mode
    ctx = _context(tmp_path, sqlite_template, fake.url)
    try:
        async with serve_app(ctx, ConversationEngine(ctx), fast_options()) as (url, channel), \
                aiohttp.ClientSession() as http:
            assert (await WeComSender(url).post(http, text_xml(ADMIN, "/whoami", next_msg_id())))[0] == 200
            if mode == "send-500":
                await fake.wait_for(lambda: len(fake.send_calls) >= 2)
            else:
                await fake.wait_for(lambda: fake.token_fetches >= 2)
            await channel.idle()
        with ctx.sessions() as s:
            row = s.scalars(select(OutboxMessage)).one()
        assert row.status == "pending" and row.attempts >= 2 and row.last_error  # kept for a retry
        if mode in ("500", "send-500"):  # the error page's echo of the URL is kept, redacted
            assert "***" in row.last_error
        tokens = sorted(fake.valid_tokens)
        for secret in [SECRET, *tokens]:
            assert secret not in caplog.text
            assert secret not in _stored_text(ctx)
        assert fake.followed == 0  # the redirect was not followed (it would carry the secret along)
        if mode == "send-500":
            assert tokens and "access_token=***" in row.last_error
        else:
            assert "gettoken" in row.last_error
    finally:
        ctx.close()
        await fake.close()


async def test_client_redacts_what_it_knows(tmp_path, sqlite_template):
    from storage.db import make_engine

    db = tmp_path / "t.sqlite3"
    shutil.copyfile(sqlite_template, db)
    engine = make_engine(f"sqlite:///{db}")
    api = WeComAPI(corp_id="ww1", secret="s3cr3t-value", sessions=make_session_factory(engine),
                   api_base="http://127.0.0.1:9/cgi-bin/", timeout_s=1.0)
    try:
        with pytest.raises(WeComNetworkError) as info:
            await api.access_token()
        assert "s3cr3t-value" not in str(info.value)
        assert api.redact("echo s3cr3t-value") == "echo ***"
    finally:
        await api.close()
        engine.dispose()
