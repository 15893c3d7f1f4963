"""hypothesis: any sequence of custom invoices, discounts, edits and voids keeps every entry
balanced, the legs summing to zero, and the balance equal to what the live invoices total."""

import datetime as dt

from headend.billing.invoicing import edit_invoice, new_invoice, void_invoice
from headend.billing.models import Invoice
from headend.errors import ValidationFailed
from headend.ledger.models import JournalEntry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.invoicing_helpers import balance, legs_sum, subscriber, tax_rate

DAY = dt.date(2026, 1, 20)

prices = st.decimals(min_value=0, max_value=500, places=2)
quantities = st.integers(min_value=0, max_value=5)
lines = st.lists(st.tuples(prices, quantities, st.booleans()), min_size=1, max_size=4)
steps = st.lists(st.one_of(
    st.tuples(st.just("invoice"), lines),
    st.tuples(st.just("edit"), st.integers(min_value=0, max_value=9), lines),
    st.tuples(st.just("void"), st.integers(min_value=0, max_value=9)),
), min_size=1, max_size=6)


def _raw(spec):
    return [{"description": f"L{n}", "unit_price": str(price), "quantity": str(qty),
             "kind": "discount" if discount else "fee"}
            for n, (price, qty, discount) in enumerate(spec)]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_any_sequence_stays_balanced(books, steps):
    s = books
    sub = subscriber(s, rates=[tax_rate(s)])
    made: list[int] = []
    for step in steps:
        try:
            with s.begin_nested():
                if step[0] == "invoice":
                    made.append(new_invoice(s, sub.id, DAY, _raw(step[1]), today=DAY).id)
                elif step[0] == "edit" and made:
                    edit_invoice(s, made[step[1] % len(made)], _raw(step[2]), on_date=DAY)
                elif step[0] == "void" and made:
                    void_invoice(s, made[step[1] % len(made)], on_date=DAY)
        except ValidationFailed:
            pass  # refused (a discount too large, an edit of a void invoice): nothing written
        for entry in s.scalars(select(JournalEntry)):
            assert sum(leg.debit for leg in entry.legs) == sum(leg.credit for leg in entry.legs)
        assert legs_sum(s) == 0
        live = s.scalars(select(Invoice).where(Invoice.subscriber_id == sub.id,
                                               Invoice.status != "void")).all()
        assert balance(s, sub) == sum(inv.total for inv in live)
        assert all(inv.total >= 0 for inv in live)
