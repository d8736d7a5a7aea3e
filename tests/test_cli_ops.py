"""``yilian directory import``, ``users invite/list``, ``chat --as`` and ``serve``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from typer.testing import CliRunner

from bot.channels import ChannelPlugin
from bot.cli import app
from bot.config import Settings
from bot.context import build_context
from handlers.engine import ConversationEngine
from handlers.messages import Incoming

pytest_plugins = ("engine_support",)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "storage" / "samples" / "directory.yaml"

BAD_DIRECTORY = """\
consortia:
  - code: testgroup
    name: 测试医疗集团
    institutions:
      - name: 测试人民医院
        level: 三级
        is_lead: true
        staff:
          - {code: dr_ok_tg, name: 甲医生, roles: [physician]}
          - {code: dr_bad_tg, name: 乙医生, roles: [surgeon]}
      - name: 测试卫生院
        level: 四级
"""


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> Path:
    """A private data directory for the CLI (settings come from the environment)."""
    data = tmp_path / "var"
    for name in list(os.environ):
        if name.startswith("YILIAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("YILIAN_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)  # no stray .env
    return data


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def test_directory_import_is_idempotent(cli_env):
    first = run("directory", "import", str(SAMPLE))
    assert first.exit_code == 0, first.output
    assert "导入完成" in first.stdout and "人员：新增 25" in first.stdout
    second = run("directory", "import", str(SAMPLE))
    assert second.exit_code == 0 and "人员：新增 0，更新 0，未变 25" in second.stdout


def test_directory_import_reports_bad_rows_by_line_and_imports_nothing(cli_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_DIRECTORY, encoding="utf-8")
    result = run("directory", "import", str(bad))
    assert result.exit_code == 1
    assert "第 10 行" in result.stderr and "surgeon" in result.stderr
    assert "第 11 行" in result.stderr and "四级" in result.stderr
    assert "未导入任何数据" in result.stderr
    listing = run("users", "list")
    assert "dr_ok_tg" not in listing.stdout and "没有人员" in listing.stdout


def test_users_invite_prints_a_code_that_binds(cli_env):
    run("directory", "import", str(SAMPLE))
    result = run("users", "invite", "dr_wang_sy")
    assert result.exit_code == 0, result.output
    code = re.search(r"code: ([A-Z0-9]{8})", result.stdout).group(1)
    assert "有效期至" in result.stdout and "北京时间" in result.stdout and "王思远" in result.stdout
    ctx = build_context(Settings(_env_file=None, data_dir=cli_env))
    try:
        reply = ConversationEngine(ctx).handle(Incoming("telegram", "123456", text=f"/bind {code}"))
        assert "绑定成功" in reply[0].text
    finally:
        ctx.close()
    listing = run("users", "list", "--consortium", "songyuan")
    line = next(line for line in listing.stdout.splitlines() if line.startswith("dr_wang_sy"))
    assert "telegram" in line


def test_users_invite_unknown_staff_fails(cli_env):
    run("directory", "import", str(SAMPLE))
    result = run("users", "invite", "dr_nobody")
    assert result.exit_code == 1 and "没有代码为" in result.stderr


def test_users_list_shows_staff_without_phone_numbers(cli_env):
    run("directory", "import", str(SAMPLE))
    result = run("users", "list")
    assert result.exit_code == 0
    assert "liaison_yang_lc\t杨晓雯\t联络员\t临沧市人民医院\tlincang" in result.stdout
    assert "13800" not in result.stdout
    only = run("users", "list", "--consortium", "deyang").stdout.splitlines()
    assert len(only) == 5 and all("\tdeyang\t" in line for line in only)


def test_terminal_chat_numbers_the_choices(cli_env):
    run("directory", "import", str(SAMPLE))
    result = run("chat", "--as", "dr_wang_sy", input="/refer\n2\n1\n/quit\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "以 王思远" in out
    assert "[1] 上转（转往上级医院）" in out and "[2] 下转（转往下级/基层机构）" in out
    assert "（选择：下转" in out and "患者情况紧急吗" in out
    assert "（选择：普通" in out and "请输入患者姓名" in out


def test_terminal_chat_rejects_an_unknown_identity(cli_env):
    run("directory", "import", str(SAMPLE))
    result = run("chat", "--as", "nobody")
    assert result.exit_code == 1 and "没有代码为" in result.stderr


def test_bootstrap_directory_import_is_idempotent(engine_ctx):
    from bot.cli_ops import import_sample_directory

    assert "人员：新增 0，更新 0，未变 25" in import_sample_directory(engine_ctx)  # the template has it


def test_sample_directory_seeding_leaves_admins_changes_alone(engine_ctx):
    """``make run`` used to reset role changes made in chat on every start."""
    from bot.cli_ops import import_sample_directory
    from storage import repositories as repo

    with engine_ctx.sessions.begin() as session:
        repo.set_roles(session, repo.get_staff_by_code(session, "dr_wang_sy"), ["physician", "liaison"], actor="admin_sy")
        repo.get_staff_by_code(session, "dr_zhao_sy").department = "急诊科"
    import_sample_directory(engine_ctx)
    with engine_ctx.sessions() as session:
        assert repo.get_staff_by_code(session, "dr_wang_sy").roles == ["physician", "liaison"]
        assert repo.get_staff_by_code(session, "dr_zhao_sy").department == "急诊科"


def test_bootstrap_loads_samples_only_when_asked_and_only_once(cli_env, tmp_path):
    plain = run("bootstrap")
    assert plain.exit_code == 0 and "no sample data" in plain.stdout
    assert "(no documents)" in run("docs", "list").stdout
    assert "没有人员" in run("users", "list").stdout

    first = run("bootstrap", "--samples")
    assert first.exit_code == 0, first.output
    assert first.stdout.count("added") == 5 and "人员：新增 25" in first.stdout
    # An admin publishes a newer version of a sample policy, then `make run` runs again.
    title = run("docs", "list", "--json").stdout.split('"title": "')[1].split('"')[0]
    newer = tmp_path / "newer.txt"
    newer.write_text(f"{title}\n第一条 联席会议每月召开一次。\n", encoding="utf-8")
    assert run("ingest", str(newer), "--title", title).exit_code == 0
    again = run("bootstrap", "--samples")
    assert again.exit_code == 0 and "seeded before" in again.stdout
    listing = run("docs", "list").stdout
    assert f"{title}\tv2" in listing
    answer = run("ask", "联席会议多久召开一次？", "--json").stdout
    assert "每月召开一次" in answer


def test_bootstrap_refuses_sample_staff_beside_real_channels(cli_env, monkeypatch):
    monkeypatch.setenv("YILIAN_TELEGRAM_TOKEN", "123:abc")
    result = run("bootstrap", "--samples")
    assert result.exit_code == 2 and "refusing to seed sample staff" in result.stderr


def test_set_password_and_logout_from_the_cli(cli_env):
    run("directory", "import", str(SAMPLE))
    short = run("users", "set-password", "admin_sy", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "太短" in short.stderr
    doctor = run("users", "set-password", "dr_wang_sy", "--password-stdin", input="a long enough secret\n")
    assert doctor.exit_code == 1 and "只有管理员" in doctor.stderr
    ok = run("users", "set-password", "admin_sy", "--password-stdin", input="a long enough secret\n")
    assert ok.exit_code == 0 and "/login" in ok.stdout
    out = run("users", "logout", "admin_sy")
    assert out.exit_code == 0 and "0 session(s) ended" in out.stdout
    assert run("users", "logout", "nobody").exit_code == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_runs_registered_channels_and_stops_them(app_context, directory_template, tmp_path):
    from engine_support import context_on_copy

    from bot.server import serve

    ctx = context_on_copy(directory_template, tmp_path / "srv", http_port=free_port())
    engine = ConversationEngine(ctx, kb=app_context.kb)
    events: list[str] = []

    async def fake_route(_request):
        return web.Response(text="fake channel")

    async def start(_ctx, _engine, _app):
        events.append("start")

        async def stop():
            events.append("stop")

        return stop

    plugin = ChannelPlugin(
        name="fake", enabled=lambda s: True,
        setup_routes=lambda a, _c, _e: a.router.add_get("/fake/callback", fake_route), start=start,
    )
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(ctx, engine, stop=stop, channels=[plugin], install_signal_handlers=False,
                                     started=started.set_result))
    try:
        url = await asyncio.wait_for(started, 20)
        async with ClientSession() as http:
            async with http.get(url + "fake/callback") as res:
                assert res.status == 200 and await res.text() == "fake channel"
            async with http.get(url) as res:
                assert res.status == 200 and "登录医联助手" in await res.text()  # not signed in yet
            from storage import repositories as repo
            from storage import signin

            with ctx.sessions.begin() as session:  # as a one-time link would have made it
                web_session = signin.create_session(session, repo.get_staff_by_code(session, "dr_wang_sy"),
                                                    method="link")
            headers = {"X-CSRF-Token": web_session.csrf_token, "Cookie": f"yilian_session={web_session.token}"}
            async with http.post(url + "api/chat", json={"text": "/whoami"}, headers=headers) as res:
                assert "王思远" in (await res.json())["replies"][0]["text"]
        assert events == ["start"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        ctx.close()
    assert events == ["start", "stop"]


def serve_env(tmp_path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_")}
    env.update(YILIAN_DATA_DIR=str(tmp_path / "var"), **values)
    return env


@pytest.mark.parametrize(("values", "why"), [
    ({"YILIAN_HTTP_HOST": "0.0.0.0"}, "loopback"),
    ({"YILIAN_WECOM_CORP_ID": "ww123"}, "chat channels configured (wecom)"),
    ({"YILIAN_TELEGRAM_TOKEN": "123:abc"}, "chat channels configured (telegram)"),
])
def test_demo_mode_refuses_to_serve_beyond_this_machine(tmp_path, values, why):
    env = serve_env(tmp_path, YILIAN_DEMO="true", YILIAN_HTTP_PORT=str(free_port()), **values)
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "serve"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert why in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_busy_port_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = serve_env(tmp_path, YILIAN_HTTP_PORT=str(port))
        proc = subprocess.run([sys.executable, "-m", "bot.cli", "serve"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("✗")]
    assert errors == [errors[0]] and "already in use" in errors[0] and str(port) in errors[0]


def test_yilian_serve_answers_health_checks_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_")}
    env.update(YILIAN_DATA_DIR=str(tmp_path / "var"), YILIAN_HTTP_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as res:
                    assert res.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as not_ready:  # empty knowledge base
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert not_ready.value.code == 503
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output
    assert "已停止" in output
