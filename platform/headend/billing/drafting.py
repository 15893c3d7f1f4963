"""What a subscriber owes as of a date: due periods, subscription snapshots and the lines of the
next invoice. Reads only; `invoicing` writes what this computes, `billing_preview` shows it.

Rules (documented choices):
- A subscription is invoiced when its status is one of Invoice Defaults' statuses; when it is
  HIBERNATING (its periods are still billed, so `charges_for` credits the hibernated days and
  charges the fee, and resuming does not back-bill the months on hold); or when it is
  PENDING with a bill start date: the bill start date is when billing begins, whether or not
  it was activated yet (adding "Triple Play" with a bill start date and clicking Invoice Now bills
  it). A pending subscription without a bill start date is not billed.
- Periods follow on from the last billed one (the BilledPeriod with the latest start), so a
  cycle change re-anchors later periods; the first period comes from the bill start date (or the
  creation date), partial when a bill day is set and the start is off it.
- A period is due when its invoice date (start - days in advance) is on or before the date.
  Invoice Now and the billing run bill exactly the due periods, so a second Invoice Now in the
  same period finds nothing due.
- Who pays: the subscription's bill-to account, else the parent when the subscriber bills all to
  its parent (followed up the chain), else the subscriber.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from headend.billing import periods
from headend.billing.charges import Charge, InclusionSnapshot, SubscriptionSnapshot, charges_for
from headend.billing.models import BilledPeriod, InvoiceDefaults, RecurringLine
from headend.billing.taxes import TaxSettings
from headend.catalog.models import Account, Item, Package
from headend.subscribers.models import Subscriber, Subscription
from headend.subscribers.services import unit_price
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant

# Chart codes used when an item or package names no income account of its own.
SERVICE_INCOME = {"internet": "4000", "tv": "4100", "voip": "4200"}
ITEM_INCOME = {"equipment": "4300", "fee": "4700", "discount": "4900"}
DEFAULT_INCOME, SETUP_INCOME, FEE_INCOME, DISCOUNTS = "4000", "4400", "4700", "4900"
MAX_PERIODS_PER_CALL = 24  # catching up on a long-unbilled subscription, bounded


@dataclass(frozen=True)
class DueCharges:
    """The lines of one subscriber's next invoice and the periods they bill."""

    subscriber_id: int
    invoice_date: dt.date
    due_date: dt.date
    currency: str
    charges: list[Charge] = field(default_factory=list)
    periods: list[tuple[int, periods.Period]] = field(default_factory=list)  # (subscription, p)
    usage: dict[int, Charge] = field(default_factory=dict)  # UsageCharge id -> its line


def settings(session: Session) -> InvoiceDefaults:
    """The tenant's defaults without writing: the stored row, or an unsaved one with defaults."""
    row = session.scalar(select(InvoiceDefaults))
    if row is not None:
        return row
    values = {c.key: c.default.arg for c in InvoiceDefaults.__table__.columns
              if c.default is not None and not callable(c.default.arg)}
    return InvoiceDefaults(**values)


def currency(session: Session) -> str:
    tenant = session.get(Tenant, current_scope().tenant_id or 0)
    return tenant.currency if tenant else "USD"


def account_ids(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Account.code, Account.id)).tuples().all())


def payer_of(subscriber: Subscriber) -> Subscriber:
    seen = set()
    while subscriber.bill_all_to_parent and subscriber.parent is not None \
            and subscriber.id not in seen:
        seen.add(subscriber.id)
        subscriber = subscriber.parent
    return subscriber


def bill_to(subscription: Subscription) -> int:
    return subscription.bill_to_subscriber_id or payer_of(subscription.subscriber).id


def _invoiced_statuses(defaults: InvoiceDefaults) -> tuple[str, ...]:
    # Hibernating subscriptions are billed: the period's credit and the hibernation fee.
    return (*defaults.statuses(), "hibernating")


def invoiceable(subscription: Subscription, defaults: InvoiceDefaults) -> bool:
    if subscription.status in _invoiced_statuses(defaults):
        return True
    return subscription.status == "pending" and subscription.bill_start_date is not None


def invoiceable_clause(defaults: InvoiceDefaults):
    """`invoiceable` as SQL, for the billing run's set-based selection."""
    return or_(Subscription.status.in_(_invoiced_statuses(defaults)),
               and_(Subscription.status == "pending", Subscription.bill_start_date.is_not(None)))


def subscriptions_billed_to(session: Session, payer_id: int) -> list[Subscription]:
    """Every subscription whose charges land on `payer_id`'s invoice."""
    children = select(Subscriber.id).where(Subscriber.parent_id == payer_id,
                                           Subscriber.bill_all_to_parent.is_(True))
    grandchildren = select(Subscriber.id).where(Subscriber.parent_id.in_(children),
                                                Subscriber.bill_all_to_parent.is_(True))
    rows = session.scalars(select(Subscription).where(or_(
        Subscription.bill_to_subscriber_id == payer_id,
        Subscription.subscriber_id == payer_id,
        Subscription.subscriber_id.in_(children),
        Subscription.subscriber_id.in_(grandchildren),
    )).order_by(Subscription.subscriber_id, Subscription.id))
    return [s for s in rows if bill_to(s) == payer_id]


def last_billed(session: Session, subscription_ids: Iterable[int]) -> dict[int, BilledPeriod]:
    """Per subscription, its billed period with the latest start."""
    ids = list(subscription_ids)
    if not ids:
        return {}
    latest = (select(BilledPeriod.subscription_id, func.max(BilledPeriod.period_start))
              .where(BilledPeriod.subscription_id.in_(ids))
              .group_by(BilledPeriod.subscription_id).subquery())
    rows = session.scalars(select(BilledPeriod).join(latest, (
        BilledPeriod.subscription_id == latest.c[0]) & (BilledPeriod.period_start == latest.c[1])))
    return {row.subscription_id: row for row in rows}


def start_date(subscription: Subscription) -> dt.date:
    return subscription.bill_start_date or subscription.created_at.date()


def period_day(subscription: Subscription, defaults: InvoiceDefaults) -> int | None:
    """The day of month periods start on: the subscription's bill day, the tenant's fixed day,
    or (anniversary) the start date's day, so a 31st never drifts to the 28th."""
    if subscription.bill_day:
        return subscription.bill_day
    if defaults.billing_mode == "fixed":
        return defaults.bill_day
    return start_date(subscription).day


def next_period(subscription: Subscription, defaults: InvoiceDefaults,
                last: BilledPeriod | None) -> tuple[periods.Period, periods.Period]:
    """The next unbilled period of `subscription` and the full period it belongs to."""
    cycle, day = subscription.billing_cycle, period_day(subscription, defaults)
    if last is not None:
        full = periods.period_containing(last.period_end, cycle, last.period_end, day=day)
        return full, full
    start = start_date(subscription)
    if subscription.bill_day or defaults.billing_mode == "fixed":
        return periods.first_period(start, cycle, "fixed", day)
    full = periods.period_containing(start, cycle, start)
    return full, full


def is_due(period: periods.Period, subscription: Subscription, defaults: InvoiceDefaults,
           on_date: dt.date) -> bool:
    if subscription.cancel_on is not None and period.start >= subscription.cancel_on:
        return False
    return periods.invoice_date_for(period, defaults.days_in_advance) <= on_date


def snapshot(subscription: Subscription, package: Package, accounts: dict[str, int],
             first_invoice: bool) -> SubscriptionSnapshot:
    lines = package.service_lines
    service_code = SERVICE_INCOME.get(lines[0].service.type, DEFAULT_INCOME) if lines \
        else DEFAULT_INCOME
    return SubscriptionSnapshot(
        subscription_id=subscription.id, subscriber_id=subscription.subscriber_id,
        bill_to_subscriber_id=bill_to(subscription), package_name=package.name,
        cycle=subscription.billing_cycle, quantity=subscription.quantity,
        unit_price=unit_price(package, subscription.billing_cycle, subscription.custom_price),
        setup_fee=package.setup_fee, first_invoice=first_invoice,
        bill_start_date=start_date(subscription), income_account_id=accounts[service_code],
        setup_income_account_id=accounts[SETUP_INCOME],
        taxable=TaxSettings.for_charge(subscription, package).taxed,
        exclude_from_invoicing=package.exclude_from_invoicing,
        hibernate_from=subscription.hibernate_from, hibernate_until=subscription.hibernate_until,
        hibernation_fee=package.hibernation_fee,
        inclusions=tuple(
            InclusionSnapshot(inc.item_id, inc.item.name, inc.quantity, inc.recurring_price,
                              item_account(inc.item, accounts), inc.item.taxable)
            for inc in package.inclusions),
    )


def package_for(session: Session, subscription: Subscription, period_start: dt.date) -> Package:
    """The package that bills the period starting on `period_start`: a deferred downgrade's
    scheduled package from its date on (`changes.apply_schedule` makes it current)."""
    if subscription.scheduled_package_id is not None and \
            subscription.scheduled_change_on is not None and \
            period_start >= subscription.scheduled_change_on:
        return session.get(Package, subscription.scheduled_package_id)
    return subscription.package


def item_account(item: Item | None, accounts: dict[str, int], kind: str = "item") -> int:
    if item is not None and item.income_account_id:
        return item.income_account_id
    code = ITEM_INCOME.get(item.type if item is not None else kind, DEFAULT_INCOME)
    return accounts[code]


def _subscription_charges(session, defaults, subscriptions, on_date, accounts):
    charges, billed = [], []
    last = last_billed(session, [s.id for s in subscriptions])
    for sub in subscriptions:
        if not invoiceable(sub, defaults):
            continue
        previous, first = last.get(sub.id), sub.id not in last
        for _ in range(MAX_PERIODS_PER_CALL):
            period, full = next_period(sub, defaults, previous)
            if not is_due(period, sub, defaults, on_date):
                break
            snap = snapshot(sub, package_for(session, sub, period.start), accounts, first)
            charges += charges_for(snap, period if defaults.prorate_first_period else full,
                                   full, proration_basis=defaults.proration_basis)
            billed.append((sub.id, period))
            previous = BilledPeriod(subscription_id=sub.id, period_start=period.start,
                                    period_end=period.end)
            first = False
    return charges, billed


def recurring_charges(session: Session, payer_id: int, on_date: dt.date,
                      accounts: dict[str, int]) -> list[Charge]:
    """Active custom recurring lines (charges and discounts) that land on `payer_id`."""
    rows = session.scalars(select(RecurringLine).where(
        RecurringLine.start_date <= on_date,
        or_(RecurringLine.end_date.is_(None), RecurringLine.end_date > on_date),
    ).order_by(RecurringLine.id))
    charges = []
    for row in rows:
        if (row.bill_to_subscriber_id or payer_of(row.subscriber).id) != payer_id:
            continue
        charges.append(recurring_charge(row, accounts))
    return charges


def recurring_charge(row: RecurringLine, accounts) -> Charge:
    """A custom recurring line as this period's charge (a discount is negative and debits the
    discounts account); the one conversion Invoice Now and the billing run share."""
    discount = row.kind == "discount"
    amount = row.quantity * row.unit_price
    return Charge(
        kind="discount" if discount else "item", description=row.description,
        quantity=row.quantity, unit_price=row.unit_price,
        amount=-amount if discount else amount,
        income_account_id=accounts[DISCOUNTS] if discount else item_account(row.item, accounts),
        taxable=row.item.taxable if row.item else True, subscription_id=None,
        for_subscriber_id=row.subscriber_id, period=None,
        explanation="Recurring " + ("discount" if discount else "charge")
        + (f" until {row.end_date:%b %d, %Y}" if row.end_date else ""))


def paper_fee(defaults: InvoiceDefaults, payer: Subscriber,
              accounts: dict[str, int]) -> list[Charge]:
    item = defaults.paper_invoice_item
    price = defaults.paper_invoice_fee if defaults.paper_invoice_fee is not None \
        else (item.price if item is not None else None)
    if not payer.paper_invoice or not price:
        return []
    return [Charge(kind="fee", description=item.name if item else "Paper invoice fee",
                   quantity=Decimal(1), unit_price=price, amount=price,
                   income_account_id=item_account(item, accounts, "fee") if item
                   else accounts[FEE_INCOME],
                   taxable=item.taxable if item else False, subscription_id=None,
                   for_subscriber_id=payer.id, period=None,
                   explanation="The subscriber receives paper invoices")]


def cap_discounts(charges: list[Charge]) -> list[Charge]:
    """A recurring discount never takes an invoice below zero."""
    room = sum((c.amount for c in charges if c.kind != "discount"), Decimal(0))
    capped = []
    for charge in charges:
        if charge.kind == "discount":
            amount = max(charge.amount, -room)
            room += amount
            if amount == 0:
                continue
            if amount != charge.amount:
                charge = Charge(**{**charge.__dict__, "amount": amount,
                                   "explanation": f"{charge.explanation} (limited to the "
                                                  f"invoice's charges)"})
        capped.append(charge)
    return capped


def due_charges(session: Session, payer: Subscriber, on_date: dt.date,
                defaults: InvoiceDefaults | None = None) -> DueCharges:
    """Everything due on `payer`'s invoice as of `on_date`; empty when nothing is due."""
    defaults = defaults or settings(session)
    accounts = account_ids(session)
    charges, billed = _subscription_charges(
        session, defaults, subscriptions_billed_to(session, payer.id), on_date, accounts)
    usage = {}
    if billed:
        from headend.network.usage_billing import pending_usage  # network imports drafting

        charges += recurring_charges(session, payer.id, on_date, accounts)
        charges += paper_fee(defaults, payer, accounts)
        owners = {payer.id} | {s.subscriber_id for s in subscriptions_billed_to(session, payer.id)}
        usage = {u.charge_id: u.charge for u in pending_usage(session, owners, [payer.id],
                                                              accounts)}
        charges += usage.values()
    due = on_date + dt.timedelta(days=defaults.due_days)
    return DueCharges(payer.id, on_date, due, currency(session), cap_discounts(charges),
                      billed, usage)
