"""The network layer hears billing's events like any plugin (registered by the core for every
tenant): each one asks for a reconcile of the tenant after the commit. Importing it (as the
plugin manager does when the app starts) also installs the session listeners of
headend.network.jobs that turn ORM changes into reconcile requests."""

from __future__ import annotations

from headend import hookimpl
from headend.db import db
from headend.network.jobs import request_reconcile


def _reconcile(tenant_id: int) -> None:
    request_reconcile(db.session, tenant_id)


@hookimpl
def service_suspended(tenant_id: int, subscription_id: int) -> None:
    _reconcile(tenant_id)


@hookimpl
def service_restored(tenant_id: int, subscription_id: int) -> None:
    _reconcile(tenant_id)


@hookimpl
def subscription_activated(tenant_id: int, subscription_id: int) -> None:
    _reconcile(tenant_id)
