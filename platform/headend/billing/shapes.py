"""Writing the billing run's invoices set-based, from their shapes.

Most invoices of a run are alike: the same package, cycle, period and tax settings give the
same lines, taxes and entry, only for another subscriber and subscription. The run prices each
distinct shape once; this module writes a chunk's invoices with one INSERT .. SELECT per table,
joining a temporary table of the chunk's invoices (id, number, whose, which shape) to temporary
tables of the shapes' rows. Python sends one row per invoice and the database expands them.

A shape row says where the invoice's own subscriber or subscription goes (`own_*` flags);
an invoice that is not shared (several subscriptions, bill-to, custom lines...) is a shape of
its own whose rows name their ids outright.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing.bulk import copy_rows
from headend.billing.models import Invoice, InvoiceLine, InvoiceLineTax
from headend.ledger.models import Leg

_meta = sa.MetaData()


def _temp(name: str, *columns: sa.Column) -> sa.Table:
    return sa.Table(name, _meta, *columns, prefixes=["TEMPORARY"],
                    postgresql_on_commit="DELETE ROWS")


def _like(model, name: str) -> sa.Column:
    """A column typed as the model's, so values are stored (and copied) exactly as there."""
    return sa.Column(name, model.__table__.c[name].type)


_INVOICES = _temp(
    "run_invoice", sa.Column("id", sa.Integer), sa.Column("entry_id", sa.Integer),
    sa.Column("number", sa.String(40)), sa.Column("subscriber_id", sa.Integer),
    sa.Column("subscription_id", sa.Integer), sa.Column("shape", sa.Integer))
_SHAPES = _temp(
    "run_shape", sa.Column("shape", sa.Integer), _like(Invoice, "status"),
    _like(Invoice, "tax_status"), _like(Invoice, "subtotal"), _like(Invoice, "tax_total"),
    _like(Invoice, "total"))
_LINES = _temp(
    "run_shape_line", sa.Column("shape", sa.Integer),
    *(_like(InvoiceLine, n) for n in (
        "position", "kind", "description", "explanation", "item_id", "subscription_id",
        "for_subscriber_id", "period_start", "period_end", "quantity", "unit_price", "amount",
        "income_account_id", "taxable", "tax")),
    sa.Column("own_subscription", sa.Boolean), sa.Column("own_subscriber", sa.Boolean))
_TAXES = _temp(
    "run_shape_tax", sa.Column("shape", sa.Integer), sa.Column("position", sa.Integer),
    sa.Column("n", sa.Integer),
    *(_like(InvoiceLineTax, n) for n in ("tax_rate_id", "jurisdiction", "rate", "amount")))
_LEGS = _temp(
    "run_shape_leg", sa.Column("shape", sa.Integer), sa.Column("n", sa.Integer),
    *(_like(Leg, n) for n in ("account_id", "subscriber_id", "debit", "credit", "tax_rate_id",
                              "jurisdiction", "memo")),
    sa.Column("own_subscriber", sa.Boolean))
_PERIODS = _temp(
    "run_shape_period", sa.Column("shape", sa.Integer), sa.Column("subscription_id", sa.Integer),
    sa.Column("own_subscription", sa.Boolean), sa.Column("period_start", sa.Date),
    sa.Column("period_end", sa.Date))
_TABLES = (_INVOICES, _SHAPES, _LINES, _TAXES, _LEGS, _PERIODS)


@dataclass
class ShapeRows:
    """One shape's rows, without the invoice's identity (see the module docstring)."""

    invoice: dict  # status, tax_status, subtotal, tax_total, total
    lines: list[dict]  # invoice_line columns + own_subscription, own_subscriber
    taxes: list[dict]  # position, n, tax_rate_id, jurisdiction, rate, amount
    legs: list[dict]  # n, ledger_leg columns + own_subscriber
    periods: list[dict]  # subscription_id, own_subscription, period_start, period_end


@dataclass(frozen=True)
class InvoiceRow:
    """One invoice to write: its ids, number, whose it is and its shape (an index)."""

    id: int
    entry_id: int | None  # None: not posted (waiting for its taxes)
    number: str
    subscriber_id: int
    subscription_id: int | None  # what the shape's own_subscription rows become
    shape: int


def write_invoices(session: Session, shapes: list[ShapeRows], invoices: list[InvoiceRow], *,
                   tenant_id: int, invoice_date: dt.date, due_date: dt.date, currency: str,
                   closed_books_override: bool, now: dt.datetime) -> None:
    """Write the invoices, their lines and line taxes, billed periods, and for the posted ones
    their journal entries and legs (the caller checked the shapes' entries)."""
    if not invoices:
        return
    _load(session, shapes, invoices)
    params = dict(tenant=tenant_id, day=invoice_date, due=due_date, currency=currency,
                  override=closed_books_override, now=now)
    for statement in _statements(session.get_bind().dialect.name):
        session.execute(statement, params)


def _load(session: Session, shapes: list[ShapeRows], invoices: list[InvoiceRow]) -> None:
    connection = session.connection()
    for table in _TABLES:
        table.create(connection, checkfirst=True)
        if connection.dialect.name != "postgresql":  # (PostgreSQL empties them on commit)
            connection.execute(table.delete())
    copy_rows(session, _INVOICES, [inv.__dict__ for inv in invoices])
    copy_rows(session, _SHAPES, [{"shape": n, **s.invoice} for n, s in enumerate(shapes)])
    for table, part in ((_LINES, "lines"), (_TAXES, "taxes"), (_LEGS, "legs"),
                        (_PERIODS, "periods")):
        copy_rows(session, table, [{"shape": n, **row} for n, s in enumerate(shapes)
                                   for row in getattr(s, part)])
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE run_invoice")  # or the planner guesses the joins


_ENTRIES = """
INSERT INTO journal_entry (id, tenant_id, entry_date, posted_at, source_type, source_id,
                           description, key, closed_books_override)
SELECT i.entry_id, :tenant, :day, :now, 'invoice', i.id, 'Invoice ' || i.number,
       'invoice:' || i.id || '\\:post', :override
  FROM run_invoice i WHERE i.entry_id IS NOT NULL ORDER BY i.entry_id"""

_LEGS_SQL = """
INSERT INTO ledger_leg (tenant_id, entry_id, account_id, subscriber_id, debit, credit,
                        tax_rate_id, jurisdiction, memo)
SELECT :tenant, i.entry_id, g.account_id,
       CASE WHEN g.own_subscriber THEN i.subscriber_id ELSE g.subscriber_id END,
       g.debit, g.credit, g.tax_rate_id, g.jurisdiction, g.memo
  FROM run_invoice i JOIN run_shape_leg g ON g.shape = i.shape
 WHERE i.entry_id IS NOT NULL ORDER BY i.entry_id, g.n"""

_INVOICES_SQL = """
INSERT INTO invoice (id, tenant_id, number, subscriber_id, invoice_date, due_date, status,
                     source, currency, subtotal, tax_total, total, amount_paid, tax_status,
                     tax_attempts, posted_entry_id, posted_at, created_at)
SELECT i.id, :tenant, i.number, i.subscriber_id, :day, :due, s.status, 'billing_run',
       :currency, s.subtotal, s.tax_total, s.total, 0, s.tax_status, 0, i.entry_id,
       CASE WHEN i.entry_id IS NULL THEN NULL ELSE :now END, :now
  FROM run_invoice i JOIN run_shape s ON s.shape = i.shape ORDER BY i.id"""

_LINES_SELECT = """
SELECT :tenant, i.id, l.position, l.kind, l.description, l.explanation, l.item_id,
       CASE WHEN l.own_subscription THEN i.subscription_id ELSE l.subscription_id END,
       CASE WHEN l.own_subscriber THEN i.subscriber_id ELSE l.for_subscriber_id END,
       l.period_start, l.period_end, l.quantity, l.unit_price, l.amount, l.income_account_id,
       l.taxable, l.tax
  FROM run_invoice i JOIN run_shape_line l ON l.shape = i.shape ORDER BY i.id, l.position"""

_LINE_COLUMNS = """invoice_line (tenant_id, invoice_id, position, kind, description, explanation,
                          item_id, subscription_id, for_subscriber_id, period_start,
                          period_end, quantity, unit_price, amount, income_account_id, taxable,
                          tax)"""

_TAX_COLUMNS = "invoice_line_tax (tenant_id, line_id, tax_rate_id, jurisdiction, rate, amount)"

# PostgreSQL: the new lines' ids come back to their taxes in the same statement.
_LINES_AND_TAXES_PG = f"""
WITH lines AS (INSERT INTO {_LINE_COLUMNS} {_LINES_SELECT} RETURNING id, invoice_id, position)
INSERT INTO {_TAX_COLUMNS}
SELECT :tenant, lines.id, t.tax_rate_id, t.jurisdiction, t.rate, t.amount
  FROM lines JOIN run_invoice i ON i.id = lines.invoice_id
  JOIN run_shape_tax t ON t.shape = i.shape AND t.position = lines.position
 ORDER BY lines.id, t.n"""

# Elsewhere: the lines, then their taxes found by invoice and position.
_TAXES_AFTER_LINES = f"""
INSERT INTO {_TAX_COLUMNS}
SELECT :tenant, l.id, t.tax_rate_id, t.jurisdiction, t.rate, t.amount
  FROM run_invoice i JOIN invoice_line l ON l.invoice_id = i.id
  JOIN run_shape_tax t ON t.shape = i.shape AND t.position = l.position
 ORDER BY l.id, t.n"""

_PERIODS_SQL = """
INSERT INTO billed_period (tenant_id, subscription_id, period_start, period_end, invoice_id)
SELECT :tenant, CASE WHEN p.own_subscription THEN i.subscription_id ELSE p.subscription_id END,
       p.period_start, p.period_end, i.id
  FROM run_invoice i JOIN run_shape_period p ON p.shape = i.shape"""


def _statements(dialect: str) -> list[sa.TextClause]:
    lines = [_LINES_AND_TAXES_PG] if dialect == "postgresql" else [
        f"INSERT INTO {_LINE_COLUMNS} {_LINES_SELECT}", _TAXES_AFTER_LINES]
    return [sa.text(s) for s in (_ENTRIES, _LEGS_SQL, _INVOICES_SQL, *lines, _PERIODS_SQL)]
