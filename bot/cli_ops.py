"""Operations commands of ``yilian`` (registered into ``bot.cli.app`` by ``register``):

    yilian directory import FILE [--dry-run]   validate and import the staff directory (YAML/CSV)
    yilian users invite STAFF [--by WHO]       print a one-time Telegram binding code and its expiry
    yilian users list [--consortium CODE]      the directory's staff (no phone numbers)
    yilian users set-password ADMIN            the first admin's web password (argon2)
    yilian users logout STAFF                  end every web session of STAFF
    yilian chat [--as STAFF]                   chat with the engine in the terminal
    yilian serve                               HTTP server (web chat, /healthz, /readyz) + channels
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer

SAMPLE_DIRECTORY = Path(__file__).resolve().parents[1] / "storage" / "samples" / "directory.yaml"

directory_app = typer.Typer(no_args_is_help=True, help="The staff directory (consortia, institutions, staff).")
users_app = typer.Typer(no_args_is_help=True, help="Staff accounts: invites and listing.")


def _context():
    from bot.cli import _context as build

    return build()


# ------------------------------------------------------------------------------------------------
# directory


def import_sample_directory(ctx) -> str:
    """Add the shipped sample directory's missing consortia, institutions and staff; what exists
    is left as it is. Returns the report summary."""
    from storage.directory_import import import_directory

    with ctx.sessions.begin() as session:
        report = import_directory(session, SAMPLE_DIRECTORY, actor="bootstrap", create_only=True)
    return report.summary_zh()


def seed_samples(ctx) -> list[str]:
    """Seed the sample policies and directory, once per database.

    A second run does nothing (an audit entry ``samples.seed`` marks the first), so an admin who
    removed a sample policy or changed a sample person does not see it come back; and even the
    first run keeps any policy whose title exists, so an admin's newer version is never put back
    to the sample text.
    """
    from knowledge.readers import extract
    from knowledge.samples import sample_policies
    from storage import repositories as repo

    with ctx.sessions() as session:
        if repo.audit_entries(session, action="samples.seed", limit=1):
            return ["sample data was seeded before; nothing changed (admins' edits are kept)"]
    lines = []
    existing = {d.title for d in ctx.kb.documents()}
    for path, consortium in sample_policies():
        title = extract(path.name, path.read_bytes()).title.strip()
        if title in existing:
            lines.append(f"kept      {title}")
            continue
        res = ctx.kb.ingest_path(path, uploaded_by="bootstrap", consortium=consortium)
        lines.append(f"{res.status:9} {res.title}")
    lines.append(import_sample_directory(ctx))
    with ctx.sessions.begin() as session:
        repo.record(session, "bootstrap", "samples.seed", details={"policies": len(lines) - 1}, channel="cli")
    return lines


@directory_app.command("import")
def directory_import(
    file: Path = typer.Argument(..., help="Directory file (.yaml/.yml or .csv)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only validate; write nothing."),
    by: str = typer.Option("cli", help="Who imports (recorded in the audit log)."),
) -> None:
    """Import (or update) the directory. Nothing is imported if any row is bad; exit 1 then."""
    from storage.directory_import import import_directory

    ctx = _context()
    with ctx.sessions() as session:
        report = import_directory(session, file, actor=by, dry_run=dry_run)
        if report.ok and not dry_run:
            session.commit()
        else:
            session.rollback()
    if report.ok:
        typer.echo(report.summary_zh())
        return
    typer.echo(report.summary_zh(), err=True)
    raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# users


def _staff_or_exit(session, code: str, *, active_only: bool = True):
    """The staff member with ``code``, or one line on stderr and exit code 1."""
    from storage import repositories as repo

    person = repo.get_staff_by_code(session, code, active_only=active_only)
    if person is None:
        which = "在职人员" if active_only else "人员"
        typer.echo(f"人员名录中没有代码为 {code!r} 的{which}（用 `yilian users list` 查看）。", err=True)
        raise typer.Exit(1)
    return person


@users_app.command("invite")
def users_invite(
    staff: str = typer.Argument(..., help="Staff code, e.g. dr_wang_sy."),
    by: str = typer.Option("cli", help="Who issues the code (recorded in the audit log)."),
) -> None:
    """Create a one-time code that binds a Telegram account to STAFF; prints code and expiry."""
    from datetime import timedelta

    from handlers.dialogs.invite import format_expiry
    from storage import repositories as repo
    from storage.types import utcnow

    ctx = _context()
    ttl = ctx.settings.invite_ttl_hours
    with ctx.sessions.begin() as session:
        person = _staff_or_exit(session, staff, active_only=False)
        if not person.active:
            typer.echo(f"{person.name}（{person.code}）已停用，不能邀请。", err=True)
            raise typer.Exit(1)
        now = utcnow()
        code = repo.create_invite(session, person, created_by=by, ttl_hours=ttl, now=now)
        name, inst = person.name, person.institution.name
    expires = now + timedelta(hours=ttl)
    typer.echo(f"绑定码 / code: {code}")
    typer.echo(f"人员 / staff:  {name}（{inst}，{staff}）")
    typer.echo(f"有效期至 / expires: {format_expiry(expires)}  [{expires.isoformat(timespec='seconds')}]")
    typer.echo(f"用法 / usage: 在 Telegram 中向助手发送 /bind {code}（只能使用一次）")


@users_app.command("set-password")
def users_set_password(
    staff: str = typer.Argument(..., help="Staff code of an admin, e.g. admin_sy."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    by: str = typer.Option("cli", help="Who sets it (recorded in the audit log)."),
) -> None:
    """Give an admin a web password (argon2) — for the first admin, before any chat channel works.
    Everyone else signs in with a one-time link from chat (/login)."""
    from storage import signin

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("新密码 / new password", hide_input=True, confirmation_prompt=True)
    ctx = _context()
    with ctx.sessions.begin() as session:
        person = _staff_or_exit(session, staff)
        try:
            signin.set_password(session, person, password, actor=by)
        except signin.PasswordRefused as exc:
            typer.echo(f"✗ {exc}", err=True)
            raise typer.Exit(1) from None
        name = person.name
    typer.echo(f"已为 {name}（{staff}）设置网页密码 / password set. 登录 / sign in: {ctx.settings.web_base_url}/login")


@users_app.command("logout")
def users_logout(
    staff: str = typer.Argument(..., help="Staff code whose web sessions end now."),
    by: str = typer.Option("cli", help="Who revokes (recorded in the audit log)."),
) -> None:
    """End every web session of STAFF at once (lost laptop, staff left)."""
    from storage import signin

    ctx = _context()
    with ctx.sessions.begin() as session:
        person = _staff_or_exit(session, staff, active_only=False)
        count = signin.revoke_staff_sessions(session, person, actor=by)
    typer.echo(f"已结束 {staff} 的 {count} 个网页会话 / {count} session(s) ended")


@users_app.command("list")
def users_list(
    consortium: str | None = typer.Option(None, help="Only this consortium (code)."),
    include_inactive: bool = typer.Option(False, "--all", help="Include deactivated staff."),
) -> None:
    """List staff: code, name, roles, institution, consortium, linked accounts (no phone numbers)."""
    from sqlalchemy import select

    from storage.models import Consortium, Institution, Staff

    ctx = _context()
    with ctx.sessions() as session:
        stmt = (
            select(Staff, Institution, Consortium)
            .join(Institution, Staff.institution_id == Institution.id)
            .join(Consortium, Institution.consortium_id == Consortium.id)
            .order_by(Consortium.code, Institution.id, Staff.code)
        )
        if consortium:
            stmt = stmt.where(Consortium.code == consortium)
        if not include_inactive:
            stmt = stmt.where(Staff.active.is_(True))
        rows = session.execute(stmt).unique().all()
        if not rows:
            typer.echo("(没有人员 / no staff)" + ("" if not consortium else f" — consortium {consortium}"))
            return
        for staff, inst, cons in rows:
            accounts = []
            if staff.wecom_userid:
                accounts.append("wecom")
            if staff.telegram_user_id:
                accounts.append("telegram")
            if not staff.active:
                accounts.append("inactive")
            typer.echo("\t".join([staff.code, staff.name, staff.roles_zh, inst.name, cons.code,
                                  ",".join(accounts) or "-"]))


# ------------------------------------------------------------------------------------------------
# chat


def run_terminal_chat(engine, who: str, *, read=input, write=typer.echo) -> None:
    """Chat loop: replies printed, choices numbered; typing a shown number presses that button.
    Ends on EOF, ``/quit`` or ``/exit``."""
    from handlers.messages import Incoming

    choices: list = []

    def show(replies) -> None:
        nonlocal choices
        choices = []
        for reply in replies:
            write(f"助手> {reply.text}")
            for choice in reply.choices:
                choices.append(choice)
                write(f"  [{len(choices)}] {choice.label}")
        write("")

    show(engine.handle(Incoming(channel="cli", user_key=who, text="/start")))
    while True:
        try:
            line = read("我> ")
        except (EOFError, KeyboardInterrupt):
            write("")
            return
        line = line.strip()
        if not line:
            continue
        if line.lower() in ("/quit", "/exit", "quit", "exit"):
            return
        if line.isdigit() and 1 <= int(line) <= len(choices):
            choice = choices[int(line) - 1]
            write(f"（选择：{choice.label}）")
            show(engine.handle(Incoming(channel="cli", user_key=who, choice=choice.value)))
        else:
            show(engine.handle(Incoming(channel="cli", user_key=who, text=line)))


def chat(
    as_: str = typer.Option("guest", "--as", help="Staff code to chat as (see `yilian users list`), or guest."),
) -> None:
    """Chat with the assistant in the terminal, as a staff member from the directory."""
    from handlers.engine import ConversationEngine

    ctx = _context()
    who = as_.strip().lower()
    if who != "guest":
        with ctx.sessions() as session:
            person = _staff_or_exit(session, who)
            typer.echo(f"以 {person.name}（{person.institution.name}，{person.roles_zh}）的身份聊天。")
    else:
        who = "guest-cli"
        typer.echo("以未绑定访客的身份聊天（只能咨询政策）。")
    typer.echo("输入数字选择按钮；/quit 或 Ctrl-D 退出。\n")
    run_terminal_chat(ConversationEngine(ctx), who)


# ------------------------------------------------------------------------------------------------
# serve


def serve() -> None:
    """Start the HTTP server (web chat, /healthz, /readyz) and every channel whose settings are set.

    Channels register in ``bot.channels`` (``CHANNEL_MODULES``). Stops gracefully on Ctrl-C/SIGTERM.
    """
    from bot.channels import enabled_channels
    from bot.server import ServeError, demo_mode_problem
    from bot.server import serve as run
    from handlers.engine import ConversationEngine

    ctx = _context()
    settings = ctx.settings
    channels = enabled_channels(settings)
    problem = demo_mode_problem(settings, [p.name for p in channels])
    if problem:  # before anything loads: say why in one line
        ctx.close()
        typer.echo(f"✗ {problem}", err=True)
        raise typer.Exit(2)
    engine = ConversationEngine(ctx)

    def started(url: str) -> None:
        names = ", ".join(["web" if settings.web_chat else "", *[p.name for p in channels]]).strip(", ")
        mode = "演示模式 demo；" if settings.demo else ""
        typer.echo(f"医联助手已启动：{url}  （{mode}channels: {names or 'none'}；Ctrl-C 停止）", err=True)

    try:
        asyncio.run(run(ctx, engine, channels=channels, started=started))
    except ServeError as exc:
        typer.echo(f"✗ {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    typer.echo("已停止 / stopped", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(directory_app, name="directory")
    app.add_typer(users_app, name="users")
    app.command("chat")(chat)
    app.command("serve")(serve)


__all__ = ["import_sample_directory", "register", "run_terminal_chat"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `yilian` command")
