"""Who is acting and for which tenant: the one place the scoping mechanism asks.

Outside a request (CLI, jobs, migrations) the scope is SYSTEM unless a caller enters
`acting_as(...)`. Inside a request it is derived once from the authenticated user (session
cookie, JWT or API key) and cached on `flask.g`.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass

from flask import current_app, g, has_request_context, request
from flask import session as http_session
from sqlalchemy import select

ALL_TENANTS = None
NO_TENANT = 0  # no row has tenant id 0: the scope of anonymous and unassigned users


@dataclass(frozen=True)
class Scope:
    tenant_id: int | None  # None = every tenant (operators, system jobs)
    actor_id: int | None = None
    actor_name: str = "system"

    @property
    def all_tenants(self) -> bool:
        return self.tenant_id is None


SYSTEM = Scope(ALL_TENANTS)
NOBODY = Scope(NO_TENANT, None, "anonymous")

# The explicit scope and the request it was entered in (None: outside any request).
_explicit: ContextVar[tuple[Scope, int | None] | None] = ContextVar("headend_scope", default=None)


def _request_key() -> int | None:
    return id(request._get_current_object()) if has_request_context() else None


@contextlib.contextmanager
def acting_as(tenant_id: int | None, actor_id: int | None = None, actor_name="system"):
    """Run a block (a job, a CLI command, a test) as an actor of one tenant, or of all.

    Entered outside a request it does not reach into requests served meanwhile in the same
    thread (a test client): those are always scoped by their own authenticated user.
    """
    token = _explicit.set((Scope(tenant_id, actor_id, actor_name), _request_key()))
    try:
        yield
    finally:
        _explicit.reset(token)


def current_scope() -> Scope:
    explicit = _explicit.get()
    if explicit is not None and explicit[1] == _request_key():
        return explicit[0]
    if has_request_context():
        return _request_scope()
    return SYSTEM


def is_operator(user) -> bool:
    admin = current_app.config["AUTH_ROLE_ADMIN"]
    # FAB grants roles directly and through groups; both count.
    return any(role.name == admin for role in current_app.appbuilder.sm.get_user_roles(user))


def scope_for_user(user) -> Scope:
    name = user.username
    if is_operator(user):
        acting = http_session.get("acting_tenant_id") if has_request_context() else None
        return Scope(acting, user.id, name)
    tenant_id = _tenant_id_of(user)
    if tenant_id is None or not tenant_is_active(tenant_id):
        return Scope(NO_TENANT, user.id, name)  # a suspended tenant's staff see nothing
    return Scope(tenant_id, user.id, name)


def tenant_is_active(tenant_id: int) -> bool:
    from headend.db import db
    from headend.tenancy.models import Tenant

    return bool(db.session.scalar(select(Tenant.active).where(Tenant.id == tenant_id)))


def _tenant_id_of(user) -> int | None:
    if hasattr(user, "tenant_id"):
        return user.tenant_id
    # FAB's ApiKey.user relationship loads its own User class, without our column.
    from headend.db import db
    from headend.tenancy.models import TenantUser

    return db.session.scalar(select(TenantUser.tenant_id).where(TenantUser.id == user.id))


def _request_scope() -> Scope:
    cached = g.get("_headend_scope")
    if cached is not None:
        return cached
    if g.get("_headend_resolving"):
        return NOBODY  # loading the user itself touches no tenant-owned table
    g._headend_resolving = True
    try:
        user = current_app.appbuilder.sm.current_user
        if user is None or not getattr(user, "is_authenticated", True):
            return NOBODY  # not cached: a JWT may still be verified later in this request
        g._headend_scope = scope_for_user(user)
    finally:
        g._headend_resolving = False
    return g._headend_scope
