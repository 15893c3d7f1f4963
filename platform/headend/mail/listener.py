"""The mail side of core events (registered from DEFAULT_PLUGINS): a posted invoice and a
received payment are noted on the session and emailed by a job after the commit
(headend.mail.jobs). Importing this module installs the session listeners of
headend.mail.jobs."""

from __future__ import annotations

from headend import hookimpl
from headend.db import db
from headend.mail.jobs import note_posted


@hookimpl
def invoice_posted(tenant_id: int, invoice_id: int) -> None:
    note_posted(db.session, tenant_id, "invoice", invoice_id)


@hookimpl
def payment_received(tenant_id: int, payment_id: int) -> None:
    note_posted(db.session, tenant_id, "receipt", payment_id)
