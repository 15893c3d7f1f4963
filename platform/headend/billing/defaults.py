"""Invoice Defaults: how a tenant invoices (one row per tenant, created with defaults on first use)
and their validation, in plain Python so the form, the API and the billing run share one rule set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from headend.billing import periods, proration
from headend.billing.models import (
    BILLING_MODES,
    DOWNGRADE_POLICIES,
    PRORATION_BASES,
    TAX_ROUNDINGS,
    BilledPeriod,
    Invoice,
    InvoiceDefaults,
    InvoiceLine,
)
from headend.billing.periods import Period
from headend.billing.proration import ProratedLine
from headend.catalog.models import CYCLES
from headend.errors import raise_if, require
from headend.money import to_minor
from headend.subscribers.models import SUBSCRIPTION_STATUSES
from headend.subscribers.services import unit_price

MAX_DAYS_IN_ADVANCE = 90
MAX_DUE_DAYS = 365


def invoice_defaults(session: Session) -> InvoiceDefaults:
    """The acting tenant's defaults; the first call creates the row (race-safe: the unique key
    on tenant_id decides, the loser reads the winner's row)."""
    row = session.scalar(select(InvoiceDefaults))
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = InvoiceDefaults()
            session.add(row)
    except IntegrityError:
        row = session.scalar(select(InvoiceDefaults))
    return row


def _format_ok(number_format: str | None) -> bool:
    if not number_format or "{seq" not in number_format:
        return False
    try:
        text = number_format.format(year=2026, month=1, seq=1)
    except (KeyError, IndexError, ValueError):
        return False
    return 0 < len(text) <= 40


def _tax_engines() -> set[str] | None:
    """The installed tax engines, or None outside an app (nothing to check against)."""
    from flask import has_app_context

    if not has_app_context():
        return None
    from headend.plugins.manager import current_manager

    return {p.plugin_id for p in current_manager().of_kind("tax_engine")}


def validate_invoice_defaults(session: Session, row: InvoiceDefaults) -> None:
    """Every field of Invoice Defaults in range; errors name the field."""
    errors: dict[str, list[str]] = {}
    require(errors, "billing_mode", row.billing_mode in BILLING_MODES,
            f"must be one of: {', '.join(BILLING_MODES)}")
    require(errors, "bill_day", row.bill_day is not None and 1 <= row.bill_day <= 28,
            "must be between 1 and 28")
    require(errors, "days_in_advance", row.days_in_advance is not None
            and 0 <= row.days_in_advance <= MAX_DAYS_IN_ADVANCE,
            f"must be between 0 and {MAX_DAYS_IN_ADVANCE}")
    require(errors, "due_days", row.due_days is not None and 0 <= row.due_days <= MAX_DUE_DAYS,
            f"must be between 0 and {MAX_DUE_DAYS}")
    require(errors, "proration_basis", row.proration_basis in PRORATION_BASES,
            f"must be one of: {', '.join(PRORATION_BASES)}")
    require(errors, "downgrade_policy", row.downgrade_policy in DOWNGRADE_POLICIES,
            f"must be one of: {', '.join(DOWNGRADE_POLICIES)}")
    require(errors, "tax_rounding", row.tax_rounding in TAX_ROUNDINGS,
            f"must be one of: {', '.join(TAX_ROUNDINGS)}")
    engines = _tax_engines()
    require(errors, "tax_engine", bool(row.tax_engine) and (
        engines is None or row.tax_engine in engines),
        f"must be an installed tax engine{': ' + ', '.join(sorted(engines)) if engines else ''}")
    require(errors, "number_format", _format_ok(row.number_format),
            "must contain {seq} and may use {year} and {month}, e.g. INV-{year}-{seq:06d}")
    statuses = [s.strip() for s in (row.invoiced_statuses or "").split(",") if s.strip()]
    require(errors, "invoiced_statuses",
            bool(statuses) and all(s in SUBSCRIPTION_STATUSES for s in statuses),
            f"must be a comma-separated list of: {', '.join(SUBSCRIPTION_STATUSES)}")
    require(errors, "paper_invoice_fee", row.paper_invoice_fee is None or (
        isinstance(row.paper_invoice_fee, Decimal) and row.paper_invoice_fee >= 0),
        "cannot be negative")
    raise_if(errors)


def update_invoice_defaults(session: Session, **values) -> InvoiceDefaults:
    """Change the acting tenant's defaults; nothing changes when a value is refused."""
    row = invoice_defaults(session)
    before = {k: getattr(row, k) for k in values}
    for name, value in values.items():
        if not hasattr(InvoiceDefaults, name) or name in ("id", "tenant_id"):
            raise_if({name: ["is not an invoice default"]})
        setattr(row, name, value)
    try:
        with session.no_autoflush:
            validate_invoice_defaults(session, row)
    except Exception:
        for name, value in before.items():
            setattr(row, name, value)
        raise
    session.flush()
    return row


# --- Update Billing Cycle ---------------------------------------------------------------------

@dataclass(frozen=True)
class CycleChange:
    """What moving a subscriber to another cycle / bill day costs: per subscription, a credit for
    the unused part of the billed period and a charge up to the new bill day."""

    lines: list[tuple[int, ProratedLine]]  # (subscription id, line)
    invoices: list  # the posted invoices when applied


def update_billing_cycle(session: Session, subscriber_id: int, cycle: str, bill_day: int,
                         change_date: dt.date, *, apply: bool = False) -> CycleChange:
    """Preview (or apply) a change of the subscriber's billing cycle and bill day.

    Applying sets the cycle and bill day on the subscriber and its billed subscriptions, posts
    one invoice per bill-to account with the prorated credit and charge, and records the new
    first period as billed so later periods start on the new bill day.
    """
    from headend.billing import drafting, invoicing

    subscriber = invoicing._subscriber(session, subscriber_id)
    errors: dict[str, list[str]] = {}
    require(errors, "billing_cycle", cycle in CYCLES, f"must be one of: {', '.join(CYCLES)}")
    require(errors, "bill_day", isinstance(bill_day, int) and 1 <= bill_day <= 28,
            "must be between 1 and 28")
    require(errors, "change_date", isinstance(change_date, dt.date), "must be a date")
    raise_if(errors)
    defaults = invoice_defaults(session)
    basis = "actual" if defaults.proration_basis == "actual_days" else defaults.proration_basis
    subscriptions = [s for s in subscriber.subscriptions if drafting.invoiceable(s, defaults)]
    for sub in subscriptions:
        require(errors, "billing_cycle", cycle in sub.package.offered_cycles(),
                f"{sub.package.name} is not offered {cycle}")
    raise_if(errors)
    lines, by_payer = [], {}
    for sub in subscriptions:
        current = _billed_period_on(session, sub.id, change_date)
        if current is None:
            continue
        old = unit_price(sub.package, sub.billing_cycle, sub.custom_price) * sub.quantity
        new = unit_price(sub.package, cycle, sub.custom_price) * sub.quantity
        pieces = proration.cycle_change(
            sub.billing_cycle, old, cycle, new, Period(current.period_start, current.period_end),
            change_date, bill_day, label=sub.package.name, basis=basis)
        lines += [(sub.id, piece) for piece in pieces]
        by_payer.setdefault(drafting.bill_to(sub), []).append((sub, pieces))
    if not apply:
        return CycleChange(lines, [])
    subscriber.billing_cycle, subscriber.bill_day = cycle, bill_day
    for sub in subscriptions:
        sub.billing_cycle, sub.bill_day = cycle, bill_day
    invoices = [_cycle_change_invoice(session, payer_id, entries, cycle, bill_day, change_date)
                for payer_id, entries in by_payer.items()]
    session.flush()
    return CycleChange(lines, invoices)


def _billed_period_on(session: Session, subscription_id: int, day: dt.date):
    return session.scalar(select(BilledPeriod).where(
        BilledPeriod.subscription_id == subscription_id, BilledPeriod.period_start <= day,
        BilledPeriod.period_end > day).order_by(BilledPeriod.period_start.desc()).limit(1))


def _cycle_change_invoice(session, payer_id, entries, cycle, bill_day, change_date):
    from headend.billing import drafting, invoicing

    accounts = drafting.account_ids(session)
    currency = drafting.currency(session)
    defaults = invoice_defaults(session)
    invoice = Invoice(subscriber_id=payer_id, invoice_date=change_date,
                      due_date=change_date + dt.timedelta(days=defaults.due_days),
                      status="draft", source="manual", currency=currency,
                      memo=f"Billing cycle changed to {cycle}, bill day {bill_day}")
    position = 0
    for sub, pieces in entries:
        snap = drafting.snapshot(sub, sub.package, accounts, False)
        for piece in pieces:
            position += 1
            invoice.lines.append(InvoiceLine(
                position=position, kind="proration", description=piece.description[:255],
                explanation=piece.explanation, subscription_id=sub.id,
                for_subscriber_id=sub.subscriber_id, period_start=piece.period.start,
                period_end=piece.period.end, quantity=Decimal(1), unit_price=piece.amount,
                amount=to_minor(piece.amount, currency),
                income_account_id=snap.income_account_id, taxable=snap.taxable, tax=0))
    session.add(invoice)
    session.flush()
    first, _full = periods.first_period(change_date, cycle, "fixed", bill_day)
    for sub, _ in entries:
        # Changing on the first day of the billed period restarts that very period.
        same_start = session.scalar(select(BilledPeriod).where(
            BilledPeriod.subscription_id == sub.id, BilledPeriod.period_start == first.start))
        if same_start is not None:
            same_start.period_end, same_start.invoice_id = first.end, invoice.id
        else:
            session.add(BilledPeriod(subscription_id=sub.id, period_start=first.start,
                                     period_end=first.end, invoice_id=invoice.id))
    invoice.subtotal = sum(line.amount for line in invoice.lines)
    invoice.total = invoice.subtotal
    session.flush()
    return invoicing.post_invoice(session, invoice)
