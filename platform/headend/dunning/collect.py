"""The daily collections job: bad-debt write-offs, late and re-billing fees, upcoming-suspension
notices and suspensions, for the acting tenant on a date.

A pure function of the database and the date, set-based: candidates come from one query per
step (never a query per subscriber), and the effects are written per chunk of CHUNK - fee
invoices with their line and ledger entries, AppliedFee claims, notices, suspensions (one
UPDATE per table), write-offs - with pre-allocated ids and one COPY (PostgreSQL) or multi-row
INSERT per table (`headend.billing.bulk`, as the billing run writes), never an ORM round trip
per effect. Every effect has a unique key - a WriteOff per archive, an AppliedFee per invoice
and kind, a Notice key per subscriber and day. Each chunk is written under a per-tenant
advisory lock (PostgreSQL; SQLite has a single writer) after re-running its candidate query,
so a rerun, or a second run at once (it waits on the lock and then finds the work done), does
each thing once; a chunk a unique key still refuses is rolled back to its savepoint and
recomputed. Bulk writes bypass the per-row audit recorder: a run writes one summary audit row,
plus one per status change a suspension makes.

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
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from headend.audit.models import AuditLog
from headend.billing import drafting
from headend.billing.bulk import (
    BulkEntry,
    allocate_ids,
    forget,
    insert_rows,
    post_entries_bulk,
)
from headend.billing.defaults import invoice_defaults
from headend.billing.models import Invoice, InvoiceLine, Memo
from headend.billing.numbering import format_number, reserve_invoice_numbers
from headend.catalog.models import Account
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.db import among, utcnow
from headend.dunning.models import (
    AppliedFee,
    CollectionSettings,
    Notice,
    SubscriberCollection,
    WriteOff,
)
from headend.dunning.services import OPEN_STATUSES, collection_settings, deferred, rules_for
from headend.errors import ValidationFailed
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import LegSpec
from headend.money import format_money, from_minor, to_minor
from headend.subscribers.models import Subscriber, Subscription
from headend.tenancy.context import acting_as, current_scope
from headend.tenancy.models import Tenant

LATE_FEE_INCOME, SERVICE_FEE_INCOME, BAD_DEBT = "4500", "4700", "6000"
FEE_ACCOUNTS = {"late_fee": LATE_FEE_INCOME, "rebill_fee": SERVICE_FEE_INCOME}
FEE_LABELS = {"late_fee": "Late fee", "rebill_fee": "Re-billing fee"}
CHUNK = 2000  # effects per chunk (one savepoint, then `after_step`: the job commits there)
_LOCK_CLASS = 7302  # pg_advisory_xact_lock(_LOCK_CLASS, tenant_id): one collections writer


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
                        currency: str, *, subscribers: list[int] | None = None
                        ) -> list[tuple[int, dt.date, int]]:
    """(subscriber, archived_on, balance) of archived subscribers due a write-off (of
    `subscribers` only, when given)."""
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
                       WriteOff.archived_on == SubscriberCollection.archived_on).exists(),
                   *_only(SubscriberCollection.subscriber_id, subscribers))
            .group_by(SubscriberCollection.subscriber_id, SubscriberCollection.archived_on)
            .having(balance > 0, balance <= threshold)
            .order_by(SubscriberCollection.subscriber_id))
    return [(s, a, int(b)) for s, a, b in session.execute(stmt)]


def _only(column, ids: list[int] | None) -> tuple:
    """The chunk filter of a candidate query re-run under the lock (none: every candidate)."""
    return () if ids is None else (among(column, ids),)


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
                   today: dt.date, *, invoices: list[int] | None = None
                   ) -> list[tuple[int, int, str | None, int]]:
    """(invoice, subscriber, number, balance due) of unpaid invoices due a fee of `kind` (of
    `invoices` only, when given).

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
                   ~exempt, ~deferred("late_fee", today, Invoice.subscriber_id),
                   *_only(Invoice.id, invoices))
            .order_by(Invoice.id))
    return [(i, s, n, int(b)) for i, s, n, b in session.execute(stmt)]


def _fee_explanation(settings: CollectionSettings, kind: str, balance_due: int,
                     currency: str) -> str | None:
    """How a percent late fee was reckoned (None for a fixed fee)."""
    if kind != "late_fee" or settings.late_fee_kind != "percent":
        return None
    cap = settings.late_fee_max
    return (f"{settings.late_fee_amount.normalize()} % of "
            f"{format_money(balance_due, currency)} due"
            + (f", at most {format_money(to_minor(cap, currency), currency)}"
               if cap is not None else ""))


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
                        *, limit: int | None = None,
                        subscribers: list[int] | None = None) -> list[Overdue]:
    """Every subscriber (of `subscribers`, when given) owing an overdue invoice, most overdue
    first, in one query, with the day the job suspends them (grace days after the oldest due
    date, or a promise's date)."""
    from headend.dunning.models import ScheduledAction

    currency = drafting.currency(session)
    invoices = (sa.select(Invoice.subscriber_id.label("subscriber_id"),
                          sa.func.min(Invoice.due_date).label("oldest"),
                          sa.func.sum(Invoice.total - Invoice.amount_paid).label("overdue"))
                .where(Invoice.status.in_(OPEN_STATUSES), Invoice.due_date < today,
                       *_only(Invoice.subscriber_id, subscribers))
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


def _due(rows: list[Overdue], today: dt.date) -> list[Overdue]:
    return [r for r in rows if r.next_action == "suspend" and r.next_date <= today]


def _write_notices(session: Session, rows: list[dict]) -> None:
    """Notices in one statement; the mail side delivers them once this chunk commits."""
    from headend.mail.jobs import request_delivery

    if rows:
        insert_rows(session, Notice, rows)
        request_delivery(session, current_scope().tenant_id)


def _upcoming(rows: list[Overdue], today: dt.date, notice_days: int) -> list[Overdue]:
    return [r for r in rows if r.next_action == "suspend" and r.next_date > today
            and (r.next_date - today).days <= notice_days]


# --- the run ----------------------------------------------------------------------------------

def run_collections(session: Session, today: dt.date, *, dry_run: bool = False,
                    progress: Callable[[int], None] | None = None,
                    after_step: Callable[[], None] | None = None) -> CollectionsRun:
    """The acting tenant's collections for `today`: write-offs, late fees, re-billing fees,
    upcoming-suspension notices, suspensions - in that order, each written set-based in chunks
    of CHUNK effects. `after_step` runs after each chunk (the job commits there: a crash keeps
    the chunks done, the rerun does the rest); the chunk's events (`invoice_posted`,
    `service_suspended`) fire after it. `progress(n)` hears how many candidates were just
    handled. A dry run finds and prices the same work and writes nothing."""
    return _Run(session, today, dry_run, progress, after_step).run()


class _Run:
    def __init__(self, session, today, dry_run, progress, after_step):
        self.session, self.today, self.dry_run = session, today, dry_run
        self.progress = progress or (lambda n: None)
        self.after_step = after_step or (lambda: None)
        tenant = session.get(Tenant, _tenant_id(session))
        self.result = CollectionsRun(tenant.id, tenant.slug, tenant.currency, today)
        self.currency = tenant.currency
        self.settings = collection_settings(session)
        self.callers: dict[str, Callable | None] = {}

    def run(self) -> CollectionsRun:
        s, r, settings, today = self.session, self.result, self.settings, self.today
        self._steps(writeoff_candidates(s, settings, today, self.currency), self._write_offs)
        for kind in FEE_ACCOUNTS:
            self._steps(fee_candidates(s, settings, kind, today),
                        lambda chunk, kind=kind: self._fees(kind, chunk))
        rows = overdue_subscribers(s, settings, today)
        self._steps(_upcoming(rows, today, settings.suspension_notice_days), self._notices)
        self._steps(_due(rows, today), self._suspensions)
        if not self.dry_run and (r.write_offs or r.late_fees or r.rebill_fees or r.notices
                                 or r.suspended):
            self._audit()
        return r

    # -- chunks --

    def _steps(self, candidates: list, write: Callable[[list], list]) -> None:
        """Each chunk of `candidates` re-computed (`write` re-runs the candidate query for the
        chunk) and written under the tenant's lock, in a savepoint: what a concurrent run did
        meanwhile is no longer a candidate, and a chunk a unique key refuses anyway is rolled
        back and recomputed. A dry run only counts what the re-computed chunk would do."""
        for start in range(0, len(candidates), CHUNK):
            chunk = candidates[start:start + CHUNK]
            if self.dry_run:
                write(chunk)
                self.progress(len(chunk))
                continue
            self.session.flush()
            for attempt in itertools.count():
                counted = replace(self.result, suspended=list(self.result.suspended))
                try:
                    with self.session.begin_nested():
                        self._lock()
                        fire = write(chunk)
                    break
                except IntegrityError:
                    vars(self.result).update(vars(counted))  # the chunk is recounted
                    if attempt >= 3:
                        raise
            self.after_step()
            for name, kwargs in fire:
                self._fire(name, **kwargs)
            self.progress(len(chunk))

    def _lock(self) -> None:
        """One collections writer per tenant at a time (PostgreSQL; SQLite has one writer)."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(
                _LOCK_CLASS, self.result.tenant_id)))

    def _fire(self, name: str, **kwargs) -> None:
        """The tenant's hook caller, looked up once per run (it reads the enabled plugins)."""
        if name not in self.callers:
            pm = current_app.extensions.get("headend_plugins") if has_app_context() else None
            self.callers[name] = pm.event_caller(name, self.result.tenant_id) if pm else None
        if self.callers[name] is not None:
            self.callers[name](tenant_id=self.result.tenant_id, **kwargs)

    # -- effects --

    def _write_offs(self, chunk: list[tuple[int, dt.date, int]]) -> list:
        s, today = self.session, self.today
        rows = writeoff_candidates(s, self.settings, today, self.currency,
                                   subscribers=[row[0] for row in chunk])
        self.result.write_offs += len(rows)
        self.result.written_off += sum(row[2] for row in rows)
        if not rows or self.dry_run:
            return []
        accounts = drafting.account_ids(s)
        ids = allocate_ids(s, WriteOff, len(rows))
        entry_ids = allocate_ids(s, JournalEntry, len(rows))
        post_entries_bulk(s, [BulkEntry(
            entry_id, f"write_off:{row_id}", today, "write_off", row_id,
            f"Bad debt written off (account archived {archived_on:%Y-%m-%d})",
            (LegSpec(account_id=accounts[BAD_DEBT], debit=amount),
             LegSpec(account_id=accounts[ACCOUNTS_RECEIVABLE], credit=amount,
                     subscriber_id=subscriber_id)))
            for row_id, entry_id, (subscriber_id, archived_on, amount)
            in zip(ids, entry_ids, rows, strict=True)])
        insert_rows(s, WriteOff, [dict(
            id=row_id, subscriber_id=subscriber_id, archived_on=archived_on, amount=amount,
            written_on=today, posted_entry_id=entry_id)
            for row_id, entry_id, (subscriber_id, archived_on, amount)
            in zip(ids, entry_ids, rows, strict=True)])
        invoices = list(s.scalars(sa.select(Invoice.id).where(
            among(Invoice.subscriber_id, [row[0] for row in rows]),
            Invoice.status.in_(OPEN_STATUSES))))
        _update(s, Invoice, invoices, status="written_off")
        return []

    def _fees(self, kind: str, chunk: list[tuple[int, int, str | None, int]]) -> list:
        """Each fee as its own posted invoice (one line, dated today, not taxable: no engine is
        asked), numbered in candidate order, with its AppliedFee claim; unapplied account
        credit settles it, as posting any invoice does."""
        s, today, currency = self.session, self.today, self.currency
        rows = [(invoice_id, subscriber_id, number, balance, amount)
                for invoice_id, subscriber_id, number, balance in fee_candidates(
                    s, self.settings, kind, today, invoices=[row[0] for row in chunk])
                if (amount := fee_amount(self.settings, kind, balance, currency)) > 0]
        setattr(self.result, f"{kind}s", getattr(self.result, f"{kind}s") + len(rows))
        self.result.fees_total += sum(row[4] for row in rows)
        if not rows or self.dry_run:
            return []
        defaults = invoice_defaults(s)
        accounts = drafting.account_ids(s)
        income, label = accounts[FEE_ACCOUNTS[kind]], FEE_LABELS[kind]
        first = reserve_invoice_numbers(s, len(rows))  # SQLite: the write lock, before ids
        ids = allocate_ids(s, Invoice, len(rows))
        entry_ids = allocate_ids(s, JournalEntry, len(rows))
        line_ids = allocate_ids(s, InvoiceLine, len(rows))
        numbers = [format_number(defaults.number_format, first + n, today)
                   for n in range(len(rows))]
        descriptions = [f"{label} for invoice {number or invoice_id}"
                        for invoice_id, _, number, _, _ in rows]
        post_entries_bulk(s, [BulkEntry(
            entry_id, f"invoice:{fee_id}:post", today, "invoice", fee_id,
            f"Invoice {fee_number}: {description}",
            (LegSpec(account_id=accounts[ACCOUNTS_RECEIVABLE], debit=amount,
                     subscriber_id=subscriber_id),
             LegSpec(account_id=income, credit=amount)))
            for fee_id, entry_id, fee_number, description, (_, subscriber_id, _, _, amount)
            in zip(ids, entry_ids, numbers, descriptions, rows, strict=True)])
        now = utcnow()
        insert_rows(s, Invoice, [dict(
            id=fee_id, number=fee_number, subscriber_id=subscriber_id, invoice_date=today,
            due_date=today + dt.timedelta(days=defaults.due_days), status="open", source=kind,
            currency=currency, subtotal=amount, tax_total=0, total=amount, amount_paid=0,
            tax_status="ok", tax_attempts=1, tax_engine_ref=None, memo=None,
            posted_entry_id=entry_id, posted_at=now, voided_at=None, created_at=now)
            for fee_id, entry_id, fee_number, (_, subscriber_id, _, _, amount)
            in zip(ids, entry_ids, numbers, rows, strict=True)])
        insert_rows(s, InvoiceLine, [dict(
            id=line_id, invoice_id=fee_id, position=1, kind="fee", description=description,
            explanation=_fee_explanation(self.settings, kind, balance, currency),
            item_id=None, subscription_id=None, for_subscriber_id=subscriber_id,
            period_start=None, period_end=None, quantity=Decimal(1),
            unit_price=from_minor(amount, currency), amount=amount, income_account_id=income,
            taxable=False, tax=0)
            for line_id, fee_id, description, (_, subscriber_id, _, balance, amount)
            in zip(line_ids, ids, descriptions, rows, strict=True)])
        insert_rows(s, AppliedFee, [dict(
            invoice_id=invoice_id, kind=kind, fee_invoice_id=fee_id, amount=amount,
            applied_on=today)
            for fee_id, (invoice_id, _, _, _, amount) in zip(ids, rows, strict=True)])
        _apply_credits(s, {fee_id: row[1] for fee_id, row in zip(ids, rows, strict=True)})
        return [("invoice_posted", {"invoice_id": fee_id}) for fee_id in ids]

    def _notices(self, chunk: list[Overdue]) -> list:
        s, today = self.session, self.today
        rows = _upcoming(overdue_subscribers(s, self.settings, today,
                                             subscribers=[r.subscriber_id for r in chunk]),
                         today, self.settings.suspension_notice_days)
        keys = {r.subscriber_id: f"upcoming_suspension:{r.subscriber_id}:{r.next_date}"
                for r in rows}
        done = _notice_keys(s, "upcoming_suspension", list(keys))
        rows = [r for r in rows if keys[r.subscriber_id] not in done]
        self.result.notices += len(rows)
        if self.dry_run:
            return []
        now = utcnow()
        _write_notices(s, [dict(
            kind="upcoming_suspension", key=keys[r.subscriber_id], subscriber_id=r.subscriber_id,
            invoice_id=None, payment_id=None, created_at=now, sent_at=None, message=(
                f"{format_money(r.overdue, self.currency)} is overdue: service will be "
                f"suspended on {r.next_date:%Y-%m-%d} unless it is paid.")) for r in rows])
        return []

    def _suspensions(self, chunk: list[Overdue]) -> list:
        """Past-grace subscribers and their active subscriptions become "suspended" (the
        subscriptions remembered, to restore exactly those), a "suspended" notice each - its
        key (one per subscriber and day) makes a rerun do nothing - and an audit row per
        status change."""
        s, today = self.session, self.today
        rows = _due(overdue_subscribers(s, self.settings, today,
                                        subscribers=[r.subscriber_id for r in chunk]), today)
        done = _notice_keys(s, "suspended", [r.subscriber_id for r in rows])
        rows = [r for r in rows if f"suspended:{r.subscriber_id}:{today}" not in done]
        if self.dry_run:
            self.result.suspended.extend(r.subscriber_id for r in rows)
            return []
        if not rows:
            return []
        changed = set(s.scalars(
            sa.update(Subscriber)
            .where(among(Subscriber.id, [r.subscriber_id for r in rows]),
                   Subscriber.status == "active")
            .values(status="suspended").returning(Subscriber.id)
            .execution_options(synchronize_session=False)))
        forget(s, Subscriber, changed)
        rows = [r for r in rows if r.subscriber_id in changed]  # in candidate order
        subscriptions: dict[int, list[int]] = {r.subscriber_id: [] for r in rows}
        for sub_id, owner in s.execute(
                sa.select(Subscription.id, Subscription.subscriber_id)
                .where(among(Subscription.subscriber_id, list(subscriptions)),
                       Subscription.status == "active").order_by(Subscription.id)):
            subscriptions[owner].append(sub_id)
        suspended = [sub_id for ids in subscriptions.values() for sub_id in ids]
        _update(s, Subscription, suspended, status="suspended")
        now = utcnow()
        _write_notices(s, [dict(
            kind="suspended", key=f"suspended:{r.subscriber_id}:{today}",
            subscriber_id=r.subscriber_id, invoice_id=None, payment_id=None, created_at=now,
            sent_at=None, message=(f"Service suspended on {today:%Y-%m-%d}: "
                                   f"{format_money(r.overdue, self.currency)} is overdue."))
            for r in rows])
        _remember(s, subscriptions, today)
        _audit_status(s, [(Subscriber, r.subscriber_id) for r in rows]
                      + [(Subscription, sub_id) for sub_id in suspended], now)
        self.result.suspended.extend(r.subscriber_id for r in rows)
        return [("service_suspended", {"subscription_id": sub_id}) for sub_id in suspended]

    def _audit(self) -> None:
        """Bulk writes bypass the per-row audit recorder: one summary row per tenant run (the
        status changes of suspensions have their own rows)."""
        r = self.result
        scope = current_scope()
        self.session.add(AuditLog(
            tenant_id=r.tenant_id, actor_id=scope.actor_id,
            actor_name=scope.actor_name or "collections", action="create",
            entity="collections_run", entity_id=self.today.isoformat(),
            after={"write_offs": r.write_offs, "written_off": r.written_off,
                   "late_fees": r.late_fees, "rebill_fees": r.rebill_fees,
                   "fees_total": r.fees_total, "notices": r.notices,
                   "suspended": len(r.suspended)}))
        self.session.flush()
        self.after_step()


# --- bulk helpers -----------------------------------------------------------------------------

def _notice_keys(session: Session, kind: str, subscriber_ids: list[int]) -> set[str]:
    """The keys of the `kind` notices these subscribers already have."""
    if not subscriber_ids:
        return set()
    return set(session.scalars(sa.select(Notice.key).where(
        Notice.kind == kind, among(Notice.subscriber_id, subscriber_ids))))


def _update(session: Session, model, ids: list[int], **values) -> None:
    """One UPDATE of these rows (the acting tenant's: the scoping adds it)."""
    if ids:
        session.execute(sa.update(model).where(among(model.id, ids)).values(**values)
                        .execution_options(synchronize_session=False))
        forget(session, model, ids)


def _remember(session: Session, subscriptions: dict[int, list[int]], today: dt.date) -> None:
    """SubscriberCollection: the job's suspension and the subscriptions it suspended (a
    payment restores exactly those); the row is created for a subscriber who has none."""
    rows = dict(session.execute(sa.select(SubscriberCollection.subscriber_id,
                                          SubscriberCollection.id)
                                .where(among(SubscriberCollection.subscriber_id,
                                             list(subscriptions)))).all())
    if rows:
        session.execute(sa.update(SubscriberCollection), [
            {"id": rows[owner], "suspended_on": today, "suspended_subscription_ids": ids}
            for owner, ids in subscriptions.items() if owner in rows])
        forget(session, SubscriberCollection, rows.values())
    insert_rows(session, SubscriberCollection, [dict(
        subscriber_id=owner, autopay=False, autopay_method_id=None, grace_days=None,
        grace_amount=None, never_suspend=False, no_late_fees=False, archived_on=None,
        suspended_on=today, suspended_subscription_ids=ids)
        for owner, ids in subscriptions.items() if owner not in rows])


def _audit_status(session: Session, changed: list[tuple[type, int]],
                  now: dt.datetime) -> None:
    """An audit row per status change a suspension made (active -> suspended), in bulk."""
    if not changed:
        return
    scope = current_scope()
    session.execute(sa.insert(AuditLog), [dict(
        tenant_id=scope.tenant_id, at=now, actor_id=scope.actor_id,
        actor_name=scope.actor_name or "collections", action="update",
        entity=model.__tablename__, entity_id=str(row_id), before={"status": "active"},
        after={"status": "suspended"}) for model, row_id in changed])


def _apply_credits(session: Session, fee_invoices: dict[int, int]) -> None:
    """Unapplied account credit (credit memos, payments) settles the new fee invoices, oldest
    first, only for the few subscribers that have any (`post_invoice` does it per invoice)."""
    from headend.billing.memos import apply_account_credit
    from headend.payments.allocation import credit_holders

    owners = set(fee_invoices.values())
    holders = set(session.scalars(sa.select(Memo.subscriber_id).distinct().where(
        Memo.kind == "credit", Memo.voided_at.is_(None), Memo.unapplied > 0,
        among(Memo.subscriber_id, owners))))
    holders |= credit_holders(session, owners)
    for fee_id, owner in sorted(fee_invoices.items()):
        if owner in holders:
            apply_account_credit(session, session.get(Invoice, fee_id))


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
            len(fee_candidates(session, settings, k, today)) for k in FEE_ACCOUNTS) + len(
            _due(rows, today)) + len(_upcoming(rows, today, settings.suspension_notice_days))
    return total
