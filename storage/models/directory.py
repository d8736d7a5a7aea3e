"""Who is who: consortia (医联体/医疗集团), their member institutions and their staff.

The directory is maintained by an administrator (``storage.directory_import``) and is what every
permission check (``storage.access``) and every referral routes on. Telegram users are tied to a
``Staff`` row with a one-time ``InviteCode``; WeCom users are recognised by ``wecom_userid``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from storage.db import Base
from storage.types import UTCDateTime, utcnow

#: Institution levels, in the order they are shown to users.
LEVELS: tuple[str, ...] = ("三级", "二级", "一级", "基层", "专科")

ROLE_PHYSICIAN = "physician"
ROLE_LIAISON = "liaison"
ROLE_ADMIN = "admin"
#: Staff roles, in canonical order (``Staff.roles`` is always stored in this order).
ROLES: tuple[str, ...] = (ROLE_PHYSICIAN, ROLE_LIAISON, ROLE_ADMIN)
#: How roles are named to users.
ROLE_LABELS_ZH: dict[str, str] = {ROLE_PHYSICIAN: "医生", ROLE_LIAISON: "联络员", ROLE_ADMIN: "管理员"}


def normalize_roles(roles: object) -> list[str]:
    """Deduplicated roles in canonical order; raises ``ValueError`` on an unknown role."""
    if isinstance(roles, str) or not isinstance(roles, (list, tuple, set, frozenset)):
        raise ValueError(f"roles must be a list of role names, got {roles!r}")
    wanted = {str(r).strip() for r in roles}
    unknown = wanted - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; allowed: {list(ROLES)}")
    return [r for r in ROLES if r in wanted]


class Consortium(Base):
    __tablename__ = "consortia"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: Two to four letters that start this consortium's referral numbers (``ZD-2026-000123``);
    #: None: derived from ``code``.
    referral_prefix: Mapped[str | None] = mapped_column(String(8), nullable=True)

    institutions: Mapped[list[Institution]] = relationship(
        back_populates="consortium", order_by="Institution.id"
    )

    def __repr__(self) -> str:
        return f"Consortium(code={self.code!r}, name={self.name!r})"


class Institution(Base):
    __tablename__ = "institutions"
    __table_args__ = (
        UniqueConstraint("consortium_id", "name", name="uq_institutions_consortium_id_name"),
        CheckConstraint("level IN ('三级', '二级', '一级', '基层', '专科')", name="level"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consortium_id: Mapped[int] = mapped_column(ForeignKey("consortia.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(10))
    is_lead: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The lead hospital this member belongs to (None for the lead itself).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"), nullable=True)
    departments: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Whether referrals may be sent here: None = by kind (clinical institutions do; a CDC or a
    #: maternal-and-child health centre does not, see ``handlers.referral.rules.receives``);
    #: an admin sets True/False to override.
    receives_referrals: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    #: Number of medical staff, for quota rules asking for a share of them (None: not recorded).
    medical_staff: Mapped[int | None] = mapped_column(Integer, nullable=True)

    consortium: Mapped[Consortium] = relationship(back_populates="institutions", lazy="joined")
    parent: Mapped[Institution | None] = relationship(remote_side=[id])

    @validates("level")
    def _check_level(self, _key: str, value: str) -> str:
        if value not in LEVELS:
            raise ValueError(f"level must be one of {list(LEVELS)}, got {value!r}")
        return value

    def __repr__(self) -> str:
        return f"Institution(id={self.id!r}, name={self.name!r})"


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Stable handle, e.g. ``dr_wang_sy``: used by the CLI's ``--as`` and by invites.
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    department: Mapped[str | None] = mapped_column(String(100), nullable=True)
    wecom_userid: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    telegram_user_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    phone: Mapped[str | None] = mapped_column(String(30), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: argon2 hash of a web password. Only admins may have one (the first admin signs in with it
    #: before any chat channel is set up); everyone else signs in through their chat account.
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: The chat channel this person last wrote from (``wecom``/``telegram``/``web``): their
    #: notifications go there first.
    last_channel: Mapped[str | None] = mapped_column(String(20), nullable=True)

    institution: Mapped[Institution] = relationship(lazy="joined")

    @validates("roles")
    def _check_roles(self, _key: str, value: object) -> list[str]:
        return normalize_roles(value)

    def has_role(self, role: str) -> bool:
        return role in (self.roles or [])

    @property
    def consortium_id(self) -> int:
        return self.institution.consortium_id

    @property
    def roles_zh(self) -> str:
        """Roles as shown to users, e.g. ``医生、联络员``."""
        return "、".join(ROLE_LABELS_ZH[r] for r in self.roles or [])

    def __repr__(self) -> str:
        return f"Staff(code={self.code!r}, roles={self.roles!r})"


class InviteCode(Base):
    """One-time, expiring code that binds a Telegram account to a ``Staff`` row.

    Only the SHA-256 of the code is stored: a leaked database does not leak usable codes.
    """

    __tablename__ = "invite_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(100))

    staff: Mapped[Staff] = relationship(lazy="joined")
