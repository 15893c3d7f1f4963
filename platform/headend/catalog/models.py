"""What an ISP sells: accounts, tax rates, items, services and the packages that bundle them."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from headend.db import ExactDecimal, Model, TenantOwned

CYCLES = ("monthly", "quarterly", "semiannual", "annual")
ACCOUNT_TYPES = ("asset", "liability", "equity", "income", "expense")
TAX_KINDS = ("percent", "flat")
ITEM_TYPES = ("equipment", "fee", "discount", "custom")
SERVICE_TYPES = ("internet", "tv", "voip", "email", "other")
CUSTOMER_TYPES = ("residential", "business", "both")
VISIBILITIES = ("visible", "hidden", "read_only")
TAX_MODES = ("none", "subscriber", "custom")
SPEED_UNITS = ("Mbps", "Kbps")
USAGE_BASES = ("hours", "MB", "KB")


class Account(TenantOwned, Model):
    """One account of the tenant's chart of accounts."""

    __tablename__ = "account"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "code", name="uq_account_tenant_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(20), index=True)
    name: Mapped[str] = mapped_column(sa.String(120), index=True)
    type: Mapped[str] = mapped_column(sa.String(20))
    parent_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("account.id", ondelete="RESTRICT"), index=True
    )
    active: Mapped[bool] = mapped_column(default=True)

    parent: Mapped[Account | None] = relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"{self.code} {self.name}"


class TaxRate(TenantOwned, Model):
    __tablename__ = "tax_rate"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(120), index=True)
    kind: Mapped[str] = mapped_column(sa.String(10), default="percent")
    rate: Mapped[Decimal] = mapped_column(ExactDecimal(6))
    require_on_new_subscriber: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)

    def __repr__(self) -> str:
        return self.label


class Item(TenantOwned, Model):
    """Something sold on its own or inside a package: equipment, a fee, a discount."""

    __tablename__ = "item"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "code", name="uq_item_tenant_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(40), index=True)
    name: Mapped[str] = mapped_column(sa.String(120), index=True)
    type: Mapped[str] = mapped_column(sa.String(20), default="custom")
    price: Mapped[Decimal] = mapped_column(ExactDecimal(4), default=Decimal(0))
    recurring: Mapped[bool] = mapped_column(default=False)
    income_account_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("account.id", ondelete="RESTRICT"), index=True
    )
    taxable: Mapped[bool] = mapped_column(default=True)
    active: Mapped[bool] = mapped_column(default=True)

    income_account: Mapped[Account | None] = relationship()

    def __repr__(self) -> str:
        return f"{self.code} {self.name}"


class Service(TenantOwned, Model):
    """A kind of service a package line delivers (the definition, not a subscriber's instance)."""

    __tablename__ = "service"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), index=True)
    type: Mapped[str] = mapped_column(sa.String(20), default="internet")
    description: Mapped[str | None] = mapped_column(sa.Text)

    def __repr__(self) -> str:
        return self.name


class Package(TenantOwned, Model):
    """A bundle of service lines and included items, priced per billing cycle."""

    __tablename__ = "package"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_package_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), index=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    setup_fee: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    price_monthly: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    price_quarterly: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    price_semiannual: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    price_annual: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    allow_custom_pricing: Mapped[bool] = mapped_column(default=False)
    exclude_from_invoicing: Mapped[bool] = mapped_column(default=False)
    # Options tab
    customer_type: Mapped[str] = mapped_column(sa.String(20), default="both")
    signup_enabled: Mapped[bool] = mapped_column(default=False)
    signup_requires_payment: Mapped[bool] = mapped_column(default=False)
    acp_participation: Mapped[bool] = mapped_column(default=False)
    request_additional_info: Mapped[bool] = mapped_column(default=False)
    additional_info_prompt: Mapped[str | None] = mapped_column(sa.Text)
    activate_after_signup: Mapped[bool] = mapped_column(default=False)
    invoice_after_signup: Mapped[bool] = mapped_column(default=False)
    location_id: Mapped[str | None] = mapped_column(sa.String(60))
    account_manager_visibility: Mapped[str] = mapped_column(sa.String(20), default="visible")
    devices_required: Mapped[bool] = mapped_column(default=False)
    max_devices: Mapped[int | None]
    hibernation_allowed: Mapped[bool] = mapped_column(default=False)
    hibernation_fee: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    hibernation_max_days: Mapped[int | None]
    # Taxes tab
    tax_mode: Mapped[str] = mapped_column(sa.String(20), default="subscriber")
    custom_tax_kind: Mapped[str | None] = mapped_column(sa.String(10))
    custom_tax_cycle_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(6))
    custom_tax_setup_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(6))
    active: Mapped[bool] = mapped_column(default=True)

    service_lines: Mapped[list[PackageServiceLine]] = relationship(
        back_populates="package",
        order_by=lambda: (PackageServiceLine.position, PackageServiceLine.id),
        cascade="all, delete-orphan",
    )
    inclusions: Mapped[list[PackageInclusion]] = relationship(
        back_populates="package", order_by="PackageInclusion.id", cascade="all, delete-orphan",
    )
    internet_profile: Mapped[InternetProfile | None] = relationship(
        back_populates="package", uselist=False, cascade="all, delete-orphan",
    )

    def offered_cycles(self) -> dict[str, Decimal]:
        """The cycles a subscriber may choose, with their price, in CYCLES order."""
        prices = {cycle: getattr(self, f"price_{cycle}") for cycle in CYCLES}
        return {cycle: price for cycle, price in prices.items() if price is not None}

    def __repr__(self) -> str:
        return self.name


class PackageServiceLine(TenantOwned, Model):
    """One service a package delivers; subscriptions instantiate one ServiceInstance per line."""

    __tablename__ = "package_service_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    package_id: Mapped[int] = mapped_column(
        sa.ForeignKey("package.id", ondelete="CASCADE"), index=True
    )
    service_id: Mapped[int] = mapped_column(
        sa.ForeignKey("service.id", ondelete="RESTRICT"), index=True
    )
    label: Mapped[str] = mapped_column(sa.String(120))
    quantity: Mapped[int] = mapped_column(default=1)
    fcc_technology_code: Mapped[int | None]
    position: Mapped[int] = mapped_column(default=0)

    package: Mapped[Package] = relationship(back_populates="service_lines")
    service: Mapped[Service] = relationship()

    def __repr__(self) -> str:
        return self.label


class PackageInclusion(TenantOwned, Model):
    """An item that comes with a package; a NULL or zero recurring price means it is free."""

    __tablename__ = "package_inclusion"

    id: Mapped[int] = mapped_column(primary_key=True)
    package_id: Mapped[int] = mapped_column(
        sa.ForeignKey("package.id", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[int] = mapped_column(sa.ForeignKey("item.id", ondelete="RESTRICT"), index=True)
    quantity: Mapped[int] = mapped_column(default=1)
    recurring_price: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))

    package: Mapped[Package] = relationship(back_populates="inclusions")
    item: Mapped[Item] = relationship()

    def __repr__(self) -> str:
        return f"{self.quantity} x {self.item}"


class InternetProfile(TenantOwned, Model):
    """Speeds, burst, throttling and usage billing of a package's Internet service."""

    __tablename__ = "internet_profile"

    id: Mapped[int] = mapped_column(primary_key=True)
    package_id: Mapped[int] = mapped_column(
        sa.ForeignKey("package.id", ondelete="CASCADE"), unique=True
    )
    download_speed: Mapped[int] = mapped_column(default=25)
    upload_speed: Mapped[int] = mapped_column(default=5)
    speed_unit: Mapped[str] = mapped_column(sa.String(4), default="Mbps")
    burst_download: Mapped[int | None]
    burst_upload: Mapped[int | None]
    burst_threshold_download: Mapped[int | None]
    burst_threshold_upload: Mapped[int | None]
    burst_time_seconds: Mapped[int | None]
    data_limit_gb: Mapped[int | None]
    throttled_download: Mapped[int | None]
    throttled_upload: Mapped[int | None]
    disconnect_at_limit: Mapped[bool] = mapped_column(default=False)
    allow_subscriber_overrides: Mapped[bool] = mapped_column(default=False)
    usage_billing_enabled: Mapped[bool] = mapped_column(default=False)
    usage_billing_basis: Mapped[str] = mapped_column(sa.String(10), default="MB")
    usage_included_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    usage_price_per_unit: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    usage_disconnect_on_exceed: Mapped[bool] = mapped_column(default=False)
    usage_show_on_invoice: Mapped[bool] = mapped_column(default=True)
    usage_allow_subscriber_custom: Mapped[bool] = mapped_column(default=False)
    count_upload_in_usage: Mapped[bool] = mapped_column(default=True)

    package: Mapped[Package] = relationship(back_populates="internet_profile")

    def __repr__(self) -> str:
        return f"{self.download_speed}/{self.upload_speed} {self.speed_unit}"


# "Restore defaults" puts these back; a new profile starts from them too.
INTERNET_PROFILE_DEFAULTS: dict[str, object] = {
    "download_speed": 25, "upload_speed": 5, "speed_unit": "Mbps",
    "burst_download": None, "burst_upload": None, "burst_threshold_download": None,
    "burst_threshold_upload": None, "burst_time_seconds": None,
    "data_limit_gb": None, "throttled_download": None, "throttled_upload": None,
    "disconnect_at_limit": False, "allow_subscriber_overrides": False,
    "usage_billing_enabled": False, "usage_billing_basis": "MB", "usage_included_amount": None,
    "usage_price_per_unit": None, "usage_disconnect_on_exceed": False,
    "usage_show_on_invoice": True, "usage_allow_subscriber_custom": False,
    "count_upload_in_usage": True,
}
