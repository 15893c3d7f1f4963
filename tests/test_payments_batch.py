"""Many payments at once (payments.batch) and deposit files (payments.deposit_file): the same
allocation and ledger as one by one, exactly once per transaction id, every bad line named with
nothing written, restore of suspended subscribers, concurrent batches, the CLI, the API and the
Import payments page."""

from __future__ import annotations

import datetime as dt
import io
import threading
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from headend.audit.models import AuditLog
from headend.cli import main
from headend.db import db
from headend.errors import ValidationFailed
from headend.ledger.services import set_closing_date, subscriber_balance
from headend.payments import services as payments
from headend.payments.batch import PaymentLine, receive_payments
from headend.payments.deposit_file import import_deposit_file
from headend.payments.models import Payment, PaymentAllocation
from headend.sequences import TenantSequence
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from sqlalchemy import select

from tests.dunning_helpers import active_subscriber, day, owe, rules
from tests.ledger_helpers import subscriber
from tests.memo_helpers import posted_invoice
from tests.payments_helpers import FEB, JAN, MAR, count, enable_manual, legs


@pytest.fixture
def cashbox(books):
    enable_manual(books)
    books.commit()
    return books


def _account(session, sub_id: int) -> str:
    return session.get(Subscriber, sub_id).account_number


def _state(session, *invoices) -> list[tuple]:
    for inv in invoices:
        session.refresh(inv)
    return [(inv.status, inv.amount_paid) for inv in invoices]


def _receipt_counter(session) -> int | None:
    return session.scalar(select(TenantSequence.last_value)
                          .where(TenantSequence.name == payments.RECEIPT_SEQUENCE))


def test_a_batch_settles_like_payments_one_by_one(cashbox):
    s = cashbox
    ana, ben = subscriber(s), subscriber(s)
    jan, feb = posted_invoice(s, ana, 3000, day=JAN), posted_invoice(s, ana, 5000, day=FEB)
    ben_inv = posted_invoice(s, ben, 4000, day=JAN)
    s.commit()
    result = receive_payments(s, [
        PaymentLine(4000, "check", MAR, subscriber_id=ana, reference="1042", transaction_id="a"),
        PaymentLine(5000, "cash", MAR, account=_account(s, ana), transaction_id="b"),
        PaymentLine(1500, "bank_transfer", MAR, subscriber_id=ben, reference="WIRE-9"),
    ])
    s.commit()
    assert result.receipts == ("R-000001", "R-000003") and result.amount == 10500
    assert result.describe() == "3 payments posted (R-000001 to R-000003)"
    first, second, third = (s.get(Payment, pid) for pid in result.posted)
    # in line order: the check pays January and 10.00 of February, the cash the rest of
    # February and leaves 10.00 of credit; Ben's transfer pays his invoice in part
    assert _state(s, jan, feb, ben_inv) == [("paid", 3000), ("paid", 5000),
                                            ("partially_paid", 1500)]
    alloc = dict(s.execute(select(PaymentAllocation.payment_id, sa.func.sum(
        PaymentAllocation.amount)).group_by(PaymentAllocation.payment_id)).all())
    assert alloc == {first.id: 4000, second.id: 4000, third.id: 1500}
    assert (first.unapplied, second.unapplied, third.unapplied) == (0, 1000, 0)
    assert [p.status for p in (first, second, third)] == ["processed"] * 3
    assert (first.plugin_id, first.source, first.reference) == ("manual", "import", "1042")
    assert legs(s, second.posted_entry_id) == [("1000", 5000, 0, None), ("1200", 0, 5000, ana)]
    assert legs(s, third.posted_entry_id) == [("1010", 1500, 0, None), ("1200", 0, 1500, ben)]
    assert payments.describe(first) == "R-000001 (check 1042)"
    assert subscriber_balance(s, ana) == -1000 and subscriber_balance(s, ben) == 2500
    audited = s.scalars(select(AuditLog.entity_id).where(AuditLog.entity == "payment")).all()
    assert sorted(audited) == sorted(str(p) for p in result.posted)
    # a payment posted one by one afterwards carries on the receipt numbers
    assert payments.receive_payment(s, ben, 100, "cash", MAR).number == "R-000004"


def test_the_same_lines_again_post_nothing(cashbox):
    s = cashbox
    sub = subscriber(s)
    posted_invoice(s, sub, 3000, day=JAN)
    lines = [PaymentLine(1000, "cash", MAR, subscriber_id=sub, transaction_id=f"t{n}")
             for n in range(3)]
    assert len(receive_payments(s, lines).posted) == 3
    s.commit()
    again = receive_payments(s, [*lines, PaymentLine(500, "cash", MAR, subscriber_id=sub,
                                                     transaction_id="t3")])
    s.commit()
    assert again.skipped == ["t0", "t1", "t2"] and len(again.posted) == 1
    assert count(s, Payment) == 4 and subscriber_balance(s, sub) == -500
    assert receive_payments(s, lines[:1]).describe() == "0 payments posted, 1 already recorded"


@pytest.mark.parametrize("line, field, reason", [
    (dict(amount=0), "lines.1.amount", "must be a positive amount"),
    (dict(amount=-5), "lines.1.amount", "must be a positive amount"),
    (dict(amount=D("1.5")), "lines.1.amount", "integer minor units"),
    (dict(method="check", reference=None), "lines.1.reference", "a check needs its number"),
    (dict(method="bitcoin"), "lines.1.method", "must be one of"),
    (dict(subscriber_id=None, account="nope"), "lines.1.subscriber", "does not exist"),
    (dict(subscriber_id=None), "lines.1.subscriber", "name the subscriber"),
    (dict(transaction_id="dup"), "lines.1.transaction_id", "appears twice"),
    (dict(method="card"), "method", "no payment gateway takes card payments"),
])
def test_a_bad_line_refuses_the_batch_and_writes_nothing(cashbox, line, field, reason):
    s = cashbox
    sub = subscriber(s)
    posted_invoice(s, sub, 3000, day=JAN)
    s.commit()
    good = dict(amount=1000, method="cash", received_on=MAR, subscriber_id=sub)
    lines = [PaymentLine(**good, transaction_id="dup"),
             PaymentLine(**{**good, "transaction_id": None, **line})]
    with pytest.raises(ValidationFailed) as refused:
        receive_payments(s, lines)
    assert reason in " ".join(refused.value.errors[field])
    s.rollback()
    assert count(s, Payment) == 0 and count(s, PaymentAllocation) == 0
    assert _receipt_counter(s) is None


def test_archived_accounts_need_consent_and_closed_books_refuse(cashbox):
    s = cashbox
    sub = subscriber(s)
    s.get(Subscriber, sub).status = "archived"
    s.commit()
    line = PaymentLine(1000, "cash", MAR, subscriber_id=sub)
    with pytest.raises(ValidationFailed) as refused:
        receive_payments(s, [line])
    assert "archived" in refused.value.errors["lines.0.subscriber"][0]
    s.rollback()
    assert len(receive_payments(s, [line], allow_archived=True).posted) == 1
    set_closing_date(s, MAR, "block")
    s.commit()
    with pytest.raises(ValidationFailed) as closed:
        receive_payments(s, [PaymentLine(1000, "cash", MAR, subscriber_id=sub)],
                         allow_archived=True)
    assert "books are closed" in closed.value.errors["received_on"][0]


def test_a_batch_restores_a_suspended_subscriber_within_grace(app, books):
    from headend.dunning.collect import run_collections

    s = books
    enable_manual(s)
    rules(s, grace_days=10, grace_amount=D("5.00"))
    sub = active_subscriber(s)
    owe(s, sub, "100.00")
    run_collections(s, day(11))
    s.refresh(sub)
    assert sub.status == "suspended"
    receive_payments(s, [PaymentLine(9600, "cash", day(12), subscriber_id=sub.id)])
    s.refresh(sub)
    assert sub.status == "active" and [x.status for x in sub.subscriptions] == ["active"]


# --- deposit files ----------------------------------------------------------------------------

def _file(session, *rows: str, header: str = "account,amount,method,date,reference") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def test_a_deposit_file_posts_once_and_names_bad_lines_by_file_line(cashbox):
    s = cashbox
    a, b = subscriber(s), subscriber(s)
    posted_invoice(s, a, 3000, day=JAN)
    s.commit()
    acc_a, acc_b = _account(s, a), _account(s, b)
    bad = _file(s, f"{acc_a},10.00,cash,2024-03-01,", f"{acc_b},1.234,cash,2024-03-01,",
                f"{acc_b},5,check,2024-03-01,", "999999,5,cash,2024-03-01,",
                f"{acc_a},5,cash,03/01/2024,")
    with pytest.raises(ValidationFailed) as refused:
        import_deposit_file(s, bad)
    assert refused.value.errors == {
        "line 3: amount": ["allows at most 2 decimal places"],
        "line 6: date": ["must be a date (YYYY-MM-DD)"]}
    fixed = bad.replace(b"1.234", b"1.23").replace(b"03/01/2024", b"2024-03-01")
    with pytest.raises(ValidationFailed) as refused:  # the rest is checked against the books
        import_deposit_file(s, fixed)
    assert refused.value.errors == {"line 4: reference": ["a check needs its number"],
                                    "line 5: subscriber": ["does not exist"]}
    s.rollback()
    assert count(s, Payment) == 0
    good = _file(s, f"{acc_a},10.00,cash,2024-03-01,", f"{acc_b},1.23,,2024-03-01,",
                 f"{acc_a},25,check,2024-03-02,1042")
    done = []
    result = import_deposit_file(s, good, default_method="bank_transfer",
                                 progress=done.append, after_chunk=s.commit)
    assert (len(result.posted), result.amount, done) == (3, 3623, [3])
    methods = s.scalars(select(Payment.method).order_by(Payment.id)).all()
    assert methods == ["cash", "bank_transfer", "check"]
    again = import_deposit_file(s, good, default_method="bank_transfer")
    assert (again.posted, len(again.skipped)) == ([], 3)
    assert count(s, Payment) == 3 and subscriber_balance(s, a) == 3000 - 3500


def test_a_deposit_file_with_wrong_columns_is_refused(cashbox):
    with pytest.raises(ValidationFailed) as refused:
        import_deposit_file(cashbox, b"who,amount\nx,1\n")
    message = refused.value.errors["file"][0]
    assert "unknown columns: who" in message and "missing columns: account, date" in message
    with pytest.raises(ValidationFailed) as empty:
        import_deposit_file(cashbox, b"account,amount,date\n")
    assert empty.value.errors == {"file": ["has no payment lines"]}
    with pytest.raises(ValidationFailed) as binary:
        import_deposit_file(cashbox, b"\xff\xfe\x00")
    assert binary.value.errors == {"file": ["must be a UTF-8 CSV file"]}


def test_cli_import_payments(app, cashbox, tmp_path):
    s = cashbox
    sub = subscriber(s)
    posted_invoice(s, sub, 3000, day=JAN)
    slug = s.scalar(sa.text("SELECT slug FROM tenant WHERE id = :t"),
                    {"t": s.info["tenant"]})
    s.commit()
    path = tmp_path / "deposit.csv"
    path.write_bytes(_file(s, f"{_account(s, sub)},30.00,cash,2024-03-01,"))
    env = {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"]}
    runner = CliRunner()
    done = runner.invoke(main, ["import-payments", str(path), "--tenant", slug], env=env,
                         catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "1 payments posted (R-000001 to R-000001)" in done.output
    assert "deposit.csv" in done.output
    again = runner.invoke(main, ["import-payments", str(path), "--tenant", slug], env=env)
    assert "0 payments posted, 1 already recorded" in again.output
    path.write_bytes(_file(s, f"{_account(s, sub)},-1,cash,2024-03-01,"))
    bad = runner.invoke(main, ["import-payments", str(path), "--tenant", slug], env=env)
    assert bad.exit_code != 0 and "line 2: amount: cannot be negative" in bad.output
    s.rollback()
    assert count(s, Payment) == 1


# --- API and page -----------------------------------------------------------------------------

def test_api_batch_posts_and_refuses_by_line(app, make_tenant, api_as):
    tenant = make_tenant("Batch API ISP")
    with app.app_context(), acting_as(tenant):
        enable_manual(db.session)
        sub = subscriber(db.session)
        posted_invoice(db.session, sub, 3000, day=JAN)
        db.session.commit()
    c, headers = api_as(tenant, "Billing")
    line = {"subscriber": sub, "amount": 1200, "method": "cash", "received_on": "2024-03-01",
            "transaction_id": "lockbox-1"}
    resp = c.post("/api/v1/payment/batch", json={"payments": [line]}, headers=headers)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = resp.get_json()["result"]
    assert (body["receipts"], body["amount"], body["skipped"]) == (
        ["R-000001", "R-000001"], 1200, [])
    again = c.post("/api/v1/payment/batch", json={"payments": [line]}, headers=headers)
    assert again.status_code == 201 and again.get_json()["result"]["skipped"] == ["lockbox-1"]
    bad = c.post("/api/v1/payment/batch", headers=headers, json={"payments": [
        {**line, "transaction_id": "x"}, {**line, "amount": 0, "transaction_id": "y"},
        {**line, "received_on": "soon"}, {**line, "colour": "red"}]})
    assert bad.status_code == 422
    errors = bad.get_json()["errors"] if "errors" in bad.get_json() else bad.get_json()
    text = str(errors)
    assert "lines.2.received_on" in text and "lines.3.colour" in text
    assert c.post("/api/v1/payment/batch", json={"payments": "all"},
                  headers=headers).status_code == 422
    with app.app_context(), acting_as(tenant):
        assert count(db.session, Payment) == 1


def test_import_page_posts_a_file_and_lists_refused_lines(app, make_tenant, login_as):
    tenant = make_tenant("Import Page ISP")
    with app.app_context(), acting_as(tenant):
        enable_manual(db.session)
        sub = subscriber(db.session)
        account = _account(db.session, sub)
        db.session.commit()
    c = login_as(tenant, "Billing")
    page = c.get("/payments/import/").get_data(as_text=True)
    assert 'id="payment-import"' in page and "account, subscriber_id, amount" in page
    bad = _file(None, f"{account},abc,cash,2024-03-01,")
    resp = c.post("/payments/import/", data={"file": (io.BytesIO(bad), "bank.csv"),
                                             "method": ""}, content_type="multipart/form-data")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Nothing was posted" in text
    assert "line 2: amount: must be a number" in text
    good = _file(None, f"{account},12.50,,2024-03-01,")
    resp = c.post("/payments/import/", data={"file": (io.BytesIO(good), "bank.csv"),
                                             "method": "cash"},
                  content_type="multipart/form-data")
    assert resp.status_code == 302
    listing = c.get(resp.headers["Location"]).get_data(as_text=True)
    assert "bank.csv: 1 payments posted (R-000001 to R-000001)" in listing
    with app.app_context(), acting_as(tenant):
        assert db.session.scalar(select(Payment.amount)) == 1250
    viewer = login_as(tenant, "Read only")
    assert viewer.get("/payments/import/").status_code in (302, 403)


# --- concurrency ------------------------------------------------------------------------------

@pytest.mark.postgresql_only  # row locks; SQLite has one database lock
def test_concurrent_batches_and_single_payments_lose_nothing(app, books):
    s = books
    tenant = s.info["tenant"]
    enable_manual(s)
    subs = [subscriber(s) for _ in range(6)]
    for sub in subs:
        posted_invoice(s, sub, 2000, day=JAN)
        posted_invoice(s, sub, 2000, day=FEB)
    s.commit()
    errors, barrier = [], threading.Barrier(4)

    def batch(order, tag):
        with app.app_context(), acting_as(tenant):
            barrier.wait()
            try:
                receive_payments(db.session, [
                    PaymentLine(700, "cash", MAR, subscriber_id=sub, transaction_id=f"{tag}{sub}")
                    for sub in order])
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 (the assertion below shows it)
                errors.append(repr(exc))
            finally:
                db.session.remove()

    def singles(tag):
        with app.app_context(), acting_as(tenant):
            barrier.wait()
            try:
                for sub in reversed(subs):
                    payments.receive_payment(db.session, sub, 700, "cash", MAR,
                                             transaction_id=f"{tag}{sub}")
                    db.session.commit()
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=batch, args=(subs, "a")),
               threading.Thread(target=batch, args=(list(reversed(subs)), "b")),
               threading.Thread(target=batch, args=(subs[::2] + subs[1::2], "c")),
               threading.Thread(target=singles, args=("d",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s.expire_all()
    for sub in subs:
        assert subscriber_balance(s, sub) == 4000 - 4 * 700
        paid = s.scalar(select(sa.func.sum(PaymentAllocation.amount)).join(Payment).where(
            Payment.subscriber_id == sub))
        assert paid == 4 * 700
    numbers = s.scalars(select(Payment.number)).all()
    assert sorted(numbers) == [f"R-{n:06d}" for n in range(1, 25)]


def test_lines_of_other_days_keep_their_dates(cashbox):
    s = cashbox
    sub = subscriber(s)
    result = receive_payments(s, [
        PaymentLine(100, "cash", MAR + dt.timedelta(days=n), subscriber_id=sub)
        for n in range(3)])
    dates = s.scalars(select(Payment.received_on).where(Payment.id.in_(result.posted))
                      .order_by(Payment.id)).all()
    assert dates == [MAR, MAR + dt.timedelta(days=1), MAR + dt.timedelta(days=2)]
