"""ClassicForm: a one-page invoice (more pages when the lines need them) with the tenant's
logo and colours, the line table, totals, usage, a marketing message and a tear-off remittance
stub at the bottom of the first page, drawn by xhtml2pdf from one compiled Jinja template.

xhtml2pdf is the cost of a render, so the HTML stays plain: one table for the lines, no nested
tables, no web fonts; as few cells as the design allows (each is a paragraph xhtml2pdf lays out
twice: quantity and unit price share one, "2 × 4.50", and the period goes under the
description - measured, a fifth faster than a column each); the logo converted once to a JPEG
file the page links to (as a data URI, xhtml2pdf's HTML parser would read it character by
character on every invoice)."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from headend.plugins.interfaces import InvoiceForm
from jinja2 import Environment, PackageLoader, select_autoescape
from xhtml2pdf import pisa
from xhtml2pdf.config.resources import ResourceAccessPolicy

# xhtml2pdf's own default style sheet is parsed on every document; these are the few rules of it
# the template relies on.
BASE_CSS = """
html { font-family: Helvetica; font-size: 10px; font-weight: normal; color: #000000; margin: 0;
       padding: 0; line-height: 150%; border: 1px none; display: inline; width: auto;
       height: auto; white-space: normal; }
b { font-weight: bold; }
body, div, p, table, tr, td, th { display: block; }
p { margin: 1em 0; }
tr, td, th { vertical-align: middle; width: auto; }
th { text-align: left; font-weight: bold; }
"""
COLUMN_TITLES = {"period": "Period", "quantity": "Qty", "unit_price": "Unit price",
                 "tax": "Tax"}
LOGO_HEIGHT, LOGO_MAX_WIDTH = 40.0, 200.0  # points
_LOGO_CACHE: dict[str, Logo] = {}
# Where the converted logos are, and all a document may read: nothing remote, no other file.
LOGO_DIR = Path(tempfile.gettempdir()) / f"headend-form-classic-{os.getuid()}"
_POLICY = ResourceAccessPolicy(base_dir=str(LOGO_DIR), allow_remote=False)


class RenderError(RuntimeError):
    """xhtml2pdf could not draw the HTML."""


@functools.cache
def _template():
    env = Environment(loader=PackageLoader("headend_form_classic", "templates"),
                      autoescape=select_autoescape(("html",)), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["qty"] = lambda d: f"{Decimal(d).normalize():f}"
    env.filters["price"] = _price
    return env.get_template("invoice.html")


def _price(value) -> str:
    """A unit price: two places, more only when it has them (0.0125 stays)."""
    number = Decimal(value).normalize()
    if number.as_tuple().exponent > -2:
        number = number.quantize(Decimal("0.01"))
    return f"{number:,f}"


@dataclass(frozen=True)
class Logo:
    uri: str  # the path of its JPEG file, in LOGO_DIR
    width: float  # points, as drawn
    height: float


def logo_image(logo: bytes | None) -> Logo | None:
    """The logo as a JPEG file with its drawn size, decoded and converted once per distinct
    logo: the PDF embeds a JPEG as it is, where a PNG or GIF would be decoded and recompressed
    for every invoice."""
    if not logo:
        return None
    key = hashlib.sha1(logo, usedforsecurity=False).hexdigest()
    found = _LOGO_CACHE.get(key)
    if found is None or not Path(found.uri).exists():  # a temp cleaner may have taken it
        if len(_LOGO_CACHE) > 64:
            _LOGO_CACHE.clear()
        jpeg, (width, height) = _as_jpeg(logo)
        scale = min(LOGO_HEIGHT / height, LOGO_MAX_WIDTH / width)
        found = Logo(str(_kept(f"{key}.jpg", jpeg)), round(width * scale, 1),
                     round(height * scale, 1))
        _LOGO_CACHE[key] = found
    return found


def _kept(name: str, content: bytes) -> Path:
    """The file `name` in LOGO_DIR with `content`, written whole (another worker process may
    be reading it: it sees the old file or the new one, never half of one)."""
    LOGO_DIR.mkdir(mode=0o700, exist_ok=True)
    path = LOGO_DIR / name
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=LOGO_DIR)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(temporary, path)
    return path


def _as_jpeg(logo: bytes) -> tuple[bytes, tuple[int, int]]:
    from PIL import Image

    with Image.open(io.BytesIO(logo)) as image:
        image = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))  # transparency over white paper
        out = io.BytesIO()
        flat.save(out, "JPEG", quality=92)
        return out.getvalue(), image.size


def lines_of(text: str | None) -> list[str]:
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip()]


class ClassicForm(InvoiceForm):
    plugin_id = "classic"
    name = "Classic (remittance stub)"
    version = "0.1.0"

    def html(self, invoice: Any, branding: Mapping[str, Any]) -> str:
        """The HTML xhtml2pdf draws (the benchmark's floor renders this same text)."""
        design = invoice.design
        return _template().render(
            inv=invoice, brand=branding, design=design,
            columns=[c for c in COLUMN_TITLES if c in design.columns],
            titles=COLUMN_TITLES, money=invoice.money,
            logo=logo_image(branding.get("logo")),
            address=lines_of(branding.get("address")),
            billing_address=lines_of(branding.get("billing_address")),
            header=lines_of(design.header_text), footer=lines_of(design.footer_text))

    def render(self, invoice: Any, branding: Mapping[str, Any]) -> bytes:
        pdf = pdf_of(self.html(invoice, branding))
        if pdf is None:
            raise RenderError(f"invoice {invoice.number} could not be drawn")
        return pdf


def pdf_of(html: str) -> bytes | None:
    """xhtml2pdf on the form's HTML (None when it fails)."""
    out = io.BytesIO()
    result = pisa.CreatePDF(html, dest=out, default_css=BASE_CSS, path=str(LOGO_DIR),
                            resource_policy=_POLICY)
    return None if result.err else out.getvalue()
