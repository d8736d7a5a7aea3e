"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from storage import migrate
from storage.db import Base, init_db, make_engine, make_session_factory
from storage.models import Document, KnowledgeState
pytest_plugins = ("storage.testing",)  # db_engine, session fixtures

ALL_TABLES = {
    "documents", "chunks", "knowledge_state", "consortia", "institutions", "staff", "invite_codes",
    "audit_log", "dialog_state", "processed_updates",
    "outbox_messages", "inbound_messages", "channel_tokens",  # 0002 channel delivery
    "login_tokens", "web_sessions",  # 0003 web sign-in (0004 adds a column only)
    "referrals", "referral_events", "referral_attachments", "notifications",  # 0005 referrals
    "meetings", "meeting_invitations", "meeting_responses", "reminder_log", "scheduler_leases",  # 0006
    "training_records",  # 0006 training quotas
    "document_versions", "staged_uploads",  # 0007 every uploaded version (history, 回滚); previews
}


def _diff(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, Base.metadata)


def test_migrations_produce_exactly_the_models(db_engine):
    assert _diff(db_engine) == []
    tables = set(inspect(db_engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert ALL_TABLES <= tables
    assert migrate.is_up_to_date(db_engine)
    assert migrate.current_revision(db_engine) == migrate.head_revision()


def test_init_db_twice_is_harmless_and_needs_no_ini_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no alembic.ini here: the config is built in code
    engine = make_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    init_db(engine)
    with make_session_factory(engine).begin() as s:
        s.add(KnowledgeState(id=1, generation=3))
    init_db(engine)
    with make_session_factory(engine)() as s:
        assert s.get(KnowledgeState, 1).generation == 3
    engine.dispose()


def test_downgrade_to_base_and_back(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    init_db(engine)
    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    init_db(engine)
    assert _diff(engine) == []
    engine.dispose()


def test_skeleton_database_is_adopted_without_losing_documents(tmp_path):
    """A DB made by the skeleton's create_all (knowledge tables only, no alembic_version)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    knowledge_tables = [Base.metadata.tables[n] for n in ("documents", "chunks", "knowledge_state")]
    Base.metadata.create_all(engine, tables=knowledge_tables)
    with make_session_factory(engine).begin() as s:
        s.add(Document(title="临沧市城市医疗集团建设试点工作方案", file_name="lc.txt", sha256="0" * 64))
    init_db(engine)
    assert _diff(engine) == []
    with make_session_factory(engine)() as s:
        assert s.scalar(select(Document.title)) == "临沧市城市医疗集团建设试点工作方案"
    engine.dispose()


@pytest.mark.postgres
def test_postgres_fresh_schema_upgrade_and_downgrade(fresh_pg_engine):
    engine = fresh_pg_engine
    init_db(engine)
    init_db(engine)
    assert _diff(engine) == []
    migrate.downgrade(engine, "base")
    with engine.connect() as conn:
        left = conn.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )).scalars().all()
    assert set(left) <= {"alembic_version"}


def test_migration_scripts_ship_inside_the_package():
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    assert any(Path(migrate.MIGRATIONS_DIR / "versions").glob("0001_*.py"))
