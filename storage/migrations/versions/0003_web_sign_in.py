"""Web sign-in: login links, browser sessions, admin passwords; audit channel and address.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

``login_tokens`` and ``web_sessions`` (``storage/models/web.py``) store only hashes of their
secrets. ``staff.password_hash`` holds an argon2 hash for the first admin. ``audit_log`` gains
``channel`` and ``client_address`` so that an action can be traced to where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("created_via", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_login_tokens_staff_id_staff"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_login_tokens_token_hash")),
    )
    op.create_index(op.f("ix_login_tokens_staff_id"), "login_tokens", ["staff_id"])
    op.create_index(op.f("ix_login_tokens_expires_at"), "login_tokens", ["expires_at"])

    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_web_sessions_staff_id_staff"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_index(op.f("ix_web_sessions_staff_id"), "web_sessions", ["staff_id"])
    op.create_index(op.f("ix_web_sessions_expires_at"), "web_sessions", ["expires_at"])

    with op.batch_alter_table("staff") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(length=200), nullable=True))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("channel", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("client_address", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("client_address")
        batch.drop_column("channel")
    with op.batch_alter_table("staff") as batch:
        batch.drop_column("password_hash")
    op.drop_index(op.f("ix_web_sessions_expires_at"), table_name="web_sessions")
    op.drop_index(op.f("ix_web_sessions_staff_id"), table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_index(op.f("ix_login_tokens_expires_at"), table_name="login_tokens")
    op.drop_index(op.f("ix_login_tokens_staff_id"), table_name="login_tokens")
    op.drop_table("login_tokens")
