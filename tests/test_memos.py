"""Credit and debit memos: applied to an invoice or kept as account credit, the ledger entry
each posts, voiding, and refused input that writes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from headend.billing import memos
from headend.billing.models import Invoice, Memo, MemoApplication
from headend.catalog.models import Account
from headend.errors import ValidationFailed
from headend.ledger import services as ledger
from headend.ledger.models import JournalEntry, Leg
from sqlalchemy import func, select

from tests.ledger_helpers import JAN, subscriber
from tests.memo_helpers import posted_invoice

FEB = dt.date(2024, 2, 1)


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _legs(session, entry_id):
    return [(leg.account.code, leg.debit, leg.credit, leg.subscriber_id)
            for leg in session.scalars(select(Leg).where(Leg.entry_id == entry_id)
                                       .order_by(Leg.id))]


def test_credit_memo_applied_to_an_invoice(books):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 5000)
    memo = memos.credit_memo(books, sub, 1500, "Outage credit", JAN, invoice_id=inv.id)
    books.commit()
    assert memo.number == "CM-1" and memo.kind == "credit" and memo.unapplied == 0
    assert (inv.amount_paid, inv.status, inv.balance_due) == (1500, "partially_paid", 3500)
    assert _legs(books, memo.posted_entry_id) == [("4900", 1500, 0, None),
                                                  ("1200", 0, 1500, sub)]
    entry = books.get(JournalEntry, memo.posted_entry_id)
    assert entry.key == f"memo:{memo.id}" and entry.source_type == "memo"
    assert ledger.subscriber_balance(books, sub) == 3500


def test_credit_memo_settling_the_whole_invoice_marks_it_paid(books):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 5000)
    memos.credit_memo(books, sub, 5000, "Goodwill", JAN, invoice_id=inv.id)
    books.commit()
    assert (inv.status, inv.balance_due) == ("paid", 0)


def test_memo_larger_than_the_invoice_leaves_the_excess_as_credit(books):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 3000)
    memo = memos.credit_memo(books, sub, 5000, "Refund of overbilling", JAN, invoice_id=inv.id)
    books.commit()
    assert (inv.status, inv.amount_paid) == ("paid", 3000)
    assert memo.unapplied == 2000 and memos.account_credit(books, sub) == 2000
    assert ledger.subscriber_balance(books, sub) == -2000


def test_account_credit_goes_to_the_next_invoice(books):
    sub = subscriber(books)
    first = memos.credit_memo(books, sub, 1000, "Referral", JAN)
    second = memos.credit_memo(books, sub, 2500, "Promo", FEB)
    assert ledger.subscriber_balance(books, sub) == -3500
    inv = posted_invoice(books, sub, 3000, day=FEB)
    assert ledger.subscriber_balance(books, sub) == -500
    assert memos.apply_account_credit(books, inv) == 3000
    books.commit()
    assert (first.unapplied, second.unapplied) == (0, 500)  # oldest first
    assert (inv.amount_paid, inv.status) == (3000, "paid")
    assert ledger.subscriber_balance(books, sub) == -500  # applying posts nothing
    assert memos.apply_account_credit(books, inv) == 0  # idempotent
    nxt = posted_invoice(books, sub, 2000, day=FEB)
    assert memos.apply_account_credit(books, nxt) == 500
    books.commit()
    assert (nxt.status, nxt.balance_due) == ("partially_paid", 1500)
    assert ledger.subscriber_balance(books, sub) == 1500
    assert _count(books, MemoApplication) == 3


def test_account_credit_is_not_applied_to_another_subscriber(books):
    sub, other = subscriber(books), subscriber(books)
    memos.credit_memo(books, sub, 1000, "Referral", JAN)
    inv = posted_invoice(books, other, 3000)
    assert memos.apply_account_credit(books, inv) == 0
    assert inv.amount_paid == 0


def test_debit_memo_raises_the_balance(books):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 1000)
    memo = memos.debit_memo(books, sub, 250, "Late fee", JAN)
    books.commit()
    assert memo.number == "DM-1" and memo.unapplied == 0
    assert _legs(books, memo.posted_entry_id) == [("1200", 250, 0, sub), ("4700", 0, 250, None)]
    assert ledger.subscriber_balance(books, sub) == 1250
    assert inv.amount_paid == 0


def test_chosen_income_account(books):
    sub = subscriber(books)
    account = books.scalar(select(Account).where(Account.code == "4400"))
    memo = memos.credit_memo(books, sub, 100, "Setup refund", JAN, income_account_id=account.id)
    assert _legs(books, memo.posted_entry_id)[0] == ("4400", 100, 0, None)


def test_memo_numbers_count_per_kind(books):
    sub = subscriber(books)
    numbers = [memos.credit_memo(books, sub, 1, "a", JAN).number,
               memos.debit_memo(books, sub, 1, "b", JAN).number,
               memos.credit_memo(books, sub, 1, "c", JAN).number]
    assert numbers == ["CM-1", "DM-1", "CM-2"]


def test_void_reverses_and_unapplies(books):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 3000)
    memo = memos.credit_memo(books, sub, 5000, "Oops", JAN, invoice_id=inv.id)
    nxt = posted_invoice(books, sub, 4000)
    memos.apply_account_credit(books, nxt)
    books.commit()
    assert ledger.subscriber_balance(books, sub) == 2000
    memos.void_memo(books, memo.id, FEB)
    books.commit()
    assert memo.voided_at is not None and memo.unapplied == 0 and memo.number == "CM-1"
    assert (inv.status, inv.amount_paid) == ("open", 0)
    assert (nxt.status, nxt.amount_paid) == ("open", 0)
    assert ledger.subscriber_balance(books, sub) == 7000
    reversal = books.scalar(select(JournalEntry).where(JournalEntry.key == f"memo-void:{memo.id}"))
    assert reversal.reverses_id == memo.posted_entry_id and reversal.entry_date == FEB
    assert _count(books, MemoApplication) == 0


def test_void_debit_memo(books):
    sub = subscriber(books)
    memo = memos.debit_memo(books, sub, 900, "Truck roll", JAN)
    memos.void_memo(books, memo.id, JAN)
    books.commit()
    assert ledger.subscriber_balance(books, sub) == 0


def test_release_invoice_credits_returns_the_credit_to_the_account(books):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 3000)
    memo = memos.credit_memo(books, sub, 1000, "Credit", JAN, invoice_id=inv.id)
    inv.status = "void"
    assert memos.release_invoice_credits(books, inv) == 1000
    books.commit()
    assert memo.unapplied == 1000 and inv.status == "void" and inv.amount_paid == 0


def _nothing_written(session, memo_count=0):
    session.commit()
    assert _count(session, Memo) == memo_count
    assert _count(session, JournalEntry) == _count(session, Invoice) + memo_count


@pytest.mark.parametrize("amount", [0, -100, 12.5, "100", True])
def test_bad_amount_is_refused(books, amount):
    sub = subscriber(books)
    with pytest.raises(ValidationFailed) as exc:
        memos.credit_memo(books, sub, amount, "x", JAN)
    assert "amount" in exc.value.errors
    _nothing_written(books)


def test_missing_fields_are_named(books):
    with pytest.raises(ValidationFailed) as exc:
        memos.debit_memo(books, 999999, 100, "  ", "2024-01-01")
    assert {"subscriber", "description", "memo_date"} <= set(exc.value.errors)
    _nothing_written(books)


def test_invoice_of_another_subscriber_is_refused(books):
    sub, other = subscriber(books), subscriber(books)
    inv = posted_invoice(books, other, 1000)
    with pytest.raises(ValidationFailed) as exc:
        memos.credit_memo(books, sub, 100, "x", JAN, invoice_id=inv.id)
    assert exc.value.errors["invoice"] == ["belongs to another subscriber"]
    _nothing_written(books)
    assert inv.amount_paid == 0


@pytest.mark.parametrize("status", ["paid", "void", "draft"])
def test_invoice_not_open_is_refused(books, status):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 1000, status=status)
    with pytest.raises(ValidationFailed) as exc:
        memos.credit_memo(books, sub, 100, "x", JAN, invoice_id=inv.id)
    assert "not open" in exc.value.errors["invoice"][0]
    _nothing_written(books)


def test_void_twice_is_refused(books):
    sub = subscriber(books)
    memo = memos.credit_memo(books, sub, 100, "x", JAN)
    memos.void_memo(books, memo.id, JAN)
    books.commit()
    with pytest.raises(ValidationFailed) as exc:
        memos.void_memo(books, memo.id, JAN)
    assert exc.value.errors == {"memo": ["is already void"]}
    books.commit()
    assert _count(books, JournalEntry) == 2


def test_closed_books_refuse_memo_and_void(books):
    sub = subscriber(books)
    inv = posted_invoice(books, sub, 1000, day=FEB)
    memo = memos.credit_memo(books, sub, 100, "x", FEB, invoice_id=inv.id)
    ledger.set_closing_date(books, JAN)
    books.commit()
    with pytest.raises(ValidationFailed) as exc:
        memos.credit_memo(books, sub, 100, "late", JAN, invoice_id=inv.id)
    assert "books are closed" in exc.value.errors["memo_date"][0]
    with pytest.raises(ValidationFailed) as exc:
        memos.void_memo(books, memo.id, JAN)
    assert "void_date" in exc.value.errors
    books.commit()
    assert _count(books, Memo) == 1 and _count(books, JournalEntry) == 2
    assert inv.amount_paid == 100 and memo.voided_at is None
    assert memos.next_memo_number(books, "credit") == "CM-2"  # the refused one took no number


def test_invoicing_engine_spends_account_credit(books):
    """End to end with the invoicing engine: a posted invoice takes the account credit."""
    from headend.billing.invoicing import new_invoice

    sub = subscriber(books)
    memo = memos.credit_memo(books, sub, 1000, "Referral", JAN)
    invoice = new_invoice(books, sub, JAN, [{"description": "Install", "quantity": "1",
                                             "unit_price": "30", "kind": "item"}], today=JAN)
    books.commit()
    assert invoice.amount_paid == min(1000, invoice.total) and memo.unapplied == max(
        0, 1000 - invoice.total)
    assert ledger.subscriber_balance(books, sub) == invoice.total - 1000
