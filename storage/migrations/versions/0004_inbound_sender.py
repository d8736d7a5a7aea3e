"""Inbound messages remember their sender when it is not the chat (group chats).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Rate limits count per person: a member writing in a Telegram group is stored under the group's
chat (replies go there, in order) with ``sender_key`` naming the member.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("sender_key", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_column("sender_key")
