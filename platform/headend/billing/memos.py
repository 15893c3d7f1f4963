"""Credit and debit memos: documents that lower or raise what a subscriber owes.

A credit memo posts DEBIT income (a revenue reduction, "4900" by default) / CREDIT receivables;
a debit memo posts DEBIT receivables / CREDIT income ("4700" by default). A credit memo settles
a chosen open invoice, and what the invoice cannot take stays on the account (`unapplied`) until
`apply_account_credit` spends it on the subscriber's next invoice.

A credit memo for billed service (`credited_lines`: the pieces of invoice lines it undoes) also
gives back the percent taxes charged on them: the invoices' rate choice (`taxes.build_request`)
through the tenant's tax engine, recorded under the memo's number; it then debits sales tax
payable "2200" per rate / jurisdiction too, and its amount is the net plus that tax. Flat taxes
are per billing cycle and are not given back.

Each call does its writes inside one savepoint: on any refusal nothing is written. The caller
commits (as with ledger.post_entry).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing import drafting, taxes
from headend.billing.models import Invoice, InvoiceLine, Memo, MemoApplication, MemoTax
from headend.catalog.models import Account
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.db import utcnow
from headend.errors import ValidationFailed, raise_if, require
from headend.ledger.models import JournalEntry
from headend.ledger.services import (
    LegSpec,
    post_entry,
    refuse_closed_books,
    reverse_entry,
)
from headend.payments.allocation import (
    payment_credit,
    release_invoice_payments,
    spend_payment_credit,
)
from headend.plugins.interfaces import TaxEngineRejected
from headend.sequences import next_value
from headend.subscribers.models import Subscriber

CREDIT_INCOME, DEBIT_INCOME = "4900", "4700"  # discounts/credits given; service fees
TAX_PAYABLE = "2200"
OPEN_STATUSES = ("open", "partially_paid")
PREFIXES = {"credit": "CM", "debit": "DM"}


# --- numbering -------------------------------------------------------------------------------

def next_memo_number(session: Session, kind: str) -> str:
    """"CM-{seq}" / "DM-{seq}", from the tenant's "memo_credit" / "memo_debit" sequence."""
    return f"{PREFIXES[kind]}-{next_value(session, f'memo_{kind}')}"


# --- validation ------------------------------------------------------------------------------

def _is_date(value) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _one(session: Session, model, pk, *, lock: bool = False):
    """The row of this tenant with id `pk` (a SELECT, so tenant scoping applies), or None;
    locked and re-read when it is about to change."""
    if not isinstance(pk, int) or isinstance(pk, bool):
        return None
    stmt = sa.select(model).where(model.id == pk)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalar(stmt)


def _locked_invoice(session: Session, invoice_id: int) -> Invoice | None:
    return _one(session, Invoice, invoice_id, lock=True)


def _validate(session: Session, kind: str, subscriber_id, amount, description, memo_date,
              invoice_id, income_account_id) -> tuple[Invoice | None, Account | None]:
    errors: dict[str, list[str]] = {}
    require(errors, "amount", isinstance(amount, int) and not isinstance(amount, bool)
            and amount > 0, "must be a positive amount")
    require(errors, "description", isinstance(description, str) and 0 < len(
        description.strip()) <= 255, "is required (at most 255 characters)")
    require(errors, "memo_date", _is_date(memo_date), "must be a date")
    subscriber = _one(session, Subscriber, subscriber_id)
    require(errors, "subscriber", subscriber is not None, "does not exist")
    invoice = account = None
    if invoice_id is not None:
        invoice = _locked_invoice(session, invoice_id)
        require(errors, "invoice", invoice is not None, "does not exist")
        if invoice is not None:
            require(errors, "invoice", invoice.subscriber_id == subscriber_id,
                    "belongs to another subscriber")
            require(errors, "invoice", invoice.status in OPEN_STATUSES,
                    f"is {invoice.status.replace('_', ' ')}, not open")
    code = CREDIT_INCOME if kind == "credit" else DEBIT_INCOME
    if income_account_id is None:
        account = session.scalar(sa.select(Account).where(Account.code == code))
        require(errors, "income_account", account is not None,
                f"the chart has no account {code}: choose one")
    else:
        account = _one(session, Account, income_account_id)
        require(errors, "income_account", account is not None and account.active
                and account.code != ACCOUNTS_RECEIVABLE, "must be an active income account")
    raise_if(errors)
    return invoice, account


# --- applying credit to invoices -------------------------------------------------------------

def _settle(session: Session, memo: Memo, invoice: Invoice, amount: int) -> None:
    """Move `amount` of the memo's credit onto the invoice's balance due."""
    invoice.amount_paid += amount
    invoice.status = "paid" if invoice.balance_due <= 0 else "partially_paid"
    memo.unapplied -= amount
    application = session.scalar(sa.select(MemoApplication).where(
        MemoApplication.memo_id == memo.id, MemoApplication.invoice_id == invoice.id))
    if application is None:
        session.add(MemoApplication(memo_id=memo.id, invoice_id=invoice.id, amount=amount))
    else:
        application.amount += amount


def _unsettle(invoice: Invoice, amount: int) -> None:
    invoice.amount_paid -= amount
    if invoice.status != "void":
        invoice.status = "open" if invoice.amount_paid <= 0 else (
            "paid" if invoice.balance_due <= 0 else "partially_paid")


def apply_account_credit(session: Session, invoice: Invoice) -> int:
    """Spend the subscriber's unapplied credit memos, then the unapplied money of their
    payments, oldest first, on `invoice`; returns the minor units applied.

    No ledger entry is posted: each credit memo (and each payment) already credited
    receivables when it was issued, so the subscriber's balance already counts it. Applying
    only says which invoice the credit settles (Invoice.amount_paid / status, Memo.unapplied,
    Payment.unapplied). Idempotent: a second call finds no balance due or no credit left. The
    invoice, the memos and the payments are locked (FOR UPDATE on
    PostgreSQL, the write lock on SQLite), so two invoices posted at once cannot spend the same
    credit twice.
    """
    with session.begin_nested():
        _write_lock(session, invoice.id)
        invoice = _locked_invoice(session, invoice.id)
        if invoice is None or invoice.status not in OPEN_STATUSES:
            return 0
        memos = session.scalars(
            sa.select(Memo)
            .where(Memo.kind == "credit", Memo.subscriber_id == invoice.subscriber_id,
                   Memo.voided_at.is_(None), Memo.unapplied > 0)
            .order_by(Memo.memo_date, Memo.id)
            .with_for_update().execution_options(populate_existing=True)).all()
        applied = 0
        for memo in memos:
            amount = min(memo.unapplied, invoice.balance_due)
            if amount <= 0:
                break
            _settle(session, memo, invoice, amount)
            applied += amount
        applied += spend_payment_credit(session, invoice)
        session.flush()
    return applied


def _write_lock(session: Session, invoice_id: int) -> None:
    """Write first: a no-op UPDATE of the invoice row. On SQLite it takes the database write
    lock before any read (a read-then-write transaction cannot wait for a concurrent writer and
    fails with "database is locked"); on PostgreSQL it row-locks the invoice."""
    session.execute(sa.update(Invoice).where(Invoice.id == invoice_id)
                    .values(amount_paid=Invoice.amount_paid)
                    .execution_options(synchronize_session=False))


def release_invoice_credits(session: Session, invoice: Invoice) -> int:
    """Give back to their memos and payments the credit applied to `invoice` (for when the
    invoice is voided); the freed credit is account credit again. Returns the minor units
    released."""
    with session.begin_nested():
        # Payments first, before the invoice row changes (payments.allocation's lock order).
        released = release_invoice_payments(session, invoice)
        for application in session.scalars(sa.select(MemoApplication).where(
                MemoApplication.invoice_id == invoice.id)).all():
            memo = _one(session, Memo, application.memo_id, lock=True)
            if memo.voided_at is None:
                memo.unapplied += application.amount
            _unsettle(invoice, application.amount)
            released += application.amount
            session.delete(application)
        session.flush()
    return released


# --- issuing and voiding ---------------------------------------------------------------------

def _credit_taxes(session: Session, number: str, subscriber_id: int, memo_date: dt.date,
                  credited_lines: Sequence[InvoiceLine]) -> list[MemoTax]:
    """The taxes a credit gives back, per rate / jurisdiction (positive = returned).

    `credited_lines` are unsaved invoice lines, negative for what is credited (a downgrade's
    charge for the new package is a positive one), so the rates are chosen exactly as on an
    invoice; flat rates are then dropped. The engine records the result under the memo's number;
    an engine that stays unreachable refuses the credit (nothing is written).
    """
    defaults = drafting.settings(session)
    document = Invoice(subscriber_id=subscriber_id, invoice_date=memo_date,
                       currency=drafting.currency(session))
    document.lines.extend(credited_lines)  # transient: never added to the session
    request, _ = taxes.build_request(session, document, number, defaults.tax_rounding)
    lines = tuple(replace(line, rates=tuple(r for r in line.rates if r.kind == "percent"))
                  for line in request.lines)
    if not lines:
        return []
    chosen = taxes.engine_for(session, defaults.tax_engine)
    try:
        result = taxes.call_with_backoff(
            lambda: chosen.engine.post(chosen.settings, replace(request, lines=lines)))
    except TaxEngineRejected as exc:
        raise taxes.rejected(exc) from exc
    if result is None:
        raise ValidationFailed({"tax_engine": (
            "the tax engine is unavailable: nothing was credited, try again later")})
    returned: dict[tuple, int] = defaultdict(int)
    for line in result.lines:
        for detail in line.details:
            returned[(detail.tax_rate_id, detail.jurisdiction[:120], detail.rate)] -= detail.tax
    return [MemoTax(tax_rate_id=rate_id, jurisdiction=jurisdiction, rate=rate, amount=amount)
            for (rate_id, jurisdiction, rate), amount in returned.items() if amount]


def _issue(session: Session, kind: str, subscriber_id, amount, description, memo_date,
           invoice_id, income_account_id, credited_lines: Sequence[InvoiceLine] = ()) -> Memo:
    with session.begin_nested():
        number = next_memo_number(session, kind)  # a write first: see _write_lock
        invoice, account = _validate(session, kind, subscriber_id, amount, description,
                                     memo_date, invoice_id, income_account_id)
        given_back = []
        if credited_lines:
            refuse_closed_books(session, memo_date, "memo_date")
            given_back = _credit_taxes(session, number, subscriber_id, memo_date,
                                       credited_lines)
        tax = sum(row.amount for row in given_back)
        total = amount + tax
        if total <= 0:
            raise ValidationFailed({"amount": "must be a positive amount"})
        memo = Memo(kind=kind, number=number,
                    subscriber_id=subscriber_id, invoice_id=invoice_id, memo_date=memo_date,
                    description=description.strip(), amount=total, tax_total=tax,
                    unapplied=total if kind == "credit" else 0,
                    income_account_id=account.id, taxes=given_back)
        session.add(memo)
        session.flush()
        receivable = {"account_code": ACCOUNTS_RECEIVABLE, "subscriber_id": subscriber_id}
        if kind == "credit":
            legs = [LegSpec(account_id=account.id, debit=amount),
                    *(LegSpec(account_code=TAX_PAYABLE, debit=max(row.amount, 0),
                              credit=max(-row.amount, 0), tax_rate_id=row.tax_rate_id,
                              jurisdiction=row.jurisdiction) for row in given_back),
                    LegSpec(**receivable, credit=total)]
        else:
            legs = [LegSpec(**receivable, debit=amount),
                    LegSpec(account_id=account.id, credit=amount)]
        entry = _posting(lambda: post_entry(
            session, key=f"memo:{memo.id}", entry_date=memo_date, source_type="memo",
            source_id=memo.id, description=f"{'Credit' if kind == 'credit' else 'Debit'} memo "
            f"{memo.number}: {memo.description}"[:255], legs=legs), "memo_date")
        memo.posted_entry_id = entry.id
        if kind == "credit" and invoice is not None:
            _settle(session, memo, invoice, min(total, invoice.balance_due))
        session.flush()
    return memo


def _posting(post, date_field: str):
    """Run a ledger posting, naming the document's date field when the books are closed."""
    try:
        return post()
    except ValidationFailed as exc:
        errors = dict(exc.errors)
        if "entry_date" in errors:
            errors[date_field] = errors.pop("entry_date")
        raise ValidationFailed(errors) from None


def credit_memo(session: Session, subscriber_id: int, amount: int, description: str,
                memo_date: dt.date, invoice_id: int | None = None,
                income_account_id: int | None = None, *,
                credited_lines: Sequence[InvoiceLine] = ()) -> Memo:
    """Lower what the subscriber owes by `amount` minor units (before tax): settle the chosen
    open invoice (the excess, or all of it with no invoice, stays as account credit). With
    `credited_lines` (billed service being credited; their amounts net to -`amount`) the percent
    taxes charged on them are given back too, and the memo's amount is the total."""
    if credited_lines and sum(line.amount for line in credited_lines) != -amount:
        raise ValueError("credited_lines must net to -amount")
    return _issue(session, "credit", subscriber_id, amount, description, memo_date, invoice_id,
                  income_account_id, credited_lines)


def debit_memo(session: Session, subscriber_id: int, amount: int, description: str,
               memo_date: dt.date, invoice_id: int | None = None,
               income_account_id: int | None = None) -> Memo:
    """Raise what the subscriber owes by `amount` minor units. A chosen invoice is kept only as
    the document the charge refers to; its balance due is not changed."""
    return _issue(session, "debit", subscriber_id, amount, description, memo_date, invoice_id,
                  income_account_id)


def void_memo(session: Session, memo_id: int, void_date: dt.date | None = None) -> Memo:
    """Post the reversing entry (tax legs included), void the tax given back with the engine,
    and take the memo's credit back off every invoice it settled; the number is kept."""
    void_date = void_date or dt.date.today()
    with session.begin_nested():
        memo = _one(session, Memo, memo_id, lock=True)
        errors: dict[str, list[str]] = {}
        require(errors, "memo", memo is not None, "does not exist")
        require(errors, "void_date", _is_date(void_date), "must be a date")
        raise_if(errors)
        require(errors, "memo", memo.voided_at is None, "is already void")
        require(errors, "memo", memo.posted_entry_id is not None, "was never posted")
        raise_if(errors)
        entry = _one(session, JournalEntry, memo.posted_entry_id)
        _posting(lambda: reverse_entry(
            session, entry, key=f"memo-void:{memo.id}", entry_date=void_date,
            description=f"Void of memo {memo.number}"), "void_date")
        if memo.taxes:
            taxes.void(session, memo, drafting.settings(session).tax_engine)
        for application in session.scalars(sa.select(MemoApplication).where(
                MemoApplication.memo_id == memo.id)).all():
            _unsettle(_locked_invoice(session, application.invoice_id), application.amount)
            session.delete(application)
        memo.unapplied = 0
        memo.voided_at = utcnow()
        session.flush()
    return memo


def account_credit(session: Session, subscriber_id: int) -> int:
    """The subscriber's credit (memos and payments) not yet applied to any invoice, in minor
    units."""
    return int(session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Memo.unapplied), 0))
        .where(Memo.subscriber_id == subscriber_id, Memo.kind == "credit",
               Memo.voided_at.is_(None)))) + payment_credit(session, subscriber_id)
