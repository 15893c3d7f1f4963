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
    if state.execution_options.get("headend_all_tenants"):
        return
    scope = current_scope()
    if state.is_insert:
        _stamp_bulk_insert(state, scope)
        return
    if scope.all_tenants or not (state.is_select or state.is_update or state.is_delete):
        return
    tenant_id = scope.tenant_id
    for cls in _scoped_classes():
        state.statement = state.statement.options(
            with_loader_criteria(
                cls, lambda c: c.tenant_id == tenant_id, include_aliases=True
            )
        )


def _stamp_bulk_insert(state: ORMExecuteState, scope) -> None:
    """`session.execute(insert(Model), rows)` gets the same stamping and refusal as a flush."""
    mapper = state.bind_mapper
    if mapper is None or not issubclass(mapper.class_, TenantOwned):
        return
    rows = state.parameters
    for row in rows if isinstance(rows, list) else [rows] if rows else []:
        _check_tenant(mapper.class_.__name__, row.get("tenant_id"), scope)
        row.setdefault("tenant_id", scope.tenant_id)


def _check_tenant(name: str, tenant_id, scope) -> None:
    if tenant_id is None and scope.all_tenants:
        raise TenantScopeError(f"{name}: choose a tenant to act for before creating rows")
    if tenant_id is not None and not scope.all_tenants and tenant_id != scope.tenant_id:
        raise TenantScopeError(f"{name}: belongs to another tenant")


@event.listens_for(Session, "before_flush")
def _guard_flush(session: Session, flush_context, instances) -> None:
    scope = current_scope()
    owners = _OwnerLookup(session)
    for obj in session.new:
        if isinstance(obj, TenantOwned):
            _check_tenant(type(obj).__name__, obj.tenant_id, scope)
            if obj.tenant_id is None:
                obj.tenant_id = scope.tenant_id
            owners.check_references(obj, new=True)
    for obj in session.dirty:
        if not isinstance(obj, TenantOwned):
            continue
        history = sa.inspect(obj).attrs.tenant_id.history  # active_history: always loaded
        if history.deleted and history.deleted[0] is not None and history.added:
            raise TenantScopeError(f"{type(obj).__name__}: a row cannot change tenant")
        _check_tenant(type(obj).__name__, obj.tenant_id, scope)
        owners.check_references(obj, new=False)


class _OwnerLookup:
    """Refuses a row that points at another tenant's row (an operator acting for all tenants
    can see both; nobody may link them)."""

    def __init__(self, session: Session):
        self.session = session
        self.cache: dict[tuple[type, object], int | None] = {}

    def tenant_of(self, target_cls, key):
        if (target_cls, key) not in self.cache:
            stmt = sa.select(target_cls.tenant_id).where(target_cls.id == key)
            self.cache[(target_cls, key)] = self.session.scalar(
                stmt.execution_options(headend_all_tenants=True))
        return self.cache[(target_cls, key)]

    def _targets(self, obj, rel, new: bool):
        state = sa.inspect(obj)
        if rel.direction.name == "MANYTOONE":
            fk_cols = [c for c, _ in rel.local_remote_pairs]
            changed = new or any(state.attrs[c.key].history.has_changes() for c in fk_cols
                                 if c.key in state.attrs) or state.attrs[rel.key].history.added
            if not changed:
                return
            loaded = state.dict.get(rel.key)
            if loaded is not None:
                yield loaded.tenant_id if loaded.tenant_id is not None else obj.tenant_id
            elif len(fk_cols) == 1 and getattr(obj, fk_cols[0].key, None) is not None:
                yield self.tenant_of(rel.mapper.class_, getattr(obj, fk_cols[0].key))
        elif rel.direction.name == "MANYTOMANY":
            for target in state.attrs[rel.key].history.added or ():
                yield target.tenant_id if target.tenant_id is not None else obj.tenant_id

    def check_references(self, obj, new: bool) -> None:
        for rel in sa.inspect(type(obj)).relationships:
            if rel.viewonly or not issubclass(rel.mapper.class_, TenantOwned):
                continue
            for tenant_id in self._targets(obj, rel, new):
                if tenant_id is not None and tenant_id != obj.tenant_id:
                    raise TenantScopeError(
                        f"{type(obj).__name__}.{rel.key}: refers to another tenant's row")


def unscoped():
    """Execution option for the rare statement that must see every tenant (say so why)."""
    return {"headend_all_tenants": True}
