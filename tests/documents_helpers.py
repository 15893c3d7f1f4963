"""Tenants with posted invoices for the documents tests, and reading PDFs the way a person
would: its text (pdftotext), where words sit on the page (pdftotext -bbox) and the pixels of a
page (pdftoppm)."""

from __future__ import annotations

import datetime as dt
import html
import io
import re
import subprocess
import tempfile
from pathlib import Path

from headend.billing.invoicing import new_invoice
from headend.db import db
from headend.tenancy.context import acting_as

from tests.invoicing_helpers import subscriber, tax_rate

INVOICE_DATE = dt.date(2026, 3, 1)
LINES = [
    {"description": "Fiber 500 monthly", "quantity": "1", "unit_price": "59.99"},
    {"description": "Static IP address", "quantity": "1", "unit_price": "5.00"},
    {"description": "Wi-Fi extender rental", "quantity": "2", "unit_price": "4.50"},
]


def invoiced_tenant(app, make_tenant, name="Docs ISP", count=2, paper=(), lines=LINES,
                    day=INVOICE_DATE) -> tuple[int, list[int]]:
    """A tenant whose `count` subscribers (the `paper` indexes with paper invoices) each have
    one posted invoice of `lines` on `day`, taxed 6.25% "State tax"."""
    tenant = make_tenant(name)
    with app.app_context(), acting_as(tenant):
        rate = tax_rate(db.session, "State tax", "6.25")
        ids = []
        for n in range(count):
            sub = subscriber(db.session, rates=(rate,), paper_invoice=n in paper,
                             first_name="Ana", last_name=f"Paper{n}" if n in paper else f"Doc{n}")
            ids.append(new_invoice(db.session, sub.id, day, lines, today=day).id)
        db.session.commit()
    return tenant, ids


def add_invoice(app, tenant, day, lines=LINES) -> int:
    with app.app_context(), acting_as(tenant):
        sub = subscriber(db.session)
        invoice_id = new_invoice(db.session, sub.id, day, lines, today=day).id
        db.session.commit()
        return invoice_id


def pdf_text(pdf: bytes) -> str:
    return subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True,
                          check=True).stdout.decode()


def page_count(pdf: bytes) -> int:
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(pdf)).pages)


WORD = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">|<word xMin="([\d.]+)" '
                  r'yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')


def words(pdf: bytes, page: int = 1) -> tuple[tuple[float, float], list[tuple]]:
    """((page width, page height), [(word, x_min, y_min, x_max, y_max)]) of one page; y grows
    downwards, in points."""
    out = subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), "-", "-"],
                         input=pdf, capture_output=True, check=True).stdout.decode()
    size, found = None, []
    for match in WORD.finditer(out):
        if match.group(1):
            size = (float(match.group(1)), float(match.group(2)))
        else:
            found.append((html.unescape(match.group(7)), *map(float, match.group(3, 4, 5, 6))))
    return size, found


def find(found: list[tuple], word: str) -> list[tuple]:
    return [w for w in found if w[0] == word]


def page_image(pdf: bytes, page: int = 1, dpi: int = 50):
    """Page `page` as a PIL image, drawn by poppler's pdftoppm."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "doc.pdf"
        source.write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page),
                        "-singlefile", str(source), str(Path(tmp) / "page")], check=True)
        return Image.open(Path(tmp) / "page.png").convert("RGB").copy()


def hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def has_color(image, color: str, tolerance: int = 12) -> bool:
    """Whether some pixel of the image is `color` (#rrggbb)."""
    want = hex_rgb(color)
    return any(all(abs(a - b) <= tolerance for a, b in zip(pixel, want, strict=True))
               for _, pixel in image.getcolors(1 << 20))


# The smallest files of each kind, by their real magic bytes.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d49444154789c6360f8cfc0f01f0005000201c8b5f8d10000000049454e44ae426082")
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00" \
      b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
