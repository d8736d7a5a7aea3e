"""Training records (进修, 下派, 坐诊/指导) that the quota rules are measured against.

A record says that ``person`` went from ``from_institution`` to ``to_institution`` for ``kind``
between ``start`` and ``end`` (dates, both inclusive). The quota rules themselves are data
(``handlers/quota_rules_default.yaml``, each citing its policy clause); progress is computed from
these rows by ``handlers.quotas``. The unique constraint makes re-importing a file harmless.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.db import Base
from storage.models.directory import Institution
from storage.types import UTCDateTime, utcnow

TRAINING_KINDS = ("进修", "下派", "坐诊")


class TrainingRecord(Base):
    __tablename__ = "training_records"
    __table_args__ = (
        UniqueConstraint("kind", "person", "from_institution_id", "to_institution_id", "start", "end",
                         name="uq_training_records"),
        CheckConstraint("kind IN ('进修', '下派', '坐诊')", name="kind"),
        CheckConstraint('"end" >= start', name="dates"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    person: Mapped[str] = mapped_column(String(100))
    from_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    to_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    start: Mapped[date] = mapped_column(Date)
    end: Mapped[date] = mapped_column(Date)
    #: import | chat | cli
    source: Mapped[str] = mapped_column(String(20), default="import")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    from_institution: Mapped[Institution] = relationship(foreign_keys=[from_institution_id], lazy="joined")
    to_institution: Mapped[Institution] = relationship(foreign_keys=[to_institution_id], lazy="joined")
