"""Subscribers (the ISP's customers), their notes, and the packages they subscribe to.

A Subscription is a package on a subscriber. Its ServiceInstances are the concrete services it
delivers: ONE ROW PER UNIT (a package line of quantity 2 on a subscription of quantity 3 gives six
rows), because each unit later gets its own credentials and network settings.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from headend.db import ExactDecimal, Model, TenantOwned, utcnow

CUSTOMER_TYPES = ("residential", "business")
SUBSCRIBER_STATUSES = ("prospect", "active", "suspended", "inactive", "archived")
SUBSCRIPTION_STATUSES = ("pending", "active", "hibernating", "suspended", "cancelled")
# inactive: taken off the network by staff (Deactivate); cancelled: its subscription was
SERVICE_STATUSES = ("pending", "active", "inactive", "suspended", "cancelled")
# The package's tax option (Package columns of the same names), copied onto each subscription.
PACKAGE_TAX_FIELDS = ("tax_mode", "custom_tax_kind", "custom_tax_cycle_rate",
                      "custom_tax_setup_rate")

subscriber_tax_rate = sa.Table(
    "subscriber_tax_rate",
    Model.metadata,
    sa.Column("subscriber_id", sa.ForeignKey("subscriber.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("tax_rate_id", sa.ForeignKey("tax_rate.id", ondelete="RESTRICT"), primary_key=True,
              index=True),
)


class Subscriber(TenantOwned, Model):
    __tablename__ = "subscriber"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "account_number", name="uq_subscriber_account"),
        sa.Index("ix_subscriber_service_city", "tenant_id", "service_city"),
        sa.Index("ix_subscriber_service_postal", "tenant_id", "service_postal_code"),
        sa.Index("ix_subscriber_service_line1", "tenant_id", "service_line1"),
        sa.Index("ix_subscriber_name", "tenant_id", "last_name", "first_name"),
        sa.Index("ix_subscriber_search", "tenant_id", "search_text",
                 postgresql_ops={"search_text": "varchar_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_number: Mapped[str] = mapped_column(sa.String(30), index=True)
    first_name: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    last_name: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    company: Mapped[str | None] = mapped_column(sa.String(200), index=True)
    customer_type: Mapped[str] = mapped_column(sa.String(20), default="residential")
    email: Mapped[str | None] = mapped_column(sa.String(254), index=True)
    phone: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    mobile: Mapped[str | None] = mapped_column(sa.String(40))

    service_line1: Mapped[str | None] = mapped_column(sa.String(200))
    service_line2: Mapped[str | None] = mapped_column(sa.String(200))
    service_city: Mapped[str | None] = mapped_column(sa.String(100))
    service_region: Mapped[str | None] = mapped_column(sa.String(100))
    service_postal_code: Mapped[str | None] = mapped_column(sa.String(20))
    service_country: Mapped[str | None] = mapped_column(sa.String(2))
    latitude: Mapped[Decimal | None] = mapped_column(ExactDecimal(7))
    longitude: Mapped[Decimal | None] = mapped_column(ExactDecimal(7))

    billing_same_as_service: Mapped[bool] = mapped_column(default=True)
    billing_line1: Mapped[str | None] = mapped_column(sa.String(200))
    billing_line2: Mapped[str | None] = mapped_column(sa.String(200))
    billing_city: Mapped[str | None] = mapped_column(sa.String(100))
    billing_region: Mapped[str | None] = mapped_column(sa.String(100))
    billing_postal_code: Mapped[str | None] = mapped_column(sa.String(20))
    billing_country: Mapped[str | None] = mapped_column(sa.String(2))

    status: Mapped[str] = mapped_column(sa.String(20), default="prospect", index=True)
    tax_exempt: Mapped[bool] = mapped_column(default=False)
    tax_exemption_code: Mapped[str | None] = mapped_column(sa.String(60))
    billing_cycle: Mapped[str] = mapped_column(sa.String(20), default="monthly")
    bill_day: Mapped[int] = mapped_column(default=1)
    paper_invoice: Mapped[bool] = mapped_column(default=False)
    # Every charge of this account goes on the parent's invoice, grouped under this account.
    bill_all_to_parent: Mapped[bool] = mapped_column(default=False)
    parent_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"), index=True
    )
    # Lowercased name, company, account, email, phone (also digits only) and address: the one
    # column free-text search reads, kept current on every insert/update.
    search_text: Mapped[str] = mapped_column(sa.String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    parent: Mapped[Subscriber | None] = relationship(
        "Subscriber", remote_side=[id], foreign_keys=[parent_id]
    )
    tax_rates = relationship("TaxRate", secondary=subscriber_tax_rate)
    notes: Mapped[list[SubscriberNote]] = relationship(
        back_populates="subscriber", order_by="SubscriberNote.created_at.desc()"
    )
    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", order_by="Subscription.id",
        foreign_keys="Subscription.subscriber_id",
    )

    @property
    def display_name(self) -> str:
        person = " ".join(p for p in (self.first_name, self.last_name) if p)
        return person or self.company or self.account_number or ""

    def compute_search_text(self) -> str:
        parts = [
            self.account_number, self.first_name, self.last_name, self.company, self.email,
            self.phone, self.mobile, self.service_line1, self.service_line2, self.service_city,
            self.service_region, self.service_postal_code,
        ]
        digits = [re.sub(r"\D", "", p) for p in (self.phone, self.mobile) if p]
        text = " ".join(p.strip() for p in parts + digits if p and p.strip())
        return text.lower()[:1000]

    def __repr__(self) -> str:
        return f"{self.account_number} {self.display_name}"


@event.listens_for(Subscriber, "before_insert")
@event.listens_for(Subscriber, "before_update")
def _refresh_search_text(mapper, connection, target: Subscriber) -> None:
    target.search_text = target.compute_search_text()


class SubscriberNote(TenantOwned, Model):
    __tablename__ = "subscriber_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="CASCADE"), index=True
    )
    body: Mapped[str] = mapped_column(sa.Text)
    author: Mapped[str | None] = mapped_column(sa.String(120))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="notes")

    def __repr__(self) -> str:
        return (self.body or "")[:40]


class Subscription(TenantOwned, Model):
    __tablename__ = "subscription"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"), index=True
    )
    package_id: Mapped[int] = mapped_column(
        sa.ForeignKey("package.id", ondelete="RESTRICT"), index=True
    )
    quantity: Mapped[int] = mapped_column(default=1)
    custom_price: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    billing_cycle: Mapped[str] = mapped_column(sa.String(20), default="monthly")
    bill_day: Mapped[int | None] = mapped_column()
    bill_start_date: Mapped[dt.date | None] = mapped_column()
    status: Mapped[str] = mapped_column(sa.String(20), default="pending", index=True)
    # Billed to another account (a parent paying for a child's service); None = the subscriber.
    bill_to_subscriber_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subscriber.id", ondelete="RESTRICT"))
    hibernate_from: Mapped[dt.date | None] = mapped_column()
    hibernate_until: Mapped[dt.date | None] = mapped_column()  # exclusive; None = until resumed
    cancel_on: Mapped[dt.date | None] = mapped_column()
    # A deferred downgrade: the package that takes over at the end of the current period.
    scheduled_package_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("package.id", ondelete="RESTRICT"))
    scheduled_change_on: Mapped[dt.date | None] = mapped_column()
    # Taxes: the package's settings as they were when the subscription took the package (or
    # when the package's "Apply" pushed them), so editing a package retaxes new subscriptions
    # only. Same meaning as the Package columns.
    tax_mode: Mapped[str] = mapped_column(sa.String(20), default="subscriber")
    custom_tax_kind: Mapped[str | None] = mapped_column(sa.String(10))
    custom_tax_cycle_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(6))
    custom_tax_setup_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(6))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions",
                                                  foreign_keys=[subscriber_id])
    package = relationship("Package", foreign_keys=[package_id])
    services: Mapped[list[ServiceInstance]] = relationship(
        back_populates="subscription", order_by="ServiceInstance.id"
    )

    def take_package_taxes(self, package) -> bool:
        """Copy `package`'s tax settings onto this subscription; True when any of them changed."""
        changed = False
        for name in PACKAGE_TAX_FIELDS:
            value = getattr(package, name)
            if getattr(self, name) != value:
                setattr(self, name, value)
                changed = True
        return changed

    def __repr__(self) -> str:
        return f"#{self.id} {self.package}"


class ServiceInstance(TenantOwned, Model):
    """A subscriber's instance of a package's service line; an Internet one carries the
    credentials, static address and router the network layer provisions (headend.network)."""

    __tablename__ = "service_instance"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "username", name="uq_service_username"),
        sa.UniqueConstraint("tenant_id", "static_ip", name="uq_service_static_ip"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscription.id", ondelete="CASCADE"), index=True
    )
    package_service_line_id: Mapped[int] = mapped_column(
        sa.ForeignKey("package_service_line.id", ondelete="RESTRICT"), index=True
    )
    label: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    username: Mapped[str | None] = mapped_column(sa.String(64))
    # Kept readable, not sealed: it is written in clear to radcheck and the router's PPP
    # secrets anyway, staff read it out to subscribers, and the reconciler compares 10k of them
    # per run (the audit log redacts it).
    password: Mapped[str | None] = mapped_column(sa.String(64))
    static_ip: Mapped[str | None] = mapped_column(sa.String(45))
    router_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("router.id", ondelete="RESTRICT"), index=True)
    # speeds in the profile's unit, where the package allows subscriber overrides
    download_override: Mapped[int | None] = mapped_column()
    upload_override: Mapped[int | None] = mapped_column()
    # data cap and usage billing, where the package allows subscriber custom settings
    data_limit_gb_override: Mapped[int | None] = mapped_column()
    usage_included_override: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    usage_price_override: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    activated_at: Mapped[dt.datetime | None] = mapped_column()

    subscription: Mapped[Subscription] = relationship(back_populates="services")
    service_line = relationship("PackageServiceLine")

    def __repr__(self) -> str:
        return self.label
