"""Email through a real SMTP server on loopback (aiosmtpd): invoice emails with the PDF when
posted, receipts, notices from autopay and collections, settings with a sealed password,
failures retried, nothing when mail is off."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.dunning.collect import run_collections
from headend.dunning.models import Notice
from headend.errors import ValidationFailed
from headend.mail.delivery import RETRY_DELAYS, deliver
from headend.mail.models import MailSettings, OutboundEmail
from headend.mail.services import mail_settings, password_of, save_settings
from headend.payments.services import receive_payment
from headend.secrets import unseal
from sqlalchemy import select

from tests.dunning_helpers import MAR1, active_subscriber, day, owe, rules
from tests.mail_helpers import attachments, html_of, mail_on, outbox, smtp_server, text_of
from tests.payments_helpers import enable_manual
from tests.peers.smtp import PASSWORD, USERNAME, SmtpPeer, free_port

__all__ = ["smtp_server"]  # the fixture, imported
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def test_a_posted_invoice_is_emailed_with_its_pdf(books, smtp_server):
    s = books
    mail_on(s, smtp_server)
    sub = active_subscriber(s)
    invoice = owe(s, sub, "64.99")
    assert outbox(s) == []  # nothing before the commit
    s.commit()
    (msg,) = smtp_server.messages
    assert smtp_server.logins == [USERNAME]
    assert msg["To"] == sub.email
    assert msg["From"] == "Valley Fiber Billing <billing@valley.test>"
    assert msg["Reply-To"] == "help@valley.test"
    assert msg["Subject"].startswith(f"Invoice {invoice.number} from ")
    text = text_of(msg)
    for words in (invoice.number, "64.99 USD", invoice.due_date.isoformat(),
                  "Account balance: 64.99 USD"):
        assert words in text
    assert invoice.number in html_of(msg)
    ((filename, kind, data),) = attachments(msg)
    assert (filename, kind) == (f"invoice-{invoice.number}.pdf", "application/pdf")
    assert data.startswith(b"%PDF")
    (row,) = outbox(s)
    assert (row.kind, row.key, row.status, row.attempts, row.invoice_id) == (
        "invoice", f"invoice:{invoice.id}", "sent", 1, invoice.id)
    assert row.sent_at is not None
    deliver(s)  # again: nothing more
    assert len(smtp_server.messages) == 1


def test_a_payment_received_is_emailed_as_a_receipt(books, smtp_server):
    s = books
    enable_manual(s)
    mail_on(s, smtp_server)
    sub = active_subscriber(s)
    owe(s, sub, "30.00")
    s.commit()
    payment = receive_payment(s, sub.id, 3000, "check", day(0), reference="1042")
    s.commit()
    (msg,) = smtp_server.to(sub.email)[1:]
    assert msg["Subject"].startswith(f"Receipt {payment.number}")
    text = text_of(msg)
    for words in (payment.number, "30.00 USD", "check", day(0).isoformat()):
        assert words in text
    assert attachments(msg) == []
    assert [(r.kind, r.status) for r in outbox(s)] == [("invoice", "sent"), ("receipt", "sent")]


def test_settings_are_validated_by_field_and_the_password_is_sealed(books):
    s = books
    with pytest.raises(ValidationFailed) as refused:
        save_settings(s, enabled=True, host="bad host!", port=70000, security="ssl3",
                      username="u", password=None, from_address="nobody", from_name="A\nB",
                      reply_to="also-bad")
    assert set(refused.value.errors) == {"host", "port", "security", "password",
                                         "from_address", "from_name", "reply_to"}
    with pytest.raises(ValidationFailed) as refused:
        save_settings(s, enabled=True, host=None, port=587, security="starttls")
    assert set(refused.value.errors) == {"host", "from_address"}
    assert s.scalar(select(MailSettings)) is None  # nothing written
    row = save_settings(s, enabled=False, host="smtp.valley.test", port=587,
                        security="starttls", username="mailer", password="pw-1",
                        from_address="billing@valley.test")
    assert "pw-1" not in row.secret_config and unseal(row.secret_config) == {"password": "pw-1"}
    # blank keeps it; a new one replaces it; no username drops it
    save_settings(s, enabled=True, host="smtp.valley.test", port=587, security="starttls",
                  username="mailer", password="", from_address="billing@valley.test")
    assert password_of(mail_settings(s)) == "pw-1"
    save_settings(s, enabled=True, host="smtp.valley.test", port=587, security="starttls",
                  username="mailer", password="pw-2", from_address="billing@valley.test")
    assert password_of(mail_settings(s)) == "pw-2"
    # pointed at another server, the saved password is not kept for it
    with pytest.raises(ValidationFailed) as refused:
        save_settings(s, enabled=True, host="smtp.elsewhere.test", port=587,
                      security="starttls", username="mailer", password="",
                      from_address="billing@valley.test")
    assert "again" in refused.value.errors["password"][0]
    save_settings(s, enabled=True, host="smtp.valley.test", port=25, security="none",
                  username=None, from_address="billing@valley.test")
    assert mail_settings(s).secret_config is None


def test_nothing_is_queued_while_mail_is_off_or_a_switch_is_off(books, smtp_server):
    s = books
    enable_manual(s)
    mail_on(s, smtp_server, enabled=False)
    sub = active_subscriber(s)
    owe(s, sub, "10.00")
    s.commit()
    mail_on(s, smtp_server, email_invoices=False, email_receipts=False)
    owe(s, sub, "11.00")
    receive_payment(s, sub.id, 2100, "cash", day(0))
    s.commit()
    nobody = active_subscriber(s)
    nobody.email = None  # no address: nothing either
    mail_on(s, smtp_server)
    owe(s, nobody, "12.00")
    s.commit()
    assert outbox(s) == [] and smtp_server.messages == []


def test_a_down_server_fails_the_row_then_a_retry_sends_it_once(books, tmp_path, app,
                                                                monkeypatch):
    s = books
    port = free_port()  # nothing listens here yet
    down = SmtpPeer(tmp_path, port=port)
    mail_on(s, down)
    sub = active_subscriber(s)
    owe(s, sub, "20.00")
    s.commit()
    (row,) = outbox(s)
    assert (row.status, row.attempts, row.sent_at) == ("failed", 1, None)
    assert "refused" in row.last_error.lower()
    assert row.next_attempt_at == row.attempted_at + dt.timedelta(seconds=RETRY_DELAYS[0])
    assert deliver(s).sent == 0  # not due yet: waits for its backoff
    later = row.next_attempt_at + dt.timedelta(seconds=1)
    down.start()
    try:
        result = deliver(s, now=later)
        assert (result.sent, result.failed) == (1, 0)
        (row,) = outbox(s)
        assert (row.status, row.attempts) == ("sent", 2)
        assert deliver(s, now=later + dt.timedelta(hours=1)).sent == 0
        assert len(down.messages) == 1
    finally:
        down.stop()


def test_retries_run_out_then_the_row_stays_failed_until_staff_retry(books, tmp_path):
    from headend.mail.outbox import retry

    s = books
    down = SmtpPeer(tmp_path)
    mail_on(s, down)
    sub = active_subscriber(s)
    owe(s, sub, "20.00")
    s.commit()
    now = outbox(s)[0].attempted_at
    for _ in RETRY_DELAYS:
        now += dt.timedelta(days=1)
        deliver(s, now=now)
    (row,) = outbox(s)
    assert (row.status, row.attempts, row.next_attempt_at) == (
        "failed", 1 + len(RETRY_DELAYS), None)
    assert deliver(s, now=now + dt.timedelta(days=1)).failed == 0  # given up
    down.start()
    try:
        retry(s, [row.id])
        s.commit()  # the delivery after the commit sends it
        assert len(down.messages) == 1
        assert outbox(s)[0].status == "sent"
        with pytest.raises(ValidationFailed):
            retry(s, [row.id])  # never twice
    finally:
        down.stop()


def test_collections_notices_become_emails_and_are_marked_sent(books, smtp_server):
    s = books
    mail_on(s, smtp_server, email_invoices=False)
    rules(s, grace_days=10, grace_amount=D("0"), suspension_notice_days=3)
    sub = active_subscriber(s)
    owe(s, sub, "100.00")
    s.commit()
    result = run_collections(s, day(8), after_step=s.commit)
    s.commit()
    assert result.notices == 1
    (notice,) = s.scalars(select(Notice)).all()
    s.refresh(notice)
    assert notice.kind == "upcoming_suspension" and notice.sent_at is not None
    (msg,) = smtp_server.messages
    assert msg["To"] == sub.email and "suspended soon" in msg["Subject"]
    assert notice.message in text_of(msg)
    (row,) = outbox(s)
    assert (row.kind, row.key, row.notice_id, row.status) == (
        "upcoming_suspension", f"notice:{notice.id}", notice.id, "sent")
    deliver(s)
    assert len(smtp_server.messages) == 1


def test_messages_to_a_refused_recipient_fail_alone(books, smtp_server):
    s = books
    mail_on(s, smtp_server)
    bad, good = active_subscriber(s), active_subscriber(s)
    smtp_server.refuse.add(bad.email)
    owe(s, bad, "5.00")
    owe(s, good, "6.00")
    s.commit()
    rows = {r.subscriber_id: r for r in outbox(s)}
    assert rows[bad.id].status == "failed" and "550" in rows[bad.id].last_error
    assert rows[good.id].status == "sent"
    assert [m["To"] for m in smtp_server.messages] == [good.email]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_starttls_and_tls_with_auth(books, tmp_path, app, monkeypatch, security):
    s = books
    peer = SmtpPeer(tmp_path, security=security, auth=True).start()
    monkeypatch.setitem(app.config, "MAIL_SSL_CAFILE", str(peer.cafile))
    try:
        mail_on(s, peer)
        sub = active_subscriber(s)
        owe(s, sub, "7.00")
        s.commit()
        assert [(r.status, r.last_error) for r in outbox(s)] == [("sent", None)]
        assert [m["To"] for m in peer.messages] == [sub.email]
        assert peer.logins == [USERNAME]
    finally:
        peer.stop()


def test_an_untrusted_certificate_is_refused(books, tmp_path):
    s = books
    peer = SmtpPeer(tmp_path, security="starttls", auth=True).start()  # cert not trusted
    try:
        mail_on(s, peer)
        owe(s, active_subscriber(s), "7.00")
        s.commit()
        (row,) = outbox(s)
        assert row.status == "failed" and "CERTIFICATE_VERIFY_FAILED" in row.last_error
        assert peer.messages == [] and PASSWORD not in row.last_error
    finally:
        peer.stop()


def test_a_wrong_password_fails_without_showing_it(books, smtp_server):
    s = books
    mail_on(s, smtp_server, password="wrong-Secret-1")
    owe(s, active_subscriber(s), "7.00")
    s.commit()
    (row,) = outbox(s)
    assert row.status == "failed" and "535" in row.last_error
    assert "wrong-Secret-1" not in row.last_error
    assert s.scalar(select(OutboundEmail.id).where(OutboundEmail.status == "sent")) is None


def test_cli_send_queued_sends_what_waits(app, books, smtp_server):
    from click.testing import CliRunner
    from headend.cli import main

    s = books
    down = smtp_server.port
    mail_on(s, smtp_server, port=free_port())  # a server that is not there: fails first
    owe(s, active_subscriber(s), "8.00")
    s.commit()
    assert [r.status for r in outbox(s)] == ["failed"]
    mail_on(s, smtp_server, port=down)
    s.query(OutboundEmail).update({"status": "queued", "next_attempt_at": None})  # staff Retry
    s.commit()
    env = {"HEADEND_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "HEADEND_SECRET_KEY": app.config["SECRET_KEY"]}  # the sealed password's key
    done = CliRunner().invoke(main, ["mail", "send-queued"], env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert ": 1 sent, 0 failed" in done.output
    assert len(smtp_server.messages) == 1 and outbox(s)[0].status == "sent"


def test_an_invoice_voided_before_its_email_goes_is_not_sent(books, tmp_path):
    from headend.billing.invoicing import void_invoice

    s = books
    down = SmtpPeer(tmp_path, port=free_port())  # not listening: the first try fails
    mail_on(s, down)
    invoice = owe(s, active_subscriber(s), "20.00")
    s.commit()
    void_invoice(s, invoice.id, MAR1)
    s.commit()
    down.start()
    try:
        (row,) = outbox(s)
        result = deliver(s, now=row.next_attempt_at + dt.timedelta(seconds=1))
        assert (result.sent, down.messages) == (0, [])
        (row,) = outbox(s)
        assert row.status == "failed" and "is void: not sent" in row.last_error
        assert row.next_attempt_at is None  # never retried by itself
    finally:
        down.stop()


def test_the_sweep_emails_posted_invoices_whose_email_was_lost(books, smtp_server):
    from headend.mail.jobs import _POSTED

    s = books
    sub = active_subscriber(s)
    owe(s, sub, "30.00")
    s.commit()  # posted while mail was off: never emailed, not even by the sweep
    mail_on(s, smtp_server)
    s.commit()
    lost = owe(s, sub, "31.00")
    s.info.pop(_POSTED)  # the hook's note lost (a run that died after this chunk committed)
    s.commit()
    assert outbox(s) == []

    assert deliver(s).sent == 1  # the hourly delivery finds it
    (row,) = outbox(s)
    assert (row.kind, row.invoice_id, row.status) == ("invoice", lost.id, "sent")
    assert deliver(s).sent == 0 and len(smtp_server.messages) == 1
