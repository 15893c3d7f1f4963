"""Property: any sequence of balanced postings, repeats and reversals keeps every entry
balanced, all legs summing to zero, and each balance equal to its receivable legs."""

from __future__ import annotations

import itertools

from headend.catalog.models import Account
from headend.errors import ValidationFailed
from headend.ledger import services as ledger
from headend.ledger.models import Leg
from headend.ledger.services import LegSpec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.ledger_helpers import JAN, subscriber

_run = itertools.count(1)
amounts = st.integers(min_value=1, max_value=10**9)
operations = st.lists(st.one_of(
    st.tuples(st.just("invoice"), st.integers(0, 2), amounts, st.integers(0, 10**6)),
    st.tuples(st.just("payment"), st.integers(0, 2), amounts, st.just(0)),
    st.tuples(st.just("credit_memo"), st.integers(0, 2), amounts, st.just(0)),
    st.tuples(st.just("reverse"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("repeat"), st.integers(0, 50), st.just(0), st.just(0)),
), max_size=25)


def _legs(kind: str, sub: int, amount: int, tax: int) -> list[LegSpec]:
    if kind == "invoice":
        legs = [LegSpec("1200", debit=amount + tax, subscriber_id=sub),
                LegSpec("4000", credit=amount)]
        return legs + ([LegSpec("2200", credit=tax)] if tax else [])
    if kind == "payment":
        return [LegSpec("1010", debit=amount), LegSpec("1200", credit=amount, subscriber_id=sub)]
    return [LegSpec("4900", debit=amount), LegSpec("1200", credit=amount, subscriber_id=sub)]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_posting_sequence_keeps_the_books_balanced(books, ops):
    run = next(_run)
    subs = [subscriber(books) for _ in range(3)]
    expected = dict.fromkeys(subs, 0)
    posted = []  # (key, entry, effect on each subscriber)
    for n, (kind, who, amount, tax) in enumerate(ops):
        if kind in ("reverse", "repeat"):
            if not posted:
                continue
            key, entry, effect = posted[who % len(posted)]
            if kind == "repeat":
                assert ledger.post_entry(books, key=key, entry_date=JAN, source_type="x",
                                         source_id=0, description="again", legs=[]).id == entry.id
                continue
            try:
                ledger.reverse_entry(books, entry, key=f"{run}-rev-{n}", entry_date=JAN,
                                     description="Reversal")
            except ValidationFailed:
                continue  # a reversal of an entry already reversed is refused
            for sub, delta in effect.items():
                expected[sub] -= delta
            continue
        sub = subs[who]
        key = f"{run}-{n}"
        entry = ledger.post_entry(books, key=key, entry_date=JAN, source_type=kind, source_id=n,
                                  description=kind, legs=_legs(kind, sub, amount, tax))
        delta = amount + tax if kind == "invoice" else -amount
        expected[sub] += delta
        posted.append((key, entry, {sub: delta}))
    books.commit()

    assert books.scalar(select(func.coalesce(func.sum(Leg.debit - Leg.credit), 0))) == 0
    unbalanced = books.scalars(select(Leg.entry_id).group_by(Leg.entry_id)
                               .having(func.sum(Leg.debit) != func.sum(Leg.credit))).all()
    assert unbalanced == []
    ar = books.scalar(select(Account.id).where(Account.code == "1200"))
    for sub in subs:
        legs = books.execute(select(Leg.debit, Leg.credit).where(
            Leg.subscriber_id == sub, Leg.account_id == ar)).all()
        from_legs = sum(d for d, _ in legs) - sum(c for _, c in legs)
        assert ledger.subscriber_balance(books, sub) == from_legs == expected[sub]
        history = ledger.account_history(books, sub)
        assert (history[-1].balance if history else 0) == expected[sub]
