"""``yilian`` — the command line. The knowledge commands' interface is fixed (tools rely on it):

    yilian ingest PATH...            yilian docs list         yilian docs remove TITLE
    yilian ask "Q" [--json]          yilian eval --questions FILE.jsonl [--details OUT.jsonl]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from bot.config import load_settings
from bot.context import AppContext, build_context
from bot.logging_setup import setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help="YiLian Assistant (医联助手)")
docs_app = typer.Typer(no_args_is_help=True, help="Policy documents in the knowledge base.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(docs_app, name="docs")
app.add_typer(db_app, name="db")


def _context() -> AppContext:
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    return build_context(settings)


@app.command("check-config")
def check_config() -> None:
    """Validate the settings and reach the database, Chroma and the chat APIs: one line each."""
    from pydantic import ValidationError

    from bot.check_config import check_all

    try:
        settings = load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "YILIAN_" + "_".join(str(p) for p in error["loc"]).upper()
            typer.echo(f"✗ {name}: {error['msg']}", err=True)
        raise typer.Exit(1) from None
    findings = check_all(settings)
    for finding in findings:
        typer.echo(finding.line(), err=not finding.ok)
    raise typer.Exit(0 if all(f.ok for f in findings) else 1)


@app.command()
def reindex() -> None:
    """Rebuild the vector store (Chroma) from the database, e.g. after a restore."""
    ctx = _context()
    try:
        written, deleted = ctx.kb.reindex()
    except Exception as exc:  # noqa: BLE001 - the store is unreachable: one line, not a traceback
        typer.echo(f"✗ vector store: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", err=True)
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    typer.echo(f"✓ {written} chunk vectors written, {deleted} stale vectors deleted")


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files (PDF, DOCX, TXT, MD) or folders."),
    consortium: Optional[str] = typer.Option(None, help="Code of the consortium the documents govern."),
    title: Optional[str] = typer.Option(None, help="Title to register (single file only)."),
    by: str = typer.Option("cli", help="Who uploads (recorded in the registry and audit log)."),
) -> None:
    """Add or replace policy documents. Unchanged files are skipped."""
    import logging

    from knowledge.extract_types import IngestError
    from knowledge.readers import SUPPORTED_SUFFIXES

    ctx = _context()
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            files.append(p)
    if title and len(files) != 1:
        typer.echo("--title needs exactly one file", err=True)
        raise typer.Exit(2)
    failures = 0
    # this process answers nothing (install=False inside): every worker picks the new generation
    # up itself; files are prepared two at a time and committed in the order listed
    for f, res in ctx.kb.ingest_many(files, uploaded_by=by, consortium=consortium, title=title):
        # Every bad file is reported on exactly one line naming it (no traceback); the others
        # are still indexed, and the exit code is 1 if any file failed.
        if isinstance(res, IngestError):
            failures += 1
            typer.echo(f"✗ {res.file_name}: {res.reason} ({res.reason_zh})", err=True)
        elif isinstance(res, Exception):  # a bug must not hide which file it was, nor stop the rest
            failures += 1
            logging.getLogger(__name__).debug("ingest of %s failed", f, exc_info=res)
            name = IngestError(f.name, "").file_name
            detail = " ".join(str(res).split())[:200]
            typer.echo(f"✗ {name}: unexpected error: {type(res).__name__}: {detail} "
                       "(处理文件时出现内部错误；YILIAN_LOG_LEVEL=DEBUG 可查看详情)", err=True)
        else:
            typer.echo(f"✓ {res.status:9} {res.title}  v{res.version}  {res.chunk_count} chunks")
    raise typer.Exit(1 if failures else 0)


@docs_app.command("list")
def docs_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List indexed documents."""
    docs = _context().kb.documents()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "title": d.title,
                        "file_name": d.file_name,
                        "version": d.version,
                        "consortium": d.consortium,
                        "chunks": d.chunk_count,
                        "uploaded_by": d.uploaded_by,
                        "updated_at": d.updated_at.isoformat(),
                        "sha256": d.sha256,
                    }
                    for d in docs
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    if not docs:
        typer.echo("(no documents)")
    for d in docs:
        typer.echo(f"{d.title}\tv{d.version}\t{d.chunk_count} chunks\t{d.consortium or '-'}\t{d.file_name}")


@docs_app.command("remove")
def docs_remove(title: str, by: str = typer.Option("cli", help="Who removes (audit log).")) -> None:
    """Remove a document (by title) from every index."""
    if _context().kb.remove(title, removed_by=by):
        typer.echo(f"removed: {title}")
    else:
        typer.echo(f"no document titled {title!r}", err=True)
        raise typer.Exit(1)


@app.command()
def ask(
    question: str,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable answer with citations."),
    consortium: Optional[str] = typer.Option(None, help="Prefer this consortium's documents."),
) -> None:
    """Answer a policy question from the indexed documents."""
    answer = _context().kb.ask(question, consortium=consortium)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "question": answer.question,
                    "answer": answer.text,
                    "refused": answer.refused,
                    "language": answer.language,
                    "citations": answer.citations,
                    "passages": [
                        {"id": h.chunk.id, "citation": h.chunk.citation, "score": round(h.score, 4), "text": h.chunk.text}
                        for h in answer.hits[:5]
                    ],
                    "ms": round(answer.ms, 2),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        typer.echo(answer.text)


@app.command("eval")
def eval_cmd(
    questions: Path = typer.Option(..., "--questions", exists=True, dir_okay=False),
    details: Optional[Path] = typer.Option(None, "--details"),
) -> None:
    """Evaluate retrieval and answers on a question set; prints one JSON object."""
    from knowledge.evaluation import evaluate, load_questions

    summary = evaluate(_context().kb, load_questions(questions), details)
    typer.echo(summary.to_json())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (creates the database on first run)."""
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    build_context(settings, migrate=True).close()
    typer.echo("database is up to date")


@app.command()
def bootstrap(
    samples: bool = typer.Option(False, "--samples", help="Also seed the sample policies and staff directory "
                                 "(demo and evaluation only; never over what exists)."),
) -> None:
    """Prepare the database (migrations). With --samples, seed the five sample policies and the
    sample directory — once: nothing that exists is changed, and a second run adds nothing."""
    from bot.cli_ops import seed_samples

    ctx = _context()  # runs the migrations
    if not samples:
        typer.echo("database is up to date; no sample data loaded (use --samples for the demo data)")
        return
    if ctx.settings.channels_configured:
        typer.echo("✗ refusing to seed sample staff while chat channels are configured "
                   f"({', '.join(ctx.settings.channels_configured)}): their made-up WeCom userids could match "
                   "real employees. Import your own directory with `yilian directory import`.", err=True)
        raise typer.Exit(2)
    for line in seed_samples(ctx):
        typer.echo(line)


from bot.cli_ops import register as _register_ops  # noqa: E402 - after the app and _context exist

_register_ops(app)

from bot.cli_referrals import register as _register_referrals  # noqa: E402

_register_referrals(app)

from bot.cli_meetings import register as _register_meetings  # noqa: E402

_register_meetings(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
