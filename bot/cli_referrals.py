"""``yilian referrals`` — referrals for the medical affairs office and for tools:

    yilian referrals list [--status S] [--json]
    yilian referrals show NUMBER [--json]
    yilian referrals export (--fhir | --csv) [--since YYYY-MM-DD] [--output FILE]

The JSON fields are an interface (``handlers.referral.export``); the FHIR Bundle is
``handlers.referral.fhir``. Patients' names are masked in lists and exports; ID numbers and phones
everywhere (the FHIR export leaves them out); every ``show`` is audited as ``referral.view`` and
every export as ``referral.export``, by ``cli``. ``--since`` is a date in Beijing time: referrals
created on or after its midnight (UTC+8).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Optional

import typer

from handlers.referral import export
from handlers.referral import fhir as fhir_export
from handlers.referral.rules import DIRECTION_LABELS, STATUS_LABELS, URGENCY_LABELS
from storage import referrals as store
from storage import repositories as repo

referrals_app = typer.Typer(no_args_is_help=True, help="Two-way referrals (双向转诊).")


def _context():
    from bot.cli import _context as build

    return build()


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        day = date.fromisoformat(value.strip())
        if len(value.strip()) != 10:
            raise ValueError(value)
    except ValueError:
        typer.echo(f"--since 需要日期 YYYY-MM-DD（例如 2026-01-31），收到：{value}", err=True)
        raise typer.Exit(2) from None
    return datetime.combine(day, datetime.min.time(), tzinfo=export.CHINA_TZ)


@referrals_app.command("list")
def list_cmd(status: Optional[str] = typer.Option(None, "--status", help="draft, submitted, accepted, rejected, "
                                                  "arrived, completed or cancelled"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    if status is not None and status not in STATUS_LABELS:
        typer.echo(f"未知状态“{status}”；可选：{', '.join(STATUS_LABELS)}", err=True)
        raise typer.Exit(2)
    ctx = _context()
    with ctx.sessions() as session:
        rows = [export.as_json(r) for r in store.list_referrals(session, status=status)]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("没有转诊记录。")
        return
    typer.echo("单号  状态  方向  转出机构 → 接收机构  紧急程度  患者  登记时间（北京时间）")
    for r in rows:
        created = datetime.fromisoformat(r["created_at"]).astimezone(export.CHINA_TZ).strftime("%Y-%m-%d %H:%M")
        typer.echo(f"{r['number']}  {STATUS_LABELS[r['status']][0]}  {DIRECTION_LABELS[r['direction']][0]}  "
                   f"{r['from_institution']} → {r['to_institution']}  {URGENCY_LABELS[r['urgency']][0]}"
                   f"{'（绿色通道）' if r['green_channel'] else ''}  {r['patient']}  {created}")
    typer.echo(f"共 {len(rows)} 条")


@referrals_app.command("show")
def show_cmd(number: str, as_json: bool = typer.Option(False, "--json")) -> None:
    ctx = _context()
    with ctx.sessions.begin() as session:
        r = store.get_by_number(session, number)
        if r is None:
            typer.echo(f"没有转诊单号为“{number}”的转诊。", err=True)
            raise typer.Exit(1)
        data = export.as_detail_json(r)
        repo.record(session, "cli", "referral.view", target=r.number)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key, value in data.items():
        if key == "timeline":
            typer.echo("timeline:")
            for e in value:
                typer.echo(f"  {e['at']}  {e['from_status'] or '-'} → {e['to_status']}  {e['actor']}"
                           f"  {e['channel'] or ''}  {e['note'] or ''}".rstrip())
        elif key == "attachments":
            typer.echo("attachments: " + (", ".join(f"{a['file_name']} ({a['size']} B)" for a in value) or "-"))
        else:
            typer.echo(f"{key}: {'' if value is None else value}")


@referrals_app.command("export")
def export_cmd(fhir: bool = typer.Option(False, "--fhir", help="FHIR R4 Bundle (JSON)"),
               csv_: bool = typer.Option(False, "--csv", help="CSV for the medical affairs office"),
               since: Optional[str] = typer.Option(None, "--since", help="YYYY-MM-DD (Beijing time): created on or after"),
               output: Optional[Path] = typer.Option(None, "--output", "-o", help="file (default: standard output)"),
               ) -> None:
    if fhir == csv_:
        typer.echo("请指定 --fhir 或 --csv 之一。", err=True)
        raise typer.Exit(2)
    start = _since(since)
    ctx = _context()
    with ctx.sessions.begin() as session:
        rows = list(reversed(store.list_referrals(session, since=start)))
        text = export.to_csv(rows) if csv_ else json.dumps(fhir_export.bundle(rows), ensure_ascii=False, indent=2)
        repo.record(session, "cli", "referral.export", details={"format": "csv" if csv_ else "fhir",
                                                                "count": len(rows), "since": since})
    if output is None:
        typer.echo(text, nl=not csv_)
    else:
        output.write_text(text, encoding="utf-8", newline="")
        typer.echo(f"已导出 {len(rows)} 条转诊到 {output}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(referrals_app, name="referrals")


__all__ = ["referrals_app", "register"]
