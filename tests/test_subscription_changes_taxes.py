"""Money of changes, by hand-computed numbers: resuming early charges back the credited days, and
credits made by changes give back the percent taxes charged on them (ledger legs included)."""

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.billing.changes import cancel_subscription, change_package, hibernate, resume
from headend.billing.defaults import update_invoice_defaults
from headend.billing.invoicing import invoice_now
from headend.billing.memos import credit_memo, void_memo
from headend.billing.models import Invoice, Memo
from headend.catalog.models import Account
from headend.errors import ValidationFailed
from headend.ledger.models import JournalEntry, Leg
from headend.plugins.services import configure_plugin
from sqlalchemy import func, select

from tests.invoicing_helpers import (
    balance,
    fixed_day_one,
    legs_sum,
    lines_of,
    subscribe,
    subscriber,
    tax_rate,
    triple_play,
)
from tests.peers import avatax
from tests.peers.avatax import ACCOUNT_ID, COMPANY, LICENSE_KEY

avatax_server = avatax.avatax_server  # the fake AvaTax, a fixture

JAN1, JAN11, JAN21, JAN26, FEB1, FEB15, MAR1 = (
    dt.date(2026, 1, 1), dt.date(2026, 1, 11), dt.date(2026, 1, 21), dt.date(2026, 1, 26),
    dt.date(2026, 2, 1), dt.date(2026, 2, 15), dt.date(2026, 3, 1))


def _billed_january(s, price="49.99", rates=(), **package):
    """A subscriber on a `price` package (hibernation allowed), January billed on Jan 1."""
    fixed_day_one(s)
    sub = subscriber(s, rates=rates)
    package = triple_play(s, price_monthly=D(price), setup_fee=None, hibernation_allowed=True,
                          **package)
    subscription = subscribe(s, sub, package, start=JAN1, status="active")
    invoice_now(s, sub.id, JAN1)
    return sub, subscription


def _legs(s, memo: Memo) -> list[tuple[str, int, int, str | None]]:
    """The memo's entry as (account code, debit, credit, jurisdiction), sorted."""
    rows = s.execute(select(Account.code, Leg.debit, Leg.credit, Leg.jurisdiction)
                     .join(Account, Leg.account_id == Account.id)
                     .where(Leg.entry_id == memo.posted_entry_id)).tuples().all()
    return sorted(rows)


def _tax_payable(s) -> int:
    """Sales tax payable "2200" as a credit balance."""
    return int(s.scalar(select(func.coalesce(func.sum(Leg.credit - Leg.debit), 0))
                        .join(Account, Leg.account_id == Account.id)
                        .where(Account.code == "2200")))


# --- resuming early --------------------------------------------------------------------------

def test_resuming_an_open_ended_hibernation_early_charges_the_credited_days_back(books):
    s = books
    sub, subscription = _billed_january(s)
    memo = hibernate(s, subscription.id, JAN11, None, today=JAN11)
    # Jan 11 - 31: 21 of 31 days of 49.99 = 33.8642 -> 33.86 credited
    assert memo.amount == 3386 and subscription.status == "hibernating"
    invoice = resume(s, subscription.id, JAN21, today=JAN21)
    # Jan 21 - 31: 11 of 31 days = 549.89 / 31 = 17.73838.. -> 17.7384 -> 17.74
    assert invoice.invoice_date == JAN21 and lines_of(invoice) == [("proration", 1774, 0)]
    assert "11 of 31 days" in invoice.lines[0].explanation
    assert (invoice.lines[0].period_start, invoice.lines[0].period_end) == (JAN21, FEB1)
    assert subscription.status == "active" and subscription.hibernate_until == JAN21
    assert balance(s, sub) == 4999 - 3386 + 1774 and legs_sum(s) == 0
    assert invoice.status == "paid"  # the hibernation's account credit settled it
    february = invoice_now(s, sub.id, FEB1)
    assert lines_of(february) == [("recurring", 4999, 0), ("inclusion", 0, 0)]


def test_resuming_a_bounded_hibernation_early_charges_up_to_its_planned_end(books):
    s = books
    sub, subscription = _billed_january(s)
    memo = hibernate(s, subscription.id, JAN11, JAN26, today=JAN11)
    # Jan 11 - 25: 15 of 31 days = 749.85 / 31 = 24.1887.. -> 24.19
    assert memo.amount == 2419
    invoice = resume(s, subscription.id, JAN21, today=JAN21)
    # Jan 21 - 25: 5 of 31 days = 249.95 / 31 = 8.06290.. -> 8.0629 -> 8.06
    assert lines_of(invoice) == [("proration", 806, 0)]
    assert balance(s, sub) == 4999 - 2419 + 806 and legs_sum(s) == 0


def test_resuming_inside_a_period_billed_with_the_hibernation_credit(books):
    s = books
    sub, subscription = _billed_january(s, hibernation_fee=D("5.00"))
    assert hibernate(s, subscription.id, FEB1, None, today=JAN21) is None  # nothing billed yet
    february = invoice_now(s, sub.id, FEB1)
    assert lines_of(february) == [("recurring", 4999, 0), ("inclusion", 0, 0),
                                  ("hibernation", -4999, 0), ("hibernation", 500, 0)]
    invoice = resume(s, subscription.id, FEB15, today=FEB15)
    # Feb 15 - 28: 14 of 28 days = 24.995 -> 25.00 (the fee stays: Feb had hibernated days)
    assert lines_of(invoice) == [("proration", 2500, 0)]
    assert balance(s, sub) == 4999 + 500 + 2500 and legs_sum(s) == 0
    assert lines_of(invoice_now(s, sub.id, MAR1)) == [("recurring", 4999, 0), ("inclusion", 0, 0)]


def test_resuming_at_or_after_the_planned_end_charges_nothing(books):
    s = books
    sub, subscription = _billed_january(s)
    hibernate(s, subscription.id, JAN11, JAN21, today=JAN11)
    assert resume(s, subscription.id, JAN26, today=JAN26) is None
    assert subscription.hibernate_until == JAN21 and subscription.status == "active"
    assert s.scalar(select(func.count(Invoice.id))) == 1


def test_dropping_a_hibernation_that_had_not_begun_charges_what_it_credited(books):
    s = books
    sub, subscription = _billed_january(s)
    memo = hibernate(s, subscription.id, JAN21, None, today=JAN11)  # credited now, starts later
    assert memo.amount == 1774 and subscription.status == "active"
    invoice = resume(s, subscription.id, JAN11, today=JAN11)
    assert lines_of(invoice) == [("proration", 1774, 0)]
    assert subscription.hibernate_from is None and balance(s, sub) == 4999


def test_a_second_hibernation_over_a_current_one_is_refused(books):
    s = books
    sub, subscription = _billed_january(s)
    hibernate(s, subscription.id, JAN11, None, today=JAN11)
    subscription.status = "active"  # even if the status were changed by hand
    with pytest.raises(ValidationFailed) as refused:
        hibernate(s, subscription.id, JAN21, None, today=JAN21)
    assert "start" in refused.value.errors
    assert s.scalar(select(func.count(Memo.id))) == 1


# --- tax given back by credits ---------------------------------------------------------------

@pytest.fixture
def taxed(books):
    """State tax 6.25 % and a flat 911 fee of 1.00 per cycle on the subscriber."""
    return tax_rate(books), tax_rate(books, "911 fee", "1.00", kind="flat")


def test_cancellation_credit_gives_back_the_percent_tax(books, taxed):
    s = books
    state, _ = taxed
    sub, subscription = _billed_january(s, rates=taxed)
    # January: 49.99 x 6.25 % = 3.124375 -> 3.12; 911 fee 1.00 -> total 49.99 + 4.12
    assert balance(s, sub) == 4999 + 312 + 100 and _tax_payable(s) == 412
    memo = cancel_subscription(s, subscription.id, JAN11, today=JAN11)
    # 33.86 credited; its tax 33.86 x 6.25 % = 2.11625 -> 2.12; the flat fee is not returned
    assert (memo.net, memo.tax_total, memo.amount, memo.unapplied) == (3386, 212, 3598, 3598)
    assert [(t.tax_rate_id, t.jurisdiction, t.rate, t.amount) for t in memo.taxes] == [
        (state.id, "State tax", D("6.25"), 212)]
    assert _legs(s, memo) == [("1200", 0, 3598, None), ("2200", 212, 0, "State tax"),
                              ("4000", 3386, 0, None)]
    assert balance(s, sub) == 5411 - 3598 and _tax_payable(s) == 200 and legs_sum(s) == 0
    void_memo(s, memo.id, JAN11)
    assert balance(s, sub) == 5411 and _tax_payable(s) == 412 and legs_sum(s) == 0


def test_hibernation_credit_gives_back_the_percent_tax(books, taxed):
    s = books
    sub, subscription = _billed_january(s, rates=taxed)
    memo = hibernate(s, subscription.id, JAN11, JAN26, today=JAN11)
    # 24.19 credited; 24.19 x 6.25 % = 1.511875 -> 1.51
    assert (memo.net, memo.tax_total, memo.amount) == (2419, 151, 2570)
    assert _legs(s, memo) == [("1200", 0, 2570, None), ("2200", 151, 0, "State tax"),
                              ("4000", 2419, 0, None)]
    invoice = resume(s, subscription.id, JAN21, today=JAN21)
    # 8.06 charged back; 8.06 x 6.25 % = 0.50375 -> 0.50 (+ the flat fee: see taxes.py)
    assert invoice.lines[0].amount == 806
    assert [(t.jurisdiction, t.amount) for t in invoice.lines[0].taxes
            if t.jurisdiction == "State tax"] == [("State tax", 50)]
    assert legs_sum(s) == 0


def test_immediate_downgrade_credit_nets_the_tax_of_both_pieces(books, taxed):
    s = books
    sub, subscription = _billed_january(s, "69.99", rates=taxed)
    update_invoice_defaults(s, downgrade_policy="immediate")
    # January: 69.99 x 6.25 % = 4.374375 -> 4.37, + 1.00
    assert balance(s, sub) == 6999 + 437 + 100
    basic = triple_play(s, price_monthly=D("49.99"), setup_fee=None)
    change = change_package(s, subscription.id, basic.id, JAN11)
    # -47.41 x 6.25 % = -2.963125 -> -2.96; +33.86 x 6.25 % = 2.11625 -> 2.12: 0.84 returned
    memo = change.memo
    assert (memo.net, memo.tax_total, memo.amount) == (4741 - 3386, 84, 1355 + 84)
    assert _legs(s, memo) == [("1200", 0, 1439, None), ("2200", 84, 0, "State tax"),
                              ("4000", 1355, 0, None)]
    assert balance(s, sub) == 7536 - 1439 and legs_sum(s) == 0


def test_an_untaxed_package_credit_carries_no_tax(books, taxed):
    s = books
    sub, subscription = _billed_january(s, rates=taxed, tax_mode="none")
    memo = cancel_subscription(s, subscription.id, JAN11, today=JAN11)
    assert (memo.net, memo.tax_total, memo.amount, memo.taxes) == (3386, 0, 3386, [])
    assert _legs(s, memo) == [("1200", 0, 3386, None), ("4000", 3386, 0, None)]


def test_a_tax_exempt_subscriber_gets_no_tax_back(books, taxed):
    s = books
    sub, subscription = _billed_january(s, rates=taxed)
    sub.tax_exempt, sub.tax_exemption_code = True, "RESALE"
    memo = cancel_subscription(s, subscription.id, JAN11, today=JAN11)
    assert (memo.tax_total, memo.amount) == (0, 3386)


def test_a_hand_made_credit_memo_is_unchanged(books, taxed):
    s = books
    sub, _ = _billed_january(s, rates=taxed)
    memo = credit_memo(s, sub.id, 1000, "Goodwill", JAN11)
    assert (memo.net, memo.tax_total, memo.amount) == (1000, 0, 1000)


def test_credit_with_tax_through_avatax_is_recorded_and_voided_under_the_memo_number(
        books, avatax_server):
    s = books
    configure_plugin(s, "avalara", True, {
        "account_id": ACCOUNT_ID, "license_key": LICENSE_KEY, "company_code": COMPANY,
        "base_url": avatax_server.url, "timeout": 2})
    update_invoice_defaults(s, tax_engine="avalara")
    sub, subscription = _billed_january(s)  # Chicago 60601: 6.25 + 1 + 2 %
    memo = cancel_subscription(s, subscription.id, JAN11, today=JAN11)
    # -33.86: Illinois -2.11625 -> -2.12, Cook -0.3386 -> -0.34, Chicago -0.6772 -> -0.68
    assert sorted((t.jurisdiction, t.amount) for t in memo.taxes) == [
        ("CHICAGO", 68), ("COOK", 34), ("ILLINOIS", 212)]
    assert (memo.net, memo.tax_total, memo.amount) == (3386, 314, 3700)
    assert avatax_server.stored(memo.number)["status"] == "Committed"
    assert legs_sum(s) == 0
    void_memo(s, memo.id, JAN11)
    assert avatax_server.stored(memo.number)["status"] == "Cancelled"


def test_an_avatax_outage_refuses_the_credit_and_writes_nothing(books, avatax_server):
    s = books
    configure_plugin(s, "avalara", True, {
        "account_id": ACCOUNT_ID, "license_key": LICENSE_KEY, "company_code": COMPANY,
        "base_url": avatax_server.url, "timeout": 2})
    update_invoice_defaults(s, tax_engine="avalara")
    sub, subscription = _billed_january(s)
    entries = s.scalar(select(func.count(JournalEntry.id)))
    avatax_server.fail_with = 503
    with pytest.raises(ValidationFailed) as refused:
        cancel_subscription(s, subscription.id, JAN11, today=JAN11)
    assert "tax_engine" in refused.value.errors
    assert s.scalar(select(func.count(Memo.id))) == 0
    assert s.scalar(select(func.count(JournalEntry.id))) == entries


def test_the_memo_page_and_api_show_net_tax_and_total(app, make_tenant, login_as, api_as):
    from headend.db import db
    from headend.tenancy.context import acting_as

    tenant = make_tenant("Memo Tax ISP")
    with app.app_context(), acting_as(tenant):
        s = db.session
        rates = (tax_rate(s), tax_rate(s, "911 fee", "1.00", kind="flat"))
        sub, subscription = _billed_january(s, rates=rates)
        memo_id = cancel_subscription(s, subscription.id, JAN11, today=JAN11).id
        s.commit()
        s.remove()
    page = login_as(tenant, "Billing").get(f"/memos/show/{memo_id}").get_data(as_text=True)
    for label, value in (("Net", "33.86 USD"), ("Tax", "2.12 USD"), ("Total", "35.98 USD"),
                         ("Tax given back", "State tax 6.25 %: 2.12 USD")):
        assert f">{label}</th>" in page and f">{value}</span>" in page, (label, value)
    client, headers = api_as(tenant, "Billing")
    result = client.get(f"/api/v1/memo/{memo_id}", headers=headers).get_json()["result"]
    assert (result["amount"], result["tax_total"]) == (3598, 212)
    assert result["taxes"] == [{"jurisdiction": "State tax", "rate": "6.250000", "amount": 212}]
