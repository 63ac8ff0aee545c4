"""SQLAlchemy 2 models of the `config` schema.

The tables are created by the migrations from sql/config.sql, where the integrity rules
(cycle trigger, exclusion constraint, checks) live; these classes map them for the
Python side. tests/test_migrations.py checks that both agree.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TZ = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    pass


def _pk() -> Mapped[int]:
    return mapped_column(Integer, Identity(always=True), primary_key=True)


def _fk(target: str, ondelete: str, nullable: bool = True) -> Mapped[Any]:
    return mapped_column(Integer, ForeignKey(target, ondelete=ondelete), nullable=nullable)


class CostCenter(Base):
    __tablename__ = "cost_center"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, unique=True)
    external_id: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)


class Space(Base):
    __tablename__ = "space"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    parent_id: Mapped[int | None] = _fk("config.space.id", "RESTRICT")
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, server_default="custom")
    area_m2: Mapped[Decimal | None] = mapped_column(Numeric)
    timezone: Mapped[str | None] = mapped_column(Text)
    cost_center_id: Mapped[int | None] = _fk("config.cost_center.id", "SET NULL")
    description: Mapped[str | None] = mapped_column(Text)
    # Grid region for carbon factors (sql/carbon.sql); meters below inherit it.
    grid_region_id: Mapped[int | None] = _fk("config.carbon_region.id", "RESTRICT")

    parent: Mapped[Space | None] = relationship(remote_side=[id], back_populates="children")
    children: Mapped[list[Space]] = relationship(back_populates="parent", order_by="Space.name")
    cost_center: Mapped[CostCenter | None] = relationship()
    meters: Mapped[list[Meter]] = relationship(secondary="config.space_meter", order_by="Meter.name")


class EnergyCategory(Base):
    __tablename__ = "energy_category"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, unique=True)
    unit: Mapped[str] = mapped_column(Text)
    kgce_factor: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    description: Mapped[str | None] = mapped_column(Text)
    items: Mapped[list[EnergyItem]] = relationship(
        back_populates="category", order_by="EnergyItem.name", passive_deletes=True
    )


class EnergyItem(Base):
    __tablename__ = "energy_item"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    category_id: Mapped[int] = _fk("config.energy_category.id", "CASCADE", nullable=False)
    name: Mapped[str] = mapped_column(Text)
    category: Mapped[EnergyCategory] = relationship(back_populates="items")


class DataSource(Base):
    __tablename__ = "data_source"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, unique=True)
    protocol: Mapped[str] = mapped_column(Text)
    connection: Mapped[dict] = mapped_column(JSONB, server_default="{}")
    poll_interval_s: Mapped[Decimal] = mapped_column(Numeric, server_default="60")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    description: Mapped[str | None] = mapped_column(Text)
    points: Mapped[list[Point]] = relationship(back_populates="data_source", order_by="Point.name")


class Point(Base):
    __tablename__ = "point"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    data_source_id: Mapped[int] = _fk("config.data_source.id", "RESTRICT", nullable=False)
    name: Mapped[str] = mapped_column(Text)
    object_type: Mapped[str] = mapped_column(Text)
    address: Mapped[dict] = mapped_column(JSONB, server_default="{}")
    ratio: Mapped[float] = mapped_column(Double, server_default="1")
    offset: Mapped[float] = mapped_column("offset", Double, server_default="0")
    low_limit: Mapped[float | None] = mapped_column(Double)
    high_limit: Mapped[float | None] = mapped_column(Double)
    unit: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    data_source: Mapped[DataSource] = relationship(back_populates="points")


class Meter(Base):
    __tablename__ = "meter"
    __table_args__ = (
        ForeignKeyConstraint(
            ["item_id", "category_id"],
            ["config.energy_item.id", "config.energy_item.category_id"],
            ondelete="RESTRICT",
        ),
        {"schema": "config"},
    )
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text, server_default="physical")
    category_id: Mapped[int] = _fk("config.energy_category.id", "RESTRICT", nullable=False)
    item_id: Mapped[int | None] = mapped_column(Integer)
    is_counted: Mapped[bool] = mapped_column(Boolean, server_default="true")
    hourly_low: Mapped[float | None] = mapped_column(Double)
    hourly_high: Mapped[float | None] = mapped_column(Double)
    register_max: Mapped[Decimal | None] = mapped_column(Numeric)
    master_meter_id: Mapped[int | None] = _fk("config.meter.id", "SET NULL")
    cost_center_id: Mapped[int | None] = _fk("config.cost_center.id", "SET NULL")
    formula: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    # Offline meters: 24 hourly weights for spreading imported values (sql/offline_meters.sql).
    load_profile: Mapped[list[float] | None] = mapped_column(ARRAY(Double))
    # Grid region for carbon factors (sql/carbon.sql); NULL: the nearest space's.
    grid_region_id: Mapped[int | None] = _fk("config.carbon_region.id", "RESTRICT")

    category: Mapped[EnergyCategory] = relationship(foreign_keys=[category_id])
    item: Mapped[EnergyItem | None] = relationship(
        foreign_keys=[item_id], primaryjoin="Meter.item_id == EnergyItem.id", viewonly=True
    )
    master: Mapped[Meter | None] = relationship(remote_side=[id])
    cost_center: Mapped[CostCenter | None] = relationship()
    point_links: Mapped[list[MeterPoint]] = relationship(
        back_populates="meter", order_by="MeterPoint.valid_from", cascade="all, delete-orphan"
    )


class MeterPoint(Base):
    __tablename__ = "meter_point"
    __table_args__ = {"schema": "config"}
    meter_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("config.meter.id", ondelete="CASCADE"), primary_key=True
    )
    point_id: Mapped[int] = _fk("config.point.id", "RESTRICT", nullable=False)
    valid_from: Mapped[dt.datetime] = mapped_column(TZ, primary_key=True, server_default="-infinity")
    valid_to: Mapped[dt.datetime] = mapped_column(TZ, server_default="infinity")
    multiplier: Mapped[float] = mapped_column(Double, server_default="1")
    meter: Mapped[Meter] = relationship(back_populates="point_links")
    point: Mapped[Point] = relationship()


class PointCleaning(Base):
    """Per-point cleaning and gap thresholds (sql/clean.sql); absent row: the defaults."""

    __tablename__ = "point_cleaning"
    __table_args__ = {"schema": "config"}
    point_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("config.point.id", ondelete="CASCADE"), primary_key=True
    )
    check_registers: Mapped[bool] = mapped_column(Boolean, server_default="true")
    stuck_after: Mapped[dt.timedelta | None] = mapped_column(INTERVAL, server_default="06:00:00")
    max_gap: Mapped[dt.timedelta] = mapped_column(INTERVAL, server_default="01:00:00")


class _Placed:
    """Columns shared by the organisation entities that sit in a space."""

    name: Mapped[str] = mapped_column(Text, unique=True)
    space_id: Mapped[int | None] = _fk("config.space.id", "SET NULL")
    cost_center_id: Mapped[int | None] = _fk("config.cost_center.id", "SET NULL")


class Equipment(_Placed, Base):
    __tablename__ = "equipment"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    description: Mapped[str | None] = mapped_column(Text)


class CombinedEquipment(_Placed, Base):
    __tablename__ = "combined_equipment"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    description: Mapped[str | None] = mapped_column(Text)
    members: Mapped[list[Equipment]] = relationship(
        secondary="config.combined_equipment_member", order_by="Equipment.name"
    )


class Tenant(_Placed, Base):
    __tablename__ = "tenant"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    tenant_type: Mapped[str | None] = mapped_column(Text)
    lease_start: Mapped[dt.date | None] = mapped_column(Date)
    lease_end: Mapped[dt.date | None] = mapped_column(Date)
    area_m2: Mapped[Decimal | None] = mapped_column(Numeric)
    contact: Mapped[str | None] = mapped_column(Text)


class Store(_Placed, Base):
    __tablename__ = "store"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    area_m2: Mapped[Decimal | None] = mapped_column(Numeric)


class Shopfloor(_Placed, Base):
    __tablename__ = "shopfloor"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    area_m2: Mapped[Decimal | None] = mapped_column(Numeric)


class CombinedEquipmentMember(Base):
    __tablename__ = "combined_equipment_member"
    __table_args__ = {"schema": "config"}
    combined_equipment_id: Mapped[int] = mapped_column(
        ForeignKey("config.combined_equipment.id", ondelete="CASCADE"), primary_key=True
    )
    equipment_id: Mapped[int] = mapped_column(
        ForeignKey("config.equipment.id", ondelete="CASCADE"), primary_key=True
    )


def _link(name: str, entity: str, with_direction: bool = False) -> type[Base]:
    """Entity <-> meter link table class (one idea, seven tables)."""
    attrs: dict[str, Any] = {
        "__tablename__": f"{name}_meter",
        "__table_args__": {"schema": "config"},
        "__annotations__": {},
        f"{name}_id": mapped_column(
            Integer, ForeignKey(f"config.{entity}.id", ondelete="CASCADE"), primary_key=True
        ),
        "meter_id": mapped_column(
            Integer, ForeignKey("config.meter.id", ondelete="CASCADE"), primary_key=True
        ),
    }
    if with_direction:
        attrs["direction"] = mapped_column(Text, server_default="input", nullable=False)
    cls_name = "".join(p.capitalize() for p in name.split("_")) + "Meter"
    return type(cls_name, (Base,), attrs)


SpaceMeter = _link("space", "space")
EquipmentMeter = _link("equipment", "equipment", with_direction=True)
CombinedEquipmentMeter = _link("combined_equipment", "combined_equipment", with_direction=True)
TenantMeter = _link("tenant", "tenant")
StoreMeter = _link("store", "store")
ShopfloorMeter = _link("shopfloor", "shopfloor")

# Entity kind -> (model, link model, link column); the one table reports and imports use.
ENTITY_LINKS: dict[str, tuple[type[Base], type[Base], str]] = {
    "space": (Space, SpaceMeter, "space_id"),
    "equipment": (Equipment, EquipmentMeter, "equipment_id"),
    "combined_equipment": (CombinedEquipment, CombinedEquipmentMeter, "combined_equipment_id"),
    "tenant": (Tenant, TenantMeter, "tenant_id"),
    "store": (Store, StoreMeter, "store_id"),
    "shopfloor": (Shopfloor, ShopfloorMeter, "shopfloor_id"),
}


class ApiKey(Base):
    """An API credential (sql/ingest.sql); app/apikeys.py issues and verifies them."""

    __tablename__ = "api_key"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text, unique=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    data_source_id: Mapped[int | None] = _fk("config.data_source.id", "CASCADE")
    created_at: Mapped[dt.datetime] = mapped_column(TZ, server_default="now()")
    expires_at: Mapped[dt.datetime | None] = mapped_column(TZ)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(TZ)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(TZ)
    restricted: Mapped[bool] = mapped_column(Boolean, server_default="false")


class AppUser(Base):
    """A person who logs in (sql/api_security.sql); app/users.py manages them."""

    __tablename__ = "app_user"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    username: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text, server_default="viewer")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    restricted: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[dt.datetime] = mapped_column(TZ, server_default="now()")
    last_login_at: Mapped[dt.datetime | None] = mapped_column(TZ)
    failed_logins: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[dt.datetime | None] = mapped_column(TZ)


def _grant(name: str, owner: str, owner_table: str, target: str) -> type[Base]:
    """Data scope grant table class: user or API key <-> space or tenant."""
    attrs: dict[str, Any] = {
        "__tablename__": name,
        "__table_args__": {"schema": "config"},
        "__annotations__": {},
        f"{owner}_id": mapped_column(
            Integer, ForeignKey(f"config.{owner_table}.id", ondelete="CASCADE"), primary_key=True
        ),
        f"{target}_id": mapped_column(
            Integer, ForeignKey(f"config.{target}.id", ondelete="CASCADE"), primary_key=True
        ),
    }
    return type("".join(p.capitalize() for p in name.split("_")), (Base,), attrs)


UserSpace = _grant("user_space", "user", "app_user", "space")
UserTenant = _grant("user_tenant", "user", "app_user", "tenant")
ApiKeySpace = _grant("api_key_space", "api_key", "api_key", "space")
ApiKeyTenant = _grant("api_key_tenant", "api_key", "api_key", "tenant")


class RefreshToken(Base):
    """A refresh token's hash, family and lifetime (sql/api_security.sql)."""

    __tablename__ = "refresh_token"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[int] = _fk("config.app_user.id", "CASCADE", nullable=False)
    family: Mapped[uuid.UUID] = mapped_column(UUID)
    token_sha256: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    issued_at: Mapped[dt.datetime] = mapped_column(TZ, server_default="now()")
    expires_at: Mapped[dt.datetime] = mapped_column(TZ)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(TZ)


class CarbonRegion(Base):
    """A grid region emission factors and intensity series are published for (sql/carbon.sql)."""

    __tablename__ = "carbon_region"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    name: Mapped[str] = mapped_column(Text, unique=True)
    description: Mapped[str | None] = mapped_column(Text)


class EmissionFactor(Base):
    """kgCO2e per category unit for a region (NULL: any), basis and validity (sql/carbon.sql)."""

    __tablename__ = "emission_factor"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    category_id: Mapped[int] = _fk("config.energy_category.id", "RESTRICT", nullable=False)
    region_id: Mapped[int | None] = _fk("config.carbon_region.id", "RESTRICT")
    basis: Mapped[str] = mapped_column(Text)
    scope: Mapped[int] = mapped_column(SmallInteger)
    valid_from: Mapped[dt.datetime] = mapped_column(TZ, server_default="-infinity")
    valid_to: Mapped[dt.datetime] = mapped_column(TZ, server_default="infinity")
    kgco2e_per_unit: Mapped[Decimal] = mapped_column(Numeric)
    source: Mapped[str] = mapped_column(Text)


# --------------------------------------------------------------- tariffs (sql/billing.sql)
class TariffRow(Base):
    """config.tariff (sql/billing.sql)."""

    __tablename__ = "tariff"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    label: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    utility: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    valid_from: Mapped[dt.datetime] = mapped_column(TZ, server_default="-infinity")
    valid_to: Mapped[dt.datetime] = mapped_column(TZ, server_default="infinity")
    definition: Mapped[dict] = mapped_column(JSONB)
    source: Mapped[Any] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[dt.datetime] = mapped_column(TZ, server_default="now()")


class TariffAssignment(Base):
    """config.tariff_assignment: a tariff for a cost center or tenant (per category) or a meter."""

    __tablename__ = "tariff_assignment"
    __table_args__ = {"schema": "config"}
    id: Mapped[int] = _pk()
    tariff_id: Mapped[int] = _fk("config.tariff.id", "RESTRICT", nullable=False)
    category_id: Mapped[int | None] = _fk("config.energy_category.id", "CASCADE")
    cost_center_id: Mapped[int | None] = _fk("config.cost_center.id", "CASCADE")
    tenant_id: Mapped[int | None] = _fk("config.tenant.id", "CASCADE")
    meter_id: Mapped[int | None] = _fk("config.meter.id", "CASCADE")
    valid_from: Mapped[dt.datetime] = mapped_column(TZ, server_default="-infinity")
    valid_to: Mapped[dt.datetime] = mapped_column(TZ, server_default="infinity")


class ReactiveMeter(Base):
    """config.reactive_meter: which meter measures a meter's reactive energy (kvarh)."""

    __tablename__ = "reactive_meter"
    __table_args__ = {"schema": "config"}
    meter_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("config.meter.id", ondelete="CASCADE"), primary_key=True
    )
    reactive_meter_id: Mapped[int] = _fk("config.meter.id", "CASCADE", nullable=False)
