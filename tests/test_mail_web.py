"""Documents > Email settings and Email log in the browser's terms: errors by field, the
password never shown back, the test email, the log with a failed message and Retry, read-only
roles and other tenants refused."""

from __future__ import annotations

import html

import pytest
from headend.db import db
from headend.mail.models import MailSettings, OutboundEmail
from headend.mail.services import password_of
from headend.tenancy.context import acting_as
from sqlalchemy import select

from tests.dunning_helpers import active_subscriber, owe
from tests.mail_helpers import mail_on, smtp_server
from tests.peers.smtp import PASSWORD, USERNAME, SmtpPeer

__all__ = ["smtp_server"]
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def _text(resp) -> str:
    return html.unescape(resp.get_data(as_text=True))


def _form(peer, **over) -> dict:
    data = {"enabled": "y", "host": peer.host, "port": str(peer.port), "security": "none",
            "username": USERNAME, "password": PASSWORD, "from_address": "billing@valley.test",
            "from_name": "Valley Billing", "reply_to": "", "email_invoices": "y",
            "email_receipts": "y", "email_notices": "y"}
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def _retry(*pks) -> dict:
    return {"action": "retry", "rowid": [str(pk) for pk in pks]}


def _in(app, tenant, read):
    with app.app_context(), acting_as(tenant):
        try:
            return read(db.session)
        finally:
            db.session.remove()


def test_settings_saved_with_the_password_sealed_and_never_shown(app, make_tenant, login_as,
                                                                 smtp_server):
    tenant = make_tenant("Web Mail ISP")
    c = login_as(tenant, "Admin")
    page = _text(c.get("/mail/settings/"))
    assert 'id="mail-settings"' in page and "No password saved." in page
    resp = c.post("/mail/settings/", data=_form(smtp_server, port="x", from_address="nope",
                                                password=""))
    page = _text(resp)
    assert resp.status_code == 200 and 'id="settings-errors"' in page
    for field in ("port", "from_address", "password"):
        assert f'data-error-for="{field}"' in page
    assert _in(app, tenant, lambda s: s.scalar(select(MailSettings))) is None
    assert c.post("/mail/settings/", data=_form(smtp_server)).status_code == 302
    page = _text(c.get("/mail/settings/"))
    assert PASSWORD not in page and "A password is saved" in page
    assert f'value="{smtp_server.port}"' in page
    # blank keeps the password
    assert c.post("/mail/settings/", data=_form(smtp_server, password="",
                                                from_name="Billing")).status_code == 302
    row = _in(app, tenant, lambda s: s.scalar(select(MailSettings)))
    with app.app_context():
        assert password_of(row) == PASSWORD and row.from_name == "Billing"
    assert PASSWORD not in row.secret_config


def test_the_test_email_is_sent_and_its_result_shown(app, make_tenant, login_as, smtp_server,
                                                     tmp_path):
    tenant = make_tenant("Test Mail ISP")
    c = login_as(tenant, "Admin")
    c.post("/mail/settings/", data=_form(smtp_server, enabled=None))  # even while off
    page = _text(c.post("/mail/settings/test", data={"test_address": "me@valley.test"},
                        follow_redirects=True))
    assert "Test email sent to me@valley.test" in page
    (msg,) = smtp_server.messages
    assert msg["To"] == "me@valley.test" and msg["Subject"].startswith("Test email from")
    page = _text(c.post("/mail/settings/test", data={"test_address": "not an address"},
                        follow_redirects=True))
    assert "Test address: must be an email address" in page
    down = SmtpPeer(tmp_path)  # nothing listens
    c.post("/mail/settings/", data=_form(down))
    page = _text(c.post("/mail/settings/test", data={"test_address": "me@valley.test"},
                        follow_redirects=True))
    assert "was not sent: ConnectionRefusedError" in page
    assert len(smtp_server.messages) == 1


def _failed_invoice_email(app, tenant, tmp_path) -> tuple[SmtpPeer, int]:
    """A posted invoice's email that failed: its SMTP server (not started yet) and the row."""
    down = SmtpPeer(tmp_path)
    with app.app_context(), acting_as(tenant):
        s = db.session
        mail_on(s, down)
        owe(s, active_subscriber(s), "9.00")
        s.commit()
        row_id = s.scalar(select(OutboundEmail.id))
        db.session.remove()
    return down, row_id


def test_the_log_shows_a_failure_and_retry_sends_it(app, make_tenant, login_as, tmp_path):
    tenant = make_tenant("Log Mail ISP")
    down, row_id = _failed_invoice_email(app, tenant, tmp_path)
    c = login_as(tenant, "Billing")
    listing = _text(c.get("/mail/log/list/"))
    assert "failed" in listing and "Invoice" in listing
    shown = _text(c.get(f"/mail/log/show/{row_id}"))
    assert "ConnectionRefusedError" in shown and "Next retry" in shown
    down.start()
    try:
        assert c.post("/mail/log/action_post", data=_retry(row_id)).status_code == 302
        assert len(down.messages) == 1
        assert _in(app, tenant, lambda s: s.get(OutboundEmail, row_id).status) == "sent"
        page = _text(c.post("/mail/log/action_post", data=_retry(row_id),
                            follow_redirects=True))
        assert "already sent" in page
        assert len(down.messages) == 1
    finally:
        down.stop()
    other = login_as(make_tenant("Other Mail ISP"), "Admin")
    assert other.get(f"/mail/log/show/{row_id}").status_code == 404
    assert other.post("/mail/log/action_post", data=_retry(row_id)).status_code == 404


def test_read_only_roles_see_but_cannot_change(app, make_tenant, login_as, smtp_server):
    tenant = make_tenant("Readonly Mail ISP")
    c = login_as(tenant, "Support")
    page = _text(c.get("/mail/settings/"))
    assert 'id="save-settings"' not in page and 'id="send-test"' not in page
    assert c.get("/mail/log/list/").status_code == 200
    for url, data in (("/mail/settings/", _form(smtp_server)),
                      ("/mail/settings/test", {"test_address": "me@valley.test"})):
        assert c.post(url, data=data).status_code == 403, url
    assert _in(app, tenant, lambda s: s.scalar(select(MailSettings))) is None
    assert smtp_server.messages == []


def test_the_api_lists_shows_and_retries_a_message(app, make_tenant, api_as, tmp_path):
    tenant = make_tenant("Api Mail ISP")
    down, row_id = _failed_invoice_email(app, tenant, tmp_path)
    client, headers = api_as(tenant, "Billing")
    listing = client.get("/api/v1/outbound_email/", headers=headers).get_json()
    assert listing["count"] == 1 and listing["result"][0]["status"] == "failed"
    shown = client.get(f"/api/v1/outbound_email/{row_id}", headers=headers).get_json()["result"]
    assert "ConnectionRefusedError" in shown["last_error"] and shown["kind"] == "invoice"
    reader, read_headers = api_as(tenant, "ReadOnly")
    assert reader.get("/api/v1/outbound_email/", headers=read_headers).status_code == 200
    assert reader.post(f"/api/v1/outbound_email/{row_id}/retry",
                       headers=read_headers).status_code == 403
    down.start()
    try:
        resp = client.post(f"/api/v1/outbound_email/{row_id}/retry", headers=headers)
        assert resp.status_code == 200 and len(down.messages) == 1
        assert _in(app, tenant, lambda s: s.get(OutboundEmail, row_id).status) == "sent"
        again = client.post(f"/api/v1/outbound_email/{row_id}/retry", headers=headers)
        assert again.status_code == 422 and "already sent" in str(again.get_json()["message"])
    finally:
        down.stop()
    other, other_headers = api_as(make_tenant("Other Api Mail ISP"), "Admin")
    assert other.get(f"/api/v1/outbound_email/{row_id}", headers=other_headers).status_code == 404
    assert other.post(f"/api/v1/outbound_email/{row_id}/retry",
                      headers=other_headers).status_code == 404
