"""Shared fixtures.

``app_context`` is one fully-built assistant (SQLite + embedded Chroma + the sample policies and
sample directory) shared by the whole session, because indexing takes a few seconds. Tests that
change documents must build their own (see ``fresh_context``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# helper modules that test files both import and load as plugins: rewrite their asserts too
pytest.register_assert_rewrite("web_support", "channel_support")

# Servers started by tests run on the real clock: their scheduler would send real-date meeting
# warnings and quota nudges into tests about other things. Scheduler tests drive
# ``bot.scheduler.Scheduler`` with a simulated clock instead (and enable it explicitly where a
# served scheduler is the point).
os.environ.setdefault("YILIAN_SCHEDULER_ENABLED", "false")

from bot.config import Settings  # noqa: E402
from bot.context import AppContext, build_context

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def make_settings(data_dir: Path, **overrides) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, **overrides)


def populate(ctx: AppContext) -> AppContext:
    from knowledge.samples import sample_policies
    from storage.directory_import import import_directory

    for path, consortium in sample_policies():
        ctx.kb.ingest_path(path, uploaded_by="test", consortium=consortium)
    with ctx.sessions.begin() as session:
        report = import_directory(session, REPO / "storage" / "samples" / "directory.yaml", actor="test")
        assert report.ok, report.errors
    return ctx


@pytest.fixture(scope="session")
def app_context(tmp_path_factory) -> AppContext:
    ctx = build_context(make_settings(tmp_path_factory.mktemp("yilian-shared")))
    populate(ctx)
    yield ctx
    ctx.close()


@pytest.fixture
def fresh_context(tmp_path) -> AppContext:
    """An empty assistant of its own (no documents, no directory)."""
    ctx = build_context(make_settings(tmp_path / "var"))
    yield ctx
    ctx.close()


def cli_runner(data_dir: Path, **env: str):
    """``run(*args)``: the ``yilian`` CLI in-process (typer's CliRunner) on ``data_dir``, with
    ``YILIAN_*`` settings from ``env`` (e.g. ``YILIAN_LOG_LEVEL="INFO"``)."""
    from typer.testing import CliRunner

    from bot.cli import app

    runner = CliRunner()
    environment = {"YILIAN_DATA_DIR": str(data_dir), **env}

    def run(*args: str):
        return runner.invoke(app, list(args), env=environment, catch_exceptions=False)

    return run
