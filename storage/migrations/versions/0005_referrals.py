"""Two-way referrals: the record, its timeline and attachments, and the web inbox.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``referrals``, ``referral_events``, ``referral_attachments`` and ``notifications``
(``storage/models/referral.py``); ``consortia.referral_prefix`` (referral numbers),
``institutions.receives_referrals`` (an admin's override of who may receive referrals) and
``staff.last_channel`` (notifications go to the channel last used first).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=False),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('choices', sa.JSON(), nullable=False),
    sa.Column('channels', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_notifications_staff_id_staff'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_notifications_dedupe_key'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_staff_id'), ['staff_id'], unique=False)

    op.create_table('referrals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=30), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('direction', sa.String(length=4), nullable=False),
    sa.Column('from_institution_id', sa.Integer(), nullable=False),
    sa.Column('to_institution_id', sa.Integer(), nullable=False),
    sa.Column('to_department', sa.String(length=100), nullable=True),
    sa.Column('sender_id', sa.Integer(), nullable=False),
    sa.Column('sender_department', sa.String(length=100), nullable=True),
    sa.Column('patient_name', sa.String(length=50), nullable=False),
    sa.Column('patient_sex', sa.String(length=4), nullable=False),
    sa.Column('patient_age', sa.Integer(), nullable=True),
    sa.Column('patient_birth_date', sa.String(length=10), nullable=True),
    sa.Column('patient_id_number', sa.String(length=18), nullable=True),
    sa.Column('patient_phone', sa.String(length=20), nullable=True),
    sa.Column('patient_area', sa.String(length=100), nullable=True),
    sa.Column('diagnosis', sa.Text(), nullable=False),
    sa.Column('history', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('reason_code', sa.String(length=50), nullable=True),
    sa.Column('urgency', sa.String(length=10), nullable=False),
    sa.Column('green_channel', sa.Boolean(), nullable=False),
    sa.Column('reject_reason', sa.Text(), nullable=True),
    sa.Column('handled_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("direction IN ('up', 'down')", name=op.f('ck_referrals_direction')),
    sa.CheckConstraint("status IN ('draft', 'submitted', 'accepted', 'rejected', 'arrived', 'completed', 'cancelled')", name=op.f('ck_referrals_status')),
    sa.CheckConstraint("urgency IN ('routine', 'urgent', 'emergency')", name=op.f('ck_referrals_urgency')),
    sa.ForeignKeyConstraint(['from_institution_id'], ['institutions.id'], name=op.f('fk_referrals_from_institution_id_institutions')),
    sa.ForeignKeyConstraint(['handled_by_id'], ['staff.id'], name=op.f('fk_referrals_handled_by_id_staff')),
    sa.ForeignKeyConstraint(['sender_id'], ['staff.id'], name=op.f('fk_referrals_sender_id_staff')),
    sa.ForeignKeyConstraint(['to_institution_id'], ['institutions.id'], name=op.f('fk_referrals_to_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referrals')),
    sa.UniqueConstraint('number', name=op.f('uq_referrals_number'))
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index('ix_referrals_due', ['status', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_from_institution_id'), ['from_institution_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_sender_id'), ['sender_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_to_institution_id'), ['to_institution_id'], unique=False)
        batch_op.create_index('ix_referrals_to_status', ['to_institution_id', 'status'], unique=False)

    op.create_table('referral_attachments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referral_id', sa.Integer(), nullable=True),
    sa.Column('owner_key', sa.String(length=130), nullable=True),
    sa.Column('file_name', sa.String(length=200), nullable=False),
    sa.Column('mime_type', sa.String(length=100), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], name=op.f('fk_referral_attachments_referral_id_referrals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral_attachments'))
    )
    with op.batch_alter_table('referral_attachments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_attachments_owner_key'), ['owner_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_referral_attachments_referral_id'), ['referral_id'], unique=False)

    op.create_table('referral_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referral_id', sa.Integer(), nullable=False),
    sa.Column('from_status', sa.String(length=12), nullable=True),
    sa.Column('to_status', sa.String(length=12), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], name=op.f('fk_referral_events_referral_id_referrals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral_events'))
    )
    with op.batch_alter_table('referral_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_events_referral_id'), ['referral_id'], unique=False)

    with op.batch_alter_table('consortia', schema=None) as batch_op:
        batch_op.add_column(sa.Column('referral_prefix', sa.String(length=8), nullable=True))

    with op.batch_alter_table('institutions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('receives_referrals', sa.Boolean(), nullable=True))

    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_channel', sa.String(length=20), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_column('last_channel')

    with op.batch_alter_table('institutions', schema=None) as batch_op:
        batch_op.drop_column('receives_referrals')

    with op.batch_alter_table('consortia', schema=None) as batch_op:
        batch_op.drop_column('referral_prefix')

    with op.batch_alter_table('referral_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_events_referral_id'))

    op.drop_table('referral_events')
    with op.batch_alter_table('referral_attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_attachments_referral_id'))
        batch_op.drop_index(batch_op.f('ix_referral_attachments_owner_key'))

    op.drop_table('referral_attachments')
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index('ix_referrals_to_status')
        batch_op.drop_index(batch_op.f('ix_referrals_to_institution_id'))
        batch_op.drop_index(batch_op.f('ix_referrals_sender_id'))
        batch_op.drop_index(batch_op.f('ix_referrals_from_institution_id'))
        batch_op.drop_index('ix_referrals_due')

    op.drop_table('referrals')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_staff_id'))
        batch_op.drop_index(batch_op.f('ix_notifications_created_at'))

    op.drop_table('notifications')
