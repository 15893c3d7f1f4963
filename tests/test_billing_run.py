"""The billing run: what it invoices, and that it invoices each subscription-period once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from headend.billing.defaults import update_invoice_defaults
from headend.billing.models import BilledPeriod, Invoice, InvoiceLine
from headend.billing.run import bill_run
from headend.cli import main
from headend.db import db
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import set_closing_date, subscriber_balance
from headend.tenancy.context import acting_as

from tests.billing_run_helpers import (
    RUN,
    catalog,
    fingerprint,
    subscription,
    tenant_with_subscribers,
)

APR = dt.date(2026, 4, 1)


@pytest.fixture
def isp(app, make_tenant):
    """A tenant's session (acting as it) with the catalog of billing_run_helpers."""
    tenant = make_tenant("Run ISP", "run-isp")
    with app.app_context(), acting_as(tenant):
        ids = catalog(db.session)
        db.session.info["ids"] = ids
        yield db.session
        db.session.rollback()
        db.session.remove()


def _run(session, day=RUN, **kw):
    with acting_as(None):
        return bill_run(session, day, **kw)


def _invoices(session):
    return session.scalars(sa.select(Invoice).order_by(Invoice.id)).all()


def test_run_invoices_a_due_subscription_with_setup_tax_and_a_balanced_entry(isp):
    subscriber, sub = subscription(isp, isp.info["ids"])
    isp.commit()
    (result,) = _run(isp)
    assert (result.invoices, result.periods, result.total) == (1, 1, 6600)
    (invoice,) = _invoices(isp)
    assert invoice.subscriber_id == subscriber and invoice.status == "open"
    assert invoice.source == "billing_run" and invoice.number == "INV-2026-000001"
    assert invoice.invoice_date == RUN and invoice.due_date == RUN + dt.timedelta(days=15)
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (6000, 600, 6600)
    kinds = {line.kind: (line.amount, line.tax, line.subscription_id) for line in invoice.lines}
    assert kinds == {"recurring": (5000, 500, sub), "setup": (1000, 100, sub)}
    (period,) = isp.scalars(sa.select(BilledPeriod)).all()
    assert (period.subscription_id, period.period_start, period.period_end, period.invoice_id) \
        == (sub, RUN, APR, invoice.id)
    entry = isp.get(JournalEntry, invoice.posted_entry_id)
    assert entry.key == f"invoice:{invoice.id}:post" and entry.source_type == "invoice"
    assert sum(leg.debit for leg in entry.legs) == sum(leg.credit for leg in entry.legs) == 6600
    assert subscriber_balance(isp, subscriber) == 6600


def test_five_runs_and_the_next_month_give_one_invoice_per_subscription_period(isp):
    for _ in range(3):
        subscription(isp, isp.info["ids"])
    isp.commit()
    for _ in range(5):
        _run(isp)
    assert len(_invoices(isp)) == 3
    for _ in range(5):
        _run(isp, APR)
    invoices = _invoices(isp)
    assert len(invoices) == 6
    second = [i for i in invoices if i.invoice_date == APR]
    assert all(i.total == 5500 for i in second)  # no setup fee the second time
    assert fingerprint(isp)["max_lines_per_charge"] == 1
    assert isp.scalar(sa.select(sa.func.count()).select_from(BilledPeriod)) == 6


def test_a_missed_run_catches_up_every_due_period_on_one_invoice(isp):
    subscription(isp, isp.info["ids"], start=dt.date(2026, 1, 1))
    isp.commit()
    (result,) = _run(isp)
    assert (result.invoices, result.periods) == (1, 3)  # Jan, Feb, Mar
    (invoice,) = _invoices(isp)
    assert invoice.subtotal == 3 * 5000 + 1000


def test_days_in_advance_decide_when_a_period_is_invoiced(isp):
    subscription(isp, isp.info["ids"], start=dt.date(2026, 3, 6))
    isp.commit()
    assert _run(isp)[0].invoices == 0
    update_invoice_defaults(isp, days_in_advance=5)
    isp.commit()
    (result,) = _run(isp)
    assert result.invoices == 1
    (period,) = isp.scalars(sa.select(BilledPeriod)).all()
    assert period.period_start == dt.date(2026, 3, 6)


def test_statuses_not_invoiced_and_excluded_packages_are_skipped(isp):
    ids = isp.info["ids"]
    _, active = subscription(isp, ids)
    _, suspended = subscription(isp, ids, status="suspended")
    # Hibernating is always billed (the period's credit and the hibernation fee), as Invoice Now
    # does: otherwise resuming would back-bill the months on hold.
    _, hibernating = subscription(isp, ids, status="hibernating")
    subscription(isp, ids, status="cancelled")
    subscription(isp, ids, package="excluded")
    update_invoice_defaults(isp, invoiced_statuses="active")
    isp.commit()
    _run(isp)
    billed = set(isp.scalars(sa.select(BilledPeriod.subscription_id)))
    assert billed == {active, hibernating}
    update_invoice_defaults(isp, invoiced_statuses="active,suspended")
    isp.commit()
    _run(isp)
    assert set(isp.scalars(sa.select(BilledPeriod.subscription_id))) == \
        {active, suspended, hibernating}


def test_bill_to_another_puts_both_subscriptions_on_the_payers_single_invoice(isp):
    ids = isp.info["ids"]
    parent, parent_sub = subscription(isp, ids)
    child, child_sub = subscription(isp, ids, taxed=False)
    from headend.subscribers.models import Subscription

    isp.get(Subscription, child_sub).bill_to_subscriber_id = parent
    isp.commit()
    _run(isp)
    (invoice,) = _invoices(isp)
    assert invoice.subscriber_id == parent
    by_sub = {line.subscription_id: line.for_subscriber_id for line in invoice.lines}
    assert by_sub == {parent_sub: parent, child_sub: child}
    assert invoice.total == 6600 + 6000  # the child has no tax rate
    assert subscriber_balance(isp, child) == 0


def test_dry_run_reports_and_writes_nothing(isp):
    subscription(isp, isp.info["ids"])
    isp.commit()
    before = fingerprint(isp)
    (result,) = _run(isp, dry_run=True)
    assert (result.invoices, result.total) == (1, 6600)
    assert any("Setup fee" in line for line in result.sample)
    isp.rollback()
    assert fingerprint(isp) == before
    assert _run(isp)[0].invoices == 1  # and the real run still finds it due


def test_closed_books_refuse_the_run_and_nothing_is_written(isp):
    subscription(isp, isp.info["ids"])
    set_closing_date(isp, RUN)
    isp.commit()
    from headend.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as err:
        _run(isp)
    assert "entry_date" in err.value.errors
    isp.rollback()
    assert fingerprint(isp)["invoices"] == 0


def test_a_run_killed_after_a_chunk_then_rerun_equals_a_clean_run(app, make_tenant):
    clean = tenant_with_subscribers(app, make_tenant, "Clean ISP", 9)
    crashed = tenant_with_subscribers(app, make_tenant, "Crashed ISP", 9)
    with app.app_context():
        session = db.session

        def crash(result):
            raise RuntimeError("killed mid-run")

        with pytest.raises(RuntimeError):
            _run(session, tenant_slug="crashed-isp", chunk_size=4, on_chunk=crash)
        with acting_as(crashed):
            assert fingerprint(session)["invoices"] == 4  # the first chunk committed
        _run(session, tenant_slug="crashed-isp", chunk_size=4)
        _run(session, tenant_slug="clean-isp", chunk_size=4)
        prints = {}
        for tenant in (clean, crashed):
            with acting_as(tenant):
                prints[tenant] = fingerprint(session)
                session.rollback()
        assert prints[clean] == prints[crashed]
        assert prints[clean]["invoices"] == 9 and prints[clean]["debits"] == 9 * 6600
        db.session.remove()


def test_cli_bill_run_with_progress_bar_and_dry_run(app, isp):
    subscription(isp, isp.info["ids"])
    isp.commit()
    env = {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"]}
    runner = CliRunner()
    dry = runner.invoke(main, ["bill-run", "--date", "2026-03-01", "--dry-run"], env=env,
                        catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert "would invoice run-isp: 1 invoices" in dry.output and "Setup fee" in dry.output
    assert "dry run 2026-03-01" in dry.output  # the progress bar's label
    assert fingerprint(isp)["invoices"] == 0
    isp.rollback()
    done = runner.invoke(main, ["bill-run", "--date", "2026-03-01", "--tenant", "run-isp"],
                         env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "invoiced run-isp: 1 invoices" in done.output
    again = runner.invoke(main, ["bill-run", "--date", "2026-03-01"], env=env,
                          catch_exceptions=False)
    assert "invoiced run-isp: 0 invoices" in again.output
    assert fingerprint(isp)["invoices"] == 1
    unknown = runner.invoke(main, ["bill-run", "--tenant", "nope"], env=env)
    assert unknown.exit_code != 0 and "no active tenant" in unknown.output


def test_every_entry_of_a_run_balances(isp):
    for _ in range(4):
        subscription(isp, isp.info["ids"])
    isp.commit()
    _run(isp, chunk_size=2)
    rows = isp.execute(sa.select(Leg.entry_id, sa.func.sum(Leg.debit), sa.func.sum(Leg.credit))
                       .group_by(Leg.entry_id)).all()
    assert len(rows) == 4 and all(d == c for _, d, c in rows)
    lines = isp.scalar(sa.select(sa.func.sum(InvoiceLine.amount + InvoiceLine.tax)))
    assert lines == isp.scalar(sa.select(sa.func.sum(Invoice.total)))


@pytest.mark.parametrize("rounding", ["line", "invoice"])
def test_the_run_bills_exactly_what_the_billing_preview_shows(isp, rounding):
    """Invoice Now's preview and the run share the rules: same lines, amounts and taxes."""
    from decimal import Decimal

    from headend.billing.invoicing import billing_preview
    from headend.billing.recurring import create_recurring_line
    from headend.subscribers.models import Subscription

    ids = isp.info["ids"]
    plain, _ = subscription(isp, ids)
    exempt, _ = subscription(isp, ids, tax_exempt=True, tax_exemption_code="CHURCH")
    paper, _ = subscription(isp, ids, paper_invoice=True, start=dt.date(2026, 2, 10))
    parent, _ = subscription(isp, ids)
    _, child_sub = subscription(isp, ids)
    isp.get(Subscription, child_sub).bill_to_subscriber_id = parent
    create_recurring_line(isp, subscriber_id=plain, description="Loyalty", kind="discount",
                          unit_price=Decimal("7.50"), start_date=dt.date(2026, 1, 1))
    update_invoice_defaults(isp, tax_rounding=rounding, paper_invoice_fee=Decimal("2.50"))
    isp.commit()
    previews = {s: billing_preview(isp, s, RUN) for s in (plain, exempt, paper, parent)}
    isp.rollback()
    _run(isp)
    invoices = {i.subscriber_id: i for i in _invoices(isp)}
    assert set(invoices) == set(previews)
    for payer, preview in previews.items():
        invoice = invoices[payer]
        got = [(ln.kind, ln.description, ln.amount, ln.tax) for ln in invoice.lines]
        want = [(ln.kind, ln.description, ln.amount, ln.tax) for ln in preview.lines]
        assert got == want, payer
        assert (invoice.subtotal, invoice.tax_total, invoice.total) == \
            (preview.subtotal, preview.tax_total, preview.total)
    assert any(ln.kind == "discount" for ln in invoices[plain].lines)
    assert any(ln.kind == "fee" for ln in invoices[paper].lines)
    assert invoices[exempt].tax_total == 0


def test_alike_invoices_are_each_their_subscribers_own(isp):
    """The run prices alike invoices once (one shape) and writes each for its own subscriber:
    every invoice still equals its preview, its lines, billed periods and receivable name its
    own subscription and subscriber, and its entry is its own."""
    from headend.billing.invoicing import billing_preview
    from headend.subscribers.models import Subscription

    ids = isp.info["ids"]
    alike = [subscription(isp, ids) for _ in range(5)]
    caught_up = [subscription(isp, ids, start=dt.date(2026, 1, 1)) for _ in range(2)]
    others = [subscription(isp, ids, tax_exempt=True, tax_exemption_code="CHURCH"),
              subscription(isp, ids, taxed=False),
              subscription(isp, ids, paper_invoice=True),
              subscription(isp, ids, start=dt.date(2026, 2, 10))]
    parent, _ = subscription(isp, ids)
    _, child_sub = subscription(isp, ids)
    isp.get(Subscription, child_sub).bill_to_subscriber_id = parent
    update_invoice_defaults(isp, paper_invoice_fee=D("2.50"))
    isp.commit()
    subs = dict([*alike, *caught_up, *others, (parent, None)])
    previews = {s: billing_preview(isp, s, RUN) for s in subs}
    isp.rollback()
    (result,) = _run(isp)
    invoices = {i.subscriber_id: i for i in _invoices(isp)}
    assert set(invoices) == set(subs) and result.invoices == len(subs)
    for payer, preview in previews.items():
        invoice = invoices[payer]
        got = [(ln.kind, ln.description, ln.amount, ln.tax) for ln in invoice.lines]
        assert got == [(ln.kind, ln.description, ln.amount, ln.tax) for ln in preview.lines]
        assert invoice.total == preview.total and invoice.status == "open"
        legs = isp.scalars(sa.select(Leg).where(Leg.entry_id == invoice.posted_entry_id)).all()
        assert sum(leg.debit for leg in legs) == sum(leg.credit for leg in legs) == invoice.total
        assert {leg.subscriber_id for leg in legs if leg.debit} == {payer}
        entry = isp.get(JournalEntry, invoice.posted_entry_id)
        assert (entry.key, entry.source_id) == (f"invoice:{invoice.id}:post", invoice.id)
        own = subs[payer]
        if own is not None:
            assert {ln.subscription_id for ln in invoice.lines if ln.kind != "fee"} == {own}
            assert {ln.for_subscriber_id for ln in invoice.lines} == {payer}
            periods = isp.scalars(sa.select(BilledPeriod).where(
                BilledPeriod.invoice_id == invoice.id)).all()
            assert {p.subscription_id for p in periods} == {own}
    for payer, _ in caught_up:
        assert len({ln.period_start for ln in invoices[payer].lines}) == 3  # Jan, Feb, Mar
    assert len({i.number for i in invoices.values()}) == len(invoices)
    assert _run(isp)[0].invoices == 0


@pytest.mark.parametrize("start", [RUN, dt.date(2026, 1, 1)], ids=["on-time", "catch-up"])
def test_a_deferred_downgrade_taxes_each_period_by_its_package(isp, start):
    """Periods before a deferred downgrade's date keep the old package's taxes (here the
    subscriber's 10 %), periods from it on take the new package's (a custom 7 %): the preview,
    Invoice Now and the run agree, also when a missed run catches up across the date."""
    from headend.billing.invoicing import billing_preview, invoice_now
    from headend.catalog import models as cat
    from headend.subscribers.models import Subscription

    ids = isp.info["ids"]
    small = cat.Package(name="Fiber 20", price_monthly=D("20.00"), tax_mode="custom",
                        custom_tax_kind="percent", custom_tax_cycle_rate=D("7"))
    isp.add(small)
    isp.flush()
    change_on = dt.date(2026, 2, 1) if start < RUN else RUN
    payers = []
    for _ in range(3):
        payer, sub_id = subscription(isp, ids, start=start)
        sub = isp.get(Subscription, sub_id)
        sub.scheduled_package_id, sub.scheduled_change_on = small.id, change_on
        payers.append(payer)
    isp.commit()
    previews = [billing_preview(isp, payer, RUN) for payer in payers]
    isp.rollback()
    invoice_now(isp, payers[0], RUN)
    isp.commit()
    _run(isp)
    invoices = {i.subscriber_id: i for i in _invoices(isp)}
    for payer, preview in zip(payers, previews, strict=True):
        got = [(ln.kind, ln.period_start, ln.amount, ln.tax) for ln in invoices[payer].lines]
        assert got == [(ln.kind, ln.period.start, ln.amount, ln.tax) for ln in preview.lines]
        for kind, period_start, amount, tax in got:
            rate = 10 if period_start < change_on else 7
            assert tax == (amount * rate + 50) // 100, (kind, period_start)
        assert isp.get(Subscription, invoices[payer].lines[-1].subscription_id).package_id \
            == small.id
    assert {ln.period_start for ln in invoices[payers[0]].lines} == (
        {RUN} if start == RUN else {dt.date(2026, 1, 1), change_on, RUN})


def test_account_credit_settles_the_runs_invoice(isp):
    from headend.billing.memos import credit_memo

    subscriber, _ = subscription(isp, isp.info["ids"])
    credit_memo(isp, subscriber, 1000, "Goodwill", dt.date(2026, 2, 1))
    isp.commit()
    _run(isp)
    (invoice,) = _invoices(isp)
    assert (invoice.amount_paid, invoice.status) == (1000, "partially_paid")
    assert subscriber_balance(isp, subscriber) == 6600 - 1000


def _bulk_entry(session, subscriber, entry_id, debit, credit):
    from headend.billing.bulk import BulkEntry
    from headend.catalog.models import Account
    from headend.ledger.services import LegSpec

    accounts = dict(session.execute(sa.select(Account.code, Account.id)).all())
    return BulkEntry(entry_id, f"bulk:{entry_id}", RUN, "test", entry_id, "Bulk", (
        LegSpec(account_id=accounts["1200"], debit=debit, subscriber_id=subscriber),
        LegSpec(account_id=accounts["4000"], credit=credit)))


def test_bulk_posting_refuses_an_unbalanced_entry_naming_it(isp):
    from headend.billing.bulk import allocate_ids, post_entries_bulk
    from headend.errors import ValidationFailed

    subscriber, _ = subscription(isp, isp.info["ids"])
    isp.commit()
    (entry_id,) = allocate_ids(isp, JournalEntry, 1)
    with pytest.raises(ValidationFailed) as err:
        post_entries_bulk(isp, [_bulk_entry(isp, subscriber, entry_id, 100, 99)])
    assert "unbalanced" in str(err.value.errors["legs"])
    isp.rollback()
    assert fingerprint(isp)["entries"] == 0


@pytest.mark.postgresql_only
def test_the_database_refuses_an_unbalanced_entry_written_by_copy(isp):
    """The set-based balance check at commit sees what a COPY wrote, not only ORM rows."""
    from headend.billing.bulk import allocate_ids, insert_rows
    from headend.ledger.models import JournalEntry as Entry

    subscriber, _ = subscription(isp, isp.info["ids"])
    isp.commit()
    good, bad = allocate_ids(isp, Entry, 2)
    entries = [_bulk_entry(isp, subscriber, good, 100, 100),
               _bulk_entry(isp, subscriber, bad, 100, 90)]
    now = dt.datetime(2026, 3, 1)
    insert_rows(isp, Entry, [dict(id=e.id, entry_date=e.entry_date, posted_at=now,
                                   source_type="test", source_id=e.id, description="Bulk",
                                   key=e.key, reverses_id=None, closed_books_override=False)
                              for e in entries])
    insert_rows(isp, Leg, [dict(entry_id=e.id, account_id=leg.account_id,
                                 subscriber_id=leg.subscriber_id, debit=leg.debit,
                                 credit=leg.credit, tax_rate_id=None, jurisdiction=None, memo=None)
                            for e in entries for leg in e.legs])
    with pytest.raises(sa.exc.IntegrityError, match=f"journal entry {bad} is unbalanced"):
        isp.commit()
    isp.rollback()
    assert fingerprint(isp)["entries"] == 0
