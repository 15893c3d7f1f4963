"""Cash and check payments through the manual gateway: allocation (oldest first, chosen
invoices, the excess as credit spent on the next invoice), the ledger legs, receipts, refunds
and voids, gateway routing, and refused input that writes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from headend import hookimpl
from headend.billing import invoicing, memos
from headend.billing.models import Invoice
from headend.errors import NotFound, ValidationFailed
from headend.ledger import services as ledger
from headend.ledger.models import JournalEntry
from headend.payments import services as payments
from headend.payments.models import GatewayRoute, Payment, PaymentAllocation, Refund
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from sqlalchemy import select

from tests.ledger_helpers import subscriber
from tests.memo_helpers import posted_invoice
from tests.payments_helpers import FEB, JAN, MAR, count, enable_manual, legs


@pytest.fixture
def cashbox(books):
    """A tenant with the manual gateway on."""
    enable_manual(books)
    books.commit()
    return books


def _state(inv: Invoice) -> tuple:
    return inv.status, inv.amount_paid, inv.balance_due


def _allocations(session, payment: Payment) -> dict[int, int]:
    return dict(session.execute(select(PaymentAllocation.invoice_id, PaymentAllocation.amount)
                                .where(PaymentAllocation.payment_id == payment.id)).all())


# --- receiving -------------------------------------------------------------------------------

def test_check_settles_the_oldest_invoices_first(cashbox):
    sub = subscriber(cashbox)
    older = posted_invoice(cashbox, sub, 3000, day=JAN)
    newer = posted_invoice(cashbox, sub, 5000, day=FEB)
    pay = payments.receive_payment(cashbox, sub, 6000, "check", MAR, reference="1042")
    cashbox.commit()
    assert (pay.status, pay.number, pay.plugin_id, pay.unapplied) == (
        "processed", "R-000001", "manual", 0)
    assert pay.provider_ref == f"manual-{pay.transaction_id}"
    assert pay.transaction_id.startswith("pay-")
    assert _state(older) == ("paid", 3000, 0)
    assert _state(newer) == ("partially_paid", 3000, 2000)
    assert _allocations(cashbox, pay) == {older.id: 3000, newer.id: 3000}
    # Dr 1010 Undeposited Funds / Cr 1200 AR with the subscriber
    assert legs(cashbox, pay.posted_entry_id) == [("1010", 6000, 0, None),
                                                  ("1200", 0, 6000, sub)]
    entry = cashbox.get(JournalEntry, pay.posted_entry_id)
    assert (entry.key, entry.source_type, entry.entry_date) == (f"payment:{pay.id}", "payment",
                                                                MAR)
    assert ledger.subscriber_balance(cashbox, sub) == 2000


def test_cash_goes_to_the_cash_account_and_shows_in_the_history(cashbox):
    sub = subscriber(cashbox)
    posted_invoice(cashbox, sub, 2500, day=JAN)
    pay = payments.receive_payment(cashbox, sub, 2500, "cash", FEB)
    check = payments.receive_payment(cashbox, sub, 700, "check", FEB, reference="1042")
    cashbox.commit()
    assert legs(cashbox, pay.posted_entry_id) == [("1000", 2500, 0, None),
                                                  ("1200", 0, 2500, sub)]
    history = ledger.account_history(cashbox, sub)
    assert [(row.description, row.debit, row.credit, row.balance) for row in history][1:] == [
        ("Payment R-000001 (cash)", 0, 2500, 0),
        ("Payment R-000002 (check 1042)", 0, 700, -700)]
    assert check.unapplied == 700 and memos.account_credit(cashbox, sub) == 700


def test_chosen_invoices_take_the_payment_and_the_excess_is_credit_for_the_next(cashbox):
    sub = subscriber(cashbox)
    older = posted_invoice(cashbox, sub, 3000, day=JAN)
    newer = posted_invoice(cashbox, sub, 5000, day=FEB)
    pay = payments.receive_payment(cashbox, sub, 6000, "bank_transfer", FEB, reference="TX9",
                                   invoice_ids=[newer.id])
    cashbox.commit()
    assert _state(newer) == ("paid", 5000, 0)
    assert _state(older) == ("open", 0, 3000)
    assert pay.unapplied == 1000
    # The next posted invoice takes the credit, through the same path as credit memos.
    nxt = invoicing.new_invoice(cashbox, sub, MAR, [{"description": "Router", "unit_price": "25"}],
                                today=MAR)
    cashbox.commit()
    assert _state(nxt) == ("partially_paid", 1000, 1500)
    assert pay.unapplied == 0
    assert _allocations(cashbox, pay) == {newer.id: 5000, nxt.id: 1000}


def test_memo_credit_is_spent_before_payment_credit(cashbox):
    sub = subscriber(cashbox)
    pay = payments.receive_payment(cashbox, sub, 800, "cash", JAN)
    memo = memos.credit_memo(cashbox, sub, 500, "Goodwill", JAN)
    inv = posted_invoice(cashbox, sub, 1000, day=FEB)
    assert memos.apply_account_credit(cashbox, inv) == 1000
    cashbox.commit()
    assert (memo.unapplied, pay.unapplied) == (0, 300)
    assert _state(inv) == ("paid", 1000, 0)
    assert memos.account_credit(cashbox, sub) == 300


def test_voiding_a_paid_invoice_gives_the_money_back_as_credit(cashbox):
    sub = subscriber(cashbox)
    inv = invoicing.new_invoice(cashbox, sub, JAN, [{"description": "Install", "unit_price": "40"}],
                                today=JAN)
    pay = payments.receive_payment(cashbox, sub, 4000, "cash", JAN)
    assert _state(inv) == ("paid", 4000, 0)
    invoicing.void_invoice(cashbox, inv.id, JAN)
    cashbox.commit()
    assert (inv.status, pay.unapplied, _allocations(cashbox, pay)) == ("void", 4000, {})
    assert ledger.subscriber_balance(cashbox, sub) == -4000


def test_same_transaction_id_gives_the_same_payment(cashbox):
    sub = subscriber(cashbox)
    posted_invoice(cashbox, sub, 1000)
    first = payments.receive_payment(cashbox, sub, 1000, "cash", JAN, transaction_id="till-7")
    cashbox.commit()
    again = payments.receive_payment(cashbox, sub, 1000, "cash", JAN, transaction_id="till-7")
    cashbox.commit()
    assert again.id == first.id
    assert count(cashbox, Payment) == 1
    assert cashbox.scalar(select(JournalEntry.id).where(JournalEntry.source_type == "payment")
                          ) == first.posted_entry_id
    assert ledger.subscriber_balance(cashbox, sub) == 0


# --- refused input ---------------------------------------------------------------------------

def _refused(session, field, *args, **kwargs) -> list[str]:
    before = (count(session, Payment), count(session, JournalEntry),
              count(session, PaymentAllocation))
    with pytest.raises(ValidationFailed) as caught:
        payments.receive_payment(session, *args, **kwargs)
    session.rollback()
    assert (count(session, Payment), count(session, JournalEntry),
            count(session, PaymentAllocation)) == before
    assert field in caught.value.errors, caught.value.errors
    return caught.value.errors[field]


def test_bad_payments_are_refused_and_write_nothing(cashbox, app, make_tenant):
    sub = subscriber(cashbox)
    inv = posted_invoice(cashbox, sub, 1000)
    cashbox.commit()
    assert _refused(cashbox, "amount", sub, 0, "cash", JAN)
    assert _refused(cashbox, "amount", sub, -500, "cash", JAN)
    assert _refused(cashbox, "amount", sub, 10.5, "cash", JAN)
    assert _refused(cashbox, "method", sub, 500, "bitcoin", JAN)
    assert _refused(cashbox, "received_on", sub, 500, "cash", "2024-01-15")
    assert _refused(cashbox, "reference", sub, 500, "check", JAN) == ["a check needs its number"]
    assert _refused(cashbox, "subscriber", 999999, 500, "cash", JAN)
    assert _refused(cashbox, "invoice_ids", sub, 500, "cash", JAN, invoice_ids=[999999])
    # card goes nowhere until a gateway that takes cards is routed
    assert _refused(cashbox, "method", sub, 500, "card", JAN)
    other = subscriber(cashbox)
    assert "belongs to another subscriber" in _refused(
        cashbox, "invoice_ids", other, 500, "cash", JAN, invoice_ids=[inv.id])[0]
    ledger.set_closing_date(cashbox, JAN)
    cashbox.commit()
    assert "books are closed" in _refused(cashbox, "received_on", sub, 500, "cash", JAN)[0]
    assert (inv.status, inv.amount_paid) == ("open", 0)


def test_another_tenants_invoice_does_not_exist(app, make_tenant, cashbox):
    other_isp = make_tenant("Other ISP")
    with acting_as(other_isp):
        theirs = posted_invoice(cashbox, subscriber(cashbox), 1000).id
        cashbox.commit()
    sub = subscriber(cashbox)
    assert _refused(cashbox, "invoice_ids", sub, 500, "cash", JAN, invoice_ids=[theirs]) == [
        f"invoice {theirs} does not exist"]


def test_an_archived_account_needs_the_override(cashbox):
    sub = subscriber(cashbox)
    cashbox.get(Subscriber, sub).status = "archived"
    cashbox.commit()
    assert "is archived" in _refused(cashbox, "subscriber", sub, 500, "cash", JAN)[0]
    pay = payments.receive_payment(cashbox, sub, 500, "cash", JAN, allow_archived=True)
    assert pay.status == "processed"


def test_a_paid_invoice_cannot_be_chosen(cashbox):
    sub = subscriber(cashbox)
    inv = posted_invoice(cashbox, sub, 1000)
    payments.receive_payment(cashbox, sub, 1000, "cash", JAN)
    cashbox.commit()
    assert _refused(cashbox, "invoice_ids", sub, 500, "cash", JAN, invoice_ids=[inv.id]) == [
        f"invoice {inv.number} is paid, not open"]


# --- gateways per method ---------------------------------------------------------------------

def test_methods_go_to_the_manual_gateway_only_when_it_is_on(books):
    with pytest.raises(ValidationFailed) as caught:
        payments.gateway_for(books, "cash")
    assert "no payment gateway takes cash" in caught.value.errors["method"][0]
    enable_manual(books)
    assert payments.gateway_for(books, "check").plugin_id == "manual"
    assert payments.routes(books) == {"card": None, "echeck": None, "cash": "manual",
                                      "check": "manual", "bank_transfer": "manual",
                                      "other": "manual"}
    with pytest.raises(ValidationFailed) as caught:
        payments.set_route(books, "card", "manual")
    assert "does not take card" in caught.value.errors["card"][0]
    with pytest.raises(ValidationFailed) as caught:
        payments.set_route(books, "card", "stripe")
    assert "not enabled" in caught.value.errors["card"][0]
    payments.set_route(books, "cash", "manual")
    assert books.scalar(select(GatewayRoute.plugin_id).where(GatewayRoute.method == "cash")) \
        == "manual"
    payments.set_route(books, "cash", None)
    assert count(books, GatewayRoute) == 0


def test_a_session_sees_its_own_gateway_changes_at_once(cashbox):
    """The tenant's gateway set-up is read once per session, and read again after the session
    changes a plugin configuration or rolls back."""
    from headend.plugins.services import configure_plugin

    sub = subscriber(cashbox)
    assert payments.receive_payment(cashbox, sub, 100, "cash", JAN).status == "processed"
    cashbox.commit()
    configure_plugin(cashbox, "manual", False, {})
    cashbox.flush()
    assert _refused(cashbox, "method", sub, 100, "cash", JAN) == [
        "no payment gateway takes cash payments: choose one on the Payment gateways page"]
    # _refused rolled the session back: the manual gateway is on again
    assert payments.receive_payment(cashbox, sub, 100, "cash", JAN).status == "processed"


def test_a_payment_runs_a_fixed_number_of_selects(cashbox):
    """No query per invoice, no set-up lookups per payment: the next payment of a session
    runs the same few SELECTs whatever the number of open invoices."""
    from headend.db import db

    sub = subscriber(cashbox)
    for day in (JAN, FEB, MAR):
        posted_invoice(cashbox, sub, 1000, day=day)
    payments.receive_payment(cashbox, sub, 100, "cash", JAN)
    cashbox.commit()
    statements = []

    def counted(conn, cursor, statement, *rest):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", counted)
    try:
        pay = payments.receive_payment(cashbox, sub, 2500, "check", MAR, reference="7")
        cashbox.commit()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", counted)
    assert pay.status == "processed" and len(_allocations(cashbox, pay)) == 3
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # subscriber, closed books, the open invoices (locked), then the ledger's own checks
    # (entry key, accounts, subscriber, closed books), the restore check, the plugins on for
    # the tenant (the mail listener hears payment_received) and, after the commit, whether
    # the tenant emails receipts
    assert len(selects) == 10, "\n".join(selects)
    assert len([s for s in selects if "plugin_configuration" in s]) == 1
    assert len([s for s in selects if "mail_settings" in s]) == 1
    assert not [s for s in selects if "gateway_route" in s
                or "payment_allocation" in s or "FROM tenant" in s]


# --- refunds and voids -----------------------------------------------------------------------

def test_partial_refund_then_the_rest_then_no_more(cashbox):
    sub = subscriber(cashbox)
    first = posted_invoice(cashbox, sub, 3000, day=JAN)
    second = posted_invoice(cashbox, sub, 3000, day=FEB)
    pay = payments.receive_payment(cashbox, sub, 7000, "check", FEB, reference="55")
    cashbox.commit()
    assert pay.unapplied == 1000
    # 1,500 back: the 1,000 of credit first, then 500 off the newest invoice
    part = payments.refund_payment(cashbox, pay.id, 1500, MAR, "overpaid")
    cashbox.commit()
    assert (part.status, part.reversal, pay.refunded, pay.unapplied) == (
        "processed", "refund", 1500, 0)
    assert _state(second) == ("partially_paid", 2500, 500)
    assert _state(first) == ("paid", 3000, 0)
    assert legs(cashbox, part.posted_entry_id) == [("1200", 1500, 0, sub),
                                                   ("1010", 0, 1500, None)]
    assert cashbox.get(JournalEntry, part.posted_entry_id).description == \
        "Refund of payment R-000001 (check 55)"
    rest = payments.refund_payment(cashbox, pay.id, 5500, MAR, "cancelled")
    cashbox.commit()
    assert (rest.status, pay.refunded, payments.refundable(cashbox, pay)) == ("processed", 7000,
                                                                              0)
    assert _state(first) == ("open", 0, 3000) and _state(second) == ("open", 0, 3000)
    assert _allocations(cashbox, pay) == {}
    assert ledger.subscriber_balance(cashbox, sub) == 6000
    with pytest.raises(ValidationFailed) as caught:
        payments.refund_payment(cashbox, pay.id, 1, MAR)
    assert "more than the 0" in caught.value.errors["amount"][0]
    cashbox.rollback()
    assert count(cashbox, Refund) == 2


def test_a_refund_above_what_remains_is_refused_and_writes_nothing(cashbox):
    sub = subscriber(cashbox)
    pay = payments.receive_payment(cashbox, sub, 2000, "cash", JAN)
    cashbox.commit()
    for amount, field in ((2001, "amount"), (0, "amount"), (-5, "amount")):
        with pytest.raises(ValidationFailed) as caught:
            payments.refund_payment(cashbox, pay.id, amount, JAN)
        assert field in caught.value.errors
        cashbox.rollback()
    ledger.set_closing_date(cashbox, FEB)
    cashbox.commit()
    with pytest.raises(ValidationFailed) as caught:
        payments.refund_payment(cashbox, pay.id, 100, FEB)
    assert "books are closed" in caught.value.errors["refunded_on"][0]
    cashbox.rollback()
    assert (count(cashbox, Refund), pay.refunded) == (0, 0)
    with pytest.raises(NotFound):
        payments.refund_payment(cashbox, 999999, 100, MAR)


def test_void_payment_reopens_the_invoice(cashbox):
    sub = subscriber(cashbox)
    inv = posted_invoice(cashbox, sub, 2000)
    pay = payments.receive_payment(cashbox, sub, 2000, "cash", JAN)
    refund = payments.void_payment(cashbox, pay.id, FEB, "recorded twice")
    cashbox.commit()
    assert (pay.status, refund.amount, refund.status) == ("voided", 2000, "processed")
    assert _state(inv) == ("open", 0, 2000)
    assert ledger.subscriber_balance(cashbox, sub) == 2000
    assert payments.refundable(cashbox, pay) == 0


class Listener:
    """A pure listener plugin (no gateways): it hears every tenant's events."""

    def __init__(self):
        self.heard = []

    @hookimpl
    def payment_received(self, tenant_id, payment_id):
        self.heard.append((tenant_id, payment_id))


def test_payment_received_event_fires_for_processed_payments_only(app, cashbox):
    pm = app.extensions["headend_plugins"]
    listener = Listener()
    pm.register(listener, name="payments-listener")
    try:
        sub = subscriber(cashbox)
        pay = payments.receive_payment(cashbox, sub, 100, "cash", dt.date(2024, 1, 2))
        with pytest.raises(ValidationFailed):
            payments.receive_payment(cashbox, sub, 0, "cash", dt.date(2024, 1, 2))
    finally:
        pm.unregister(listener)
    assert listener.heard == [(pay.tenant_id, pay.id)]


def test_the_billing_run_spends_payment_credit_on_its_invoice(app, make_tenant):
    """The nightly run applies a prepayment to the invoice it posts, as Invoice Now does."""
    from headend.billing.run import bill_run
    from headend.db import db

    from tests.billing_run_helpers import RUN, catalog
    from tests.billing_run_helpers import subscription as new_subscription

    tenant = make_tenant("Prepaid ISP", "prepaid-isp")
    with app.app_context(), acting_as(tenant):
        session = db.session
        enable_manual(session)
        sub, _ = new_subscription(session, catalog(session))
        pay = payments.receive_payment(session, sub, 2500, "cash", RUN - dt.timedelta(days=3))
        session.commit()
        assert pay.unapplied == 2500
        with acting_as(None):
            bill_run(session, RUN, tenant_slug="prepaid-isp")
        session.expire_all()
        (invoice,) = session.scalars(select(Invoice).where(Invoice.subscriber_id == sub)).all()
        assert (invoice.total, invoice.amount_paid, invoice.status) == (6600, 2500,
                                                                       "partially_paid")
        assert (session.get(Payment, pay.id).unapplied,
                _allocations(session, session.get(Payment, pay.id))) == (0, {invoice.id: 2500})
        assert ledger.subscriber_balance(session, sub) == 6600 - 2500
