"""Property: any sequence of invoices, payments, collections runs (late and re-billing fees,
suspensions), archives and write-offs keeps every entry balanced and each subscriber's ledger
balance equal to what its open invoices still show due, less its unapplied payment credit."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from headend.billing.models import Invoice
from headend.dunning.collect import run_collections
from headend.dunning.models import AppliedFee, SubscriberCollection
from headend.dunning.services import OPEN_STATUSES
from headend.ledger.models import Leg
from headend.ledger.services import subscriber_balance
from headend.payments.models import Payment
from headend.payments.services import receive_payment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.dunning_helpers import MAR1, active_subscriber, owe, rules
from tests.payments_helpers import enable_manual

operations = st.lists(st.one_of(
    st.tuples(st.just("invoice"), st.integers(0, 1), st.integers(1, 500_00)),
    st.tuples(st.just("pay"), st.integers(0, 1), st.integers(1, 600_00)),
    st.tuples(st.just("days"), st.just(0), st.integers(1, 40)),
    st.tuples(st.just("archive"), st.integers(0, 1), st.just(0)),
), max_size=14)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_collections_sequence_keeps_the_books_right(books, ops):
    s = books
    enable_manual(s)
    rules(s, late_fee_days=5, late_fee_kind="percent", late_fee_amount=D("2.5"),
          late_fee_max=D("8"), rebill_fee_days=20, rebill_fee_amount=D("3"), grace_days=10,
          grace_amount=D("1"), writeoff_enabled=True, writeoff_threshold=D("300"),
          writeoff_days=10)
    subs = [active_subscriber(s) for _ in range(2)]
    today = MAR1
    for kind, who, value in ops:
        sub = subs[who]
        if kind == "invoice" and sub.status != "archived":
            owe(s, sub, f"{value / 100:.2f}", on=today)
        elif kind == "pay" and sub.status != "archived":
            receive_payment(s, sub.id, value, "cash", today)
        elif kind == "archive" and sub.status != "archived":
            sub.status = "archived"
            s.flush()
            s.scalar(select(SubscriberCollection).where(
                SubscriberCollection.subscriber_id == sub.id)).archived_on = today
        elif kind == "days":
            for _ in range(value):
                today += dt.timedelta(days=1)
                run_collections(s, today)
    run_collections(s, today)
    s.flush()

    assert s.scalar(select(func.coalesce(func.sum(Leg.debit - Leg.credit), 0))) == 0
    for sub in subs:
        due = s.scalar(select(func.coalesce(func.sum(Invoice.total - Invoice.amount_paid), 0))
                       .where(Invoice.subscriber_id == sub.id,
                              Invoice.status.in_(OPEN_STATUSES)))
        credit = s.scalar(select(func.coalesce(func.sum(Payment.unapplied), 0)).where(
            Payment.subscriber_id == sub.id, Payment.status == "processed"))
        assert subscriber_balance(s, sub.id) == due - credit
        paid_over = s.scalar(select(func.count(Invoice.id)).where(
            Invoice.subscriber_id == sub.id, Invoice.amount_paid > Invoice.total))
        assert paid_over == 0
    per_invoice = s.execute(select(AppliedFee.invoice_id, AppliedFee.kind, func.count())
                            .group_by(AppliedFee.invoice_id, AppliedFee.kind)).all()
    assert all(n == 1 for _, _, n in per_invoice)
