"""Subscription changes: package upgrade/downgrade, cancellation, hibernation and resume.

Plain Python; each call is one unit of work the caller commits (a refused call raises
ValidationFailed naming fields before anything is written). Billing is in advance, so the
"current period" is the subscription's last billed period and must contain the change date;
with nothing billed yet a change is just a switch (the first invoice bills the new package).

Rules (documented choices):
- Upgrade (new price >= old) is immediate: credit the unused rest of the old package, charge
  the new one for the rest (`proration.immediate_upgrade`), posted as one invoice dated the
  change date; a negative net (an immediate downgrade) is a credit memo instead. Taxes follow
  the invoice; a credit memo gives back the percent taxes of the lines it nets (never a flat
  tax: those are per billing cycle), see `memos.credit_memo`.
- Downgrade with policy "deferred": nothing now; `scheduled_package_id` takes over on the
  current period's end, applied when that period is billed (`apply_schedule`).
- A subscription with a custom price keeps its negotiated price only with its package: remove
  the custom price before changing the package. The cycle stays (Update Billing Cycle moves it).
- Cancellation and hibernation change the status when their date is today or past; a future
  date is stored (billing follows the dates: `cancel_on`, `hibernate_from/until`) and the daily
  job `apply_due_changes` changes the status on the day.
- Hibernated days of an already billed period are credited at once by a credit memo (the
  hibernation fee starts with the next billed period). Resuming before the hibernation's end
  charges back the credited days from the resume date on, by an invoice dated that day.
- A deferred downgrade can be called off (`cancel_scheduled_change`) until it takes over.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from headend.billing import drafting, proration
from headend.billing.invoicing import post_invoice
from headend.billing.memos import credit_memo
from headend.billing.models import BilledPeriod, Invoice, InvoiceLine, Memo
from headend.billing.periods import Period
from headend.catalog.models import Package
from headend.errors import ValidationFailed, raise_if, require
from headend.money import to_minor
from headend.subscribers.models import Subscription
from headend.subscribers.services import unit_price

CHANGEABLE = ("pending", "active", "hibernating", "suspended")


@dataclass
class Change:
    """What a change costs (`lines`, explained) or schedules, and what applying it wrote."""

    kind: str  # "upgrade" | "immediate_downgrade" | "deferred_downgrade" | "switch"
    old_price: Decimal
    new_price: Decimal
    lines: list[proration.ProratedLine] = field(default_factory=list)
    explanation: str = ""
    effective_date: dt.date | None = None
    invoice: Invoice | None = None
    memo: Memo | None = None

    def net(self, currency: str) -> int:
        return sum(line.amount for line in proration.to_minor_lines(self.lines, currency))


def _is_date(value) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _subscription(session: Session, subscription_id) -> Subscription:
    sub = session.scalar(select(Subscription).where(Subscription.id == subscription_id)) \
        if isinstance(subscription_id, int) and not isinstance(subscription_id, bool) else None
    if sub is None:
        raise ValidationFailed({"subscription": "does not exist"})
    return sub


def _last_billed(session: Session, sub: Subscription) -> BilledPeriod | None:
    return drafting.last_billed(session, [sub.id]).get(sub.id)


def _current_period(session: Session, sub: Subscription, day: dt.date, field_name: str
                    ) -> Period | None:
    """The last billed period, which must contain `day`; None when nothing is billed yet."""
    last = _last_billed(session, sub)
    if last is None:
        return None
    period = Period(last.period_start, last.period_end)
    if day not in period:
        raise ValidationFailed({field_name: (
            f"must fall within the current billed period {period.start:%Y-%m-%d} to "
            f"{period.last_day:%Y-%m-%d}")})
    return period


def _basis(defaults) -> str:
    return "actual" if defaults.proration_basis == "actual_days" else defaults.proration_basis


def _price(sub: Subscription, package: Package) -> Decimal:
    return unit_price(package, sub.billing_cycle, sub.custom_price) * sub.quantity


def _new_package(session: Session, sub: Subscription, new_package_id, cycle) -> Package:
    errors: dict[str, list[str]] = {}
    package = session.scalar(select(Package).where(Package.id == new_package_id)) \
        if isinstance(new_package_id, int) and not isinstance(new_package_id, bool) else None
    require(errors, "package", package is not None, "does not exist")
    require(errors, "status", sub.status in CHANGEABLE,
            f"a {sub.status} subscription cannot be changed")
    require(errors, "cycle", cycle in (None, sub.billing_cycle),
            "changing the cycle is done with Update Billing Cycle")
    raise_if(errors)
    require(errors, "package", package.id != sub.package_id, "is already the current package")
    require(errors, "package", getattr(package, "active", True), "is not active")
    require(errors, "package", sub.billing_cycle in package.offered_cycles(),
            f"{package.name} is not offered {sub.billing_cycle}")
    require(errors, "custom_price", sub.custom_price is None,
            "this subscription has a custom price: remove it before changing the package")
    raise_if(errors)
    return package


def preview_change(session: Session, subscription_id, new_package_id, change_date, *,
                   cycle: str | None = None) -> Change:
    """What changing the package on `change_date` does, line by line; writes nothing."""
    sub = _subscription(session, subscription_id)
    if not _is_date(change_date):
        raise ValidationFailed({"change_date": "must be a date"})
    package = _new_package(session, sub, new_package_id, cycle)
    period = _current_period(session, sub, change_date, "change_date")
    old, new = _price(sub, sub.package), _price(sub, package)
    if period is None:
        return Change("switch", old, new, explanation=(
            f"Nothing billed yet: {package.name} replaces {sub.package.name} from the first "
            "invoice"), effective_date=change_date)
    defaults = drafting.settings(session)
    if new < old and defaults.downgrade_policy == "deferred":
        scheduled = proration.deferred_downgrade(old, new, period, change_date,
                                                 old_label=sub.package.name,
                                                 new_label=package.name)
        return Change("deferred_downgrade", old, new, explanation=scheduled.explanation,
                      effective_date=scheduled.effective_date)
    lines = proration.immediate_upgrade(old, new, period, change_date,
                                        old_label=sub.package.name, new_label=package.name,
                                        basis=_basis(defaults))
    return Change("upgrade" if new >= old else "immediate_downgrade", old, new, lines,
                  explanation=f"{package.name} replaces {sub.package.name} on "
                              f"{change_date:%Y-%m-%d}", effective_date=change_date)


def change_package(session: Session, subscription_id, new_package_id, change_date, *,
                   cycle: str | None = None) -> Change:
    """Apply `preview_change`: switch now and bill the difference, or schedule a downgrade."""
    change = preview_change(session, subscription_id, new_package_id, change_date, cycle=cycle)
    sub = _subscription(session, subscription_id)
    package = session.get(Package, new_package_id)
    if change.kind == "deferred_downgrade":
        sub.scheduled_package_id, sub.scheduled_change_on = package.id, change.effective_date
        session.flush()
        return change
    old_package = sub.package
    sub.package_id, sub.package = package.id, package
    sub.take_package_taxes(package)
    sub.scheduled_package_id = sub.scheduled_change_on = None
    if change.lines:
        _bill(session, sub, old_package, package, change, change_date)
    session.flush()
    return change


def _line(sub: Subscription, piece: proration.ProratedLine, snap, currency: str,
          position: int = 0) -> InvoiceLine:
    """A prorated piece as an invoice line: of a change's invoice, or one a credit memo undoes."""
    return InvoiceLine(
        position=position, kind="proration", description=piece.description[:255],
        explanation=piece.explanation, subscription_id=sub.id,
        for_subscriber_id=sub.subscriber_id, period_start=piece.period.start,
        period_end=piece.period.end, quantity=Decimal(1), unit_price=piece.amount,
        amount=to_minor(piece.amount, currency), income_account_id=snap.income_account_id,
        taxable=snap.taxable, tax=0)


def _post_invoice(session: Session, sub: Subscription, lines: list[InvoiceLine], day: dt.date,
                  memo: str) -> Invoice:
    """Post `lines` as one invoice of the subscription's payer dated `day` (taxed as usual)."""
    defaults = drafting.settings(session)
    invoice = Invoice(subscriber_id=drafting.bill_to(sub), invoice_date=day,
                      due_date=day + dt.timedelta(days=defaults.due_days), status="draft",
                      source="manual", currency=drafting.currency(session), memo=memo[:255])
    for position, line in enumerate(lines, start=1):
        line.position = position
        invoice.lines.append(line)
    invoice.subtotal = invoice.total = sum(line.amount for line in invoice.lines)
    invoice.tax_total = 0
    session.add(invoice)
    session.flush()
    return post_invoice(session, invoice)


def _bill(session: Session, sub: Subscription, old: Package, new: Package, change: Change,
          day: dt.date) -> None:
    """Post the proration lines as one invoice, or a credit memo when they net negative."""
    currency = drafting.currency(session)
    accounts = drafting.account_ids(session)
    old_snap = drafting.snapshot(sub, old, accounts, False)
    new_snap = drafting.snapshot(sub, new, accounts, False)
    lines = [_line(sub, piece, snap, currency)
             for piece, snap in zip(change.lines, (old_snap, new_snap), strict=True)]
    net = change.net(currency)
    if net < 0:
        change.memo = credit_memo(
            session, drafting.bill_to(sub), -net,
            f"Package change: {old.name} to {new.name}"[:255], day,
            income_account_id=old_snap.income_account_id, credited_lines=lines)
        return
    change.invoice = _post_invoice(session, sub, lines, day,
                                   f"Package changed from {old.name} to {new.name}")


def apply_schedule(session: Session, billed: list[tuple[int, Period]]) -> None:
    """A deferred downgrade takes over once a period starting on or after its date is billed:
    the package switches and the schedule is cleared (the billing paths call this after
    claiming their periods; `drafting.package_for` already priced the period with it)."""
    by_id: dict[int, Subscription] = {}
    for subscription_id, period in billed:
        sub = by_id.get(subscription_id) or session.get(Subscription, subscription_id)
        by_id[subscription_id] = sub
        if sub.scheduled_package_id is None or sub.scheduled_change_on is None \
                or period.start < sub.scheduled_change_on:
            continue
        sub.package = session.get(Package, sub.scheduled_package_id)
        sub.take_package_taxes(sub.package)
        sub.scheduled_package_id = sub.scheduled_change_on = None
    session.flush()


# --- cancellation and hibernation ------------------------------------------------------------

def _billed_pieces(session: Session, sub: Subscription, start: dt.date, end: dt.date | None,
                   label: str, *, credit: bool) -> list[proration.ProratedLine]:
    """The days [start, end) (None: open-ended) of the periods already billed, prorated at the
    subscription's price, one piece per period."""
    basis = _basis(drafting.settings(session))
    price = _price(sub, sub.package)
    rows = session.scalars(select(BilledPeriod).where(
        BilledPeriod.subscription_id == sub.id, BilledPeriod.period_end > start)
        .order_by(BilledPeriod.period_start))
    pieces = []
    for row in rows:
        full = Period(row.period_start, row.period_end)
        piece_start, piece_end = max(start, full.start), min(end or full.end, full.end)
        if piece_start < piece_end:
            pieces.append(proration.prorate(price, full, Period(piece_start, piece_end),
                                            label=label, basis=basis, credit=credit))
    return pieces


def _billed_lines(session: Session, sub: Subscription, pieces) -> list[InvoiceLine]:
    currency = drafting.currency(session)
    snap = drafting.snapshot(sub, sub.package, drafting.account_ids(session), False)
    return [_line(sub, piece, snap, currency) for piece in pieces]


def _credit_billed_days(session: Session, sub: Subscription, start: dt.date,
                        end: dt.date | None, what: str, today: dt.date) -> Memo | None:
    """Credit memo for the days [start, end) of periods already billed, with the percent taxes
    charged on them; None when none are billed."""
    lines = _billed_lines(session, sub, _billed_pieces(session, sub, start, end,
                                                       sub.package.name, credit=True))
    amount = -sum(line.amount for line in lines)
    if amount <= 0:
        return None
    return credit_memo(session, drafting.bill_to(sub), amount,
                       f"{what}: unused {sub.package.name}"[:255], today,
                       income_account_id=lines[0].income_account_id, credited_lines=lines)


def _check_cancel(session: Session, sub: Subscription, cancel_date) -> None:
    """What `cancel_subscription` refuses (and so `preview_credit` too)."""
    errors: dict[str, list[str]] = {}
    require(errors, "cancel_date", _is_date(cancel_date), "must be a date")
    require(errors, "status", sub.status != "cancelled", "the subscription is already cancelled")
    raise_if(errors)
    last = _last_billed(session, sub)
    if last is not None:
        require(errors, "cancel_date", cancel_date >= last.period_start,
                f"must be on or after the current period's start {last.period_start:%Y-%m-%d}")
        raise_if(errors)


def _check_hibernate(session: Session, sub: Subscription, start, until) -> None:
    """What `hibernate` refuses (and so `preview_credit` too)."""
    package = sub.package
    errors: dict[str, list[str]] = {}
    require(errors, "start", _is_date(start), "must be a date")
    require(errors, "until", until is None or _is_date(until), "must be a date")
    require(errors, "status", sub.status in ("active", "suspended"),
            f"a {sub.status} subscription cannot hibernate")
    require(errors, "package", package.hibernation_allowed,
            f"{package.name} does not allow hibernation")
    raise_if(errors)
    require(errors, "until", until is None or until > start, "must be after the start")
    limit = package.hibernation_max_days
    if limit:
        require(errors, "until", until is not None and (until - start).days <= limit,
                f"{package.name} allows at most {limit} days of hibernation")
    if sub.hibernate_from is not None:  # crediting the same days twice
        require(errors, "start", sub.hibernate_until is not None and sub.hibernate_until <= start,
                f"a hibernation from {sub.hibernate_from:%Y-%m-%d} is already set: "
                "resume it first")
    last = _last_billed(session, sub)
    if last is not None:
        require(errors, "start", start >= last.period_start,
                f"must be on or after the current period's start {last.period_start:%Y-%m-%d}")
    raise_if(errors)


def preview_credit(session: Session, subscription_id, start, end=None,
                   what: str = "Cancellation") -> list[proration.ProratedLine]:
    """The credited lines (before tax) that cancelling on `start`, or hibernating from `start`
    to `end`, gives for days already billed, refused as the change itself would be; writes
    nothing. A cancellation credits nothing when Invoice Defaults do not credit unused days."""
    sub = _subscription(session, subscription_id)
    if what == "Cancellation":
        if end is not None:
            raise ValidationFailed({"end": "a cancellation has no end date"})
        _check_cancel(session, sub, start)
        if not drafting.settings(session).credit_unused_on_cancel:
            return []
    elif what == "Hibernation":
        _check_hibernate(session, sub, start, end)
    else:
        raise ValidationFailed({"what": "must be Cancellation or Hibernation"})
    return _billed_pieces(session, sub, start, end, sub.package.name, credit=True)


def cancel_subscription(session: Session, subscription_id, cancel_date, *,
                        today: dt.date | None = None) -> Memo | None:
    """Service ends on `cancel_date` (no longer served that day). Returns the credit memo for
    the unused billed days when Invoice Defaults credit them, else None."""
    today = today or dt.date.today()
    sub = _subscription(session, subscription_id)
    _check_cancel(session, sub, cancel_date)
    memo = None
    if drafting.settings(session).credit_unused_on_cancel:
        memo = _credit_billed_days(session, sub, cancel_date, None, "Cancellation", today)
    sub.cancel_on = cancel_date
    sub.scheduled_package_id = sub.scheduled_change_on = None
    if cancel_date <= today:
        sub.status = "cancelled"
    session.flush()
    return memo


def hibernate(session: Session, subscription_id, start, until=None, *,
              today: dt.date | None = None) -> Memo | None:
    """Put the subscription on hold from `start` to `until` (exclusive; None = until resumed).
    Later periods are billed with the hibernation credit and fee (`charges_for`); days of
    periods already billed are credited now (returns that credit memo, if any)."""
    today = today or dt.date.today()
    sub = _subscription(session, subscription_id)
    _check_hibernate(session, sub, start, until)
    memo = _credit_billed_days(session, sub, start, until, "Hibernation", today)
    sub.hibernate_from, sub.hibernate_until = start, until
    if start <= today:
        sub.status = "hibernating"
    session.flush()
    return memo


def resume(session: Session, subscription_id, on_date, *,
           today: dt.date | None = None) -> Invoice | None:
    """End the hibernation on `on_date` (served again that day); a hibernation that had not
    begun is simply dropped. The days from `on_date` to the hibernation's planned end that
    billing already credited (all billed ones, for an open-ended hibernation) are charged back
    by an invoice dated `on_date`, prorated as they were credited; returns it (None: no day
    to charge)."""
    today = today or dt.date.today()
    sub = _subscription(session, subscription_id)
    errors: dict[str, list[str]] = {}
    require(errors, "on_date", _is_date(on_date), "must be a date")
    require(errors, "status", sub.hibernate_from is not None, "the subscription is not hibernating")
    raise_if(errors)
    planned_end = sub.hibernate_until
    if on_date <= sub.hibernate_from:
        charge_from = sub.hibernate_from
        sub.hibernate_from = sub.hibernate_until = None
    else:
        charge_from = on_date
        sub.hibernate_until = min(on_date, planned_end or on_date)
    invoice = None
    if planned_end is None or charge_from < planned_end:
        lines = _billed_lines(session, sub, _billed_pieces(
            session, sub, charge_from, planned_end, f"{sub.package.name}, resumed",
            credit=False))
        if sum(line.amount for line in lines) > 0:
            invoice = _post_invoice(session, sub, lines, on_date,
                                    f"Resumed on {on_date:%Y-%m-%d}: days credited for the "
                                    "hibernation charged back")
    if sub.status == "hibernating" and on_date <= today:
        sub.status = "active"
    session.flush()
    return invoice


def cancel_scheduled_change(session: Session, subscription_id) -> Subscription:
    """Call off a deferred downgrade: the current package simply stays."""
    sub = _subscription(session, subscription_id)
    if sub.scheduled_package_id is None:
        raise ValidationFailed({"scheduled_change": "no package change is scheduled"})
    sub.scheduled_package_id = sub.scheduled_change_on = None
    session.flush()
    return sub


def scheduled_package(session: Session, sub: Subscription) -> Package | None:
    """The package a deferred downgrade will switch to, if one is scheduled."""
    if sub.scheduled_package_id is None:
        return None
    return session.scalar(select(Package).where(Package.id == sub.scheduled_package_id))


# --- the daily job ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DueChanges:
    """Subscription ids whose status `apply_due_changes` changed, by what happened."""

    cancelled: tuple[int, ...] = ()
    hibernating: tuple[int, ...] = ()
    resumed: tuple[int, ...] = ()


def apply_due_changes(session: Session, today: dt.date) -> DueChanges:
    """Give every subscription of the current tenant the status its dated changes call for on
    `today`: cancelled from `cancel_on`, hibernating from `hibernate_from` (active or suspended
    ones, as `hibernate` does), active again from `hibernate_until`.

    The daily job calls it before the billing run. Only rows whose status is out of date are
    loaded and changed through the ORM (so each change is audited); a second call on the same
    day finds nothing to do. Billing does not wait for it: it reads the dates themselves.
    """
    if not _is_date(today):
        raise ValidationFailed({"today": "must be a date"})

    def flip(condition, status: str) -> tuple[int, ...]:
        rows = session.scalars(select(Subscription).where(condition)
                               .order_by(Subscription.id)).all()
        for sub in rows:
            sub.status = status
        session.flush()
        return tuple(sub.id for sub in rows)

    cancelled = flip(and_(Subscription.cancel_on <= today,
                          Subscription.status != "cancelled"), "cancelled")
    hibernating = flip(and_(
        Subscription.status.in_(("active", "suspended")),
        Subscription.hibernate_from <= today,
        or_(Subscription.hibernate_until.is_(None), Subscription.hibernate_until > today)),
        "hibernating")
    resumed = flip(and_(Subscription.status == "hibernating",
                        or_(Subscription.hibernate_from.is_(None),
                            Subscription.hibernate_until <= today)), "active")
    return DueChanges(cancelled, hibernating, resumed)
