"""The billing run with AvaTax as the tax engine, against the protocol-level fake (real SDK, real
HTTP): one committed transaction per invoice under its number; an outage leaves invoices waiting
as drafts without ledger entries; the retry posts each exactly once, also after the books were
closed over them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from headend.audit.models import AuditLog
from headend.billing.defaults import update_invoice_defaults
from headend.billing.invoicing import retry_waiting_taxes
from headend.billing.jobs import run_billing
from headend.billing.models import Invoice, InvoiceLineTax
from headend.billing.run import bill_run
from headend.catalog.models import Account
from headend.db import db
from headend.errors import ValidationFailed
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import set_closing_date, subscriber_balance
from headend.plugins.services import configure_plugin
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as

from tests.billing_run_helpers import RUN, catalog, fingerprint, subscription
from tests.peers import avatax
from tests.peers.avatax import ACCOUNT_ID, COMPANY, LICENSE_KEY

avatax_server = avatax.avatax_server  # the fake AvaTax, a fixture

APR1 = dt.date(2026, 4, 1)
POST = ("POST", "/api/v2/transactions/createoradjust")
CHICAGO = dict(service_line1="100 N State St", service_city="Chicago", service_region="IL",
               service_postal_code="60601", service_country="US")  # 6.25 + 1 + 2 %
SPRINGFIELD = dict(service_line1="1 Capitol Ave", service_city="Springfield",
                   service_region="IL", service_postal_code="62701", service_country="US")
PORTLAND = dict(service_line1="1 SW Main St", service_city="Portland", service_region="OR",
                service_postal_code="97201", service_country="US")  # no sales tax
# Fiber 50 from 60601: setup 10.00 -> 0.625 (0.63) + 0.10 + 0.20; monthly 50.00 -> 3.125 (3.13)
# + 0.50 + 1.00.
CHICAGO_LINES = [
    ("setup", 1000, 93, [("CHICAGO", D("2"), 20), ("COOK", D("1"), 10),
                         ("ILLINOIS", D("6.25"), 63)]),
    ("recurring", 5000, 463, [("CHICAGO", D("2"), 100), ("COOK", D("1"), 50),
                              ("ILLINOIS", D("6.25"), 313)]),
]


def _settings(fake, **over) -> dict:
    return {"account_id": ACCOUNT_ID, "license_key": LICENSE_KEY, "company_code": COMPANY,
            "base_url": fake.url, "timeout": 2, **over}


@pytest.fixture
def isp(app, make_tenant, avatax_server):
    """A tenant that taxes with AvaTax (the fake), acting as it, with the billing-run catalog
    (Fiber 50: 50.00 a month, 10.00 setup)."""
    tenant = make_tenant("Ava ISP", "ava-isp")
    with app.app_context(), acting_as(tenant):
        s = db.session
        s.info.update(ids=catalog(s), tenant=tenant)
        configure_plugin(s, "avalara", True, _settings(avatax_server))
        update_invoice_defaults(s, tax_engine="avalara")
        s.commit()
        yield s
        s.rollback()
        s.remove()


def _subscribers(s, *addresses, **fields) -> list[int]:
    ids = [subscription(s, s.info["ids"], taxed=False, **address, **fields)[0]
           for address in addresses]
    s.commit()
    return ids


def _run(s, day=RUN, **kw):
    with acting_as(None):
        (result,) = bill_run(s, day, **kw)
    return result


def _invoice_of(s, subscriber_id: int) -> Invoice:
    return s.scalars(sa.select(Invoice).where(Invoice.subscriber_id == subscriber_id)).one()


def _lines(invoice: Invoice) -> list:
    return [(ln.kind, ln.amount, ln.tax,
             sorted((t.jurisdiction, t.rate, t.amount) for t in ln.taxes))
            for ln in invoice.lines]


def _entries(s, invoice: Invoice) -> list[JournalEntry]:
    return s.scalars(sa.select(JournalEntry).where(
        JournalEntry.source_type == "invoice", JournalEntry.source_id == invoice.id)).all()


def _tax_payable(s) -> dict[str, int]:
    """Sales tax payable (2200) per jurisdiction: credits less debits."""
    return dict(s.execute(
        sa.select(Leg.jurisdiction, sa.func.sum(Leg.credit - Leg.debit))
        .join(Account, Leg.account_id == Account.id).where(Account.code == "2200")
        .group_by(Leg.jurisdiction)).tuples().all())


def _sent(fake, code: str) -> dict:
    """The last CreateTransactionModel sent for `code`."""
    return [body["createTransactionModel"] for call, path, body in fake.received
            if (call, path) == POST and body["createTransactionModel"]["code"] == code][-1]


def _calls(fake) -> list[tuple[str, str]]:
    return [(call, path) for call, path, _ in fake.received]


def _down(s, fake, how: str) -> None:
    """AvaTax unavailable: answering 503, or not listening at all."""
    if how == "503":
        fake.fail_with = 503
    else:
        configure_plugin(s, "avalara", True, _settings(fake, base_url=fake.closed_url()))
        s.commit()


def _back(s, fake) -> None:
    fake.fail_with = None
    configure_plugin(s, "avalara", True, _settings(fake))
    s.commit()


def _assert_waiting(s, invoice: Invoice) -> None:
    """A draft waiting for its taxes: numbered, periods billed, no taxes, nothing posted."""
    assert (invoice.status, invoice.tax_status) == ("draft", "waiting")
    assert invoice.number and invoice.posted_entry_id is None and invoice.tax_total == 0
    assert all(not ln.taxes and ln.tax == 0 for ln in invoice.lines)
    assert _entries(s, invoice) == [] and subscriber_balance(s, invoice.subscriber_id) == 0


def test_the_run_records_one_transaction_per_invoice_and_posts_its_jurisdictions(
        isp, avatax_server):
    s, fake = isp, avatax_server
    chicago, springfield, portland, church = _subscribers(
        s, CHICAGO, SPRINGFIELD, PORTLAND, CHICAGO)
    s.get(Subscriber, church).tax_exempt = True
    s.get(Subscriber, church).tax_exemption_code = "CHURCH"
    s.commit()
    result = _run(s)
    assert (result.invoices, result.waiting) == (4, 0)
    invoices = {sub: _invoice_of(s, sub) for sub in (chicago, springfield, portland, church)}
    # One committed SalesInvoice per invoice, under its number, and nothing else asked.
    assert set(fake.transactions) == {(COMPANY, inv.number) for inv in invoices.values()}
    assert _calls(fake) == [POST] * 4
    for sub, inv in invoices.items():
        sent, stored = _sent(fake, inv.number), fake.stored(inv.number)
        account = s.get(Subscriber, sub).account_number
        assert (sent["type"], sent["commit"], sent["customerCode"], sent["date"]) == (
            "SalesInvoice", True, account, "2026-03-01")
        assert [(ln["number"], D(str(ln["amount"])), ln["itemCode"]) for ln in sent["lines"]] \
            == [("1", D("10"), "setup"), ("2", D("50"), "recurring")]
        assert stored["status"] == "Committed" and stored["version"] == 1
        assert inv.tax_engine_ref == str(stored["id"])
        assert D(str(stored["totalTax"])) * 100 == inv.tax_total
        assert (inv.status, inv.tax_status, inv.invoice_date) == ("open", "ok", RUN)
        (entry,) = _entries(s, inv)
        assert entry.id == inv.posted_entry_id and entry.entry_date == RUN
        assert sum(leg.debit for leg in entry.legs) == sum(leg.credit for leg in entry.legs) \
            == inv.total == subscriber_balance(s, sub)
    assert _sent(fake, invoices[chicago].number)["addresses"]["singleLocation"] == {
        "line1": "100 N State St", "city": "Chicago", "region": "IL", "country": "US",
        "postalCode": "60601"}
    assert [ln["exemptionCode"] for ln in _sent(fake, invoices[church].number)["lines"]] == \
        ["CHURCH", "CHURCH"]
    # Taxes per line and jurisdiction, as AvaTax computed them.
    assert _lines(invoices[chicago]) == CHICAGO_LINES
    assert _lines(invoices[springfield]) == [
        ("setup", 1000, 63, [("ILLINOIS", D("6.25"), 63)]),
        ("recurring", 5000, 313, [("ILLINOIS", D("6.25"), 313)])]
    assert [inv.total for inv in invoices.values()] == [6556, 6376, 6000, 6000]
    assert s.scalars(sa.select(InvoiceLineTax.tax_rate_id).distinct()).all() == [None]
    assert _tax_payable(s) == {"ILLINOIS": 2 * (63 + 313), "COOK": 60, "CHICAGO": 120}
    # A rerun asks AvaTax nothing and writes nothing.
    before = fingerprint(s)
    assert _run(s).invoices == 0
    assert _calls(fake) == [POST] * 4 and len(fake.transactions) == 4
    assert fingerprint(s) == before


def test_an_outage_as_the_run_posts_leaves_the_rest_waiting_and_the_retry_posts_each_once(
        isp, avatax_server):
    s, fake = isp, avatax_server
    subs = _subscribers(s, CHICAGO, CHICAGO, CHICAGO)
    # The run writes the three invoices as waiting drafts and commits them, then records and
    # posts them one by one: the first posts; the second finds AvaTax down through all of its
    # attempts, so it and the third (not even asked) wait for the retry.
    fake.fail_after, fake.fail_next = 1, 3
    result = _run(s, chunk_size=1)
    assert (result.invoices, result.waiting) == (3, 2)
    first, second, third = (_invoice_of(s, sub) for sub in subs)
    assert first.status == "open"
    _assert_waiting(s, second)
    _assert_waiting(s, third)
    assert _calls(fake) == [POST] * 4  # 1 + 3 failed attempts
    assert set(fake.transactions) == {(COMPANY, first.number)}
    # A rerun neither bills the waiting subscriptions again nor double-posts the first.
    assert _run(s).invoices == 0 and len(fake.received) == 4
    assert retry_waiting_taxes(s) == 2
    s.commit()
    for inv in (second, third):
        assert (inv.status, inv.tax_status, inv.invoice_date) == ("open", "ok", RUN)
        assert _lines(inv) == CHICAGO_LINES
        assert _sent(fake, inv.number)["lines"] == _sent(fake, first.number)["lines"]
    assert len(fake.transactions) == 3
    assert all(fake.stored(inv.number)["version"] == 1 for inv in (first, second, third))
    assert [len(_entries(s, inv)) for inv in (first, second, third)] == [1, 1, 1]
    assert retry_waiting_taxes(s) == 0 and len(fake.received) == 6
    assert _tax_payable(s) == {"ILLINOIS": 3 * 376, "COOK": 3 * 60, "CHICAGO": 3 * 120}


@pytest.mark.parametrize("how", ["503", "refused"])
def test_avatax_down_for_the_whole_run_then_the_daily_job_posts_every_invoice_once(
        isp, avatax_server, how):
    s, fake = isp, avatax_server
    subs = _subscribers(s, CHICAGO, SPRINGFIELD, CHICAGO, PORTLAND)
    _down(s, fake, how)
    result = _run(s)
    assert (result.invoices, result.waiting) == (4, 4)
    invoices = [_invoice_of(s, sub) for sub in subs]
    for inv in invoices:
        _assert_waiting(s, inv)
    # The first invoice's attempts found AvaTax down; the chunk's others wait without a call.
    assert _calls(fake) == ([POST] * 3 if how == "503" else [])
    assert fake.transactions == {} and fingerprint(s)["entries"] == 0
    # Still down the next day: the job's retry stops at the first invoice, the run goes on.
    done = run_billing(s.info["tenant"], (RUN + dt.timedelta(days=1)).isoformat())
    assert (done["tax_retried"], done["invoices"]) == (0, 0)
    _back(s, fake)
    fake.received.clear()
    done = run_billing(s.info["tenant"], (RUN + dt.timedelta(days=2)).isoformat())
    assert done["tax_retried"] == 4
    s.expire_all()
    assert _calls(fake) == [POST] * 4
    assert set(fake.transactions) == {(COMPANY, inv.number) for inv in invoices}
    for inv in invoices:
        assert (inv.status, inv.tax_status, inv.invoice_date) == ("open", "ok", RUN)
        assert len(_entries(s, inv)) == 1 and fake.stored(inv.number)["version"] == 1
        assert subscriber_balance(s, inv.subscriber_id) == inv.total
    assert [inv.total for inv in invoices] == [6556, 6376, 6556, 6000]
    assert run_billing(s.info["tenant"], (RUN + dt.timedelta(days=3)).isoformat()) \
        ["tax_retried"] == 0
    assert len(fake.received) == 4 and fingerprint(s)["entries"] == 4


def test_an_answer_lost_to_a_timeout_is_adjusted_not_doubled(isp, avatax_server):
    """AvaTax recorded the invoice but its answers came too late: the invoice waits, and the
    retry's CreateOrAdjust updates the one transaction instead of adding a second."""
    s, fake = isp, avatax_server
    (sub,) = _subscribers(s, CHICAGO)
    configure_plugin(s, "avalara", True, _settings(fake, timeout=1))
    s.commit()
    fake.delay = 1.3
    assert _run(s).waiting == 1
    invoice = _invoice_of(s, sub)
    _assert_waiting(s, invoice)
    fake.delay = 0
    assert retry_waiting_taxes(s) == 1
    s.commit()
    assert list(fake.transactions) == [(COMPANY, invoice.number)]
    assert fake.stored(invoice.number)["version"] > 1  # adjusted, not recorded twice
    assert _lines(invoice) == CHICAGO_LINES and len(_entries(s, invoice)) == 1
    assert subscriber_balance(s, sub) == 6556


def test_a_document_avatax_refuses_waits_and_the_rest_of_the_run_posts(isp, avatax_server):
    s, fake = isp, avatax_server
    good, bad, other = _subscribers(s, CHICAGO, SPRINGFIELD, CHICAGO)
    fake.refuse_postal_codes = {"62701"}
    result = _run(s)
    assert (result.invoices, result.waiting) == (3, 1)
    _assert_waiting(s, _invoice_of(s, bad))
    assert [_invoice_of(s, sub).status for sub in (good, other)] == ["open", "open"]
    assert len(fake.transactions) == 2
    assert retry_waiting_taxes(s) == 0  # still refused: for a person to fix
    fake.refuse_postal_codes = set()  # the address fixed
    assert retry_waiting_taxes(s) == 1
    s.commit()
    assert _invoice_of(s, bad).status == "open" and len(fake.transactions) == 3


def test_closed_books_refuse_the_run_before_avatax_records_anything(isp, avatax_server):
    s, fake = isp, avatax_server
    _subscribers(s, CHICAGO, CHICAGO)
    set_closing_date(s, RUN)
    s.commit()
    for outage in (None, 503):  # nor are drafts left in closed books while AvaTax is down
        fake.fail_with = outage
        with pytest.raises(ValidationFailed) as refused:
            _run(s)
        assert "entry_date" in refused.value.errors
        assert fake.received == [] and fake.transactions == {}
        assert fingerprint(s)["invoices"] == 0


def test_a_draft_waiting_when_the_books_close_posts_on_the_first_open_day(isp, avatax_server):
    s, fake = isp, avatax_server
    (sub,) = _subscribers(s, CHICAGO)
    fake.fail_with = 503
    assert _run(s).waiting == 1
    invoice = _invoice_of(s, sub)
    assert (invoice.invoice_date, invoice.due_date) == (RUN, dt.date(2026, 3, 16))
    set_closing_date(s, dt.date(2026, 3, 31), "block")
    s.commit()
    # Still down: the draft is dated into open books already, and keeps waiting.
    assert retry_waiting_taxes(s) == 0
    s.commit()
    assert (invoice.status, invoice.invoice_date, invoice.due_date) == (
        "draft", APR1, dt.date(2026, 4, 16))
    note = ("Dated 2026-04-01 instead of 2026-03-01: the books were closed through 2026-03-31 "
            "while it waited for its taxes.")
    assert invoice.memo == note
    fake.fail_with = None
    assert retry_waiting_taxes(s) == 1
    s.commit()
    assert (invoice.status, invoice.invoice_date, invoice.memo) == ("open", APR1, note)
    (entry,) = _entries(s, invoice)
    assert (entry.entry_date, entry.closed_books_override) == (APR1, False)
    assert _sent(fake, invoice.number)["date"] == "2026-04-01"
    assert fake.stored(invoice.number)["date"] == "2026-04-01" and len(fake.transactions) == 1
    (moved,) = [row for row in s.scalars(sa.select(AuditLog).where(
        AuditLog.entity == "invoice", AuditLog.entity_id == str(invoice.id),
        AuditLog.action == "update")) if "invoice_date" in (row.after or {})]
    assert (moved.before["invoice_date"], moved.after["invoice_date"]) == (
        "2026-03-01", "2026-04-01")
    assert retry_waiting_taxes(s) == 0 and len(_entries(s, invoice)) == 1


def test_a_draft_waiting_when_the_books_close_with_warn_keeps_its_date_with_a_warning(
        isp, avatax_server):
    s, fake = isp, avatax_server
    (sub,) = _subscribers(s, CHICAGO)
    fake.fail_with = 503
    assert _run(s).waiting == 1
    invoice = _invoice_of(s, sub)
    set_closing_date(s, dt.date(2026, 3, 31), "warn")
    s.commit()
    fake.fail_with = None
    assert retry_waiting_taxes(s) == 1
    s.commit()
    assert (invoice.status, invoice.invoice_date, invoice.memo) == ("open", RUN, None)
    (entry,) = _entries(s, invoice)
    assert (entry.entry_date, entry.closed_books_override) == (RUN, True)
    warning = s.scalars(sa.select(AuditLog).where(
        AuditLog.action == "warn", AuditLog.entity == "journal_entry",
        AuditLog.entity_id == str(entry.id))).one()
    assert warning.after["closing_date"] == "2026-03-31"
    assert fake.stored(invoice.number)["date"] == "2026-03-01"


def test_the_retry_drains_a_backlog_batch_by_batch(isp, avatax_server):
    s, fake = isp, avatax_server
    subs = _subscribers(s, CHICAGO, CHICAGO, CHICAGO, CHICAGO, CHICAGO)
    fake.fail_with = 503
    assert _run(s).waiting == 5
    fake.fail_with = None
    commits = []

    def commit():
        commits.append(fingerprint(s)["entries"])
        s.commit()

    assert retry_waiting_taxes(s, batch=2, after_batch=commit) == 5
    assert commits == [2, 4, 5]  # each batch committed as it finished
    assert all(_invoice_of(s, sub).status == "open" for sub in subs)
    assert len(fake.transactions) == 5 and fingerprint(s)["entries"] == 5


def test_a_dry_run_quotes_each_invoice_at_its_address_and_records_nothing(isp, avatax_server):
    s, fake = isp, avatax_server
    _subscribers(s, CHICAGO, SPRINGFIELD)
    result = _run(s, dry_run=True)
    assert (result.invoices, result.total, result.waiting) == (2, 6556 + 6376, 0)
    assert _calls(fake) == [("POST", "/api/v2/transactions/create")] * 2
    assert [body["type"] for _, _, body in fake.received] == ["SalesOrder"] * 2
    assert fake.transactions == {} and fingerprint(s)["invoices"] == 0


@pytest.mark.postgresql_only
def test_a_second_retry_at_once_skips_the_drafts_the_first_one_holds(app, isp, avatax_server):
    s, fake = isp, avatax_server
    (sub,) = _subscribers(s, CHICAGO)
    fake.fail_with = 503
    assert _run(s).waiting == 1
    fake.fail_with = None
    fake.received.clear()
    with db.engine.connect() as other:
        other.execute(sa.text("SELECT id FROM invoice FOR UPDATE"))  # a retry in progress
        assert retry_waiting_taxes(s) == 0
        s.commit()
        assert fake.received == []
    assert retry_waiting_taxes(s) == 1
    s.commit()
    assert _invoice_of(s, sub).status == "open" and len(fake.transactions) == 1
