"""Documents jobs on the `documents` queue: a print batch, rendered and merged off the request
(inline, in the request, when there is no Redis)."""

from __future__ import annotations

from flask import Flask

from headend.jobs import Enqueued, app_context, enqueue


def run_print_batch(tenant_id: int, batch_id: int) -> dict:
    """The RQ job: build print batch `batch_id` of `tenant_id` (commits its progress)."""
    from headend.db import db
    from headend.documents.batch import run_batch
    from headend.tenancy.context import acting_as

    with app_context(), acting_as(tenant_id, actor_name="documents"):
        return run_batch(db.session, batch_id)


def job_id(batch_id: int) -> str:
    return f"print-batch:{batch_id}"


def enqueue_print_batch(tenant_id: int, batch_id: int, app: Flask | None = None) -> Enqueued:
    return enqueue("documents", run_print_batch, tenant_id, batch_id, job_id=job_id(batch_id),
                   app=app)
