"""The nightly billing run: every due subscription-period invoiced exactly once, fast.

A pure function of the database and the run date. For each tenant, the subscriptions with a
period whose invoice date (period start - days in advance) is on or before the run date are
taken in chunks of whole bill-to groups; each chunk is computed in Python with the rules Invoice
Now uses (`drafting`: which subscriptions, which periods, who pays; `charges_for`: what they
cost; `taxes`: which rates apply) and written set-based, one commit per chunk - never one
statement or commit per subscription. Alike invoices (same package, cycle, periods, tax
settings...: `_alike`) are priced once, and the database writes every invoice of the chunk
from these shapes with one INSERT .. SELECT per table (`shapes`). On PostgreSQL the run is a
two-stage pipeline: while a writer thread writes and commits chunk k, the main thread computes
chunk k+1 (the database works while Python computes).
With a remote tax engine (AvaTax) the invoices are written as drafts waiting for their taxes;
after the chunks, the invoicing retry records and posts each one with the engine, so a failure
can never leave a document recorded at the engine without its invoice.

Exactly once: BilledPeriod's unique (tenant, subscription, period_start) key. Candidates are the
subscriptions without a billed period reaching past the horizon, so a rerun finds nothing to
do; a chunk is one transaction, so a run killed mid-way leaves whole chunks behind and the
rerun bills the rest. Two runs at once write one chunk at a time per tenant (an advisory lock
on PostgreSQL, the write lock on SQLite); a chunk the other run billed meanwhile is refused by the
unique key, rolled back and recomputed from what the other run committed (its periods then
start after the ones billed), so it is never billed twice.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import itertools
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from headend.audit.models import AuditLog
from headend.billing import drafting
from headend.billing import taxes as tax_rules
from headend.billing.bulk import BulkEntry, allocate_ids, check_entries
from headend.billing.changes import apply_schedule
from headend.billing.charges import Charge, InclusionSnapshot, SubscriptionSnapshot, charges_for
from headend.billing.defaults import invoice_defaults
from headend.billing.drafting import (
    DEFAULT_INCOME,
    MAX_PERIODS_PER_CALL,
    SERVICE_INCOME,
    SETUP_INCOME,
    cap_discounts,
    item_account,
    paper_fee,
)
from headend.billing.invoicing import ordered_charges
from headend.billing.models import (
    BilledPeriod,
    Invoice,
    InvoiceDefaults,
    Memo,
    RecurringLine,
)
from headend.billing.numbering import format_number, reserve_invoice_numbers
from headend.billing.periods import Period, first_period, invoice_date_for, period_containing
from headend.billing.shapes import InvoiceRow, ShapeRows, write_invoices
from headend.catalog.models import (
    Account,
    Package,
    PackageInclusion,
    PackageServiceLine,
    TaxRate,
)
from headend.catalog.services import ACCOUNTS_RECEIVABLE
from headend.db import among, utcnow
from headend.errors import ValidationFailed
from headend.ledger.models import JournalEntry
from headend.ledger.services import LegSpec, refuse_closed_books
from headend.money import format_money, to_minor
from headend.network.usage_billing import PendingUsage, mark_invoiced, pending_usage, rate_usage
from headend.plugins.interfaces import TaxEngineRejected, TaxLine, TaxRequest, TaxResult
from headend.subscribers.models import Subscriber, Subscription, subscriber_tax_rate
from headend.subscribers.services import unit_price
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant

CHUNK = 2000  # subscriptions per transaction
SAMPLE_LINES = 20  # lines a dry run shows
SALES_TAX = "2200"
_LOCK_CLASS = 7301  # pg_advisory_xact_lock(_LOCK_CLASS, tenant_id): one chunk writer per tenant


@dataclass
class TenantRun:
    """What the run did (or, dry, would do) for one tenant."""

    tenant_id: int
    slug: str
    currency: str
    candidates: int = 0
    invoices: int = 0
    periods: int = 0
    total: int = 0  # minor units, taxes included
    waiting: int = 0  # invoices left as drafts: their remote tax engine was unavailable
    sample: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.slug}: {self.invoices} invoices, {self.periods} subscription-periods, "
                f"total {format_money(self.total, self.currency)}")


# --- the run ---------------------------------------------------------------------------------

def _tenants(session: Session, tenant_slug: str | None) -> list:
    rows = session.execute(
        sa.select(Tenant.id, Tenant.slug, Tenant.currency)
        .where(Tenant.active.is_(True), *([Tenant.slug == tenant_slug] if tenant_slug else []))
        .order_by(Tenant.id)).all()
    if tenant_slug and not rows:
        raise ValidationFailed({"tenant": f"no active tenant {tenant_slug!r}"})
    session.rollback()
    return rows


def bill_run(session: Session, run_date: dt.date, *, tenant_slug: str | None = None,
             dry_run: bool = False, chunk_size: int = CHUNK,
             progress: Callable[[int], None] | None = None,
             on_chunk: Callable[[TenantRun], None] | None = None) -> list[TenantRun]:
    """Invoice everything due on `run_date` for every active tenant (or one); commits per chunk.

    `progress(n)` hears how many candidate subscriptions were just handled; `on_chunk` runs
    after each committed chunk. A dry run computes the same invoices and writes nothing.
    """
    results = []
    for tenant_id, slug, currency in _tenants(session, tenant_slug):
        with acting_as(tenant_id, actor_name="billing run"):
            runner = _TenantRunner(session, TenantRun(tenant_id, slug, currency), run_date,
                                   dry_run, progress, on_chunk)
            results.append(runner.run(chunk_size))
    return results


def count_candidates(session: Session, run_date: dt.date, tenant_slug: str | None = None) -> int:
    """How many subscriptions the run would look at (the progress bar's length)."""
    total = 0
    for tenant_id, _, _ in _tenants(session, tenant_slug):
        with acting_as(tenant_id):
            total += len(_candidates(session, run_date, _defaults(session)))
    session.rollback()
    return total


def _defaults(session: Session) -> InvoiceDefaults:
    """A copy of the tenant's defaults outside the session: per-chunk commits must not expire
    (and reload) it. The paper-invoice item comes along, loaded."""
    row = invoice_defaults(session)
    copy = InvoiceDefaults(**{c.key: getattr(row, c.key)
                              for c in sa.inspect(InvoiceDefaults).column_attrs})
    item = row.paper_invoice_item
    if item is not None:
        session.expunge(item)
        copy.paper_invoice_item = item
    return copy


def _payers(session: Session) -> dict[int, int]:
    """Subscriber -> the account its charges land on, for the few that bill all to a parent
    (followed up the chain, as `drafting.payer_of` does)."""
    parents = dict(session.execute(sa.select(Subscriber.id, Subscriber.parent_id).where(
        Subscriber.bill_all_to_parent.is_(True), Subscriber.parent_id.is_not(None))).all())
    payers = {}
    for child in parents:
        seen, payer = set(), child
        while payer in parents and payer not in seen:
            seen.add(payer)
            payer = parents[payer]
        payers[child] = payer
    return payers


def _payer(payers: dict[int, int], owner: int, bill_to: int | None) -> int:
    """Whose invoice a subscription (or custom line) lands on: its bill-to account, else its
    owner's parent when the owner bills all to it (`_payers`), else its owner."""
    return bill_to or payers.get(owner, owner)


def _due_filter(defaults: InvoiceDefaults, run_date: dt.date) -> tuple:
    """The subscriptions that may have a due period (the exact periods are computed later):
    invoiceable as `drafting.invoiceable` says, started by the horizon, not billed past it."""
    horizon = run_date + dt.timedelta(days=defaults.days_in_advance)
    billed_past = sa.exists().where(BilledPeriod.subscription_id == Subscription.id,
                                    BilledPeriod.period_end > horizon)
    billed_to_cancel = sa.exists().where(BilledPeriod.subscription_id == Subscription.id,
                                         BilledPeriod.period_end >= Subscription.cancel_on)
    start = Subscription.bill_start_date
    return (
        drafting.invoiceable_clause(defaults),
        sa.or_(start <= horizon, sa.and_(
            start.is_(None),
            Subscription.created_at < dt.datetime.combine(horizon + dt.timedelta(days=1),
                                                          dt.time()))),
        sa.or_(Subscription.cancel_on.is_(None), ~billed_to_cancel),
        Package.exclude_from_invoicing.is_(False), ~billed_past)


def _candidates(session: Session, run_date: dt.date, defaults: InvoiceDefaults,
                payers: dict[int, int] | None = None) -> list[tuple[int, int]]:
    """(subscription id, payer id) of the subscriptions that may be due, grouped by payer."""
    payers = _payers(session) if payers is None else payers
    stmt = (sa.select(Subscription.id, Subscription.subscriber_id,
                      Subscription.bill_to_subscriber_id)
            .join(Package, Subscription.package_id == Package.id)
            .where(*_due_filter(defaults, run_date)))
    rows = [(sub_id, _payer(payers, owner, bill_to))
            for sub_id, owner, bill_to in session.execute(stmt)]
    return sorted(rows, key=lambda r: (r[1], r[0]))


def _chunks(rows: list[tuple[int, int]], size: int) -> list[list[int]]:
    """Chunks of about `size` subscriptions that never split a payer (one invoice each)."""
    chunks, current = [], []
    for _, group in itertools.groupby(rows, key=lambda r: r[1]):
        group = [sub_id for sub_id, _ in group]
        if current and len(current) + len(group) > size:
            chunks.append(current)
            current = []
        current.extend(group)
    if current:
        chunks.append(current)
    return chunks


class _TenantRunner:
    def __init__(self, session, result, run_date, dry_run, progress, on_chunk):
        self._session, self.result, self.run_date = session, result, run_date
        self.dry_run, self.progress, self.on_chunk = dry_run, progress, on_chunk
        self._thread = threading.local()

    @property
    def session(self) -> Session:
        """The session of the thread at work: a pipelined run's writer thread has its own."""
        return getattr(self._thread, "session", None) or self._session

    def run(self, chunk_size: int) -> TenantRun:
        session = self.session
        self.defaults = _defaults(session)
        if not self.dry_run:
            session.commit()  # the defaults row, when this is the tenant's first use
            rate_usage(session, self.run_date)  # ended usage periods, for the invoices below
            session.commit()
        self.payers = _payers(session)
        candidates = _candidates(session, self.run_date, self.defaults, payers=self.payers)
        self.result.candidates = len(candidates)
        self.catalog = _Catalog(session)
        if self._remote_taxes:  # refused before anything is written or sent to the engine
            refuse_closed_books(session, self.run_date, "entry_date")
        session.rollback()
        chunks = _chunks(candidates, chunk_size)
        if self._pipelined():
            self._run_pipelined(chunks)
        else:
            for chunk in chunks:
                self._chunk(chunk)
        if self._remote_taxes and self.result.invoices:
            self._post_waiting()
        if self.result.invoices and not self.dry_run:
            self._audit()
        return self.result

    @property
    def _remote_taxes(self) -> bool:
        """A remote engine (AvaTax) records each invoice under its number. The run writes such
        invoices as drafts waiting for their taxes and commits them; the invoicing retry then
        records and posts each one (a failure after the engine recorded an invoice leaves a
        draft whose retry adjusts the same document, never an orphan document)."""
        return not self.dry_run and not name_is_local(self.defaults)

    def _pipelined(self) -> bool:
        """Whether to compute a chunk while the previous one is written: on PostgreSQL, whose
        server does the writing work while Python computes."""
        return not self.dry_run and self.session.get_bind().dialect.name == "postgresql"

    def _post_waiting(self) -> None:
        """Tax and post the drafts this run left waiting, through the invoicing retry; what
        the engine cannot take now stays waiting for the daily retry."""
        from headend.billing.invoicing import retry_waiting_taxes

        session, r = self.session, self.result
        retry_waiting_taxes(session, after_batch=session.commit, backoff=tax_rules.BACKOFF)
        ours = sa.select(Invoice.total, Invoice.tax_status).where(
            Invoice.source == "billing_run", Invoice.invoice_date == self.run_date)
        rows = session.execute(ours).all()
        r.total = sum(total for total, _ in rows)
        r.waiting = sum(status == "waiting" for _, status in rows)
        session.commit()

    def _run_pipelined(self, chunks: list[list[int]]) -> None:
        """This thread computes chunks (reads only); a writer thread with its own session
        writes and commits each one while the next is computed. The hand-off holds one chunk,
        so memory stays bounded; the writer re-checks each chunk under the tenant lock."""
        handoff: queue.Queue = queue.Queue(maxsize=1)
        failed: list[BaseException] = []

        def write_all() -> None:
            self._thread.session = Session(bind=self._session.get_bind())
            try:
                while (item := handoff.get()) is not None:
                    if not failed:
                        try:
                            self._chunk(*item)
                        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                            failed.append(exc)
            finally:
                self._thread.session.close()

        writer = threading.Thread(target=contextvars.copy_context().run, args=(write_all,),
                                  name=f"billing-run-{self.result.slug}")
        writer.start()
        try:
            for ids in chunks:
                if failed:
                    break
                bills = self._compute(ids)
                self.session.rollback()
                handoff.put((ids, bills))
        finally:
            handoff.put(None)
            writer.join()
        if failed:
            raise failed[0]

    def _chunk(self, ids: list[int], bills: list[_Bill] | None = None) -> None:
        """Bill one chunk in one transaction (`bills`: computed already, to be re-checked)."""
        for attempt in itertools.count():
            try:
                bills = self._bill(ids, bills)
                if self.dry_run:
                    self.session.rollback()
                else:
                    self.session.commit()
                    self._posted(bills)
                self._count(bills)
                break
            except IntegrityError:
                # Another run billed some of these meanwhile: start over from its result.
                self.session.rollback()
                bills = None
                if attempt >= 3:
                    raise
            except BaseException:
                self.session.rollback()
                raise
        if self.progress:
            self.progress(len(ids))
        if self.on_chunk and not self.dry_run:
            self.on_chunk(self.result)

    def _bill(self, ids: list[int], bills: list[_Bill] | None) -> list[_Bill]:
        session = self.session
        if session.get_bind().dialect.name == "postgresql" and not self.dry_run:
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(
                _LOCK_CLASS, self.result.tenant_id)))
        if bills is None:  # (computed bills another run billed meanwhile: the unique key)
            bills = self._compute(ids)
        if not bills:
            return []
        if not self.dry_run:
            _number(self, bills)
            _write(self, bills)
        return bills

    def _compute(self, ids: list[int]) -> list[_Bill]:
        """The chunk's invoices, taxed (or left waiting for a remote engine) and their rows
        prepared. Alike invoices are priced once: one draft per shape (see `_alike`), billed
        to each of its subscribers. Periods billed meanwhile (by another run) are not due:
        each subscription's periods start after its last billed one."""
        session = self.session
        rows = _chunk_rows(session, ids)
        payer_of = {row[0]: _payer(self.payers, row[1], row[2]) for row in rows}
        extras = _Extras.load(session, set(payer_of.values()), self)
        groups, others = _alike(rows, payer_of, self, extras)
        firsts = {members[0][1]: members for members in groups.values()}  # by payer
        priced = set(others) | {members[0][0] for members in firsts.values()}
        snaps = _load_snapshots([row for row in rows if row[0] in priced], self)
        drafts = _InvoiceBuilder(self, snaps, extras).build()
        if self._remote_taxes:
            for draft in drafts:
                draft.tax_status = "waiting"
        elif drafts:
            _tax(self, drafts)
        for draft in drafts:
            draft.settle()
        bills = []
        for draft in drafts:
            members = firsts.get(draft.subscriber_id)
            if members is None:
                bills.append(_Bill(draft, draft.subscriber_id))
                continue
            draft.own_subscription = members[0][0]
            bills += [_Bill(draft, payer, sub_id) for sub_id, payer in members]
        if not self.dry_run:
            _prepare(self, drafts)
        return sorted(bills, key=lambda b: b.subscriber_id)

    def _posted(self, bills: list[_Bill]) -> None:
        """`invoice_posted` for each posted invoice, after its chunk committed (as Invoice Now
        fires it after posting). The tenant's hook caller is looked up once per run: building
        it reads which plugins the tenant enabled."""
        if not hasattr(self, "on_posted"):
            pm = current_app.extensions.get("headend_plugins") if has_app_context() else None
            self.on_posted = pm.event_caller("invoice_posted", self.result.tenant_id) \
                if pm is not None else None
        if self.on_posted is None:
            return
        for bill in bills:
            if bill.draft.tax_status == "ok":
                self.on_posted(tenant_id=self.result.tenant_id, invoice_id=bill.id)

    def _count(self, bills: list[_Bill]) -> None:
        r = self.result
        r.invoices += len(bills)
        r.periods += sum(len(b.draft.periods) for b in bills)
        r.total += sum(b.draft.total for b in bills)
        r.waiting += sum(b.draft.tax_status == "waiting" for b in bills)
        for bill in bills:
            for line in bill.draft.lines:
                if len(r.sample) >= SAMPLE_LINES:
                    return
                r.sample.append(
                    f"subscriber {bill.subscriber_id}: {line.charge.description}  "
                    f"{format_money(line.amount, r.currency)}"
                    + (f" + tax {format_money(line.tax, r.currency)}" if line.tax else ""))

    def _audit(self) -> None:
        """Bulk inserts bypass the per-row audit recorder: one summary row per tenant run."""
        r = self.result
        self.session.add(AuditLog(
            tenant_id=r.tenant_id, actor_name="billing run", action="create",
            entity="billing_run", entity_id=self.run_date.isoformat(),
            after={"invoices": r.invoices, "periods": r.periods, "total": r.total}))
        self.session.commit()


# --- snapshots: a chunk's subscriptions in a few queries --------------------------------------

@dataclass(frozen=True)
class _PackageInfo:
    package: Package
    income_account_id: int
    inclusions: tuple[InclusionSnapshot, ...]


class _Catalog:
    """The tenant's packages and accounts, loaded once per run and kept out of the session."""

    def __init__(self, session: Session):
        self.accounts = dict(session.execute(sa.select(Account.code, Account.id)).all())
        missing = [c for c in (ACCOUNTS_RECEIVABLE, SETUP_INCOME, SALES_TAX, DEFAULT_INCOME)
                   if c not in self.accounts]
        if missing:
            raise ValidationFailed({"accounts": f"the chart lacks {', '.join(missing)}"})
        packages = session.scalars(sa.select(Package).options(
            selectinload(Package.service_lines).selectinload(PackageServiceLine.service),
            selectinload(Package.inclusions).selectinload(PackageInclusion.item))).all()
        self.packages = {p.id: self._info(p) for p in packages}
        for package in packages:
            session.expunge(package)

    def _info(self, package: Package) -> _PackageInfo:
        lines = package.service_lines
        code = SERVICE_INCOME.get(lines[0].service.type, DEFAULT_INCOME) if lines \
            else DEFAULT_INCOME
        inclusions = tuple(
            InclusionSnapshot(inc.item_id, inc.item.name, inc.quantity, inc.recurring_price,
                              item_account(inc.item, self.accounts), inc.item.taxable)
            for inc in package.inclusions)
        return _PackageInfo(package, self.accounts[code], inclusions)


@dataclass(frozen=True)
class _Snap:
    snapshot: SubscriptionSnapshot
    last_end: dt.date | None
    day: int | None  # the day of month periods start on
    fixed: bool  # a bill day is set (or the tenant bills on a fixed day)
    cancel_on: dt.date | None
    tax: tax_rules.TaxSettings  # the subscription's own
    # A deferred downgrade: from this period start on, this snapshot and the tax settings of
    # its package bill.
    scheduled: tuple[dt.date, SubscriptionSnapshot, tax_rules.TaxSettings] | None = None


def _chunk_rows(session: Session, ids: list[int]) -> list[sa.Row]:
    """What the chunk's invoices are made of, by subscription: its ids (id, owner, bill-to)
    first, `created_at` ninth, the owner's tax settings and paper flag last (`_alike`)."""
    last_end = (sa.select(sa.func.max(BilledPeriod.period_end))
                .where(BilledPeriod.subscription_id == Subscription.id).scalar_subquery())
    rates = (sa.select(sa.func.aggregate_strings(
        sa.cast(subscriber_tax_rate.c.tax_rate_id, sa.String), ","))
        .where(subscriber_tax_rate.c.subscriber_id == Subscription.subscriber_id)
        .scalar_subquery())
    return session.execute(
        sa.select(Subscription.id, Subscription.subscriber_id,
                  Subscription.bill_to_subscriber_id, Subscription.package_id,
                  Subscription.billing_cycle, Subscription.quantity, Subscription.custom_price,
                  Subscription.bill_start_date, Subscription.created_at, Subscription.bill_day,
                  Subscription.hibernate_from, Subscription.hibernate_until,
                  Subscription.cancel_on, last_end.label("last_end"),
                  Subscription.scheduled_package_id,
                  Subscription.scheduled_change_on, Subscription.tax_mode,
                  Subscription.custom_tax_kind, Subscription.custom_tax_cycle_rate,
                  Subscription.custom_tax_setup_rate,
                  Subscriber.tax_exempt, Subscriber.tax_exemption_code, Subscriber.paper_invoice,
                  rates.label("tax_rate_ids"))
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(among(Subscription.id, ids)).order_by(Subscription.id)).all()


def _alike(rows: list[sa.Row], payer_of: dict[int, int], runner: _TenantRunner,
           extras: _Extras) -> tuple[dict[tuple, list[tuple[int, int]]], list[int]]:
    """The chunk's plain subscriptions grouped by what their invoices are made of, and the
    other subscriptions.

    Plain: alone on its owner's invoice (not billed to another account, no other account
    billed to its owner, no custom recurring line or usage there). Such an invoice is a
    function of the subscription's row less its ids, its owner's tax settings and paper flag,
    and the tenant's catalog and defaults (fixed for the run), so alike subscriptions share
    one priced draft. Taxes quoted from a remote engine at the payer's address (a dry run)
    are not shared.
    """
    if not (runner._remote_taxes or name_is_local(runner.defaults)):
        return {}, [row[0] for row in rows]
    apart = set(runner.payers.values()) | extras.payers  # parents; custom lines or usage
    per_payer = defaultdict(int)
    for payer in payer_of.values():
        per_payer[payer] += 1
    groups: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    others = []
    for row in rows:
        sub_id, owner = row[0], row[1]
        payer = payer_of[sub_id]
        if payer != owner or per_payer[payer] > 1 or payer in apart:
            others.append(sub_id)
            continue
        groups[_shape_key(row)].append((sub_id, payer))
    return groups, others


# What of a `_chunk_rows` row is not in its shape key: the ids, and how the start is stored.
_NOT_SHAPE = frozenset({"id", "subscriber_id", "bill_to_subscriber_id", "bill_start_date",
                        "created_at", "tax_rate_ids"})


def _shape_key(row: sa.Row) -> tuple:
    """Every column of the row but its ids, with the start date as `_load_snapshots` reads
    it and the owner's tax rates as a set."""
    fields = row._mapping
    start = fields["bill_start_date"] or fields["created_at"].date()
    rates = frozenset((fields["tax_rate_ids"] or "").split(","))
    return (start, rates, *(v for k, v in fields.items() if k not in _NOT_SHAPE))


def _load_snapshots(rows: list[sa.Row], runner: _TenantRunner) -> list[_Snap]:
    """Snapshots of the subscriptions of these `_chunk_rows`."""
    catalog, defaults, payers = runner.catalog, runner.defaults, runner.payers
    fixed_mode = defaults.billing_mode == "fixed"
    snaps = []
    for (sub_id, owner, bill_to, package_id, cycle, quantity, custom_price, bill_start,
         created_at, bill_day, hib_from, hib_until, cancel_on, last, scheduled_id,
         scheduled_on, *values) in rows:
        tax_values = values[:4]
        info = catalog.packages[package_id]
        package = info.package
        tax = tax_rules.TaxSettings(package.name, *tax_values)
        if cycle not in package.offered_cycles() and custom_price is None:
            continue  # the package no longer offers this cycle: nothing to charge by
        start = bill_start or created_at.date()
        day = bill_day or (defaults.bill_day if fixed_mode else start.day)
        snapshot = SubscriptionSnapshot(
            subscription_id=sub_id, subscriber_id=owner,
            bill_to_subscriber_id=_payer(payers, owner, bill_to), cycle=cycle,
            quantity=quantity, first_invoice=last is None, bill_start_date=start,
            setup_income_account_id=catalog.accounts[SETUP_INCOME],
            hibernate_from=hib_from, hibernate_until=hib_until,
            **_package_fields(info, cycle, custom_price, tax))
        scheduled = None
        if scheduled_id is not None and scheduled_on is not None:
            later = catalog.packages[scheduled_id]
            later_tax = tax_rules.TaxSettings.from_package(later.package)
            scheduled = (scheduled_on, replace(snapshot, **_package_fields(
                later, cycle, custom_price, later_tax)), later_tax)
        snaps.append(_Snap(snapshot, last, day, bool(bill_day) or fixed_mode, cancel_on,
                           tax, scheduled))
    return snaps


def _package_fields(info: _PackageInfo, cycle: str, custom_price,
                    tax: tax_rules.TaxSettings) -> dict:
    """The snapshot fields that come from the package (taxable: from the tax settings)."""
    package = info.package
    return dict(package_name=package.name, unit_price=unit_price(package, cycle, custom_price),
                setup_fee=package.setup_fee, income_account_id=info.income_account_id,
                taxable=tax.taxed,
                exclude_from_invoicing=package.exclude_from_invoicing,
                hibernation_fee=package.hibernation_fee, inclusions=info.inclusions)


# --- invoices in memory ----------------------------------------------------------------------

@dataclass
class _Line:
    charge: Charge
    amount: int
    item_id: int | None = None
    tax: int = 0
    taxes: list = field(default_factory=list)  # TaxDetail with a tax


@dataclass
class _Draft:
    subscriber_id: int
    lines: list[_Line] = field(default_factory=list)
    periods: list[tuple[int, Period]] = field(default_factory=list)
    # by (subscription, period start): a deferred downgrade's periods take its package's taxes
    taxes: dict[tuple[int, dt.date], tax_rules.TaxSettings] = field(default_factory=dict)
    tax_status: str = "ok"
    id: int | None = None
    number: str | None = None
    usage_charges: list[int] = field(default_factory=list)  # UsageCharge ids it carries
    # Shared by alike invoices: the subscription each of them puts in its place.
    own_subscription: int | None = None
    # Prepared by `_prepare` once taxed: what `_write` inserts, less the invoice's identity.
    legs: tuple[LegSpec, ...] = ()
    rows: ShapeRows | None = None

    subtotal: int = 0  # totalled once taxed (`settle`)
    tax_total: int = 0
    total: int = 0

    def settle(self) -> None:
        self.subtotal = sum(line.amount for line in self.lines)
        self.tax_total = sum(line.tax for line in self.lines)
        self.total = self.subtotal + self.tax_total


@dataclass
class _Bill:
    """One invoice of a chunk: a priced draft (shared by alike invoices) for a payer, and for a
    shared draft the subscription standing in for its own."""

    draft: _Draft
    subscriber_id: int
    subscription_id: int | None = None
    id: int | None = None
    number: str | None = None
    entry_id: int | None = None

    def periods(self) -> list[tuple[int, Period]]:
        own = self.draft.own_subscription
        return [(self.subscription_id if sub_id == own else sub_id, period)
                for sub_id, period in self.draft.periods]


@dataclass
class _Extras:
    """What lands on a chunk's payers besides their subscriptions' periods: custom recurring
    lines and rated usage not invoiced yet (one query each per chunk)."""

    recurring: list[tuple[int, RecurringLine]]  # (payer, line)
    usage: list[PendingUsage]

    @property
    def payers(self) -> set[int]:
        return {payer for payer, _ in self.recurring} | {u.payer_id for u in self.usage}

    @classmethod
    def load(cls, session: Session, chunk: set[int], runner: _TenantRunner) -> _Extras:
        """For the payers of a chunk."""
        payers = runner.payers
        owners = chunk | {child for child, payer in payers.items() if payer in chunk}
        today = runner.run_date
        lines = session.scalars(
            sa.select(RecurringLine)
            .where(sa.or_(among(RecurringLine.subscriber_id, owners),
                          among(RecurringLine.bill_to_subscriber_id, chunk)),
                   RecurringLine.start_date <= today,
                   sa.or_(RecurringLine.end_date.is_(None), RecurringLine.end_date > today))
            .options(selectinload(RecurringLine.item)).order_by(RecurringLine.id)).all()
        recurring = [(payer, row) for row in lines
                     if (payer := _payer(payers, row.subscriber_id,
                                         row.bill_to_subscriber_id)) in chunk]
        return cls(recurring, pending_usage(session, owners, chunk, runner.catalog.accounts))


class _InvoiceBuilder:
    """One invoice per payer: due periods' charges, then recurring lines and the paper fee,
    discounts capped - the same lines `drafting.due_charges` gives Invoice Now."""

    def __init__(self, runner: _TenantRunner, snaps: list[_Snap], extras: _Extras):
        self.runner, self.snaps, self.extras = runner, snaps, extras
        self.recurring_items: dict[int, int | None] = {}  # id(charge) -> item id
        self.defaults, self.catalog = runner.defaults, runner.catalog
        self.currency = runner.result.currency

    def build(self) -> list[_Draft]:
        charges: dict[int, list[Charge]] = defaultdict(list)
        drafts: dict[int, _Draft] = {}
        d = self.defaults
        for snap in self.snaps:
            for k, (period, full) in enumerate(self._due_periods(snap)):
                base, tax = snap.snapshot, snap.tax
                if snap.scheduled is not None and period.start >= snap.scheduled[0]:
                    _, base, tax = snap.scheduled
                sub = base if k == 0 else replace(base, first_invoice=False)
                payer = sub.bill_to_subscriber_id
                draft = drafts.setdefault(payer, _Draft(payer))
                draft.periods.append((sub.subscription_id, period))
                draft.taxes[(sub.subscription_id, period.start)] = tax
                charges[payer] += charges_for(sub, period if d.prorate_first_period else full,
                                              full, proration_basis=d.proration_basis)
        if not drafts:
            return []
        payers = self._payer_rows(drafts)
        self._recurring(charges, drafts)
        self._usage(charges, drafts)
        for payer, draft in drafts.items():
            charges[payer] += paper_fee(d, payers[payer], self.catalog.accounts)
            item_ids = self._item_ids(charges[payer])
            draft.lines = [_Line(c, to_minor(c.amount, self.currency), item_ids.get(id(c)))
                           for c in ordered_charges(cap_discounts(charges[payer]), payer)]
        return list(drafts.values())

    def _due_periods(self, snap: _Snap) -> list[tuple[Period, Period]]:
        """The periods due by the run date after the last one billed, as `drafting`'s
        next_period/is_due walk them (a missed run catches up, within a bound)."""
        sub, cycle = snap.snapshot, snap.snapshot.cycle
        if snap.last_end is not None:
            period = full = period_containing(snap.last_end, cycle, snap.last_end, day=snap.day)
        elif snap.fixed:
            period, full = first_period(sub.bill_start_date, cycle, "fixed", snap.day)
        else:
            period = full = period_containing(sub.bill_start_date, cycle, sub.bill_start_date)
        out = []
        for _ in range(MAX_PERIODS_PER_CALL):
            if snap.cancel_on is not None and period.start >= snap.cancel_on:
                break
            if invoice_date_for(period, self.defaults.days_in_advance) > self.runner.run_date:
                break
            out.append((period, full))
            period = full = period_containing(period.end, cycle, period.end, day=snap.day)
        return out

    def _payer_rows(self, drafts: dict[int, _Draft]) -> dict:
        return {row.id: row for row in self.runner.session.execute(
            sa.select(Subscriber.id, Subscriber.paper_invoice)
            .where(among(Subscriber.id, drafts)))}

    def _recurring(self, charges: dict[int, list[Charge]], drafts: dict[int, _Draft]) -> None:
        """Active custom recurring lines landing on these payers
        (`drafting.recurring_charges` for a whole chunk)."""
        for payer, row in self.extras.recurring:
            if payer in drafts:
                charge = drafting.recurring_charge(row, self.catalog.accounts)
                self.recurring_items[id(charge)] = row.item_id
                charges[payer].append(charge)

    def _usage(self, charges: dict[int, list[Charge]], drafts: dict[int, _Draft]) -> None:
        """Rated usage not invoiced yet (network.usage_billing), in arrears on these payers'
        invoices."""
        for pending in self.extras.usage:
            if pending.payer_id in drafts:
                charges[pending.payer_id].append(pending.charge)
                drafts[pending.payer_id].usage_charges.append(pending.charge_id)

    def _item_ids(self, charges: list[Charge]) -> dict[int, int | None]:
        items = dict(self.recurring_items)
        paper = self.defaults.paper_invoice_item
        for c in charges:
            if c.kind == "fee" and paper is not None:
                items[id(c)] = paper.id
        return items


# --- numbers and taxes -----------------------------------------------------------------------

def _number(runner: _TenantRunner, bills: list[_Bill]) -> None:
    """Ids and numbers for the chunk's invoices and their entries: one counter UPDATE (which
    also takes SQLite's write lock before any id is allocated past max(id))."""
    session, fmt, day = runner.session, runner.defaults.number_format, runner.run_date
    first = reserve_invoice_numbers(session, len(bills))
    ids = allocate_ids(session, Invoice, len(bills))
    for n, (bill, invoice_id) in enumerate(zip(bills, ids, strict=True)):
        bill.id = invoice_id
        bill.number = format_number(fmt, first + n, day)
    posting = [bill for bill in bills if bill.draft.legs]
    for bill, entry_id in zip(posting, allocate_ids(session, JournalEntry, len(posting)),
                              strict=True):
        bill.entry_id = entry_id


def _tax_subjects(session: Session, ids: set[int]) -> dict[int, SimpleNamespace]:
    """Subscribers as `taxes` reads them (exemption and active rates), for a chunk at once."""
    subjects = {row.id: SimpleNamespace(tax_exempt=row.tax_exempt, tax_rates=[],
                                        tax_exemption_code=row.tax_exemption_code)
                for row in session.execute(
                    sa.select(Subscriber.id, Subscriber.tax_exempt, Subscriber.tax_exemption_code)
                    .where(among(Subscriber.id, ids)))}
    # plain copies: the rates are read for every line, ORM attributes cost more than the maths
    rates = {r.id: SimpleNamespace(id=r.id, label=r.label, kind=r.kind, rate=r.rate,
                                   active=r.active) for r in session.scalars(sa.select(TaxRate))}
    for owner, rate_id in session.execute(
            sa.select(subscriber_tax_rate.c.subscriber_id, subscriber_tax_rate.c.tax_rate_id)
            .where(among(subscriber_tax_rate.c.subscriber_id, ids))
            .order_by(subscriber_tax_rate.c.subscriber_id, subscriber_tax_rate.c.tax_rate_id)):
        subjects[owner].tax_rates.append(rates[rate_id])
    return subjects


def _tax_lines(draft: _Draft, subjects: dict, first: int = 1) -> dict[int, tuple[_Line, TaxLine]]:
    """The draft's lines that go to the engine, numbered from `first`."""
    out = {}
    for n, line in enumerate(draft.lines, start=first):
        c = line.charge
        taxed = tax_rules.line_rates(
            SimpleNamespace(taxable=c.taxable, amount=line.amount, kind=c.kind),
            subjects[c.for_subscriber_id or draft.subscriber_id],
            draft.taxes.get((c.subscription_id, c.period.start if c.period else None)))
        if taxed is not None:
            rates, exemption = taxed
            out[n] = (line, TaxLine(number=n, amount=line.amount, quantity=c.quantity,
                                    item_code=c.kind, exemption_code=exemption, rates=rates))
    return out


def _tax(runner: _TenantRunner, drafts: list[_Draft]) -> None:
    """Quote the drafts' taxes with the tenant's engine, which rates apply decided by `taxes`
    (the invoicing rules). The simple engine is local arithmetic, called in-process: with
    per-line rounding a line's tax does not depend on its invoice, so the whole chunk is one
    request. A remote engine is only quoted here for a dry run, invoice by invoice at each
    payer's address (a real run leaves its invoices waiting: see `_remote_taxes`); one it
    cannot reach or refuses shows as waiting, and once it is down the rest are not asked."""
    session, d = runner.session, runner.defaults
    name = d.tax_engine or "simple_tax"
    chosen = tax_rules.engine_for(session, name)
    subjects = _tax_subjects(session, {dr.subscriber_id for dr in drafts} | {
        line.charge.for_subscriber_id for dr in drafts for line in dr.lines})
    if name == "simple_tax" and d.tax_rounding == "line":
        lines, first = {}, 1
        for draft in drafts:
            lines |= _tax_lines(draft, subjects, first)
            first += len(draft.lines)
        if lines:
            _store(chosen.engine.quote(chosen.settings, _request(runner, None, lines)), lines)
        return
    payers = {s.id: s for s in session.scalars(sa.select(Subscriber).where(
        among(Subscriber.id, [dr.subscriber_id for dr in drafts])))}
    down = False
    for draft in drafts:
        lines = _tax_lines(draft, subjects)
        if not lines:
            continue
        request = _request(runner, payers[draft.subscriber_id], lines, draft.number)
        result = None
        if not down:
            try:
                result = tax_rules.call_with_backoff(
                    lambda r=request: chosen.engine.quote(chosen.settings, r), backoff=(0.0,))
                down = result is None
            except TaxEngineRejected:
                pass  # this invoice's data (an address...): it would wait
        if result is None:
            draft.tax_status = "waiting"
            continue
        _store(result, lines)


def _request(runner: _TenantRunner, payer: Subscriber | None, lines: dict,
             number: str | None = None) -> TaxRequest:
    return TaxRequest(
        document_code=number or f"billing-run-{runner.run_date:%Y%m%d}",
        customer_code=payer.account_number if payer else "",
        date=runner.run_date, currency=runner.result.currency,
        address=tax_rules.tax_address(payer) if payer else {},
        lines=tuple(tax_line for _, tax_line in lines.values()),
        rounding=runner.defaults.tax_rounding)


def _store(result: TaxResult, lines: dict[int, tuple[_Line, TaxLine]]) -> None:
    for line_result in result.lines:
        line, _ = lines[line_result.number]
        line.tax = line_result.tax
        line.taxes = [d for d in line_result.details if d.tax]


# --- writing ---------------------------------------------------------------------------------

def _prepare(runner: _TenantRunner, drafts: list[_Draft]) -> None:
    """Each taxed draft's entry legs and its rows as a shape (`shapes`): the part of writing
    that needs no ids (done while the previous chunk is written, in a pipelined run)."""
    accounts = runner.catalog.accounts
    for draft in drafts:
        if draft.tax_status == "ok":
            draft.legs = _legs(draft, accounts)
        own_sub, own_payer = draft.own_subscription, draft.subscriber_id
        lines, taxes = [], []
        for pos, line in enumerate(draft.lines, start=1):
            c = line.charge
            lines.append(dict(
                position=pos, kind=c.kind, description=c.description[:255],
                explanation=c.explanation, item_id=line.item_id,
                subscription_id=c.subscription_id, for_subscriber_id=c.for_subscriber_id,
                period_start=c.period.start if c.period else None,
                period_end=c.period.end if c.period else None, quantity=c.quantity,
                unit_price=c.unit_price, amount=line.amount,
                income_account_id=c.income_account_id, taxable=c.taxable, tax=line.tax,
                own_subscription=own_sub is not None and c.subscription_id == own_sub,
                own_subscriber=c.for_subscriber_id == own_payer))
            taxes += [dict(position=pos, n=n, tax_rate_id=t.tax_rate_id,
                           jurisdiction=t.jurisdiction[:120], rate=t.rate, amount=t.tax)
                      for n, t in enumerate(line.taxes)]
        draft.rows = ShapeRows(
            invoice=dict(status="open" if draft.tax_status == "ok" else "draft",
                         tax_status=draft.tax_status, subtotal=draft.subtotal,
                         tax_total=draft.tax_total, total=draft.total),
            lines=lines, taxes=taxes,
            legs=[dict(n=n, account_id=leg.account_id, subscriber_id=leg.subscriber_id,
                       own_subscriber=leg.subscriber_id == own_payer, debit=leg.debit,
                       credit=leg.credit, tax_rate_id=leg.tax_rate_id,
                       jurisdiction=leg.jurisdiction, memo=leg.memo)
                  for n, leg in enumerate(draft.legs)],
            periods=[dict(subscription_id=sub_id,
                          own_subscription=own_sub is not None and sub_id == own_sub,
                          period_start=period.start, period_end=period.end)
                     for sub_id, period in draft.periods])


def _legs(inv: _Draft, accounts: dict[str, int]) -> tuple[LegSpec, ...]:
    """The invoice's entry: AR against income per account and tax per rate/jurisdiction."""
    net: dict[tuple, int] = defaultdict(int)
    for line in inv.lines:
        net[("income", line.charge.income_account_id, None, None)] -= line.amount
        for t in line.taxes:
            net[("tax", accounts[SALES_TAX], t.tax_rate_id, t.jurisdiction[:120])] -= t.tax
    net[("ar", accounts[ACCOUNTS_RECEIVABLE], None, None)] += inv.total
    return tuple(
        LegSpec(account_id=account, debit=max(amount, 0), credit=max(-amount, 0),
                subscriber_id=inv.subscriber_id if kind == "ar" else None,
                tax_rate_id=rate_id, jurisdiction=jurisdiction)
        for (kind, account, rate_id, jurisdiction), amount in net.items() if amount)


def _write(runner: _TenantRunner, bills: list[_Bill]) -> None:
    """The chunk's invoices, lines, line taxes, billed periods and journal entries, set-based
    from their shapes (`shapes`). An invoice waiting for its taxes gets no entry (it posts
    when they are known)."""
    session, d, run_date = runner.session, runner.defaults, runner.run_date
    firsts: dict[int, _Bill] = {}  # the first invoice of each shape, in order
    for bill in bills:
        firsts.setdefault(id(bill.draft), bill)
    drafts = [bill.draft for bill in firsts.values()]
    shape_of = {key: n for n, key in enumerate(firsts)}
    overrides = check_entries(session, [
        BulkEntry(0, f"invoice:{bill.number}:post", run_date, "invoice", 0, "", bill.draft.legs)
        for bill in firsts.values() if bill.draft.legs])
    write_invoices(
        session, [draft.rows for draft in drafts],
        [InvoiceRow(bill.id, bill.entry_id, bill.number, bill.subscriber_id,
                    bill.subscription_id, shape_of[id(bill.draft)]) for bill in bills],
        tenant_id=runner.result.tenant_id, invoice_date=run_date,
        due_date=run_date + dt.timedelta(days=d.due_days), currency=runner.result.currency,
        closed_books_override=run_date in overrides, now=utcnow())
    billed = [item for bill in bills for item in bill.periods()]
    scheduled = set(session.scalars(sa.select(Subscription.id).where(
        among(Subscription.id, {sub_id for sub_id, _ in billed}),
        Subscription.scheduled_package_id.is_not(None))))
    if scheduled:
        apply_schedule(session, [item for item in billed if item[0] in scheduled])
    usage = {charge_id: bill.id for bill in bills for charge_id in bill.draft.usage_charges}
    if len(mark_invoiced(session, usage)) != len(usage):  # an Invoice Now took one meanwhile
        raise RuntimeError("usage charges were invoiced meanwhile: run the chunk again")
    _apply_credits(session, [bill for bill in bills if bill.entry_id is not None])


def name_is_local(defaults: InvoiceDefaults) -> bool:
    return (defaults.tax_engine or "simple_tax") == "simple_tax"


def _apply_credits(session: Session, invoices: list[_Bill]) -> None:
    """Unapplied account credit (credit memos, payments) settles the new invoices (the memo
    helper's rule), only for the few subscribers that have any."""
    from headend.billing.memos import apply_account_credit
    from headend.payments.allocation import credit_holders

    by_subscriber = {inv.subscriber_id: inv.id for inv in invoices}
    holders = set(session.scalars(sa.select(Memo.subscriber_id).distinct().where(
        Memo.kind == "credit", Memo.voided_at.is_(None), Memo.unapplied > 0,
        among(Memo.subscriber_id, by_subscriber))).all())
    holders |= credit_holders(session, by_subscriber)
    for subscriber_id in sorted(holders):
        apply_account_credit(session, session.get(Invoice, by_subscriber[subscriber_id]))
