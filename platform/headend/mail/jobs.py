"""Mail jobs on the `documents` queue, enqueued only after the change that asks for them has
committed (a worker must never read the state from before it).

Two kinds of request ride on the session (`session.info`) until its next real commit:

- posted invoices and received payments (`note_posted`, from the event hooks): ids only, no
  SQL, so a hook costs a list append even in a billing run of 100k invoices (whose hooks fire
  on the writer thread, after each chunk committed). They are never forgotten on a rollback: a
  chunk's hooks fire after its commit, so a later rollback (the next chunk refused by a unique
  key) must not drop them; ids of work that was rolled back are harmless, the queueing job only
  emails invoices that are posted and payments that are processed. At the commit one query
  reads which tenants email what, and nothing at all is enqueued for a tenant with mail off.
- a delivery of what is queued (`request_delivery`: a message queued by a service, a Retry, a
  notice written by dunning), forgotten when its transaction rolls back.

Job ids: `mail-queue:{tenant}:{kind}:{first}-{last}:{count}` (the same ids are the same work)
and `mail-deliver:{tenant}:{second}`; `mail-retry:{tenant}:{when}` for a backoff.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy.orm import Session

from headend.db import utcnow
from headend.jobs import Enqueued, app_context, enqueue, enqueue_in, redis_url

log = logging.getLogger(__name__)

_POSTED = "headend.mail.posted"  # {(tenant_id, "invoice"|"receipt"): [ids]}
_DELIVER = "headend.mail.deliver"  # {tenant_id}
QUEUE_CHUNK = 500  # ids per queueing job


def note_posted(session: Session, tenant_id: int, kind: str, pk: int) -> None:
    """Remember an invoice ("invoice") or a payment ("receipt") to email after the commit."""
    session.info.setdefault(_POSTED, {}).setdefault((tenant_id, kind), []).append(pk)


def request_delivery(session: Session, tenant_id: int) -> None:
    """Deliver the tenant's queued messages once this session commits."""
    session.info.setdefault(_DELIVER, set()).add(tenant_id)


# --- the jobs --------------------------------------------------------------------------------

def run_queue_job(tenant_id: int, kind: str, ids: list[int]) -> dict:
    """The RQ job: queue the invoice emails or receipts of these ids (those the tenant emails,
    to subscribers with an address, not queued before), commit, then deliver."""
    from sqlalchemy.exc import IntegrityError

    from headend.db import db
    from headend.mail.outbox import queue_invoices, queue_receipts
    from headend.tenancy.context import acting_as

    queue = queue_invoices if kind == "invoice" else queue_receipts
    with app_context(), acting_as(tenant_id, actor_name="mail"):
        for attempt in range(3):
            try:
                queued = len(queue(db.session, tenant_id, ids))
                db.session.commit()
                break
            except IntegrityError:  # another job queued some of them meanwhile: again
                db.session.rollback()
                if attempt == 2:
                    raise
        return {"queued": queued, **_deliver(tenant_id)}


def run_deliver_job(tenant_id: int) -> dict:
    """The RQ job: send the tenant's due messages (and queue its new notices first)."""
    with app_context():
        return _deliver(tenant_id)


def _deliver(tenant_id: int) -> dict:
    from headend.db import db
    from headend.mail.delivery import deliver
    from headend.tenancy.context import acting_as

    with acting_as(tenant_id, actor_name="mail"):
        done = deliver(db.session)
    if done.retry_at is not None:
        delay = max(done.retry_at - utcnow(), dt.timedelta(seconds=1))
        enqueue_in("documents", run_deliver_job, tenant_id, delay=delay,
                   job_id=f"mail-retry:{tenant_id}:{done.retry_at:%Y%m%d%H%M%S}")
    return {"sent": done.sent, "failed": done.failed}


def enqueue_delivery(tenant_id: int, stamp: str | None = None,
                     app: Flask | None = None) -> Enqueued:
    stamp = stamp or utcnow().strftime("%Y%m%d%H%M%S")
    return enqueue("documents", run_deliver_job, tenant_id,
                   job_id=f"mail-deliver:{tenant_id}:{stamp}", app=app)


def enqueue_queueing(tenant_id: int, kind: str, ids: list[int],
                     app: Flask | None = None) -> list[Enqueued]:
    """Queueing jobs for these ids, QUEUE_CHUNK at a time."""
    ids = sorted(set(ids))
    out = []
    for start in range(0, len(ids), QUEUE_CHUNK):
        part = ids[start:start + QUEUE_CHUNK]
        out.append(enqueue("documents", run_queue_job, tenant_id, kind, part, app=app,
                           job_id=f"mail-queue:{tenant_id}:{kind}:{part[0]}-{part[-1]}:"
                                  f"{len(part)}"))
    return out


def enqueue_hourly(app: Flask | None = None) -> list[Enqueued]:
    """A delivery per tenant with mail on: new notices, retries whose time came (without Redis
    nothing else retries), messages a busy job left."""
    from headend.db import db
    from headend.mail.models import MailSettings

    app = app or current_app._get_current_object()
    with app_context(app), db.engine.connect() as connection:
        tenants = list(connection.scalars(sa.select(MailSettings.tenant_id).where(
            MailSettings.enabled.is_(True))))
    stamp = utcnow().strftime("%Y%m%d%H")
    return [enqueue_delivery(t, f"hourly-{stamp}", app=app) for t in tenants]


# --- the session listeners -------------------------------------------------------------------

@sa.event.listens_for(Session, "after_flush")
def _deliver_new_notices(session: Session, flush_context) -> None:
    """A notice added through the ORM (autopay's failed-payment notice) asks for a delivery,
    which queues its email; the collections run asks for its bulk-written ones itself."""
    from headend.dunning.models import Notice

    for obj in session.new:
        if isinstance(obj, Notice) and obj.tenant_id is not None:
            request_delivery(session, obj.tenant_id)


@sa.event.listens_for(Session, "after_commit")
def _enqueue_requested(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: wait for the real commit
    posted = session.info.pop(_POSTED, None)
    deliver = session.info.pop(_DELIVER, None)
    if not (posted or deliver) or not has_app_context():
        return
    app = current_app._get_current_object()
    _run(app, lambda: _enqueue(app, posted or {}, deliver or set()))


def _enqueue(app: Flask, posted: dict, deliver: set[int]) -> None:
    from headend.db import db
    from headend.mail.services import switches

    with db.engine.connect() as connection:
        on = switches(connection, {t for t, _ in posted} | deliver)
    for (tenant_id, kind), ids in sorted(posted.items()):
        wanted = on.get(tenant_id)
        if wanted is not None and (wanted.invoices if kind == "invoice" else wanted.receipts):
            enqueue_queueing(tenant_id, kind, ids, app=app)
            deliver.discard(tenant_id)  # the queueing job delivers
    for tenant_id in sorted(deliver):
        if tenant_id in on:
            enqueue_delivery(tenant_id, app=app)


def _run(app: Flask, work) -> None:
    """On Redis: enqueue now. Inline: run the jobs in an app context (and session) of their
    own; the caller's commit has happened, so a failure is logged, never raised into it (what
    was not sent stays queued for the next delivery)."""
    if redis_url(app):
        work()
        return
    with app.app_context():
        try:
            work()
        except Exception:  # noqa: BLE001
            log.exception("inline mail job failed; the messages stay queued")


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_delivery(session: Session, previous_transaction) -> None:
    """A rolled-back transaction queued nothing to deliver (posted ids are kept: see above)."""
    if previous_transaction.parent is None:
        session.info.pop(_DELIVER, None)
