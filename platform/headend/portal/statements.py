"""What the portal shows a subscriber about their own account: balance (from the ledger),
invoices, payments, usage per day and packages. Reads only; every query names the subscriber,
and the tenant scope keeps other tenants out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing import drafting, periods
from headend.billing.models import Invoice
from headend.ledger.services import subscriber_balance
from headend.network.caps import GB, usage_period
from headend.network.models import UsageDaily
from headend.network.services import internet_profile
from headend.payments.models import Payment
from headend.payments.services import open_invoices
from headend.subscribers.models import ServiceInstance, Subscription
from headend.subscribers.services import unit_price

SHOWN_INVOICES = ("open", "partially_paid", "paid", "void")  # never drafts
HIDDEN = "hidden"  # Package.account_manager_visibility that keeps it off the portal


@dataclass(frozen=True)
class Overview:
    balance: int  # minor units; negative is credit
    next_due: Invoice | None  # the open invoice due first
    open_total: int


def overview(session: Session, subscriber_id: int) -> Overview:
    due = open_invoices(session, subscriber_id)
    return Overview(balance=subscriber_balance(session, subscriber_id),
                    next_due=due[0] if due else None,
                    open_total=sum(inv.balance_due for inv in due))


def invoices(session: Session, subscriber_id: int) -> list[Invoice]:
    return list(session.scalars(
        sa.select(Invoice).where(Invoice.subscriber_id == subscriber_id,
                                 Invoice.status.in_(SHOWN_INVOICES))
        .order_by(Invoice.invoice_date.desc(), Invoice.id.desc())))


def own_invoice(session: Session, subscriber_id: int, invoice_id: int) -> Invoice | None:
    """The subscriber's posted invoice `invoice_id`, else None (another's, a draft, absent)."""
    return session.scalar(sa.select(Invoice).where(
        Invoice.id == invoice_id, Invoice.subscriber_id == subscriber_id,
        Invoice.status.in_(SHOWN_INVOICES)))


def payments(session: Session, subscriber_id: int) -> list[Payment]:
    return list(session.scalars(
        sa.select(Payment).where(Payment.subscriber_id == subscriber_id)
        .order_by(Payment.received_on.desc(), Payment.id.desc())))


def packages(session: Session, subscriber_id: int) -> list[tuple[Subscription, Decimal]]:
    """The subscriptions whose package may be shown here, with their price per cycle."""
    rows = session.scalars(
        sa.select(Subscription).where(Subscription.subscriber_id == subscriber_id)
        .order_by(Subscription.id))
    shown = []
    for sub in rows:
        if sub.package.account_manager_visibility == HIDDEN:
            continue
        try:
            price = unit_price(sub.package, sub.billing_cycle, sub.custom_price) * sub.quantity
        except KeyError:  # the package no longer offers the cycle
            price = None
        shown.append((sub, price))
    return shown


@dataclass(frozen=True)
class UsagePeriod:
    label: str
    period: periods.Period
    days: list[tuple[dt.date, Decimal, Decimal]]  # (day, download GB, upload GB)

    @property
    def download(self) -> Decimal:
        return sum((d for _, d, _ in self.days), Decimal("0.00"))

    @property
    def upload(self) -> Decimal:
        return sum((u for _, _, u in self.days), Decimal("0.00"))


@dataclass(frozen=True)
class ServiceUsage:
    service: ServiceInstance
    periods: list[UsagePeriod]


def _gigabytes(octets: int) -> Decimal:
    return (Decimal(octets or 0) / GB).quantize(Decimal("0.01"))


def usage(session: Session, subscriber_id: int, today: dt.date) -> list[ServiceUsage]:
    """Daily traffic of each Internet service of the subscriber (in a package shown here), for
    the current usage period up to today and the whole previous one."""
    defaults = drafting.settings(session)
    out = []
    for subscription, _ in packages(session, subscriber_id):
        for service in subscription.services:
            if internet_profile(session, service) is None:
                continue
            current = usage_period(subscription, defaults, today)
            previous = usage_period(subscription, defaults, current.start - dt.timedelta(days=1))
            found = {u.day: u for u in session.scalars(sa.select(UsageDaily).where(
                UsageDaily.service_id == service.id, UsageDaily.day >= previous.start,
                UsageDaily.day <= min(today, current.last_day)))}
            shown = []
            for label, period in (("This period", current), ("Previous period", previous)):
                last = min(period.last_day, today)
                days = [period.start + dt.timedelta(days=n)
                        for n in range((last - period.start).days + 1)]
                shown.append(UsagePeriod(label, period, [
                    (day, _gigabytes(found[day].download_bytes if day in found else 0),
                     _gigabytes(found[day].upload_bytes if day in found else 0))
                    for day in days]))
            out.append(ServiceUsage(service, shown))
    return out
