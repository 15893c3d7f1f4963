"""A tenant taking signups: packages with "Signup Server" options, a complete signup form, and
readers of what a signup left behind, for the signup tests."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal as D

from headend.catalog.models import InternetProfile, Package, PackageServiceLine, Service
from sqlalchemy import func, select

_seq = itertools.count(1)


def signup_package(s, *, name: str | None = None, customer_type: str = "both",
                   pays: bool = False, invoice: bool = False, activate: bool = False,
                   info_prompt: str | None = None, internet: bool = True,
                   signup: bool = True, **over) -> Package:
    """A package open to online signup: 40.00 a month (110.00 a quarter), 25.00 setup, one
    Internet line (with its profile) and, with `internet=False`, a TV line instead."""
    n = next(_seq)
    values = dict(name=name or f"Fiber {n}", description="Symmetric fiber, no data cap.",
                  setup_fee=D("25.00"), price_monthly=D("40.00"), price_quarterly=D("110.00"),
                  customer_type=customer_type, signup_enabled=signup,
                  signup_requires_payment=pays, invoice_after_signup=invoice,
                  activate_after_signup=activate,
                  request_additional_info=info_prompt is not None,
                  additional_info_prompt=info_prompt)
    values.update(over)
    package = Package(**values)
    kind = "internet" if internet else "tv"
    package.service_lines.append(PackageServiceLine(
        service=Service(name=f"{kind} {n}", type=kind), label=kind.capitalize()))
    if internet:
        package.internet_profile = InternetProfile(download_speed=100, upload_speed=100)
    s.add(package)
    s.flush()
    return package


def form(**over) -> dict:
    """A complete residential signup form."""
    values = {"customer_type": "residential", "first_name": "Rosa", "last_name": "Prospect",
              "company": "", "email": "rosa@example.test", "phone": "+1 555 0100",
              "service_line1": "12 Elm St", "service_line2": "", "service_city": "Springfield",
              "service_region": "IL", "service_postal_code": "62701", "service_country": "US",
              "billing_cycle": "monthly", "nonce": "nonce-0123456789abcdef"}
    values.update(over)
    return values


def submit(client, slug: str, package_id: int, **over):
    return client.post(f"/signup/{slug}/{package_id}", data=form(**over))


def count(s, model, *where) -> int:
    return s.scalar(select(func.count()).select_from(model).where(*where))


def text(resp) -> str:
    """The page's text without tags, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", resp.get_data(as_text=True)))
