"""SQLAlchemy 2 typed ORM models. Only repositories import this module."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(3), default="")
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    identities: Mapped[list[Identity]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Identity.id",
    )


class Identity(Base):
    """A phone number, e-mail or IM id owned by a user: normalised value, key and raw form."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("kind", "value", name="uq_identities_kind_value"),
        Index("ix_identities_key", "key"),
        Index("ix_identities_user_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[int] = mapped_column(SmallInteger)  # IdentityKind
    value: Mapped[str] = mapped_column(String(320))  # E.164, normalised e-mail, "kind:id"
    key: Mapped[int] = mapped_column(BigInteger)  # identity key as signed int64
    raw: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]

    user: Mapped[User] = relationship(back_populates="identities")


class Device(Base):
    """A handset/SIM seen for a user (first and last seen)."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "device_id", name="uq_devices_user_device"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    sim_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    platform: Mapped[str] = mapped_column(String(32), default="")
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class Token(Base):
    """A bearer token, stored as its SHA-256 (tokens are 256-bit random, so no slow hash)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class IdempotencyRecord(Base):
    """The first answer to a mutation, replayed for a retry with the same request_id."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        UniqueConstraint("scope", "method", "request_id", name="uq_idempotency_request"),
        Index("ix_idempotency_user_id", "user_id"),
        Index("ix_idempotency_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(40))  # caller's user id, or "anonymous"
    method: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    # The user the answer is about, so DeleteAccount can erase it too.
    user_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
