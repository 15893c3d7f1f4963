"""Memo and recurring-line pages and APIs: forms, void button, 422s naming fields."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from headend.billing import memos
from headend.billing.models import Invoice, Memo, RecurringLine
from headend.db import db
from headend.ledger import services as ledger
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.ledger_helpers import subscriber
from tests.memo_helpers import posted_invoice


def _setup(app, tenant, total=5000):
    with app.app_context(), acting_as(tenant):
        sub = subscriber(db.session)
        inv = posted_invoice(db.session, sub, total)
        db.session.commit()
        return sub, inv.id


def _in(app, tenant, fn):
    with app.app_context(), acting_as(tenant):
        return fn(db.session)


def _count(model):
    return lambda s: s.scalar(select(func.count()).select_from(model))


def test_credit_memo_form_applies_to_invoice(app, make_tenant, login_as):
    t = make_tenant()
    sub, inv = _setup(app, t)
    c = login_as(t, "Billing")
    page = c.get(f"/memos/new/credit?subscriber={sub}").get_data(as_text=True)
    assert 'id="memo-form"' in page and "T-" in page  # the open invoice is offered
    resp = c.post("/memos/new/credit", data={
        "subscriber_id": sub, "amount": "12.34", "description": "Outage",
        "memo_date": "2024-01-20", "invoice_id": inv, "income_account_id": ""})
    assert resp.status_code == 302
    memo = _in(app, t, lambda s: s.scalar(select(Memo)))
    assert (memo.number, memo.amount, memo.invoice_id, memo.unapplied) == ("CM-1", 1234, inv, 0)
    assert _in(app, t, lambda s: s.get(Invoice, inv).amount_paid) == 1234
    show = c.get(resp.location).get_data(as_text=True)
    assert "CM-1" in show and 'id="void-memo"' in show and "12.34 USD" in show
    listing = c.get("/memos/list/").get_data(as_text=True)
    assert "CM-1" in listing and 'id="new-debit-memo"' in listing


def test_memo_form_errors_name_fields_and_write_nothing(app, make_tenant, login_as):
    t = make_tenant()
    sub, _ = _setup(app, t)
    other, other_inv = _setup(app, t)
    c = login_as(t, "Admin")
    resp = c.post("/memos/new/credit", data={
        "subscriber_id": sub, "amount": "1.234", "description": "", "memo_date": "soon"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="memo-errors"' in html
    for field in ("amount", "memo_date"):
        assert f'data-error-for="{field}"' in html, field
    assert "at most 2 decimal places" in html
    resp = c.post("/memos/new/credit", data={
        "subscriber_id": sub, "amount": "-5", "description": "", "memo_date": "2024-01-20",
        "invoice_id": other_inv})
    html = resp.get_data(as_text=True)
    assert "cannot be negative" in html
    resp = c.post("/memos/new/credit", data={
        "subscriber_id": sub, "amount": "5", "description": "x", "memo_date": "2024-01-20",
        "invoice_id": other_inv})
    assert "belongs to another subscriber" in resp.get_data(as_text=True)
    assert _in(app, t, _count(Memo)) == 0


def test_debit_memo_form_and_void_button(app, make_tenant, login_as):
    t = make_tenant()
    sub, _ = _setup(app, t, total=1000)
    c = login_as(t, "Billing")
    resp = c.post("/memos/new/debit", data={
        "subscriber_id": sub, "amount": "2.50", "description": "Late fee",
        "memo_date": "2024-01-20"})
    assert resp.status_code == 302
    memo_id = _in(app, t, lambda s: s.scalar(select(Memo.id)))
    assert _in(app, t, lambda s: ledger.subscriber_balance(s, sub)) == 1250
    assert c.post(f"/memos/void/{memo_id}").status_code == 302
    assert _in(app, t, lambda s: ledger.subscriber_balance(s, sub)) == 1000
    show = c.get(f"/memos/show/{memo_id}").get_data(as_text=True)
    assert 'id="void-memo"' not in show
    again = c.post(f"/memos/void/{memo_id}", follow_redirects=True).get_data(as_text=True)
    assert "is already void" in again
    assert c.post("/memos/void/999999").status_code == 404


def test_read_only_cannot_issue_or_void(app, make_tenant, login_as):
    t = make_tenant()
    sub, _ = _setup(app, t)
    memo_id = _in(app, t, lambda s: (memos.credit_memo(s, sub, 100, "x", dt.date(2024, 1, 2)),
                                     s.commit())[0].id)
    c = login_as(t, "ReadOnly")
    assert c.get(f"/memos/show/{memo_id}").status_code == 200
    assert c.post("/memos/new/credit", data={"subscriber_id": sub}).status_code in (302, 403)
    assert c.post(f"/memos/void/{memo_id}").status_code in (302, 403)
    assert _in(app, t, lambda s: s.get(Memo, memo_id).voided_at) is None


def test_recurring_line_forms(app, make_tenant, login_as):
    t = make_tenant()
    sub, _ = _setup(app, t)
    c = login_as(t, "Billing")
    form = {"subscriber_id": sub, "description": "Static IP", "kind": "charge",
            "quantity": "1", "unit_price": "5.25", "start_date": "2024-01-01", "end_date": ""}
    assert c.post("/recurring-lines/add", data=form).status_code == 302
    line = _in(app, t, lambda s: s.scalar(select(RecurringLine)))
    assert (line.subscriber_id, line.unit_price, line.end_date) == (sub, D("5.25"), None)
    bad = c.post("/recurring-lines/add", data=form | {"end_date": "2023-12-01",
                                                       "subscriber_id": "999999"})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 200
    assert "must be after the start date" in html and "does not exist" in html
    edit = c.post(f"/recurring-lines/edit/{line.id}", data=form | {"kind": "discount",
                                                                   "end_date": "2024-06-01"})
    assert edit.status_code == 302
    line = _in(app, t, lambda s: s.get(RecurringLine, line.id))
    assert (line.kind, line.end_date) == ("discount", dt.date(2024, 6, 1))
    assert _in(app, t, _count(RecurringLine)) == 1
    assert c.post(f"/recurring-lines/delete/{line.id}").status_code == 302
    assert _in(app, t, _count(RecurringLine)) == 0


def test_memo_api(app, make_tenant, api_as):
    t = make_tenant()
    sub, inv = _setup(app, t, total=3000)
    c, headers = api_as(t, "Billing")
    body = {"kind": "credit", "subscriber": sub, "amount": 5000, "description": "Refund",
            "memo_date": "2024-01-20", "invoice": inv}
    resp = c.post("/api/v1/memo/", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    result = resp.get_json()["result"]
    assert (result["number"], result["unapplied"]) == ("CM-1", 2000)
    memo_id = resp.get_json()["id"]
    got = c.get(f"/api/v1/memo/{memo_id}", headers=headers).get_json()["result"]
    assert got["amount"] == 5000 and got["invoice"]["id"] == inv
    bad = c.post("/api/v1/memo/", json=body | {"amount": -1, "kind": "debit",
                                                "memo_date": "x"}, headers=headers)
    assert bad.status_code == 422 and "memo_date" in bad.get_json()["message"]
    bad = c.post("/api/v1/memo/", json=body | {"amount": "12.5"}, headers=headers)
    assert bad.status_code == 422 and "amount" in bad.get_json()["message"]
    bad = c.post("/api/v1/memo/", json=body | {"kind": "gift", "color": 1}, headers=headers)
    assert bad.status_code == 422 and "color" in bad.get_json()["message"]
    bad = c.post("/api/v1/memo/", json=body | {"kind": "gift"}, headers=headers)
    assert bad.status_code == 422 and "kind" in bad.get_json()["message"]
    assert c.put(f"/api/v1/memo/{memo_id}", json={}, headers=headers).status_code in (404, 405)
    assert _in(app, t, _count(Memo)) == 1


def test_recurring_line_api(app, make_tenant, api_as):
    t = make_tenant()
    sub, _ = _setup(app, t)
    c, headers = api_as(t, "Admin")
    body = {"subscriber": sub, "description": "Discount", "kind": "discount",
            "unit_price": "2.5", "start_date": "2024-01-01"}
    resp = c.post("/api/v1/recurring_line/", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    line_id = resp.get_json()["id"]
    got = c.get(f"/api/v1/recurring_line/{line_id}", headers=headers).get_json()["result"]
    assert (got["subscriber_id"], got["unit_price"], got["kind"], got["quantity"]) == (
        sub, "2.5000", "discount", "1.0000")
    listed = c.get("/api/v1/recurring_line/", headers=headers).get_json()["result"]
    assert [row["id"] for row in listed] == [line_id]
    bad = c.put(f"/api/v1/recurring_line/{line_id}",
                json={"end_date": "2023-01-01", "unit_price": "-3"}, headers=headers)
    assert bad.status_code == 422
    assert {"end_date", "unit_price"} <= set(bad.get_json()["message"])
    bad = c.post("/api/v1/recurring_line/", json=body | {"kind": "x"}, headers=headers)
    assert bad.status_code == 422 and "kind" in bad.get_json()["message"]
    assert c.delete(f"/api/v1/recurring_line/{line_id}", headers=headers).status_code == 200
    assert _in(app, t, _count(RecurringLine)) == 0
