"""Fixtures for the conversation-engine, web-chat and ops-CLI tests (a pytest plugin module).

Use in a test module::

    pytest_plugins = ("engine_support",)

* ``directory_template`` — a migrated SQLite file with the sample directory, built once;
* ``engine_ctx`` — an ``AppContext`` on a private copy of it (each test has its own staff,
  invites, dialogs and audit log);
* ``clock`` — the engine's notion of "now", which a test can move forward;
* ``engine`` — a ``ConversationEngine`` on ``engine_ctx`` answering from the session-wide
  knowledge base of ``conftest.app_context`` (indexed once);
* ``chat`` — ``chat(channel, user)`` returns a ``Talker`` whose ``say(text)`` / ``press(label)``
  send messages as that user and keep the last replies.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.config import Settings
from bot.context import AppContext, build_context
from handlers.engine import ConversationEngine
from handlers.messages import Incoming, Reply
from storage.db import init_db, make_engine
from storage.types import utcnow

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIRECTORY = REPO / "storage" / "samples" / "directory.yaml"


def engine_settings(data_dir: Path, **overrides) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, **overrides)


@pytest.fixture(scope="session")
def directory_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from storage.db import make_session_factory
    from storage.directory_import import import_directory

    path = tmp_path_factory.mktemp("engine_template") / "template.sqlite3"
    db = make_engine(f"sqlite:///{path}")
    init_db(db)
    with make_session_factory(db).begin() as session:
        report = import_directory(session, SAMPLE_DIRECTORY, actor="test")
        assert report.ok, report.errors
    with db.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


def context_on_copy(template: Path, data_dir: Path, **overrides) -> AppContext:
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = data_dir / "yilian.sqlite3"
    if not db_file.exists():
        shutil.copyfile(template, db_file)
    return build_context(engine_settings(data_dir, **overrides), migrate=False)


@pytest.fixture
def engine_ctx(tmp_path: Path, directory_template: Path) -> Iterator[AppContext]:
    ctx = context_on_copy(directory_template, tmp_path / "var")
    yield ctx
    ctx.close()


@dataclass
class Clock:
    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now = self.now + timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(engine_ctx: AppContext, app_context: AppContext, clock: Clock) -> ConversationEngine:
    return ConversationEngine(engine_ctx, kb=app_context.kb, clock=clock)


@dataclass
class Talker:
    engine: ConversationEngine
    channel: str
    user: str
    last: list[Reply] = field(default_factory=list)

    def say(self, text: str) -> list[Reply]:
        self.last = self.engine.handle(Incoming(channel=self.channel, user_key=self.user, text=text))
        return self.last

    def press(self, label_part: str) -> list[Reply]:
        """Press the button (of the last replies) whose label contains ``label_part``."""
        for reply in self.last:
            for choice in reply.choices:
                if label_part in choice.label:
                    self.last = self.engine.handle(
                        Incoming(channel=self.channel, user_key=self.user, choice=choice.value)
                    )
                    return self.last
        raise AssertionError(f"no button with {label_part!r} in {[c.label for r in self.last for c in r.choices]}")

    @property
    def text(self) -> str:
        return "\n".join(r.text for r in self.last)

    @property
    def buttons(self) -> list[str]:
        return [c.label for r in self.last for c in r.choices]


@pytest.fixture
def chat(engine: ConversationEngine) -> Callable[[str, str], Talker]:
    def make(channel: str, user: str, *, on: ConversationEngine | None = None) -> Talker:
        return Talker(on or engine, channel, user)

    return make
