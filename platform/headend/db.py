"""The database handle, column types shared by every domain, and the tenant mixin."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import sqlalchemy as sa
from flask_appbuilder import Model
from flask_appbuilder.models.sqla.base import SQLA
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

db = SQLA()

__all__ = ["db", "Model", "ExactDecimal", "TenantOwned", "utcnow", "among"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class ExactDecimal(sa.types.TypeDecorator):
    """A Decimal stored as a scaled BIGINT, so SQLite and PostgreSQL hold identical values.

    SQLite has no exact NUMERIC (it keeps REAL), so prices and rates are stored as integers of
    10**-places. Forms and API schemas see a Numeric; a value with more places than allowed is
    refused rather than rounded.
    """

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, places: int = 4):
        super().__init__(precision=18, scale=places)
        self.places = places

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        try:
            d = Decimal(str(value)) if not isinstance(value, Decimal) else value
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
        scaled = d.scaleb(self.places)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {self.places} decimal places")
        return int(scaled)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return Decimal(int(value)).scaleb(-self.places)

    @property
    def python_type(self):
        return Decimal

    def __repr__(self) -> str:
        # Alembic renders column types with repr(): keep the constructor's real signature.
        return f"{type(self).__name__}({self.places})"


class _Among(sa.sql.expression.ColumnElement):
    """`column IN (ids)` for a chunk of thousands of integer ids."""

    type = sa.Boolean()
    inherit_cache = False

    def __init__(self, column, values):
        self.column, self.values = column, list(values)


@compiles(_Among)
def _among_in(element, compiler, **kw):
    return compiler.process(element.column.in_(element.values), **kw)


@compiles(_Among, "postgresql")
def _among_any(element, compiler, **kw):
    array = sa.bindparam(None, element.values, type_=postgresql.ARRAY(sa.BigInteger))
    return compiler.process(element.column == sa.any_(array), **kw)


def among(column, values) -> sa.ColumnElement[bool]:
    """`column IN values` for thousands of integer ids: one array parameter on PostgreSQL,
    where an IN list of thousands of parameters costs more to build and parse than to run."""
    return _Among(column, values)


class TenantOwned:
    """Mixin for every row that belongs to one tenant.

    Reads are scoped and inserts stamped by the single mechanism in headend.tenancy.scoping;
    views and services never filter by tenant themselves. A model whose composite index already
    leads with tenant_id sets `tenant_id_index = False`: a second index is a cost per insert.
    """

    tenant_id_index: ClassVar[bool] = True

    @declared_attr
    def tenant_id(cls) -> Mapped[int]:
        # active_history: the old value is loaded before a change, so a move between tenants is
        # seen even after the row was expired by a commit.
        return mapped_column(
            sa.Integer, sa.ForeignKey("tenant.id", ondelete="RESTRICT"), nullable=False,
            index=cls.tenant_id_index, active_history=True,
        )
