"""Posting to the ledger and reading it back. Plain Python: amounts are int minor units.

`post_entry` is the only writer of journal entries. It is idempotent by key (a retried or
concurrent posting of the same document returns the entry already there), refuses unbalanced or
empty entries and dates in closed books, and never commits. Balances and histories are derived
from the legs on Accounts Receivable, never kept as counters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from headend.audit.models import AuditLog
from headend.catalog.models import Account, TaxRate
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.errors import ValidationFailed, raise_if, require
from headend.ledger.models import CLOSING_MODES, JournalEntry, LedgerSettings, Leg
from headend.subscribers.models import Subscriber
from headend.tenancy.context import current_scope


@dataclass(frozen=True)
class LegSpec:
    """One leg to post: an account by chart code (or by id), and a debit or a credit."""

    account_code: str | None = None
    debit: int = 0
    credit: int = 0
    subscriber_id: int | None = None
    tax_rate_id: int | None = None
    jurisdiction: str | None = None
    memo: str | None = None
    account_id: int | None = None

    def __post_init__(self):
        for side in ("debit", "credit"):
            value = getattr(self, side)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{side} must be int minor units, not {type(value).__name__}")
        if (self.account_code is None) == (self.account_id is None):
            raise TypeError("give exactly one of account_code or account_id")


@dataclass(frozen=True)
class HistoryRow:
    entry_id: int
    entry_date: dt.date
    description: str
    source_type: str
    source_id: int
    debit: int
    credit: int
    balance: int  # running: what the subscriber owes after this row


@dataclass(frozen=True)
class TrialBalanceRow:
    account_id: int
    code: str
    name: str
    type: str
    opening: int  # debits - credits before the period
    debits: int
    credits: int

    @property
    def closing(self) -> int:
        return self.opening + self.debits - self.credits


# --- posting ---------------------------------------------------------------------------------

def post_entry(session: Session, *, key: str, entry_date: dt.date, source_type: str,
               source_id: int, description: str, legs: list[LegSpec]) -> JournalEntry:
    """Post one balanced entry, or return the entry already posted under `key`."""
    return _post(session, key=key, entry_date=entry_date, source_type=source_type,
                 source_id=source_id, description=description, legs=legs)


def reverse_entry(session: Session, entry: JournalEntry, *, key: str, entry_date: dt.date,
                  description: str) -> JournalEntry:
    """Post the mirror of `entry` (each debit becomes a credit); an entry is reversed once."""
    existing = _by_key(session, key)
    if existing is not None:
        return existing
    if _reversal_of(session, entry.id) is not None:
        raise ValidationFailed({"entry": "is already reversed"})
    mirror = [
        LegSpec(account_id=leg.account_id, debit=leg.credit, credit=leg.debit,
                subscriber_id=leg.subscriber_id, tax_rate_id=leg.tax_rate_id,
                jurisdiction=leg.jurisdiction, memo=leg.memo)
        for leg in entry.legs
    ]
    return _post(session, key=key, entry_date=entry_date, source_type=entry.source_type,
                 source_id=entry.source_id, description=description, legs=mirror,
                 reverses_id=entry.id)


def _post(session: Session, *, key, entry_date, source_type, source_id, description, legs,
          reverses_id: int | None = None) -> JournalEntry:
    existing = _by_key(session, key)
    if existing is not None:
        return existing
    errors: dict[str, list[str]] = {}
    _check_header(errors, key, entry_date, source_type, description)
    accounts = _check_legs(session, errors, legs)
    warn = None
    if "entry_date" not in errors:
        try:
            warn = refuse_closed_books(session, entry_date)
        except ValidationFailed as exc:
            errors.update(exc.errors)
    raise_if(errors)
    entry = JournalEntry(key=key, entry_date=entry_date, source_type=source_type,
                         source_id=source_id, description=description, reverses_id=reverses_id,
                         closed_books_override=warn is not None)
    entry.legs = [
        Leg(account=accounts[spec.account_id or spec.account_code], debit=spec.debit,
            credit=spec.credit, subscriber_id=spec.subscriber_id, tax_rate_id=spec.tax_rate_id,
            jurisdiction=spec.jurisdiction, memo=spec.memo)
        for spec in legs
    ]
    try:
        with session.begin_nested():
            session.add(entry)
    except IntegrityError:
        # Someone else posted the same key (or reversed the same entry) meanwhile.
        existing = _by_key(session, key)
        if existing is not None:
            return existing
        if reverses_id is not None and _reversal_of(session, reverses_id) is not None:
            raise ValidationFailed({"entry": "is already reversed"}) from None
        raise
    if warn is not None:
        _record_warning(session, warn, entry_date, entry)
    return entry


def _by_key(session: Session, key: str) -> JournalEntry | None:
    return session.scalar(select(JournalEntry).where(JournalEntry.key == key))


def _reversal_of(session: Session, entry_id: int) -> int | None:
    return session.scalar(select(JournalEntry.id).where(JournalEntry.reverses_id == entry_id))


def _check_header(errors, key, entry_date, source_type, description) -> None:
    require(errors, "key", isinstance(key, str) and 0 < len(key) <= 120,
            "is required (at most 120 characters)")
    require(errors, "entry_date",
            isinstance(entry_date, dt.date) and not isinstance(entry_date, dt.datetime),
            "must be a date")
    require(errors, "source_type", isinstance(source_type, str) and 0 < len(source_type) <= 30,
            "is required (at most 30 characters)")
    require(errors, "description", bool((description or "").strip()), "is required")


def _check_legs(session: Session, errors: dict, legs: list[LegSpec]) -> dict:
    """Each leg one-sided on an active account of this tenant, AR legs naming a subscriber,
    debits equal to credits. Returns the accounts by code and by id."""
    require(errors, "legs", bool(legs), "an entry needs at least one debit and one credit")
    accounts = _accounts(session, legs)
    subscribers = _existing(session, Subscriber, {s.subscriber_id for s in legs})
    tax_rates = _existing(session, TaxRate, {s.tax_rate_id for s in legs})
    for n, spec in enumerate(legs, start=1):
        account = accounts.get(spec.account_id or spec.account_code)
        problems = [
            (spec.debit < 0 or spec.credit < 0, "amounts cannot be negative"),
            ((spec.debit > 0) == (spec.credit > 0), "needs either a debit or a credit"),
            (account is None, f"account {spec.account_code or spec.account_id} does not exist"),
            (account is not None and not account.active, f"account {account} is inactive"),
            (account is not None and account.code == ACCOUNTS_RECEIVABLE
             and spec.subscriber_id is None, "a receivable needs its subscriber"),
            (spec.subscriber_id is not None and spec.subscriber_id not in subscribers,
             f"subscriber {spec.subscriber_id} does not exist"),
            (spec.tax_rate_id is not None and spec.tax_rate_id not in tax_rates,
             f"tax rate {spec.tax_rate_id} does not exist"),
        ]
        for failed, message in problems:
            require(errors, "legs", not failed, f"leg {n}: {message}")
    debits, credits = sum(s.debit for s in legs), sum(s.credit for s in legs)
    require(errors, "legs", debits == credits,
            f"unbalanced: debits {debits} and credits {credits} differ")
    return accounts


def _accounts(session: Session, legs: list[LegSpec]) -> dict:
    codes = {s.account_code for s in legs if s.account_code is not None}
    ids = {s.account_id for s in legs if s.account_id is not None}
    found = session.scalars(
        select(Account).where(or_(Account.code.in_(codes), Account.id.in_(ids))))
    return {key: a for a in found for key in (a.code, a.id)}


def _existing(session: Session, model, ids: set) -> set:
    ids.discard(None)
    if not ids:
        return set()
    return set(session.scalars(select(model.id).where(model.id.in_(ids))))


# --- closed books ----------------------------------------------------------------------------

def ledger_settings(session: Session) -> LedgerSettings | None:
    return session.scalar(select(LedgerSettings))


def set_closing_date(session: Session, closing_date: dt.date | None,
                     mode: str = "block") -> LedgerSettings:
    """Close the books up to and including `closing_date` (None reopens them)."""
    errors: dict[str, list[str]] = {}
    require(errors, "closing_date", closing_date is None or (
        isinstance(closing_date, dt.date) and not isinstance(closing_date, dt.datetime)),
        "must be a date")
    require(errors, "closing_mode", mode in CLOSING_MODES,
            f"must be one of: {', '.join(CLOSING_MODES)}")
    raise_if(errors)
    settings = ledger_settings(session)
    if settings is None:
        settings = LedgerSettings()
        session.add(settings)
    settings.closing_date, settings.closing_mode = closing_date, mode
    session.flush()
    return settings


def check_books_open(session: Session, entry_date: dt.date) -> None:
    """Refuse a date in closed books, or record a warning where the tenant chose "warn"."""
    settings = refuse_closed_books(session, entry_date)
    if settings is not None:
        _record_warning(session, settings, entry_date)


def refuse_closed_books(session: Session, day: dt.date, field: str = "entry_date"
                        ) -> LedgerSettings | None:
    """Refuse `day` in books closed with "block", naming the form's `field` (callers check
    before they number anything or call a remote engine). Returns the settings when `day` is
    in books closed with "warn": the ledger posts there and records the warning."""
    settings = ledger_settings(session)
    if settings is None or settings.closing_date is None or day > settings.closing_date:
        return None
    if settings.closing_mode == "block":
        raise ValidationFailed({field: (
            f"is on or before the closing date {settings.closing_date:%Y-%m-%d}: "
            "the books are closed")})
    return settings


def _record_warning(session: Session, settings: LedgerSettings, entry_date: dt.date,
                    entry: JournalEntry | None = None) -> None:
    scope = current_scope()
    session.add(AuditLog(
        tenant_id=settings.tenant_id, actor_id=scope.actor_id, actor_name=scope.actor_name,
        action="warn", entity="journal_entry" if entry else "closed_books",
        entity_id=str(entry.id) if entry else entry_date.isoformat(),
        after={"message": "posted into closed books", "entry_date": entry_date.isoformat(),
               "closing_date": settings.closing_date.isoformat()},
    ))
    session.flush()


# --- reading ---------------------------------------------------------------------------------

def _receivable_legs(subscriber_id: int):
    return (Leg.subscriber_id == subscriber_id, Account.code == ACCOUNTS_RECEIVABLE)


def subscriber_balance(session: Session, subscriber_id: int) -> int:
    """What the subscriber owes (AR debits - credits); negative is credit in their favour."""
    stmt = (select(func.coalesce(func.sum(Leg.debit - Leg.credit), 0))
            .join(Account, Leg.account_id == Account.id)
            .where(*_receivable_legs(subscriber_id)))
    return int(session.scalar(stmt))


def account_history(session: Session, subscriber_id: int) -> list[HistoryRow]:
    """The subscriber's receivable entries in date order, with the balance after each."""
    stmt = (select(JournalEntry.id, JournalEntry.entry_date, JournalEntry.description,
                   JournalEntry.source_type, JournalEntry.source_id,
                   func.sum(Leg.debit), func.sum(Leg.credit))
            .join(Leg, Leg.entry_id == JournalEntry.id)
            .join(Account, Leg.account_id == Account.id)
            .where(*_receivable_legs(subscriber_id))
            .group_by(JournalEntry.id, JournalEntry.entry_date, JournalEntry.description,
                      JournalEntry.source_type, JournalEntry.source_id)
            .order_by(JournalEntry.entry_date, JournalEntry.id))
    rows, balance = [], 0
    for entry_id, day, description, source_type, source_id, debit, credit in session.execute(
            stmt):
        balance += int(debit) - int(credit)
        rows.append(HistoryRow(entry_id, day, description, source_type, source_id, int(debit),
                               int(credit), balance))
    return rows


def trial_balance(session: Session, start: dt.date, end: dt.date) -> list[TrialBalanceRow]:
    """Per account with postings up to `end` (inclusive): the balance before `start`, the
    period's debits and credits, and the closing balance. Debit-positive throughout."""
    if start > end:
        raise ValidationFailed({"end": "must be on or after the start date"})
    before = JournalEntry.entry_date < start

    def total(amount, when):
        return func.coalesce(func.sum(case((when, amount), else_=0)), 0)

    stmt = (select(Account.id, Account.code, Account.name, Account.type,
                   total(Leg.debit - Leg.credit, before), total(Leg.debit, ~before),
                   total(Leg.credit, ~before))
            .join(Leg, Leg.account_id == Account.id)
            .join(JournalEntry, Leg.entry_id == JournalEntry.id)
            .where(JournalEntry.entry_date <= end)
            .group_by(Account.id, Account.code, Account.name, Account.type)
            .order_by(Account.code))
    return [TrialBalanceRow(account_id, code, name, kind, int(opening), int(debits),
                            int(credits))
            for account_id, code, name, kind, opening, debits, credits in session.execute(stmt)]


def trial_balance_totals(rows: list[TrialBalanceRow]) -> TrialBalanceRow:
    """The column sums; a sound ledger gives opening 0, debits == credits and closing 0."""
    return TrialBalanceRow(0, "", "Total", "", sum(r.opening for r in rows),
                           sum(r.debits for r in rows), sum(r.credits for r in rows))
