"""All ORM models; importing this package registers every table on ``Base.metadata``."""

from storage.models.audit import AuditLog
from storage.models.directory import (
    LEVELS,
    ROLE_ADMIN,
    ROLE_LABELS_ZH,
    ROLE_LIAISON,
    ROLE_PHYSICIAN,
    ROLES,
    Consortium,
    InviteCode,
    Institution,
    Staff,
)
from storage.models.knowledge import Chunk, Document, DocumentVersion, KnowledgeState, StagedUpload
from storage.models.meetings import (
    Meeting,
    MeetingInvitation,
    MeetingResponse,
    ReminderLog,
    SchedulerLease,
)
from storage.models.outbox import ChannelToken, InboundMessage, OutboxMessage
from storage.models.quotas import TrainingRecord
from storage.models.referral import Notification, Referral, ReferralAttachment, ReferralEvent
from storage.models.runtime import DialogState, ProcessedUpdate
from storage.models.web import LoginToken, WebSession

__all__ = [
    "TrainingRecord",
    "SchedulerLease",
    "ReminderLog",
    "MeetingResponse",
    "MeetingInvitation",
    "Meeting",
    "LEVELS",
    "ROLES",
    "ROLE_ADMIN",
    "ROLE_LABELS_ZH",
    "ROLE_LIAISON",
    "ROLE_PHYSICIAN",
    "AuditLog",
    "ChannelToken",
    "Chunk",
    "Consortium",
    "DialogState",
    "Document",
    "DocumentVersion",
    "StagedUpload",
    "InboundMessage",
    "Institution",
    "InviteCode",
    "KnowledgeState",
    "LoginToken",
    "Notification",
    "OutboxMessage",
    "ProcessedUpdate",
    "Referral",
    "ReferralAttachment",
    "ReferralEvent",
    "Staff",
    "WebSession",
]
