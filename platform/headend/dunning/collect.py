"""The daily collections job: bad-debt write-offs, late and re-billing fees, upcoming-suspension
notices and suspensions, for the acting tenant on a date.

A pure function of the database and the date. Candidates come from one set-based query per
step (never a query per subscriber), and every effect has a unique key - a WriteOff per
archive, an AppliedFee per invoice and kind, a Notice key per subscriber and day - claimed
before the work, inside a savepoint: a rerun, or a second run at once (PostgreSQL makes it wait
on the key and then skip), does each thing once.

The sequence for an invoice left unpaid (tenant defaults; a subscriber may override the grace
days and amount, be exempt from suspension or from fees):
- due date: autopay charges it (`headend.dunning.autopay`, retried on its own schedule);
- `late_fee_days` after the due date: a late fee invoice (fixed, or a percent of the balance
  due capped by `late_fee_max`), and `rebill_fee_days` after it a fixed re-billing fee;
- `grace_days - suspension_notice_days + 1` after it: an "upcoming_suspension" notice;
- more than `grace_days` after it: suspension, unless what is overdue is within the grace
  amount.
A live promise to pay ("late_fee" or "suspend" ScheduledAction) defers that step to its date.

Write-off: an archived subscriber whose balance is positive and at most `writeoff_threshold`,
`writeoff_days` after the archive, has the balance moved to bad-debt expense (Dr 6000, Cr 1200
for the subscriber). Their open invoices become "written_off": they stop counting as overdue
and in the aging; their `amount_paid` is left as it was (what was really paid), and the ledger
carries the write-off. A payment that arrives later is account credit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from headend.billing import drafting
from headend.billing.defaults import invoice_defaults
from headend.billing.invoicing import post_invoice
from headend.billing.models import Invoice, InvoiceLine
from headend.catalog.models import Account
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.dunning.models import (
    AppliedFee,
    CollectionSettings,
    Notice,
    SubscriberCollection,
    WriteOff,
)
from headend.dunning.services import (
    OPEN_STATUSES,
    collection_settings,
    deferred,
    rules_for,
    suspend,
)
from headend.errors import ValidationFailed
from headend.ledger.models import Leg
from headend.ledger.services import LegSpec, post_entry
from headend.money import format_money, from_minor, to_minor
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant

LATE_FEE_INCOME, SERVICE_FEE_INCOME, BAD_DEBT = "4500", "4700", "6000"
FEE_ACCOUNTS = {"late_fee": LATE_FEE_INCOME, "rebill_fee": SERVICE_FEE_INCOME}
FEE_LABELS = {"late_fee": "Late fee", "rebill_fee": "Re-billing fee"}


@dataclass
class CollectionsRun:
    """What the job did (or, dry, would do) for one tenant on one day."""

    tenant_id: int
    slug: str
    currency: str
    day: dt.date
    write_offs: int = 0
    written_off: int = 0  # minor units
    late_fees: int = 0
    rebill_fees: int = 0
    fees_total: int = 0  # minor units (a dry run counts fees but prices them too)
    notices: int = 0
    suspended: list[int] = field(default_factory=list)

    def describe(self) -> str:
        written_off, fees = (format_money(m, self.currency)
                             for m in (self.written_off, self.fees_total))
        return (f"{self.slug} {self.day}: {self.write_offs} write-offs "
                f"({written_off}), {self.late_fees} late fees, "
                f"{self.rebill_fees} re-billing fees ({fees}), "
                f"{self.notices} upcoming-suspension notices, "
                f"{len(self.suspended)} suspensions")


# --- write-off --------------------------------------------------------------------------------

def writeoff_candidates(session: Session, settings: CollectionSettings, today: dt.date,
                        currency: str) -> list[tuple[int, dt.date, int]]:
    """(subscriber, archived_on, balance) of archived subscribers due a write-off."""
    if not settings.writeoff_enabled or settings.writeoff_threshold is None:
        return []
    threshold = to_minor(settings.writeoff_threshold, currency)
    balance = sa.func.sum(Leg.debit - Leg.credit)
    cutoff = today - dt.timedelta(days=settings.writeoff_days)
    stmt = (sa.select(SubscriberCollection.subscriber_id, SubscriberCollection.archived_on,
                      balance)
            .join(Subscriber, Subscriber.id == SubscriberCollection.subscriber_id)
            .join(Leg, Leg.subscriber_id == SubscriberCollection.subscriber_id)
            .join(Account, Account.id == Leg.account_id)
            .where(Subscriber.status == "archived", SubscriberCollection.archived_on <= cutoff,
                   Account.code == ACCOUNTS_RECEIVABLE,
                   ~sa.select(WriteOff.id).where(
                       WriteOff.subscriber_id == SubscriberCollection.subscriber_id,
                       WriteOff.archived_on == SubscriberCollection.archived_on).exists())
            .group_by(SubscriberCollection.subscriber_id, SubscriberCollection.archived_on)
            .having(balance > 0, balance <= threshold)
            .order_by(SubscriberCollection.subscriber_id))
    return [(s, a, int(b)) for s, a, b in session.execute(stmt)]


def write_off(session: Session, subscriber_id: int, archived_on: dt.date, amount: int,
              today: dt.date) -> WriteOff | None:
    """Move `amount` of the subscriber's receivable to bad-debt expense, once per archive
    (None: already written off, by this run or a concurrent one)."""
    try:
        with session.begin_nested():
            row = WriteOff(subscriber_id=subscriber_id, archived_on=archived_on, amount=amount,
                           written_on=today)
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    entry = post_entry(
        session, key=f"write_off:{row.id}", entry_date=today, source_type="write_off",
        source_id=row.id,
        description=f"Bad debt written off (account archived {archived_on:%Y-%m-%d})",
        legs=[LegSpec(account_code=BAD_DEBT, debit=amount),
              LegSpec(account_code=ACCOUNTS_RECEIVABLE, credit=amount,
                      subscriber_id=subscriber_id)])
    row.posted_entry_id = entry.id
    for invoice in session.scalars(sa.select(Invoice).where(
            Invoice.subscriber_id == subscriber_id, Invoice.status.in_(OPEN_STATUSES))):
        invoice.status = "written_off"
    session.flush()
    return row


# --- fees -------------------------------------------------------------------------------------

def fee_amount(settings: CollectionSettings, kind: str, balance_due: int, currency: str) -> int:
    """The fee in minor units: fixed, or (late fee, percent) the balance due times the rate,
    rounded half-up, capped by `late_fee_max`."""
    if kind == "rebill_fee":
        return to_minor(settings.rebill_fee_amount or Decimal(0), currency)
    amount = settings.late_fee_amount or Decimal(0)
    if settings.late_fee_kind == "fixed":
        return to_minor(amount, currency)
    fee = to_minor(from_minor(balance_due, currency) * amount / 100, currency)
    if settings.late_fee_max is not None:
        fee = min(fee, to_minor(settings.late_fee_max, currency))
    return fee


def _fee_days(settings: CollectionSettings, kind: str) -> int | None:
    if kind == "late_fee":
        return settings.late_fee_days if settings.late_fee_amount else None
    return settings.rebill_fee_days if settings.rebill_fee_amount else None


def fee_candidates(session: Session, settings: CollectionSettings, kind: str,
                   today: dt.date) -> list[tuple[int, int, str | None, int]]:
    """(invoice, subscriber, number, balance due) of unpaid invoices due a fee of `kind`.

    Fee invoices themselves never draw fees; `no_late_fees` subscribers and those with a live
    "late_fee" promise to pay are skipped (both fees)."""
    days = _fee_days(settings, kind)
    if days is None:
        return []
    exempt = sa.select(SubscriberCollection.id).where(
        SubscriberCollection.subscriber_id == Invoice.subscriber_id,
        SubscriberCollection.no_late_fees.is_(True)).exists()
    stmt = (sa.select(Invoice.id, Invoice.subscriber_id, Invoice.number,
                      Invoice.total - Invoice.amount_paid)
            .where(Invoice.status.in_(OPEN_STATUSES),
                   Invoice.due_date <= today - dt.timedelta(days=days),
                   Invoice.source.not_in(tuple(FEE_ACCOUNTS)),
                   Invoice.total > Invoice.amount_paid,
                   ~sa.select(AppliedFee.id).where(AppliedFee.invoice_id == Invoice.id,
                                                   AppliedFee.kind == kind).exists(),
                   ~exempt, ~deferred("late_fee", today, Invoice.subscriber_id))
            .order_by(Invoice.id))
    return [(i, s, n, int(b)) for i, s, n, b in session.execute(stmt)]


def apply_fee(session: Session, settings: CollectionSettings, kind: str, invoice_id: int,
              subscriber_id: int, number: str | None, balance_due: int,
              today: dt.date) -> AppliedFee | None:
    """Charge the fee of `kind` for an overdue invoice as its own posted invoice (one line,
    dated today, not taxable), once: the AppliedFee claim comes first, so a concurrent run
    waits on it and then gives up before numbering anything. None: nothing to charge or
    already charged."""
    currency = drafting.currency(session)
    amount = fee_amount(settings, kind, balance_due, currency)
    if amount <= 0:
        return None
    try:
        with session.begin_nested():
            row = AppliedFee(invoice_id=invoice_id, kind=kind, applied_on=today, amount=amount)
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    defaults = invoice_defaults(session)
    account = drafting.account_ids(session)[FEE_ACCOUNTS[kind]]
    label = FEE_LABELS[kind]
    rate = settings.late_fee_amount if kind == "late_fee" and \
        settings.late_fee_kind == "percent" else None
    explanation = None if rate is None else (
        f"{rate.normalize()} % of {format_money(balance_due, currency)} due"
        + (f", at most {format_money(to_minor(settings.late_fee_max, currency), currency)}"
           if settings.late_fee_max is not None else ""))
    invoice = Invoice(
        subscriber_id=subscriber_id, invoice_date=today,
        due_date=today + dt.timedelta(days=defaults.due_days), status="draft", source=kind,
        currency=currency, subtotal=amount, total=amount,
        lines=[InvoiceLine(position=1, kind="fee",
                           description=f"{label} for invoice {number or invoice_id}",
                           explanation=explanation, for_subscriber_id=subscriber_id,
                           quantity=Decimal(1), unit_price=from_minor(amount, currency),
                           amount=amount, income_account_id=account, taxable=False, tax=0)])
    session.add(invoice)
    session.flush()
    post_invoice(session, invoice)
    row.fee_invoice_id = invoice.id
    session.flush()
    return row


# --- suspensions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overdue:
    """A subscriber with overdue invoices, and what the job does next about it."""

    subscriber_id: int
    status: str
    oldest_due: dt.date
    overdue: int  # minor units
    days: int  # since the oldest due date
    next_action: str | None  # "suspend", or None (within grace amount, exempt, suspended)
    next_date: dt.date | None
    deferred_until: dt.date | None  # a promise to pay


def overdue_subscribers(session: Session, settings: CollectionSettings, today: dt.date,
                        *, limit: int | None = None) -> list[Overdue]:
    """Every subscriber owing an overdue invoice, most overdue first, in one query, with the
    day the job suspends them (grace days after the oldest due date, or a promise's date)."""
    from headend.dunning.models import ScheduledAction

    currency = drafting.currency(session)
    invoices = (sa.select(Invoice.subscriber_id.label("subscriber_id"),
                          sa.func.min(Invoice.due_date).label("oldest"),
                          sa.func.sum(Invoice.total - Invoice.amount_paid).label("overdue"))
                .where(Invoice.status.in_(OPEN_STATUSES), Invoice.due_date < today)
                .group_by(Invoice.subscriber_id).subquery())
    promise = (sa.select(sa.func.max(ScheduledAction.not_before))
               .where(ScheduledAction.subscriber_id == Subscriber.id,
                      ScheduledAction.action == "suspend",
                      ScheduledAction.not_before > today,
                      ScheduledAction.cancelled_at.is_(None))
               .correlate(Subscriber).scalar_subquery())
    stmt = (sa.select(Subscriber.id, Subscriber.status, invoices.c.oldest, invoices.c.overdue,
                      SubscriberCollection, promise)
            .join(invoices, invoices.c.subscriber_id == Subscriber.id)
            .outerjoin(SubscriberCollection,
                       SubscriberCollection.subscriber_id == Subscriber.id)
            .where(invoices.c.overdue > 0)
            .order_by(invoices.c.overdue.desc(), Subscriber.id))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = []
    for sub_id, status, oldest, overdue, overrides, promised in session.execute(stmt):
        overdue = int(overdue)
        rules = rules_for(settings, overrides, currency)
        action = date = None
        if status == "active" and settings.auto_suspend and not rules.never_suspend \
                and overdue > rules.grace_amount:
            action = "suspend"
            date = oldest + dt.timedelta(days=rules.grace_days + 1)
            if promised is not None:
                date = max(date, promised)
        rows.append(Overdue(sub_id, status, oldest, overdue, (today - oldest).days, action,
                            date, promised))
    return rows


def _upcoming_notice(session: Session, row: Overdue, currency: str) -> bool:
    try:
        with session.begin_nested():
            session.add(Notice(
                kind="upcoming_suspension",
                key=f"upcoming_suspension:{row.subscriber_id}:{row.next_date}",
                subscriber_id=row.subscriber_id, message=(
                    f"{format_money(row.overdue, currency)} is overdue: service will be "
                    f"suspended on {row.next_date:%Y-%m-%d} unless it is paid.")))
            session.flush()
    except IntegrityError:
        return False
    return True


# --- the run ----------------------------------------------------------------------------------

def run_collections(session: Session, today: dt.date, *, dry_run: bool = False,
                    progress: Callable[[int], None] | None = None,
                    after_step: Callable[[], None] | None = None) -> CollectionsRun:
    """The acting tenant's collections for `today`: write-offs, late fees, re-billing fees,
    upcoming-suspension notices, suspensions - in that order. `after_step` runs after each
    effect (the job commits there, so a crash keeps what was done); `progress(n)` hears how
    many candidates were just handled. A dry run finds and prices the same work and writes
    nothing."""
    tenant = session.get(Tenant, _tenant_id(session))
    result = CollectionsRun(tenant.id, tenant.slug, tenant.currency, today)
    settings = collection_settings(session)
    step = after_step or (lambda: None)
    tick = progress or (lambda n: None)

    for subscriber_id, archived_on, balance in writeoff_candidates(
            session, settings, today, tenant.currency):
        if dry_run or write_off(session, subscriber_id, archived_on, balance, today):
            result.write_offs += 1
            result.written_off += balance
            step()
        tick(1)

    for kind in ("late_fee", "rebill_fee"):
        for invoice_id, subscriber_id, number, balance in fee_candidates(
                session, settings, kind, today):
            amount = fee_amount(settings, kind, balance, tenant.currency)
            if amount > 0 and (dry_run or apply_fee(session, settings, kind, invoice_id,
                                                    subscriber_id, number, balance, today)):
                setattr(result, f"{kind}s", getattr(result, f"{kind}s") + 1)
                result.fees_total += amount
                step()
            tick(1)

    rows = overdue_subscribers(session, settings, today)
    due = [r for r in rows if r.next_action == "suspend" and r.next_date <= today]
    upcoming = [r for r in rows if r.next_action == "suspend" and r.next_date > today
                and (r.next_date - today).days <= settings.suspension_notice_days]
    for row in upcoming:
        if dry_run or _upcoming_notice(session, row, tenant.currency):
            result.notices += 1
            step()
        tick(1)
    subscribers = {s.id: s for s in session.scalars(
        sa.select(Subscriber).where(Subscriber.id.in_([r.subscriber_id for r in due]))
        .options(selectinload(Subscriber.subscriptions)))} if due and not dry_run else {}
    for row in due:
        if dry_run or suspend(session, subscribers[row.subscriber_id], today, row.overdue):
            result.suspended.append(row.subscriber_id)
            step()
        tick(1)
    return result


def _tenant_id(session: Session) -> int:
    from headend.tenancy.context import current_scope

    tenant_id = current_scope().tenant_id
    if tenant_id is None:
        raise ValidationFailed({"tenant": "choose a tenant to run collections for"})
    return tenant_id


def tenants(session: Session, tenant_slug: str | None = None) -> list[tuple[int, str]]:
    """The active tenants (or the one named) the collections job runs for."""
    with acting_as(None):
        rows = session.execute(
            sa.select(Tenant.id, Tenant.slug).where(
                Tenant.active.is_(True), *([Tenant.slug == tenant_slug] if tenant_slug else []))
            .order_by(Tenant.id)).all()
    if tenant_slug and not rows:
        raise ValidationFailed({"tenant": f"no active tenant {tenant_slug!r}"})
    return [tuple(r) for r in rows]


def count_candidates(session: Session, today: dt.date, tenant_id: int) -> int:
    """How many candidates the run for one tenant looks at (a progress bar's length)."""
    with acting_as(tenant_id):
        settings = collection_settings(session)
        currency = drafting.currency(session)
        rows = overdue_subscribers(session, settings, today)
        total = len(writeoff_candidates(session, settings, today, currency)) + sum(
            len(fee_candidates(session, settings, k, today)) for k in FEE_ACCOUNTS) + sum(
            1 for r in rows if r.next_action == "suspend"
            and (r.next_date - today).days <= settings.suspension_notice_days)
    return total
