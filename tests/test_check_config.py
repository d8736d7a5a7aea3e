"""``yilian check-config``: one clear line per problem, exit code 1, before anything starts."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import cli_runner


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.fixture
def api_server():
    """Any HTTP server on loopback: a reachable API base answers something."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b'{"nanosecond heartbeat": 1}' if "heartbeat" in self.path else b"{}"
            self.send_response(200 if "heartbeat" in self.path else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_sound_embedded_setup_passes(tmp_path):
    cli = cli_runner(tmp_path / "var")
    assert cli("db", "upgrade").exit_code == 0
    result = cli("check-config")
    assert result.exit_code == 0, result.output
    assert "✓ database:" in result.output and "schema up to date" in result.output
    assert "✓ vector store: embedded Chroma" in result.output


def test_every_problem_is_one_line_naming_the_setting(tmp_path):
    down = _closed_port()
    cli = cli_runner(
        tmp_path / "var",
        YILIAN_DATABASE_URL=f"postgresql+psycopg://yilian:secretpw@127.0.0.1:{down}/yilian",
        YILIAN_CHROMA_URL=f"http://127.0.0.1:{down}",
        YILIAN_WECOM_CORP_ID="ww0123",
        YILIAN_TELEGRAM_TOKEN="not-a-token",
        YILIAN_TELEGRAM_WEBHOOK_URL="http://bot.example.org/telegram",
        YILIAN_TELEGRAM_API_BASE=f"http://127.0.0.1:{down}/bot",
    )
    result = cli("check-config")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("✗")]
    text = "\n".join(lines)
    assert f"✗ database: cannot connect to postgresql+psycopg://yilian:***@127.0.0.1:{down}/yilian" in text
    assert "secretpw" not in result.output  # the password is never printed
    assert f"✗ vector store: Chroma server http://127.0.0.1:{down} unreachable" in text
    assert "✗ wecom: half configured: set YILIAN_WECOM_SECRET, YILIAN_WECOM_TOKEN, YILIAN_WECOM_AES_KEY" in text
    assert "✗ telegram: YILIAN_TELEGRAM_TOKEN does not look like a bot token" in text
    assert "✗ telegram: YILIAN_TELEGRAM_WEBHOOK_URL must be https://" in text
    assert "✗ telegram: YILIAN_TELEGRAM_WEBHOOK_SECRET is not set" in text
    assert "Traceback" not in result.output


def test_schema_behind_and_invalid_values_are_named(tmp_path):
    cli = cli_runner(tmp_path / "var")
    result = cli("check-config")  # no `db upgrade` yet
    assert result.exit_code == 1 and "run `yilian db upgrade`" in result.output
    result = cli_runner(tmp_path / "var", YILIAN_HTTP_PORT="eighty")("check-config")
    assert result.exit_code == 1 and "✗ YILIAN_HTTP_PORT:" in result.output


def test_reachable_services_are_confirmed(tmp_path, api_server):
    cli = cli_runner(
        tmp_path / "var",
        YILIAN_CHROMA_URL=api_server,
        YILIAN_TELEGRAM_TOKEN="123456:" + "A" * 35,
        YILIAN_TELEGRAM_API_BASE=f"{api_server}/bot",
    )
    cli("db", "upgrade")
    result = cli("check-config")
    assert f"✓ vector store: Chroma server {api_server} answers" in result.output
    assert f"✓ telegram: API base {api_server} reachable" in result.output
    assert result.exit_code == 0, result.output
