"""Invoices from draft to void: Invoice Now, custom invoices, posting, editing, voiding.

Plain Python; each call is one unit of work the caller commits (or rolls back: a refused call
writes nothing). Money: line amounts are rounded half-up to minor units once per line, then
summed. Every posted change is one balanced journal entry:
- post: DEBIT receivables (the bill-to subscriber) the total; CREDIT each line's income account
  (a negative line debits it; discounts debit "4900", the contra-revenue account); CREDIT sales
  tax payable "2200" per tax rate / jurisdiction; key "invoice:{id}:post";
- edit (open invoices): the difference between the new and the posted legs,
  key "invoice:{id}:edit:{n}";
- void: the reversal of each of those entries; the number is kept and the billed periods are
  released so they can be billed again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from headend.billing import drafting, numbering, periods, taxes
from headend.billing.charges import Charge
from headend.billing.defaults import invoice_defaults
from headend.billing.models import BilledPeriod, Invoice, InvoiceLine
from headend.catalog.models import Item
from headend.db import utcnow
from headend.errors import ValidationFailed, raise_if, require
from headend.ledger.models import JournalEntry
from headend.ledger.services import (
    LegSpec,
    ledger_settings,
    post_entry,
    refuse_closed_books,
    reverse_entry,
)
from headend.money import format_money, parse_decimal, to_minor
from headend.plugins import events
from headend.subscribers.models import Subscriber

CUSTOM_KINDS = ("item", "equipment", "fee", "discount")
_KIND_ORDER = {k: n for n, k in enumerate(
    ("setup", "recurring", "proration", "inclusion", "hibernation", "usage", "item",
     "equipment", "fee", "discount"))}
_ACCOUNTS_RECEIVABLE, _TAX_PAYABLE = "1200", "2200"


# --- drafting ---------------------------------------------------------------------------------

def _subscriber(session: Session, subscriber_id) -> Subscriber:
    sub = session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id)) \
        if isinstance(subscriber_id, int) else None
    if sub is None:
        raise ValidationFailed({"subscriber": "no such subscriber"})
    return sub


def _payer(session: Session, subscriber_id) -> Subscriber:
    sub = _subscriber(session, subscriber_id)
    payer = drafting.payer_of(sub)
    if payer.id != sub.id:
        raise ValidationFailed({"subscriber": (
            f"bills all charges to {payer}: invoice that account instead")})
    return sub


def ordered_charges(charges: list[Charge], payer_id: int) -> list[Charge]:
    """The payer's own charges first, then each other account's together (bill-to grouping)."""
    return sorted(charges, key=lambda c: (
        c.for_subscriber_id != payer_id, c.for_subscriber_id, c.subscription_id is None,
        c.subscription_id or 0, _KIND_ORDER.get(c.kind, 99)))


def _line(charge: Charge, position: int, currency: str) -> InvoiceLine:
    return InvoiceLine(
        position=position, kind=charge.kind, description=charge.description[:255],
        explanation=charge.explanation, subscription_id=charge.subscription_id,
        for_subscriber_id=charge.for_subscriber_id,
        period_start=charge.period.start if charge.period else None,
        period_end=charge.period.end if charge.period else None,
        quantity=charge.quantity, unit_price=charge.unit_price,
        amount=to_minor(charge.amount, currency),
        income_account_id=charge.income_account_id, taxable=charge.taxable, tax=0)


def _totals(invoice: Invoice) -> None:
    invoice.subtotal = sum(line.amount for line in invoice.lines)
    invoice.tax_total = sum(line.tax or 0 for line in invoice.lines)
    invoice.total = invoice.subtotal + invoice.tax_total


def _claim_periods(session: Session, invoice: Invoice,
                   billed: list[tuple[int, periods.Period]]) -> set[int]:
    """Insert the billed periods; the unique key refuses one billed meanwhile by someone else.
    Returns the subscriptions whose period was taken (their charges are dropped)."""
    taken = set()
    for subscription_id, period in billed:
        if subscription_id in taken:
            continue
        try:
            with session.begin_nested():
                session.add(BilledPeriod(subscription_id=subscription_id,
                                         period_start=period.start, period_end=period.end,
                                         invoice_id=invoice.id))
        except IntegrityError:
            taken.add(subscription_id)
    return taken


class DueDraft(NamedTuple):
    invoice: Invoice
    claimed: list[tuple[int, periods.Period]]  # (subscription id, period)


def draft_invoice_for(session: Session, subscriber_id: int, on_date: dt.date,
                      source: str = "invoice_now") -> DueDraft | None:
    """A draft of everything due on the subscriber's invoice as of `on_date`, its periods
    claimed; None when nothing is due (or someone else billed it first)."""
    payer = _payer(session, subscriber_id)
    defaults = invoice_defaults(session)
    due = drafting.due_charges(session, payer, on_date, defaults)
    if not due.periods:
        return None
    invoice = Invoice(subscriber_id=payer.id, invoice_date=due.invoice_date,
                      due_date=due.due_date, status="draft", source=source,
                      currency=due.currency)
    session.add(invoice)
    session.flush()
    taken = _claim_periods(session, invoice, due.periods)
    if len(taken) == len({s for s, _ in due.periods}):
        session.delete(invoice)
        session.flush()
        return None
    from headend.network.usage_billing import mark_invoiced  # network imports billing

    claimed = mark_invoiced(session, dict.fromkeys(due.usage, invoice.id))
    lost = {id(c) for cid, c in due.usage.items() if cid not in claimed}
    charges = [c for c in due.charges if c.subscription_id not in taken and id(c) not in lost]
    invoice.lines = [_line(c, n, due.currency)
                     for n, c in enumerate(ordered_charges(charges, payer.id), start=1)]
    _totals(invoice)
    return DueDraft(invoice, [(sid, p) for sid, p in due.periods if sid not in taken])


@dataclass(frozen=True)
class PreviewLine:
    kind: str
    description: str
    explanation: str | None
    for_subscriber_id: int
    period: periods.Period | None
    amount: int
    tax: int


@dataclass(frozen=True)
class Preview:
    subscriber_id: int
    invoice_date: dt.date
    due_date: dt.date
    currency: str
    lines: list[PreviewLine]
    subtotal: int
    tax_total: int | None  # None: the tax engine could not be reached for a quote
    total: int


def billing_preview(session: Session, subscriber_id: int, on_date: dt.date) -> Preview:
    """What Invoice Now would bill on `on_date`, line by line with explanations; writes nothing
    (taxes are a quote: simple_tax computes, AvaTax estimates without recording)."""
    payer = _payer(session, subscriber_id)
    defaults = drafting.settings(session)
    due = drafting.due_charges(session, payer, on_date, defaults)
    draft = Invoice(subscriber_id=payer.id, invoice_date=due.invoice_date,
                    due_date=due.due_date, currency=due.currency)
    draft.lines = [_line(c, n, due.currency)
                   for n, c in enumerate(ordered_charges(due.charges, payer.id), start=1)]
    with session.no_autoflush:
        quoted = taxes.quote(session, draft, defaults.tax_engine, defaults.tax_rounding) \
            if draft.lines else True
    subtotal = sum(line.amount for line in draft.lines)
    tax_total = None if quoted is None else sum(line.tax for line in draft.lines)
    lines = [PreviewLine(ln.kind, ln.description, ln.explanation, ln.for_subscriber_id,
                         periods.Period(ln.period_start, ln.period_end)
                         if ln.period_start else None, ln.amount, ln.tax) for ln in draft.lines]
    return Preview(payer.id, due.invoice_date, due.due_date, due.currency, lines, subtotal,
                   tax_total, subtotal + (tax_total or 0))


def invoice_now(session: Session, subscriber_id: int, on_date: dt.date) -> Invoice | None:
    """Draft, tax and post what is due now; None when nothing is due. With the tax engine down
    the invoice stays a draft waiting for `retry_waiting_taxes`."""
    drafted = draft_invoice_for(session, subscriber_id, on_date)
    if drafted is None:
        return None
    invoice = post_invoice(session, drafted.invoice)
    from headend.billing.changes import apply_schedule  # changes imports this module

    # After taxing: a deferred downgrade's package takes over from the periods it bills, and a
    # period before its date keeps the old package's taxes (`taxes.build_request`).
    apply_schedule(session, drafted.claimed)
    return invoice


# --- custom invoices --------------------------------------------------------------------------

def bill_date(session: Session, subscriber: Subscriber, today: dt.date) -> dt.date:
    """The subscriber's next bill date on or after `today`: the earliest next period start of
    what it is billed for, else its own bill day (monthly)."""
    defaults = drafting.settings(session)
    starts = []
    for sub in drafting.subscriptions_billed_to(session, subscriber.id):
        if drafting.invoiceable(sub, defaults):
            anchor = drafting.start_date(sub)
            day = drafting.period_day(sub, defaults)
            starts.append(max(anchor, periods.next_bill_date(anchor, sub.billing_cycle, today,
                                                              day=day)))
    if starts:
        return min(starts)
    day = subscriber.bill_day or 1
    this_month = periods.shift_months(today, 0, day)
    return this_month if this_month >= today else periods.shift_months(today, 1, day)


def _decimal(value, field: str, n: int, errors: dict, default=None) -> Decimal | None:
    if value in (None, "") and default is not None:
        return default
    try:
        return parse_decimal(value, places=4)
    except ValueError as exc:
        errors.setdefault(field, []).append(f"line {n}: {exc}")
        return None


def _custom_line(session: Session, raw: dict, n: int, accounts: dict, currency: str,
                 errors: dict) -> InvoiceLine | None:
    item = None
    if raw.get("item_id") not in (None, ""):
        item = session.scalar(select(Item).where(Item.id == raw["item_id"])) \
            if str(raw["item_id"]).isdigit() else None
        require(errors, "item_id", item is not None and item.active,
                f"line {n}: no such active item")
    description = (raw.get("description") or (item.name if item else "")).strip()
    require(errors, "description", bool(description), f"line {n}: is required")
    quantity = _decimal(raw.get("quantity", 1), "quantity", n, errors, Decimal(1))
    price = _decimal(raw.get("unit_price"), "unit_price", n, errors,
                     item.price if item else None)
    if price is None and "unit_price" not in errors:
        errors.setdefault("unit_price", []).append(f"line {n}: is required")
    kind = raw.get("kind") or (item.type if item and item.type in CUSTOM_KINDS else "item")
    require(errors, "kind", kind in CUSTOM_KINDS,
            f"line {n}: must be one of {', '.join(CUSTOM_KINDS)}")
    if errors:
        return None
    exact = quantity * price
    account = accounts[drafting.DISCOUNTS] if kind == "discount" \
        else drafting.item_account(item, accounts, kind)
    return InvoiceLine(
        position=n, kind=kind, description=description[:255], item_id=item.id if item else None,
        quantity=quantity, unit_price=price,
        amount=-to_minor(exact, currency) if kind == "discount" else to_minor(exact, currency),
        income_account_id=account, taxable=item.taxable if item else True, tax=0,
        explanation=raw.get("explanation"))


def _custom_lines(session: Session, raw_lines, currency: str) -> list[InvoiceLine]:
    errors: dict[str, list[str]] = {}
    require(errors, "lines", bool(raw_lines), "an invoice needs at least one line")
    accounts = drafting.account_ids(session)
    lines = [_custom_line(session, raw, n, accounts, currency, errors)
             for n, raw in enumerate(raw_lines or [], start=1)]
    raise_if(errors)
    charges = sum(ln.amount for ln in lines if ln.kind != "discount")
    discounts = -sum(ln.amount for ln in lines if ln.kind == "discount")
    require(errors, "amount", discounts <= charges,
            f"the discount ({format_money(discounts, currency)}) is larger than the invoice's "
            f"charges ({format_money(charges, currency)})")
    raise_if(errors)
    return lines


def new_invoice(session: Session, subscriber_id: int, invoice_date: dt.date, lines: list[dict],
                *, today: dt.date | None = None, memo: str | None = None,
                post: bool = True) -> Invoice:
    """A custom invoice (catalog items, ad-hoc lines, equipment, a one-time discount).

    Lines: {item_id | description, quantity, unit_price, kind}. The invoice date must be on or
    before the subscriber's next bill date (back-dating is fine, billing ahead of the cycle
    is not). Posted at once unless `post` is False.
    """
    subscriber = _subscriber(session, subscriber_id)
    errors: dict[str, list[str]] = {}
    ok_date = isinstance(invoice_date, dt.date) and not isinstance(invoice_date, dt.datetime)
    require(errors, "invoice_date", ok_date, "must be a date")
    if ok_date:
        limit = bill_date(session, subscriber, today or dt.date.today())
        require(errors, "invoice_date", invoice_date <= limit,
                f"must be on or before the bill date {limit:%Y-%m-%d}")
    raise_if(errors)
    currency = drafting.currency(session)
    built = _custom_lines(session, lines, currency)
    defaults = invoice_defaults(session)
    invoice = Invoice(subscriber_id=subscriber.id, invoice_date=invoice_date,
                      due_date=invoice_date + dt.timedelta(days=defaults.due_days),
                      status="draft", source="manual", currency=currency, memo=memo)
    for line in built:
        line.for_subscriber_id = subscriber.id
    invoice.lines = built
    _totals(invoice)
    session.add(invoice)
    session.flush()
    return post_invoice(session, invoice) if post else invoice


# --- posting ----------------------------------------------------------------------------------

LegKey = tuple[int, int | None, int | None, str | None]  # account, subscriber, tax rate, juris


def _net_legs(invoice: Invoice, accounts: dict[str, int]) -> dict[LegKey, int]:
    """The invoice's postings, netted per account/subscriber/tax rate: debit positive."""
    net: dict[LegKey, int] = defaultdict(int)
    net[(accounts[_ACCOUNTS_RECEIVABLE], invoice.subscriber_id, None, None)] += invoice.total
    for line in invoice.lines:
        net[(line.income_account_id, None, None, None)] -= line.amount
        for tax in line.taxes:
            net[(accounts[_TAX_PAYABLE], None, tax.tax_rate_id, tax.jurisdiction)] -= tax.amount
    return net


def _leg_specs(net: dict[LegKey, int]) -> list[LegSpec]:
    return [LegSpec(account_id=account, debit=max(amount, 0), credit=max(-amount, 0),
                    subscriber_id=subscriber, tax_rate_id=rate, jurisdiction=juris)
            for (account, subscriber, rate, juris), amount in net.items() if amount]


def _entries(session: Session, invoice: Invoice) -> list[JournalEntry]:
    return list(session.scalars(select(JournalEntry).where(
        JournalEntry.source_type == "invoice", JournalEntry.source_id == invoice.id,
        JournalEntry.reverses_id.is_(None)).order_by(JournalEntry.id)))


def _posted_legs(entries: list[JournalEntry]) -> dict[LegKey, int]:
    net: dict[LegKey, int] = defaultdict(int)
    for entry in entries:
        for leg in entry.legs:
            net[(leg.account_id, leg.subscriber_id, leg.tax_rate_id, leg.jurisdiction)] += \
                leg.debit - leg.credit
    return net


def settle_status(invoice: Invoice) -> None:
    """open / partially_paid / paid from what has been applied to it (void stays void)."""
    if invoice.status in ("void", "draft"):
        return
    paid = invoice.amount_paid or 0
    if paid >= invoice.total:
        invoice.status = "paid"
    elif paid > 0:
        invoice.status = "partially_paid"
    else:
        invoice.status = "open"


def _memos(name: str, session: Session, invoice: Invoice) -> None:
    """Call billing.memos' `name` (apply_account_credit: unapplied credit memos settle the new
    invoice; release_invoice_credits: a voided invoice gives its applied credit back), when
    that module is installed."""
    try:
        from headend.billing import memos
    except ImportError:
        return
    hook = getattr(memos, name, None)
    if hook is not None:
        hook(session, invoice)


def _entry_description(invoice: Invoice) -> str:
    """The statement's text: "Invoice N", and what a collections fee invoice (late or
    re-billing fee, one line) charges for, so the account history says so."""
    if invoice.source in ("late_fee", "rebill_fee") and invoice.lines:
        return f"Invoice {invoice.number}: {invoice.lines[0].description}"
    return f"Invoice {invoice.number}"


def post_invoice(session: Session, invoice: Invoice, *, backoff=taxes.BACKOFF) -> Invoice:
    """Number, tax and post a draft. If the tax engine stays unavailable the invoice keeps its
    number and waits as a draft (tax_status "waiting"); posting it again finishes the job."""
    require_errors: dict[str, list[str]] = {}
    require(require_errors, "status", invoice.status == "draft",
            f"only a draft can be posted; this invoice is {invoice.status}")
    raise_if(require_errors)
    refuse_closed_books(session, invoice.invoice_date, "invoice_date")
    defaults = invoice_defaults(session)
    if invoice.number is None:
        invoice.number = numbering.next_invoice_number(session, defaults.number_format,
                                                       invoice.invoice_date)
    if not taxes.post(session, invoice, defaults.tax_engine, defaults.tax_rounding,
                      backoff=backoff):
        invoice.tax_status = "waiting"
        session.flush()
        return invoice
    invoice.tax_status = "ok"
    _totals(invoice)
    legs = _leg_specs(_net_legs(invoice, drafting.account_ids(session)))
    if legs:
        entry = post_entry(session, key=f"invoice:{invoice.id}:post",
                           entry_date=invoice.invoice_date, source_type="invoice",
                           source_id=invoice.id, description=_entry_description(invoice),
                           legs=legs)
        invoice.posted_entry_id = entry.id
    invoice.status, invoice.posted_at = "open", utcnow()
    settle_status(invoice)
    session.flush()
    _memos("apply_account_credit", session, invoice)
    settle_status(invoice)
    session.flush()
    events.fire("invoice_posted", tenant_id=invoice.tenant_id, invoice_id=invoice.id)
    return invoice


def retry_waiting_taxes(session: Session, batch: int = 500,
                        after_batch: Callable[[], None] | None = None,
                        backoff: tuple[float, ...] = (0.0,)) -> int:
    """Post the drafts that wait for the tax engine, oldest first; returns how many posted.

    One attempt each (or `backoff`'s); the first that still finds the engine down ends the
    retry (the next job tries again). One the engine now refuses stays waiting: its error is
    for a person to fix.
    A draft the books were closed over meanwhile moves into open books (`_into_open_books`).
    Drafts are taken `batch` at a time and locked, so that a second retry at once skips them
    instead of posting them twice; `after_batch` runs after each batch (the daily job commits
    there: a backlog of any size drains in one go, and a crash keeps what was posted).
    """
    posted, after = 0, 0
    while True:
        waiting = session.scalars(
            select(Invoice).where(Invoice.status == "draft", Invoice.tax_status == "waiting",
                                  Invoice.id > after)
            .order_by(Invoice.id).limit(batch).with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)).all()
        down = False
        for invoice in waiting:
            try:
                with session.begin_nested():
                    _into_open_books(session, invoice)
                    post_invoice(session, invoice, backoff=backoff)
            except ValidationFailed:
                continue
            if invoice.status == "draft":
                down = True
                break
            posted += 1
        after = waiting[-1].id if waiting else after
        if after_batch is not None:
            after_batch()
        if down or len(waiting) < batch:
            return posted


def _into_open_books(session: Session, invoice: Invoice) -> None:
    """Date a waiting draft the books were closed over (mode "block") on the first open day.

    Closing the books cannot wait for the tax engine, and the draft cannot post into them: it
    posts on the first open day instead of never, its due date keeping its terms. Its memo says
    so and the audit log keeps both dates. Books closed with "warn" keep its date: the ledger
    posts it there and records the warning.
    """
    settings = ledger_settings(session)
    if settings is None or settings.closing_date is None or settings.closing_mode != "block" \
            or invoice.invoice_date > settings.closing_date:
        return
    old, new = invoice.invoice_date, settings.closing_date + dt.timedelta(days=1)
    invoice.invoice_date, invoice.due_date = new, invoice.due_date + (new - old)
    note = (f"Dated {new:%Y-%m-%d} instead of {old:%Y-%m-%d}: the books were closed through "
            f"{settings.closing_date:%Y-%m-%d} while it waited for its taxes.")
    invoice.memo = f"{invoice.memo}\n{note}" if invoice.memo else note


# --- after posting ----------------------------------------------------------------------------

def get_invoice(session: Session, invoice_id) -> Invoice:
    invoice = session.scalar(select(Invoice).where(Invoice.id == invoice_id)) \
        if isinstance(invoice_id, int) else invoice_id if isinstance(invoice_id, Invoice) \
        else None
    if invoice is None:
        raise ValidationFailed({"invoice": "no such invoice"})
    return invoice


def void_invoice(session: Session, invoice_id, on_date: dt.date | None = None) -> Invoice:
    """Reverse the invoice's postings, void its taxes with the engine, keep its number and
    release its billed periods."""
    invoice = get_invoice(session, invoice_id)
    errors: dict[str, list[str]] = {}
    require(errors, "status", invoice.status != "void", "the invoice is already void")
    require(errors, "status", invoice.status != "draft",
            "a draft is not posted: delete it instead of voiding it")
    raise_if(errors)
    day = max(on_date or dt.date.today(), invoice.invoice_date)
    refuse_closed_books(session, day, "void_date")
    defaults = invoice_defaults(session)
    taxes.void(session, invoice, defaults.tax_engine)
    for entry in _entries(session, invoice):
        suffix = "" if entry.key == f"invoice:{invoice.id}:post" else f":{entry.id}"
        reverse_entry(session, entry, key=f"invoice:{invoice.id}:void{suffix}",
                      entry_date=day, description=f"Void of invoice {invoice.number}")
    _memos("release_invoice_credits", session, invoice)
    invoice.status, invoice.voided_at = "void", utcnow()
    session.execute(delete(BilledPeriod).where(BilledPeriod.invoice_id == invoice.id)
                    .execution_options(synchronize_session=False))
    from headend.network.usage_billing import release  # network imports billing

    release(session, invoice.id)
    session.flush()
    return invoice


def edit_invoice(session: Session, invoice_id, lines: list[dict],
                 on_date: dt.date | None = None) -> Invoice:
    """Change an open invoice's lines and post only the difference.

    `lines` is the whole new list: {"id": n} keeps line n (quantity/unit_price/description may
    change it), other entries are new custom lines as for `new_invoice`. Billed periods of
    subscription lines that are dropped are released.
    """
    invoice = get_invoice(session, invoice_id)
    errors: dict[str, list[str]] = {}
    require(errors, "status", invoice.status == "open",
            f"only an open invoice can be edited; this one is {invoice.status}")
    raise_if(errors)
    day = max(on_date or dt.date.today(), invoice.invoice_date)
    refuse_closed_books(session, day, "edit_date")
    kept, new = _edited_lines(session, invoice, lines)
    dropped = [ln for ln in invoice.lines if ln not in kept]
    released = {ln.subscription_id for ln in dropped} - {ln.subscription_id for ln in kept}
    for line in dropped:
        invoice.lines.remove(line)
    for n, line in enumerate(new, start=len(kept) + 1):
        line.position, line.for_subscriber_id = n, invoice.subscriber_id
        invoice.lines.append(line)
    _totals(invoice)
    if invoice.total < 0:
        raise ValidationFailed({"amount": "the discounts are larger than the invoice's charges"})
    session.flush()
    defaults = invoice_defaults(session)
    if not taxes.post(session, invoice, defaults.tax_engine, defaults.tax_rounding):
        raise ValidationFailed({"tax_engine": "is unavailable; nothing was changed, try again"})
    _totals(invoice)
    accounts = drafting.account_ids(session)
    entries = _entries(session, invoice)
    new, old = _net_legs(invoice, accounts), _posted_legs(entries)
    keys = list(new) + [key for key in old if key not in new]
    legs = _leg_specs({key: new.get(key, 0) - old.get(key, 0) for key in keys})
    if legs:
        n = sum(1 for e in entries if ":edit:" in e.key) + 1
        post_entry(session, key=f"invoice:{invoice.id}:edit:{n}", entry_date=day,
                   source_type="invoice", source_id=invoice.id,
                   description=f"Invoice {invoice.number} edited", legs=legs)
    released.discard(None)
    if released:
        session.execute(delete(BilledPeriod).where(
            BilledPeriod.invoice_id == invoice.id,
            BilledPeriod.subscription_id.in_(released)))
    settle_status(invoice)
    session.flush()
    return invoice


def _edited_lines(session: Session, invoice: Invoice, raw_lines: list[dict]):
    by_id = {line.id: line for line in invoice.lines}
    kept, fresh, errors = [], [], {}
    for n, raw in enumerate(raw_lines or [], start=1):
        line = by_id.get(raw.get("id")) if raw.get("id") is not None else None
        if raw.get("id") is not None and line is None:
            errors.setdefault("lines", []).append(f"line {n}: not a line of this invoice")
            continue
        if line is None:
            fresh.append(raw)
            continue
        quantity = _decimal(raw.get("quantity"), "quantity", n, errors, line.quantity)
        price = _decimal(raw.get("unit_price"), "unit_price", n, errors, line.unit_price)
        if quantity is not None and price is not None and (
                "quantity" in raw or "unit_price" in raw):
            sign = -1 if line.amount < 0 or line.kind == "discount" else 1
            line.quantity, line.unit_price = quantity, price
            line.amount = sign * to_minor(quantity * price, invoice.currency)
        if raw.get("description"):
            line.description = str(raw["description"])[:255]
        kept.append(line)
    raise_if(errors)
    require(errors, "lines", bool(kept or fresh), "an invoice needs at least one line")
    raise_if(errors)
    new = _custom_lines(session, fresh, invoice.currency) if fresh else []
    return kept, new


def delete_draft(session: Session, invoice_id) -> None:
    """Delete a draft that was never numbered (a numbered one may be recorded with the tax
    engine: it is posted by `retry_waiting_taxes`, then voided if unwanted)."""
    invoice = get_invoice(session, invoice_id)
    errors: dict[str, list[str]] = {}
    require(errors, "status", invoice.status == "draft" and invoice.number is None,
            "only an unposted draft can be deleted; void a posted invoice instead")
    raise_if(errors)
    session.execute(delete(BilledPeriod).where(BilledPeriod.invoice_id == invoice.id)
                    .execution_options(synchronize_session=False))
    from headend.network.usage_billing import release  # network imports billing

    release(session, invoice.id)
    session.delete(invoice)
    session.flush()

