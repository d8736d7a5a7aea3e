"""``yilian meetings``, ``yilian quotas`` and ``yilian scheduler``:

    yilian meetings add --type 理事会 --title T --at "YYYY-MM-DD HH:MM[:SS]" --consortium CODE
                        [--institutions NAME…] [--place P] [--link URL] [--agenda TEXT]
                        [--repeat monthly|quarterly|yearly]
    yilian meetings list [--json]
    yilian meetings edit ID [--at …] [--place …] [--link …] [--agenda …] [--title …]
    yilian meetings cancel ID
    yilian meetings attendance ID_OR_TITLE [--json]
    yilian quotas import FILE.csv|FILE.xlsx
    yilian quotas status [--consortium C] [--year Y] [--json]
    yilian scheduler

Times are Beijing time (Asia/Shanghai). JSON field names are an interface: keep them.
"""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import date
from pathlib import Path
from typing import Optional

import typer

from handlers import meeting_service as service
from handlers import meetings as rules
from handlers import quota_service, quotas
from storage import meetings as store
from storage.types import utcnow

meetings_app = typer.Typer(no_args_is_help=True, help="Joint meetings, councils and regular meetings (会议).")
quotas_app = typer.Typer(no_args_is_help=True, help="Training quotas: 进修, 下派, 坐诊.")


def _context():
    from bot.cli import _context as build

    return build()


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"✗ {message}", err=True)
    raise typer.Exit(code)


def _meeting_json(session, m, now) -> dict:
    info = rules.MeetingInfo.of(m)
    nxt = rules.next_occurrence(info, now)
    return {"id": m.id, "type": m.kind, "title": m.title, "consortium": m.consortium.code,
            "at": m.starts_at.astimezone(rules.CHINA_TZ).isoformat(),
            "next": nxt.astimezone(rules.CHINA_TZ).isoformat() if nxt else None,
            "place": m.place, "link": m.link, "agenda": m.agenda, "repeat": m.repeat, "status": m.status,
            "sequence": m.sequence, "institutions": sorted(i.institution.name for i in m.invitations)}


@meetings_app.command("add", context_settings={"allow_extra_args": True})
def add(ctx_: typer.Context, type_: str = typer.Option(..., "--type", help="联席会议, 理事会, 工作例会 or 其他"),
        title: str = typer.Option(..., "--title"),
        at: str = typer.Option(..., "--at", help='"YYYY-MM-DD HH:MM[:SS]", Beijing time'),
        consortium: str = typer.Option(..., "--consortium", help="consortium code"),
        institutions: Optional[list[str]] = typer.Option(None, "--institutions",
                                                         help="invited institutions (default: all)"),
        place: Optional[str] = typer.Option(None, "--place"),
        link: Optional[str] = typer.Option(None, "--link"),
        agenda: Optional[str] = typer.Option(None, "--agenda"),
        repeat: Optional[str] = typer.Option(None, "--repeat", help="monthly, quarterly or yearly")) -> None:
    # --institutions A B C (the words after the option), --institutions A --institutions B, "A,B"
    if ctx_.args and not institutions:
        _fail(f"多余的参数：{' '.join(ctx_.args)}")
    ctx = _context()
    names: list[str] = []
    for item in [*(institutions or []), *ctx_.args]:
        names.extend(n for n in item.replace("，", ",").replace("、", ",").replace(",", " ").split() if n)
    try:
        with ctx.sessions.begin() as session:
            m = service.add_meeting(session, ctx.router, consortium_code=consortium, kind=type_, title=title, at=at,
                                    institutions=names or None, place=place, link=link, agenda=agenda,
                                    repeat=repeat, actor="cli", now=utcnow())
            typer.echo(f"✓ 会议 [{m.id}] {m.kind}：{m.title}，{rules.format_when(m.starts_at)}，"
                       f"邀请 {len(m.invitations)} 家机构" + (f"，{rules.REPEAT_LABELS[repeat]}重复" if repeat else ""))
    except service.MeetingError as exc:
        _fail(str(exc))


@meetings_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    ctx = _context()
    now = utcnow()
    with ctx.sessions() as session:
        rows = [_meeting_json(session, m, now) for m in store.list_meetings(session)]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("（没有会议）")
    for r in rows:
        when = r["next"] or r["at"]
        typer.echo(f"[{r['id']}] {r['type']}：{r['title']}  {when[:16].replace('T', ' ')}  {r['consortium']}  "
                   f"{r['status']}{'  ' + r['repeat'] if r['repeat'] else ''}  {len(r['institutions'])} 家机构")


def _change(meeting: str, change, done: str) -> None:
    """Find ``meeting`` (id or title), apply ``change(session, router, m, now)`` in one
    transaction (its notices to the invitees commit with it), then say ``done``."""
    ctx = _context()
    try:
        with ctx.sessions.begin() as session:
            m = store.find_meeting(session, meeting)
            if m is None:
                _fail(f"没有找到会议“{meeting}”")
            change(session, ctx.router, m, utcnow())
            typer.echo(done.format(id=m.id, sequence=m.sequence))
    except service.MeetingError as exc:
        _fail(str(exc))


@meetings_app.command("edit")
def edit(meeting: str = typer.Argument(..., help="id or title"),
         at: Optional[str] = typer.Option(None, "--at"), place: Optional[str] = typer.Option(None, "--place"),
         link: Optional[str] = typer.Option(None, "--link"), agenda: Optional[str] = typer.Option(None, "--agenda"),
         title: Optional[str] = typer.Option(None, "--title")) -> None:
    _change(meeting, lambda s, r, m, now: service.edit_meeting(s, r, m, actor="cli", now=now, at=at, place=place,
                                                               link=link, agenda=agenda, title=title),
            "✓ 会议 [{id}] 已修改（第 {sequence} 版），已通知受邀机构")


@meetings_app.command("cancel")
def cancel(meeting: str = typer.Argument(..., help="id or title")) -> None:
    _change(meeting, lambda s, r, m, now: service.cancel_meeting(s, r, m, actor="cli", now=now),
            "✓ 会议 [{id}] 已取消，已通知受邀机构")


@meetings_app.command("attendance")
def attendance_cmd(meeting: str = typer.Argument(..., help="id or title"),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    ctx = _context()
    with ctx.sessions() as session:
        m = store.find_meeting(session, meeting)
        if m is None:
            _fail(f"没有找到会议“{meeting}”")
        occ, rows = service.attendance(session, m, utcnow())
        out = [{"staff_code": r.staff_code, "name": r.name, "institution": r.institution, "answer": r.answer}
               for r in rows]
        if as_json:
            typer.echo(json.dumps({"meeting": m.id, "title": m.title,
                                   "occurrence": occ.astimezone(rules.CHINA_TZ).isoformat() if occ else None,
                                   "invitees": out}, ensure_ascii=False, indent=2))
            return
        typer.echo(f"{m.kind}：{m.title}  {rules.format_when(occ) if occ else ''}")
        labels = {"attend": "参加", "leave": "请假", "none": "未回复"}
        for r in out:
            typer.echo(f"  {r['institution']}  {r['name'] or '（无联络员）'}  {r['staff_code'] or '-'}  "
                       f"{labels[r['answer']]}")


@quotas_app.command("import")
def import_cmd(path: Path = typer.Argument(..., help="CSV or XLSX: kind,person,from_institution,to_institution,"
                                                     "start,end")) -> None:
    if not path.is_file():
        _fail(f"文件不存在：{path}")
    ctx = _context()
    with ctx.sessions.begin() as session:
        result = quota_service.import_records(session, path.name, path.read_bytes(), actor="cli")
    if not result.ok:
        for line, message in result.errors:
            typer.echo(f"第 {line} 行：{message}" if line else message, err=True)
        _fail(f"文件有 {len(result.errors)} 处错误，未导入任何记录", 1)
    typer.echo(f"✓ 导入 {result.added} 条新记录（共 {len(result.rows)} 行，重复的已跳过）")


@quotas_app.command("status")
def status_cmd(consortium: Optional[str] = typer.Option(None, "--consortium"),
               year: Optional[int] = typer.Option(None, "--year", help="as at the end of that year (or today)"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    ctx = _context()
    today = utcnow().astimezone(rules.CHINA_TZ).date()
    if year is not None and year != today.year:
        today = date(year, 12, 31) if year < today.year else date(year, 1, 1)
    rule_set = quotas.load_rules(ctx.settings.quota_rules)
    with ctx.sessions() as session:
        found = quota_service.status(session, rule_set, today, consortium=consortium)
    if as_json:
        typer.echo(json.dumps([{
            "rule": p.rule.id, "kind": p.rule.kind, "title": p.rule.title, "consortium": p.institution.consortium,
            "institution": p.institution.name, "destination": p.destination.name if p.destination else None,
            "period": p.period_label, "target": p.target, "done": p.done, "in_progress": p.partial,
            "fraction": None if p.fraction is None else round(p.fraction, 3), "elapsed": round(p.elapsed, 3),
            "behind": bool(p.behind(ctx.settings.quota_pace_margin)), "met": p.met, "source": p.rule.source,
            "people": [{"person": n, "days": d} for n, d in p.people],
        } for p in found], ensure_ascii=False, indent=2))
        return
    if not found:
        typer.echo("（没有适用的配额规则）")
    for p in found:
        typer.echo(quotas.line(p))


def scheduler() -> None:
    """Run the scheduler alone (reminders, compliance warnings, quota nudges) until stopped."""
    ctx = _context()
    from bot.scheduler import Scheduler

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Scheduler(ctx).run(stop)

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    app.add_typer(meetings_app, name="meetings")
    app.add_typer(quotas_app, name="quotas")
    app.command("scheduler")(scheduler)


__all__ = ["meetings_app", "quotas_app", "register"]
