"""The plain data an InvoiceForm draws: built here from the database in a few batched reads, so
form plugins never see ORM objects or our session.

Amounts stay integers in minor units with the invoice's currency (forms format them with
`money`); quantities and prices are exact decimals."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from headend.billing.models import Invoice, InvoiceLine
from headend.catalog.models import InternetProfile
from headend.db import among
from headend.documents.models import COLUMNS
from headend.money import format_money, to_minor
from headend.network.models import UsageCharge
from headend.subscribers.models import ServiceInstance, Subscriber, Subscription


@dataclass(frozen=True)
class Design:
    """The tenant's invoice design, as the form needs it."""

    header_text: str = ""
    footer_text: str = ""
    marketing_message: str = ""
    remittance_stub: bool = True
    columns: tuple[str, ...] = COLUMNS
    show_usage: bool = True


@dataclass(frozen=True)
class Line:
    description: str
    explanation: str
    period: str  # first - last day covered, or ""
    quantity: Decimal
    unit_price: Decimal
    amount: int
    tax: int
    for_account: str  # the account whose charge it is, when billed to another ("" = own)


@dataclass(frozen=True)
class UsageRow:
    """A usage period of one Internet service billed on this invoice."""

    service: str
    period: str
    used: Decimal
    included: Decimal
    billed: Decimal
    unit: str
    amount: int


@dataclass(frozen=True)
class InvoiceDocument:
    id: int
    number: str
    invoice_date: dt.date
    due_date: dt.date
    status: str
    currency: str
    account_number: str
    bill_to_name: str
    bill_to_address: tuple[str, ...]
    lines: tuple[Line, ...]
    subtotal: int
    taxes: tuple[tuple[str, int], ...]  # (label, amount), by label
    tax_total: int
    total: int
    amount_paid: int
    balance_due: int
    memo: str = ""
    usage: tuple[UsageRow, ...] = ()
    design: Design = field(default_factory=Design)

    def money(self, minor: int) -> str:
        return format_money(minor, self.currency)

    def with_design(self, design: Design) -> InvoiceDocument:
        return replace(self, design=design)


def design_of(row) -> Design:
    """A Design from an InvoiceDesign row (saved or not)."""
    return Design(header_text=row.header_text or "", footer_text=row.footer_text or "",
                  marketing_message=row.marketing_message or "",
                  remittance_stub=bool(row.remittance_stub),
                  columns=tuple(c for c in COLUMNS if c in (row.columns or ())),
                  show_usage=bool(row.show_usage))


def branding_mapping(view) -> dict:
    """A BrandingView as the Mapping the InvoiceForm interface takes."""
    return asdict(view)


def span(start: dt.date | None, end: dt.date | None) -> str:
    """A period for people: first and last day covered (the stored end is exclusive)."""
    if start is None or end is None:
        return ""
    last = end - dt.timedelta(days=1)
    return f"{last:%Y-%m-%d}" if last == start else f"{start:%Y-%m-%d} - {last:%Y-%m-%d}"


def address_lines(sub: Subscriber) -> tuple[str, ...]:
    prefix = "service" if sub.billing_same_as_service else "billing"
    get = lambda name: getattr(sub, f"{prefix}_{name}") or ""  # noqa: E731
    city = " ".join(p for p in (get("city") + ("," if get("city") else ""), get("region"),
                                get("postal_code")) if p).strip(" ,")
    return tuple(p for p in (get("line1"), get("line2"), city) if p)


def _usage(session: Session, invoices: dict[int, str]) -> dict[int, list[UsageRow]]:
    """Usage billed on these invoices (id -> currency), where the package shows usage."""
    rows = session.execute(
        sa.select(UsageCharge, ServiceInstance.label, InternetProfile.usage_billing_basis)
        .join(ServiceInstance, ServiceInstance.id == UsageCharge.service_id)
        .join(Subscription, Subscription.id == ServiceInstance.subscription_id)
        .join(InternetProfile, InternetProfile.package_id == Subscription.package_id)
        .where(among(UsageCharge.invoice_id, list(invoices)),
               InternetProfile.usage_show_on_invoice.is_(True))
        .order_by(UsageCharge.id)).all()
    out: dict[int, list[UsageRow]] = defaultdict(list)
    for usage, label, basis in rows:
        out[usage.invoice_id].append(UsageRow(
            service=label,
            period=span(usage.period_start, usage.period_end + dt.timedelta(days=1)),
            used=usage.used, included=usage.included, billed=usage.billed_units,
            unit="hours" if basis == "hours" else basis,
            amount=to_minor(usage.amount, invoices[usage.invoice_id])))
    return out


def _line(line: InvoiceLine, payer_id: int, names: dict[int, str]) -> Line:
    other = line.for_subscriber_id not in (None, payer_id)
    return Line(description=line.description, explanation=line.explanation or "",
                period=span(line.period_start, line.period_end), quantity=line.quantity,
                unit_price=line.unit_price, amount=line.amount, tax=line.tax,
                for_account=names.get(line.for_subscriber_id, "") if other else "")


def _taxes(invoice: Invoice) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = defaultdict(int)
    for line in invoice.lines:
        for tax in line.taxes:
            totals[tax.jurisdiction] += tax.amount
    return tuple(sorted(totals.items()))


def documents(session: Session, invoice_ids: list[int], design: Design) -> list[InvoiceDocument]:
    """The documents of these invoices of the acting tenant, in the order given (ids that are
    not the tenant's are left out): four queries whatever the number of invoices."""
    invoices = {i.id: i for i in session.scalars(
        sa.select(Invoice).where(among(Invoice.id, list(invoice_ids)))
        .options(selectinload(Invoice.lines).selectinload(InvoiceLine.taxes)))}
    if not invoices:
        return []
    owners = {i.subscriber_id for i in invoices.values()} | {
        ln.for_subscriber_id for i in invoices.values() for ln in i.lines
        if ln.for_subscriber_id is not None}
    subscribers = {s.id: s for s in session.scalars(
        sa.select(Subscriber).where(among(Subscriber.id, list(owners))))}
    names = {sid: f"{s.account_number} {s.display_name}" for sid, s in subscribers.items()}
    usage = _usage(session, {i.id: i.currency for i in invoices.values()}) \
        if design.show_usage else {}
    out = []
    for invoice_id in invoice_ids:
        invoice = invoices.get(invoice_id)
        if invoice is None:
            continue
        sub = subscribers[invoice.subscriber_id]
        out.append(InvoiceDocument(
            id=invoice.id, number=invoice.number or f"draft {invoice.id}",
            invoice_date=invoice.invoice_date, due_date=invoice.due_date,
            status=invoice.status, currency=invoice.currency,
            account_number=sub.account_number, bill_to_name=sub.display_name,
            bill_to_address=address_lines(sub),
            lines=tuple(_line(ln, sub.id, names) for ln in invoice.lines),
            subtotal=invoice.subtotal, taxes=_taxes(invoice), tax_total=invoice.tax_total,
            total=invoice.total, amount_paid=invoice.amount_paid,
            balance_due=invoice.balance_due, memo=invoice.memo or "",
            usage=tuple(usage.get(invoice.id, ())), design=design))
    return out


def sample(currency: str, design: Design, today: dt.date) -> InvoiceDocument:
    """A made-up invoice for the designer's preview when the tenant has none yet."""
    start = today.replace(day=1)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    lines = (
        Line("Fiber 500 - monthly", "", span(start, end), Decimal(1), Decimal("59.99"),
             5999, 375, ""),
        Line("Static IP address", "", span(start, end), Decimal(1), Decimal("5.00"), 500, 31,
             ""),
        Line("Wi-Fi extender (rental)", "", span(start, end), Decimal(2), Decimal("4.50"),
             900, 56, ""),
    )
    return InvoiceDocument(
        id=0, number="INV-SAMPLE-000001", invoice_date=start, due_date=start +
        dt.timedelta(days=15), status="open", currency=currency, account_number="100001",
        bill_to_name="Ana Sample", bill_to_address=("100 N State St", "Springfield, IL 62701"),
        lines=lines, subtotal=7399, taxes=(("State tax", 462),), tax_total=462, total=7861,
        amount_paid=0, balance_due=7861,
        usage=(UsageRow("Internet", span(start - dt.timedelta(days=30), start),
                        Decimal("450000"), Decimal("500000"), Decimal(0), "MB", 0),),
        design=design)
