"""Initial schema: knowledge registry, directory, invites, audit log, dialog state, dedupe.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

The knowledge tables (``documents``, ``chunks``, ``knowledge_state``) may already exist in a
database created by the project skeleton's ``create_all``; they are left as they are then (their
definition has not changed), so such databases are adopted without data loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _exists(table: str) -> bool:
    if context.is_offline_mode():
        return False
    return sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    # --- knowledge registry (storage/models/knowledge.py) ------------------------------------
    if not _exists("documents"):
        op.create_table(
            "documents",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("title", sa.String(length=300), nullable=False),
            sa.Column("file_name", sa.String(length=300), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("consortium", sa.String(length=100), nullable=True),
            sa.Column("uploaded_by", sa.String(length=100), nullable=True),
            sa.Column("chunk_count", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
            sa.UniqueConstraint("title", name=op.f("uq_documents_title")),
        )
        op.create_index(op.f("ix_documents_consortium"), "documents", ["consortium"])
        op.create_index(op.f("ix_documents_sha256"), "documents", ["sha256"])

    if not _exists("chunks"):
        op.create_table(
            "chunks",
            sa.Column("id", sa.String(length=80), nullable=False),
            sa.Column("document_id", sa.Integer(), nullable=False),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=20), nullable=False),
            sa.Column("clause_no", sa.String(length=50), nullable=True),
            sa.Column("heading_path", sa.JSON(), nullable=False),
            sa.Column("text", sa.Text(), nullable=False),
            sa.Column("tokens", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(
                ["document_id"], ["documents.id"],
                name=op.f("fk_chunks_document_id_documents"), ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_chunks")),
        )
        op.create_index(op.f("ix_chunks_document_id"), "chunks", ["document_id"])

    if not _exists("knowledge_state"):
        op.create_table(
            "knowledge_state",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("generation", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_state")),
        )

    # --- directory -------------------------------------------------------------------------------
    op.create_table(
        "consortia",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consortia")),
        sa.UniqueConstraint("code", name=op.f("uq_consortia_code")),
    )
    op.create_table(
        "institutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consortium_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("is_lead", sa.Boolean(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("departments", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "level IN ('三级', '二级', '一级', '基层', '专科')", name=op.f("ck_institutions_level")
        ),
        sa.ForeignKeyConstraint(
            ["consortium_id"], ["consortia.id"], name=op.f("fk_institutions_consortium_id_consortia")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["institutions.id"], name=op.f("fk_institutions_parent_id_institutions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_institutions")),
        sa.UniqueConstraint("consortium_id", "name", name="uq_institutions_consortium_id_name"),
    )
    op.create_index(op.f("ix_institutions_consortium_id"), "institutions", ["consortium_id"])

    op.create_table(
        "staff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column("wecom_userid", sa.String(length=64), nullable=True),
        sa.Column("telegram_user_id", sa.BigInteger(), nullable=True),
        sa.Column("phone", sa.String(length=30), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"], ["institutions.id"], name=op.f("fk_staff_institution_id_institutions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
        sa.UniqueConstraint("code", name=op.f("uq_staff_code")),
        sa.UniqueConstraint("telegram_user_id", name=op.f("uq_staff_telegram_user_id")),
        sa.UniqueConstraint("wecom_userid", name=op.f("uq_staff_wecom_userid")),
    )
    op.create_index(op.f("ix_staff_institution_id"), "staff", ["institution_id"])

    op.create_table(
        "invite_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_invite_codes_staff_id_staff"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invite_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_invite_codes_code_hash")),
    )
    op.create_index(op.f("ix_invite_codes_staff_id"), "invite_codes", ["staff_id"])

    # --- audit trail -----------------------------------------------------------------------------
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"])
    op.create_index(op.f("ix_audit_log_actor"), "audit_log", ["actor"])
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])

    # --- shared runtime state -----------------------------------------------------------------------
    op.create_table(
        "dialog_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("user_key", sa.String(length=100), nullable=False),
        sa.Column("dialog", sa.String(length=50), nullable=False),
        sa.Column("step", sa.String(length=50), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dialog_state")),
        sa.UniqueConstraint("channel", "user_key", name="uq_dialog_state_channel_user_key"),
    )
    op.create_index(op.f("ix_dialog_state_expires_at"), "dialog_state", ["expires_at"])

    op.create_table(
        "processed_updates",
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "external_id", name=op.f("pk_processed_updates")),
    )
    op.create_index(op.f("ix_processed_updates_at"), "processed_updates", ["at"])


def downgrade() -> None:
    for table in (
        "processed_updates",
        "dialog_state",
        "audit_log",
        "invite_codes",
        "staff",
        "institutions",
        "consortia",
        "knowledge_state",
        "chunks",
        "documents",
    ):
        op.drop_table(table)
