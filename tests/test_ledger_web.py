"""Accounting pages and the journal entry API: read-only entries, trial balance, closed books."""

from __future__ import annotations

import datetime as dt

from headend.db import db
from headend.ledger import services as ledger
from headend.ledger.models import JournalEntry, LedgerSettings
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.ledger_helpers import invoice, payment, subscriber


def _post_some(app, tenant) -> tuple[int, int]:
    with app.app_context(), acting_as(tenant):
        sub = subscriber(db.session)
        entry = invoice(db.session, sub, 4999, tax=312, day=dt.date(2024, 1, 10))
        payment(db.session, sub, 2000, day=dt.date(2024, 1, 20))
        db.session.commit()
        return entry.id, sub


def test_entries_list_and_show_with_legs(app, make_tenant, login_as):
    t = make_tenant()
    entry, _ = _post_some(app, t)
    c = login_as(t, "ReadOnly")
    html = c.get("/journalentryview/list/").get_data(as_text=True)
    assert "Journal entries" in html and "Invoice" in html and "Payment" in html
    page = c.get(f"/journalentryview/show/{entry}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="legs"' in html
    for text in ("1200 Accounts Receivable", "53.11 USD", "49.99 USD", "3.12 USD", "State"):
        assert text in html, text


def test_entries_cannot_be_added_edited_or_deleted_through_the_ui(app, make_tenant, login_as):
    t = make_tenant()
    entry, _ = _post_some(app, t)
    c = login_as(t, "Admin")
    assert "/journalentryview/add" not in c.get("/journalentryview/list/").get_data(as_text=True)
    for url in ("/journalentryview/add", f"/journalentryview/edit/{entry}",
                f"/journalentryview/delete/{entry}"):
        assert c.get(url).status_code == 404, url
        assert c.post(url, data={"description": "x"}).status_code in (404, 405), url


def test_trial_balance_page(app, make_tenant, login_as):
    t = make_tenant()
    _post_some(app, t)
    c = login_as(t, "Billing")
    page = c.get("/ledger/trial-balance/?start=2024-01-01&end=2024-01-31")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-account="1200"' in html and "<svg" in html
    assert "33.11 USD" in html  # AR closing: 53.11 invoiced - 20.00 paid
    assert "73.11 USD" in html  # total debits == total credits
    empty = c.get("/ledger/trial-balance/?start=2023-01-01&end=2023-01-31")
    assert "No postings up to 2023-01-31" in empty.get_data(as_text=True)
    bad = c.get("/ledger/trial-balance/?start=2024-02-01&end=2024-01-01&x=1")
    assert 'data-error="end"' in bad.get_data(as_text=True)
    assert 'data-error="start"' in c.get("/ledger/trial-balance/?start=nope").get_data(
        as_text=True)


def test_closed_books_form(app, make_tenant, login_as):
    t = make_tenant()
    admin = login_as(t, "Admin")
    assert admin.get("/ledger/closed-books/").status_code == 200
    resp = admin.post("/ledger/closed-books/", data={"closing_date": "2024-01-31",
                                                      "mode": "block"})
    assert resp.status_code == 302
    bad = admin.post("/ledger/closed-books/", data={"closing_date": "2024-13-01", "mode": "x"})
    assert "must be a date" in bad.get_data(as_text=True)
    bad = admin.post("/ledger/closed-books/", data={"closing_date": "", "mode": "sometimes"})
    assert "must be one of: block, warn" in bad.get_data(as_text=True)
    with app.app_context(), acting_as(t):
        settings = db.session.scalar(select(LedgerSettings))
        assert (settings.closing_date, settings.closing_mode) == (dt.date(2024, 1, 31), "block")
        sub = subscriber(db.session)
        db.session.commit()
    reader = login_as(t, "Support")
    assert 'value="2024-01-31"' in reader.get("/ledger/closed-books/").get_data(as_text=True)
    assert reader.post("/ledger/closed-books/", data={"closing_date": "",
                                                       "mode": "warn"}).status_code == 403
    with app.app_context(), acting_as(t):
        try:
            invoice(db.session, sub, 100, day=dt.date(2024, 1, 31))
            raise AssertionError("posted into closed books")
        except ledger.ValidationFailed as exc:
            assert "entry_date" in exc.errors
        db.session.rollback()


def test_api_lists_and_shows_entries_read_only(app, make_tenant, api_as):
    t = make_tenant()
    entry, sub = _post_some(app, t)
    c, headers = api_as(t, "ReadOnly")
    listed = c.get("/api/v1/journal_entry/", headers=headers).get_json()
    assert listed["count"] == 2
    shown = c.get(f"/api/v1/journal_entry/{entry}", headers=headers).get_json()["result"]
    assert shown["source_type"] == "invoice" and shown["entry_date"] == "2024-01-10"
    assert [(leg["account_code"], leg["debit"], leg["credit"]) for leg in shown["legs"]] == [
        ("1200", 5311, 0), ("4000", 0, 4999), ("2200", 0, 312)]
    assert shown["legs"][0]["subscriber_id"] == sub
    admin, admin_headers = api_as(t, "Admin")
    assert admin.post("/api/v1/journal_entry/", json={"description": "x"},
                      headers=admin_headers).status_code in (404, 405)
    assert admin.put(f"/api/v1/journal_entry/{entry}", json={"description": "x"},
                     headers=admin_headers).status_code in (404, 405)
    assert admin.delete(f"/api/v1/journal_entry/{entry}",
                        headers=admin_headers).status_code in (404, 405)
    with app.app_context(), acting_as(t):
        assert db.session.scalar(select(func.count()).select_from(JournalEntry)) == 2


def test_other_tenants_entries_are_invisible(app, make_tenant, login_as, api_as):
    a, b = make_tenant("Isp A"), make_tenant("Isp B")
    _post_some(app, a)
    theirs, _ = _post_some(app, b)
    c = login_as(a, "Admin")
    assert c.get(f"/journalentryview/show/{theirs}").status_code == 404
    page = c.get("/ledger/trial-balance/?start=2024-01-01&end=2024-01-31").get_data(as_text=True)
    assert "73.11 USD" in page and "146.22" not in page
    api, headers = api_as(a, "Admin")
    assert api.get(f"/api/v1/journal_entry/{theirs}", headers=headers).status_code == 404
    assert api.get("/api/v1/journal_entry/", headers=headers).get_json()["count"] == 2


def test_account_history_page(app, make_tenant, login_as):
    t, other = make_tenant("Isp H"), make_tenant("Isp K")
    _, sub = _post_some(app, t)
    _, theirs = _post_some(app, other)
    c = login_as(t, "Support")
    html = c.get(f"/ledger/history/{sub}").get_data(as_text=True)
    assert 'id="account-history"' in html
    assert html.index("53.11 USD") < html.index("20.00 USD")  # chronological
    assert "33.11 USD" in html  # running balance after the payment
    assert c.get(f"/ledger/history/{theirs}").status_code == 404


def test_profile_balance_comes_from_the_ledger(app, make_tenant, login_as):
    t = make_tenant("Isp B")
    _, sub = _post_some(app, t)  # 49.99 + 3.12 tax invoiced, 20.00 paid
    html = login_as(t, "ReadOnly").get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert '<div id="balance" style="font-size:1.6em">33.11 USD</div>' in html
    assert f"/ledger/history/{sub}" in html
