"""Usage-based billing, in arrears: once a service's usage period (its billing period) has
ended, the usage over the included amount is rated at the package's price per unit (or the
subscriber's own, where the package allows custom settings) and kept as a UsageCharge; the next
invoice of the payer - Invoice Now or the billing run - carries it as a "usage" line and the
charge remembers that invoice. Unique per service and period: rating twice, or two runs at
once, charge it once.

Units: hours of online time, or MB / KB of traffic (decimal: 1 MB = 10^6 bytes), upload
counted unless the package excludes it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing import drafting
from headend.billing.charges import Charge
from headend.catalog.models import InternetProfile, PackageServiceLine, Service
from headend.db import among
from headend.network.caps import counted_bytes, period_totals, usage_period
from headend.network.models import UsageCharge
from headend.subscribers.models import ServiceInstance, Subscription

UNIT_BYTES = {"MB": 10**6, "KB": 10**3}
BILLED_STATUSES = ("active", "suspended", "hibernating", "cancelled")
PLACES = Decimal("0.0001")


def used_units(profile: InternetProfile, download: int, upload: int, seconds: int) -> Decimal:
    """Usage in the package's basis: hours, MB or KB (exact, 4 places)."""
    if profile.usage_billing_basis == "hours":
        return (Decimal(seconds) / 3600).quantize(PLACES, ROUND_HALF_UP)
    size = UNIT_BYTES.get(profile.usage_billing_basis, UNIT_BYTES["MB"])
    return (Decimal(counted_bytes(profile, download, upload)) / size).quantize(
        PLACES, ROUND_HALF_UP)


def _terms(profile: InternetProfile, service: ServiceInstance) -> tuple[Decimal, Decimal]:
    """(included units, price per unit): the subscriber's own where the package allows."""
    custom = profile.usage_allow_subscriber_custom
    included = service.usage_included_override if custom and \
        service.usage_included_override is not None else profile.usage_included_amount
    price = service.usage_price_override if custom and \
        service.usage_price_override is not None else profile.usage_price_per_unit
    return included or Decimal(0), price or Decimal(0)


def rate_usage(session: Session, today: dt.date) -> list[UsageCharge]:
    """Rate the usage period that ended most recently for every service with usage billing
    (once: a period already rated is skipped); returns the new charges."""
    rows = session.execute(
        sa.select(ServiceInstance, Subscription, InternetProfile)
        .join(Subscription, Subscription.id == ServiceInstance.subscription_id)
        .join(PackageServiceLine,
              PackageServiceLine.id == ServiceInstance.package_service_line_id)
        .join(Service, Service.id == PackageServiceLine.service_id)
        .join(InternetProfile, InternetProfile.package_id == Subscription.package_id)
        .where(Service.type == "internet", InternetProfile.usage_billing_enabled.is_(True),
               ServiceInstance.activated_at.is_not(None),
               Subscription.status.in_(BILLED_STATUSES))
        .order_by(ServiceInstance.id)).all()
    if not rows:
        return []
    defaults = drafting.settings(session)
    ended = {}
    for service, sub, profile in rows:
        current = usage_period(sub, defaults, today)
        last = usage_period(sub, defaults, current.start - dt.timedelta(days=1))
        if last.end > drafting.start_date(sub):  # not a period before the subscription
            ended[service.id] = (service, profile, last)
    done = set(session.execute(sa.select(UsageCharge.service_id, UsageCharge.period_start)
                               .where(among(UsageCharge.service_id, list(ended)))).tuples())
    todo = {sid: row for sid, row in ended.items() if (sid, row[2].start) not in done}
    by_period: dict[tuple[dt.date, dt.date], list[int]] = {}
    for sid, (_, _, period) in todo.items():
        by_period.setdefault((period.start, period.last_day), []).append(sid)
    totals = {}
    for (first, last_day), ids in by_period.items():
        totals |= period_totals(session, ids, first, last_day)
    charges = []
    for sid, (service, profile, period) in todo.items():
        used = used_units(profile, *totals.get(sid, (0, 0, 0)))
        included, price = _terms(profile, service)
        billed = max(Decimal(0), used - included)
        charges.append(UsageCharge(
            service_id=sid, period_start=period.start, period_end=period.last_day, used=used,
            included=included, billed_units=billed, unit_price=price,
            amount=(billed * price).quantize(PLACES)))
    session.add_all(charges)
    session.flush()
    return charges


@dataclass(frozen=True)
class PendingUsage:
    charge_id: int
    payer_id: int
    charge: Charge


def pending_usage(session: Session, owner_ids, payer_ids, accounts: dict[str, int]
                  ) -> list[PendingUsage]:
    """Rated usage not invoiced yet that lands on these payers (from their own subscriptions,
    `owner_ids` being the payers and the accounts billed to them), as invoice charges."""
    rows = session.execute(
        sa.select(UsageCharge, ServiceInstance.label, Subscription, InternetProfile)
        .join(ServiceInstance, ServiceInstance.id == UsageCharge.service_id)
        .join(Subscription, Subscription.id == ServiceInstance.subscription_id)
        .join(InternetProfile, InternetProfile.package_id == Subscription.package_id)
        .where(UsageCharge.invoice_id.is_(None), UsageCharge.amount > 0,
               sa.or_(among(Subscription.subscriber_id, list(owner_ids)),
                      among(Subscription.bill_to_subscriber_id, list(payer_ids))))
        .order_by(UsageCharge.id)).all()
    wanted, out = set(payer_ids), []
    for usage, label, sub, profile in rows:
        payer = drafting.bill_to(sub)
        if payer not in wanted:
            continue
        unit = "hours" if profile.usage_billing_basis == "hours" else profile.usage_billing_basis
        shown = (f": {usage.used.normalize():f} {unit} used, {usage.included.normalize():f} "
                 f"included") if profile.usage_show_on_invoice else ""
        out.append(PendingUsage(usage.id, payer, Charge(
            kind="usage", description=f"{label} usage {usage.period_start:%b %d} - "
                                      f"{usage.period_end:%b %d, %Y}{shown}",
            quantity=usage.billed_units, unit_price=usage.unit_price,
            amount=usage.amount, income_account_id=accounts[drafting.DEFAULT_INCOME],
            taxable=True, subscription_id=sub.id, for_subscriber_id=sub.subscriber_id,
            period=None, explanation="Usage over the included amount, in arrears")))
    return out


def mark_invoiced(session: Session, invoiced: dict[int, int]) -> set[int]:
    """Claim each usage charge (id -> invoice) unless another invoice took it meanwhile;
    returns the ids claimed."""
    claimed = set()
    for charge_id, invoice_id in invoiced.items():
        done = session.execute(
            sa.update(UsageCharge)
            .where(UsageCharge.id == charge_id, UsageCharge.invoice_id.is_(None))
            .values(invoice_id=invoice_id).execution_options(synchronize_session=False))
        if done.rowcount:
            claimed.add(charge_id)
    return claimed


def release(session: Session, invoice_id: int) -> None:
    """A voided invoice gives its usage back, for the next invoice to carry."""
    session.execute(sa.update(UsageCharge).where(UsageCharge.invoice_id == invoice_id)
                    .values(invoice_id=None).execution_options(synchronize_session=False))
