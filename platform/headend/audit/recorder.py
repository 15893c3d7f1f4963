"""Writes an audit row for every flushed change of an audited model, in the same transaction."""

from __future__ import annotations

import datetime as dt
import decimal
import enum

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from headend.audit.models import AuditLog
from headend.db import ExactDecimal, TenantOwned, utcnow
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant, TenantUser

REDACTED = "***"
# Columns never written to the log as values.
SECRET_COLUMNS = {"password", "secret_config", "key_hash", "lookup_hash"}


def _audited(obj) -> bool:
    return isinstance(obj, (TenantOwned, Tenant, TenantUser)) and not isinstance(obj, AuditLog)


def _jsonable(value):
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return REDACTED
    return value


def _columns(obj):
    return sa.inspect(obj).mapper.column_attrs


def _value(attr, value):
    """What the log shows: secrets redacted, exact decimals at the scale they are stored with."""
    if attr.key in SECRET_COLUMNS:
        return REDACTED
    column_type = attr.columns[0].type
    if isinstance(column_type, ExactDecimal) and isinstance(value, decimal.Decimal):
        value = value.quantize(decimal.Decimal(1).scaleb(-column_type.places))
    return _jsonable(value)


def _snapshot(obj) -> dict:
    return {attr.key: _value(attr, getattr(obj, attr.key)) for attr in _columns(obj)}


def _changes(obj) -> tuple[dict, dict]:
    state = sa.inspect(obj)
    before, after = {}, {}
    for attr in _columns(obj):
        hist = state.attrs[attr.key].history
        if not hist.has_changes():
            continue
        old = hist.deleted[0] if hist.deleted else None
        new = hist.added[0] if hist.added else None
        before[attr.key], after[attr.key] = _value(attr, old), _value(attr, new)
    for rel in state.mapper.relationships:
        if rel.direction.name != "MANYTOMANY":
            continue
        hist = state.attrs[rel.key].history
        if hist.added or hist.deleted:
            # Ids of the rows linked and unlinked (a subscriber's tax rates, say).
            current = {_entity_id(o) for o in getattr(obj, rel.key)}
            removed = {_entity_id(o) for o in hist.deleted}
            added = {_entity_id(o) for o in hist.added}
            before[rel.key] = sorted((current - added) | removed)
            after[rel.key] = sorted(current)
    return before, after


def _tenant_of(obj):
    if isinstance(obj, Tenant):
        return obj.id
    return getattr(obj, "tenant_id", None)


def _entity_id(obj) -> str:
    # New rows have their key in the columns but no identity until the flush completes.
    state = sa.inspect(obj)
    return ",".join(str(v) for v in state.mapper.primary_key_from_instance(obj))


@event.listens_for(Session, "after_flush")
def _record(session: Session, flush_context) -> None:
    scope = current_scope()
    now = utcnow()
    rows = []

    def add(obj, action, before, after):
        rows.append(
            dict(
                tenant_id=_tenant_of(obj), at=now, actor_id=scope.actor_id,
                actor_name=scope.actor_name, action=action, entity=obj.__tablename__,
                entity_id=_entity_id(obj), before=before, after=after,
            )
        )

    for obj in session.new:
        if _audited(obj):
            add(obj, "create", None, _snapshot(obj))
    for obj in session.dirty:
        if _audited(obj) and session.is_modified(obj):
            before, after = _changes(obj)
            if after:
                add(obj, "update", before, after)
    for obj in session.deleted:
        if _audited(obj):
            add(obj, "delete", _snapshot(obj), None)
    if rows:
        session.connection().execute(sa.insert(AuditLog), rows)
