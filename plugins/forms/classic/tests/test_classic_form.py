"""The classic form on plain data (no database): what it writes, escaping, the columns and
stub the design asks for, the logo, and how it registers."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from headend.documents.data import Design, InvoiceDocument, Line, UsageRow, sample
from headend.plugins.interfaces import InvoiceForm
from headend_form_classic import ClassicForm, register_invoice_forms
from headend_form_classic.form import LOGO_DIR, logo_image

FORM = ClassicForm()
BRAND = {"display_name": "Valley Fiber", "primary_color": "#1f4e79", "accent_color": "#f0a500",
         "address": "1 Main St\nSpringfield, IL", "phone": "555-0100", "email": "hi@v.test",
         "website": None, "tax_id": "12-345", "billing_name": "Valley Billing",
         "billing_address": "PO Box 9", "billing_phone": None, "logo": None,
         "logo_media_type": None}
DAY = dt.date(2026, 3, 1)


def text(pdf: bytes) -> str:
    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True,
                         check=True).stdout.decode()
    return " ".join(out.split())


def test_it_registers_one_invoice_form():
    (form,) = register_invoice_forms()
    assert isinstance(form, InvoiceForm) and form.plugin_id == "classic"
    assert form.media_type == "application/pdf"


def test_the_sample_invoice_reads_right():
    pdf = FORM.render(sample("USD", Design(marketing_message="Refer a friend"), DAY), BRAND)
    assert pdf.startswith(b"%PDF")
    got = text(pdf)
    for expected in ("INVOICE", "INV-SAMPLE-000001", "Valley Fiber", "Tax ID 12-345",
                     "Bill to Ana Sample", "Fiber 500 - monthly", "Subtotal 73.99 USD",
                     "State tax 4.62 USD", "Total 78.61 USD", "Balance due 78.61 USD",
                     "Refer a friend", "Make payable to", "Valley Billing", "PO Box 9",
                     "Account number: 100001", "Amount due: 78.61 USD",
                     "450000 MB used, 500000 included"):
        assert expected in got, expected


def test_text_is_escaped_not_markup():
    doc = replace(sample("USD", Design(header_text="<b>bold</b> & co"), DAY),
                  bill_to_name="<script>x</script>")
    got = text(FORM.render(doc, BRAND))
    assert "<b>bold</b> & co" in got and "<script>x</script>" in got


def test_columns_usage_and_stub_follow_the_design():
    design = Design(columns=("tax",), remittance_stub=False, show_usage=False)
    got = text(FORM.render(sample("EUR", design, DAY), BRAND))
    assert "Tax" in got and "Qty" not in got and "Unit price" not in got
    assert "Period" not in got
    assert "Make payable to" not in got and "used," not in got
    assert "73.99 EUR" in got


def test_quantity_and_price_share_a_cell_and_the_period_goes_under_the_description():
    doc = sample("EUR", Design(columns=("period", "quantity", "unit_price")), DAY)
    got = text(FORM.render(doc, BRAND))
    line = doc.lines[0]
    assert "Qty × Unit price" in got
    assert f"{line.description} 1 × 59.99 59.99 EUR Period {line.period}" in got
    only_qty = text(FORM.render(replace(doc, design=Design(columns=("quantity",))), BRAND))
    assert " Qty " in only_qty and "×" not in only_qty and "Period" not in only_qty


def test_other_accounts_lines_and_exact_prices():
    lines = (Line("Child account internet", "Prorated 10 of 31 days", "2026-03-01 - 2026-03-10",
                  Decimal("1"), Decimal("0.0125"), 1, 0, "100002 Bo Child"),)
    doc = InvoiceDocument(
        id=1, number="INV-1", invoice_date=DAY, due_date=DAY, status="partially_paid",
        currency="JPY", account_number="100001", bill_to_name="Ana", bill_to_address=(),
        lines=lines, subtotal=1, taxes=(), tax_total=0, total=1200, amount_paid=200,
        balance_due=1000, usage=(UsageRow("Net", "x", Decimal(1), Decimal(0), Decimal(1), "MB",
                                          5),), design=Design())
    got = text(FORM.render(doc, BRAND))
    assert "(100002 Bo Child)" in got and "Prorated 10 of 31 days" in got
    assert "0.0125" in got and "1,000 JPY" in got and "Status: partially paid" in got


def test_the_logo_is_embedded_once_encoded():
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (90, 30), (0, 200, 0, 128)).save(out, "PNG")
    logo = out.getvalue()
    drawn = logo_image(logo)
    assert drawn is logo_image(logo)  # converted once
    assert Path(drawn.uri).parent == LOGO_DIR
    assert Path(drawn.uri).read_bytes().startswith(b"\xff\xd8")  # a JPEG
    assert (drawn.width, drawn.height) == (120.0, 40.0)
    pdf = FORM.render(sample("USD", Design(), DAY), BRAND | {"logo": logo,
                                                             "logo_media_type": "image/png"})
    assert b"/Subtype /Image" in pdf
