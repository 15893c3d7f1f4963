"""The single mechanism that keeps tenants apart.

Every ORM SELECT/UPDATE/DELETE touching a tenant-scoped class gets `tenant_id = <current>`
through `with_loader_criteria`, and every flush stamps new rows with the current tenant and
refuses to move a row to another tenant. Views, APIs and services never filter by tenant.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from headend.db import TenantOwned
from headend.tenancy.context import current_scope


class TenantScopeError(Exception):
    """A write that the current tenant scope does not allow."""


class TenantScoped:
    """Marker for classes whose reads are scoped; TenantOwned rows and the audit log."""


def _scoped_classes():
    return (TenantOwned, TenantScoped)


@event.listens_for(Session, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return  # loader criteria already propagate to these
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.execution_options.get("headend_all_tenants"):
        return
    scope = current_scope()
    if scope.all_tenants:
        return
    tenant_id = scope.tenant_id
    for cls in _scoped_classes():
        state.statement = state.statement.options(
            with_loader_criteria(
                cls, lambda c: c.tenant_id == tenant_id, include_aliases=True
            )
        )


@event.listens_for(Session, "before_flush")
def _stamp_tenant(session: Session, flush_context, instances) -> None:
    scope = current_scope()
    for obj in session.new:
        if not isinstance(obj, TenantOwned):
            continue
        if obj.tenant_id is None:
            if scope.all_tenants:
                raise TenantScopeError(
                    f"{type(obj).__name__}: choose a tenant to act for before creating rows"
                )
            obj.tenant_id = scope.tenant_id
        elif not scope.all_tenants and obj.tenant_id != scope.tenant_id:
            raise TenantScopeError(f"{type(obj).__name__}: belongs to another tenant")
    for obj in session.dirty:
        if isinstance(obj, TenantOwned):
            history = sa.inspect(obj).attrs.tenant_id.history
            if history.deleted and history.deleted[0] is not None:
                raise TenantScopeError(f"{type(obj).__name__}: a row cannot change tenant")


def unscoped():
    """Execution option for the rare statement that must see every tenant (say so why)."""
    return {"headend_all_tenants": True}
