"""Mail jobs: a billing run's invoices emailed once each (its hooks fire after each chunk
commits, on PostgreSQL from the writer thread), queued on Redis only after the commit and
never when mail is off, a retry scheduled with backoff, two deliveries at once sending each
message once, and a declined autopay's notice emailed."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from headend.billing.run import bill_run
from headend.db import db
from headend.dunning.autopay import run_autopay
from headend.dunning.models import Notice
from headend.dunning.services import update_subscriber_collection
from headend.jobs import queue, rq_job_id
from headend.mail import compose
from headend.mail.delivery import BATCH, deliver
from headend.mail.models import OutboundEmail
from headend.mail.outbox import queue_messages
from headend.payments.services import save_card
from headend.tenancy.context import acting_as
from rq import SimpleWorker
from sqlalchemy import func, select

from tests.billing_run_helpers import RUN, catalog, subscription
from tests.dunning_helpers import active_subscriber, day, owe, rules
from tests.mail_helpers import attachments, mail_on, outbox, smtp_server
from tests.payments_helpers import card_token, enable_stripe
from tests.peers import stripe as peer
from tests.peers.smtp import SmtpPeer

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures
__all__ = ["smtp_server"]
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
DECLINES_ON_CHARGE = "4000000000000341"


def test_a_billing_run_emails_each_invoice_once(app, make_tenant, smtp_server):
    tenant = make_tenant("Run Mail ISP")
    with app.app_context(), acting_as(tenant):
        mail_on(db.session, smtp_server)
        ids = catalog(db.session)
        for n in range(7):
            subscription(db.session, ids, email=f"run{n}@x.test")
        subscription(db.session, ids)  # no address: no email
        db.session.commit()
    with app.app_context(), acting_as(None):
        (result,) = bill_run(db.session, RUN, tenant_slug="run-mail-isp", chunk_size=3)
        db.session.remove()
    assert result.invoices == 8
    assert sorted(m["To"] for m in smtp_server.messages) == [f"run{n}@x.test" for n in range(7)]
    assert all(attachments(m)[0][2].startswith(b"%PDF") for m in smtp_server.messages)
    with app.app_context(), acting_as(tenant):
        rows = outbox(db.session)
        assert len(rows) == 7 and {r.status for r in rows} == {"sent"}
        assert len({r.invoice_id for r in rows}) == 7
        db.session.remove()


def test_on_redis_the_email_is_queued_after_the_commit_and_sent_by_a_worker(
        app, make_tenant, smtp_server, on_redis):
    tenant = make_tenant("Queued Mail ISP")
    with app.app_context(), acting_as(tenant):
        s = db.session
        mail_on(s, smtp_server)
        sub = active_subscriber(s)
        owe(s, sub, "15.00")
        documents = queue("documents")
        assert documents.count == 0  # not before the commit
        s.commit()
        assert documents.count == 1
        (job_id,) = documents.job_ids
        assert job_id.startswith(rq_job_id(f"mail-queue:{tenant}:invoice:"))
        assert outbox(s) == [] and smtp_server.messages == []
        assert SimpleWorker([documents], connection=documents.connection).work(burst=True)
        assert [m["To"] for m in smtp_server.messages] == [sub.email]
        assert [r.status for r in outbox(s)] == ["sent"]

        mail_on(s, smtp_server, enabled=False)
        owe(s, sub, "16.00")
        s.commit()
        assert documents.count == 0  # mail off: no job at all
        db.session.remove()


def test_on_redis_a_failed_send_schedules_its_retry(app, make_tenant, tmp_path, on_redis):
    tenant = make_tenant("Retry Mail ISP")
    down = SmtpPeer(tmp_path)  # not started: refused
    with app.app_context(), acting_as(tenant):
        s = db.session
        mail_on(s, down)
        owe(s, active_subscriber(s), "15.00")
        s.commit()
        documents = queue("documents")
        SimpleWorker([documents], connection=documents.connection).work(burst=True)
        (row,) = outbox(s)
        assert (row.status, row.attempts) == ("failed", 1)
        scheduled = documents.scheduled_job_registry.get_job_ids()
        assert scheduled == [rq_job_id(
            f"mail-retry:{tenant}:{row.next_attempt_at:%Y%m%d%H%M%S}")]
        db.session.remove()


@pytest.mark.postgresql_only
def test_two_deliveries_at_once_send_each_message_once(app, make_tenant, smtp_server):
    tenant = make_tenant("Race Mail ISP")
    with app.app_context(), acting_as(tenant):
        s = db.session
        mail_on(s, smtp_server, email_invoices=False)
        start = dt.datetime(2026, 3, 1)
        messages = [compose.test_message(s, tenant, f"race{n}@x.test",
                                         start + dt.timedelta(seconds=n))
                    for n in range(3 * BATCH)]  # several batches, claimed by either
        queue_messages(s, tenant, messages)  # queued, no delivery asked for
        s.commit()
        db.session.remove()
    total = len(messages)
    smtp_server.delay = 0.01  # slow enough for the two to overlap
    barrier, errors, results = threading.Barrier(2), [], []

    def run():
        try:
            with app.app_context(), acting_as(tenant):
                barrier.wait()
                results.append(deliver(db.session))
                db.session.remove()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(r.sent for r in results) == total
    assert len(smtp_server.messages) == total
    assert len({m["To"] + m["Subject"] for m in smtp_server.messages}) == total
    assert all(r.sent for r in results)  # both took part
    with app.app_context(), acting_as(tenant):
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail).where(
            OutboundEmail.status == "sent", OutboundEmail.attempts == 1)) == total
        db.session.remove()


def test_a_declined_autopay_notice_is_emailed(books, stripe_server, smtp_server):
    s = books
    enable_stripe(s, stripe_server.url)
    mail_on(s, smtp_server, email_invoices=False)
    rules(s, retry_count=1, retry_interval_days=3)
    sub = active_subscriber(s)
    saved = save_card(s, sub.id, card_token(stripe_server.url, DECLINES_ON_CHARGE))
    update_subscriber_collection(s, sub.id, autopay=True, autopay_method_id=saved.id)
    owe(s, sub, "50.00")
    s.commit()
    run_autopay(s, day(0), after_each=s.commit)
    s.commit()
    (notice,) = s.scalars(select(Notice)).all()
    s.refresh(notice)
    assert notice.kind == "failed_payment" and notice.sent_at is not None
    (msg,) = smtp_server.to(sub.email)
    assert "declined" in msg["Subject"] and "was declined" in msg.get_body(
        preferencelist=("plain",)).get_content()
    (row,) = outbox(s)
    assert (row.kind, row.notice_id, row.status) == ("failed_payment", notice.id, "sent")


def test_the_hourly_delivery_covers_tenants_with_mail_on(app, make_tenant, smtp_server):
    from headend.mail.jobs import enqueue_hourly

    on, off = make_tenant("Hourly On ISP"), make_tenant("Hourly Off ISP")
    for tenant, enabled in ((on, True), (off, False)):
        with app.app_context(), acting_as(tenant):
            mail_on(db.session, smtp_server, enabled=enabled)
            db.session.commit()
            db.session.remove()
    with app.app_context():
        done = enqueue_hourly(app)
    assert [d.job_id.rsplit(":", 1)[0] for d in done] == [f"mail-deliver:{on}"]
    assert done[0].status == "finished" and done[0].result == {"sent": 0, "failed": 0}
