"""A posted invoice without the invoicing engine: the Invoice row and its ledger entry, as the
engine would leave them, for the memo tests."""

from __future__ import annotations

import datetime as dt
import itertools

from headend.billing.models import Invoice
from headend.ledger.services import LegSpec, post_entry

_seq = itertools.count(1)


def posted_invoice(session, subscriber_id: int, total: int, *, day=dt.date(2024, 1, 15),
                   status: str = "open") -> Invoice:
    n = next(_seq)
    invoice = Invoice(number=f"T-{n}", subscriber_id=subscriber_id, invoice_date=day,
                      due_date=day + dt.timedelta(days=15), status=status, currency="USD",
                      subtotal=total, total=total, amount_paid=0)
    session.add(invoice)
    session.flush()
    entry = post_entry(session, key=f"invoice:{invoice.id}", entry_date=day,
                       source_type="invoice", source_id=invoice.id, description=f"Invoice T-{n}",
                       legs=[LegSpec("1200", debit=total, subscriber_id=subscriber_id),
                             LegSpec("4000", credit=total)])
    invoice.posted_entry_id = entry.id
    session.flush()
    return invoice
