"""The tax engine behind invoices: an AvaTax outage keeps the invoice waiting, the retry posts
exactly one transaction; Invoice Defaults validation and Update Billing Cycle."""

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.billing.defaults import (
    invoice_defaults,
    update_billing_cycle,
    update_invoice_defaults,
)
from headend.billing.invoicing import invoice_now, retry_waiting_taxes, void_invoice
from headend.billing.models import BilledPeriod, Invoice
from headend.billing.numbering import next_invoice_number
from headend.errors import ValidationFailed
from headend.ledger.models import JournalEntry
from headend.plugins.services import configure_plugin
from sqlalchemy import select

from tests.invoicing_helpers import (
    JAN20,
    balance,
    counts,
    legs_sum,
    subscribe,
    subscriber,
    triple_play,
)
from tests.peers import avatax
from tests.peers.avatax import ACCOUNT_ID, COMPANY, LICENSE_KEY

avatax_server = avatax.avatax_server  # the fake AvaTax, a fixture


@pytest.fixture
def avalara(books, avatax_server):
    configure_plugin(books, "avalara", True, {
        "account_id": ACCOUNT_ID, "license_key": LICENSE_KEY, "company_code": COMPANY,
        "base_url": avatax_server.url, "timeout": 2})
    update_invoice_defaults(books, tax_engine="avalara")
    return avatax_server


def test_avatax_outage_waits_then_the_retry_posts_exactly_one_transaction(books, avalara):
    s = books
    sub = subscriber(s)  # Chicago 60601: 6.25 + 1 + 2 %
    subscribe(s, sub, triple_play(s, setup_fee=None))
    avalara.fail_with = 503
    invoice = invoice_now(s, sub.id, JAN20)
    s.commit()
    assert (invoice.status, invoice.tax_status) == ("draft", "waiting")
    assert invoice.number and invoice.tax_attempts == 1 and balance(s, sub) == 0
    assert counts(s) == (1, 0, 1) and avalara.transactions == {}
    assert invoice_now(s, sub.id, JAN20) is None  # the period is taken: never billed twice
    assert retry_waiting_taxes(s) == 0  # still down
    avalara.fail_with = None
    assert retry_waiting_taxes(s) == 1
    s.commit()
    # 119.99: 7.499 -> 7.50, 1.1999 -> 1.20, 2.3998 -> 2.40
    assert (invoice.status, invoice.tax_status, invoice.tax_total) == ("open", "ok", 1110)
    assert sorted((t.jurisdiction, t.amount) for t in invoice.lines[0].taxes) == [
        ("CHICAGO", 240), ("COOK", 120), ("ILLINOIS", 750)]
    assert list(avalara.transactions) == [(COMPANY, invoice.number)]
    assert avalara.stored(invoice.number)["status"] == "Committed"
    assert retry_waiting_taxes(s) == 0 and counts(s) == (1, 1, 1)
    assert balance(s, sub) == 11999 + 1110 and legs_sum(s) == 0
    void_invoice(s, invoice.id, on_date=JAN20)
    assert avalara.stored(invoice.number)["status"] == "Cancelled"
    assert balance(s, sub) == 0


def test_void_refused_while_avatax_is_down(books, avalara):
    s = books
    sub = subscriber(s)
    subscribe(s, sub, triple_play(s, setup_fee=None))
    invoice = invoice_now(s, sub.id, JAN20)
    s.commit()
    avalara.fail_with = 503
    with pytest.raises(ValidationFailed) as refused:
        void_invoice(s, invoice.id, on_date=JAN20)
    s.rollback()
    assert "tax_engine" in refused.value.errors
    assert s.get(Invoice, invoice.id).status == "open"
    assert s.scalar(select(JournalEntry).where(JournalEntry.reverses_id.is_not(None))) is None


def test_invoice_defaults_validation_names_fields(books):
    s = books
    row = invoice_defaults(s)
    assert (row.billing_mode, row.tax_engine, row.statuses()) == (
        "anniversary", "simple_tax", ("active", "suspended"))
    with pytest.raises(ValidationFailed) as refused:
        update_invoice_defaults(s, bill_day=31, number_format="INV", tax_engine="nope",
                                invoiced_statuses="active,bogus", due_days=-1)
    assert set(refused.value.errors) == {"bill_day", "number_format", "tax_engine",
                                         "invoiced_statuses", "due_days"}
    assert (row.bill_day, row.number_format) == (1, "INV-{year}-{seq:06d}")
    update_invoice_defaults(s, number_format="{year}/{month:02d}/{seq}")
    assert next_invoice_number(s, row.number_format, JAN20) == "2026/01/1"
    assert next_invoice_number(s, row.number_format, JAN20) == "2026/01/2"


def test_update_billing_cycle_previews_then_applies_the_prorated_credit_and_charge(books):
    s = books
    sub = subscriber(s)
    subscription = subscribe(s, sub, triple_play(s, setup_fee=None), start=dt.date(2026, 1, 1))
    first = invoice_now(s, sub.id, dt.date(2026, 1, 1))
    assert first.total == 11999
    change = dt.date(2026, 1, 11)
    preview = update_billing_cycle(s, sub.id, "quarterly", 15, change)
    # Credit Jan 11-31 (21/31 of 119.99 = 81.2835); charge Jan 11-14 of Oct 15 - Jan 15
    # (4/92 of 349.99 = 15.2170)
    assert [(line.amount) for _, line in preview.lines] == [D("-81.2835"), D("15.2170")]
    assert counts(s) == (1, 1, 1) and subscription.billing_cycle == "monthly"
    applied = update_billing_cycle(s, sub.id, "quarterly", 15, change, apply=True)
    (invoice,) = applied.invoices
    assert [ln.amount for ln in invoice.lines] == [-8128, 1522]
    assert (invoice.status, invoice.total) == ("paid", -6606)  # a net credit: nothing due
    assert (subscription.billing_cycle, subscription.bill_day) == ("quarterly", 15)
    assert balance(s, sub) == 11999 - 6606
    # The next period runs from the new bill day for a quarter.
    nxt = invoice_now(s, sub.id, dt.date(2026, 1, 15))
    (period,) = s.scalars(select(BilledPeriod).where(BilledPeriod.invoice_id == nxt.id)).all()
    assert (period.period_start, period.period_end) == (dt.date(2026, 1, 15),
                                                        dt.date(2026, 4, 15))
    assert nxt.lines[0].amount == 34999


def test_cycle_change_on_the_first_day_of_the_billed_period(books):
    s = books
    sub = subscriber(s)
    subscribe(s, sub, triple_play(s, setup_fee=None), start=dt.date(2026, 1, 1))
    invoice_now(s, sub.id, dt.date(2026, 1, 1))
    applied = update_billing_cycle(s, sub.id, "annual", 1, dt.date(2026, 1, 1), apply=True)
    # The whole January is credited and a whole year charged from Jan 1.
    assert [ln.amount for ln in applied.invoices[0].lines] == [-11999, 131999]
    (period,) = s.scalars(select(BilledPeriod)).all()
    assert (period.period_start, period.period_end) == (dt.date(2026, 1, 1),
                                                        dt.date(2027, 1, 1))
    assert invoice_now(s, sub.id, dt.date(2026, 6, 1)) is None
    assert balance(s, sub) == 131999 and legs_sum(s) == 0


def test_the_daily_billing_job_posts_invoices_that_waited_for_taxes(books, avalara):
    from headend.billing.jobs import run_billing

    s = books
    sub = subscriber(s)
    subscribe(s, sub, triple_play(s, setup_fee=None))
    avalara.fail_with = 503
    invoice = invoice_now(s, sub.id, JAN20)
    s.commit()
    assert invoice.tax_status == "waiting"
    avalara.fail_with = None
    done = run_billing(s.info["tenant"], JAN20.isoformat())
    assert done["tax_retried"] == 1
    s.expire_all()
    assert s.get(Invoice, invoice.id).status == "open" and len(avalara.transactions) == 1
