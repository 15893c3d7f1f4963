"""The AvaTax engine through the real SDK against the protocol-level fake in tests/peers."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
from headend.db import db
from headend.errors import ValidationFailed
from headend.plugins.interfaces import (
    TaxEngineRejected,
    TaxEngineUnavailable,
    TaxLine,
    TaxRequest,
)
from headend.plugins.services import configure_plugin, plugin_settings
from headend.tenancy.context import acting_as
from headend_tax_avalara import AvalaraTax

from tests.peers.avatax import ACCOUNT_ID, COMPANY, LICENSE_KEY

ENGINE = AvalaraTax()
CHICAGO = {"line1": "100 N State St", "city": "Chicago", "region": "IL", "country": "US",
           "postal_code": "60601"}


@pytest.fixture
def settings(avatax_server):
    return {"account_id": ACCOUNT_ID, "license_key": LICENSE_KEY, "company_code": COMPANY,
            "base_url": avatax_server.url, "timeout": 2}


def invoice(code="INV-2026-0001", *lines, address=CHICAGO):
    lines = lines or (TaxLine(1, 10_000, item_code="TRIPLE", tax_code="P0000000"),
                      TaxLine(2, 4_999, item_code="SETUP"))
    return TaxRequest(code, "SUB-42", dt.date(2026, 3, 1), "USD", address, tuple(lines))


def test_quote_itemises_jurisdictions_and_records_nothing(settings, avatax_server):
    result = ENGINE.quote(settings, invoice())
    # 100.00: 6.25 + 1.00 + 2.00; 49.99: 3.124375 -> 3.12, 0.4999 -> 0.50, 0.9998 -> 1.00
    assert [(r.number, r.tax, r.taxable) for r in result.lines] == [(1, 925, 10_000),
                                                                   (2, 462, 4_999)]
    assert result.total_tax == 1_387 and result.engine_ref is None
    assert [(d.jurisdiction, d.tax_name, d.rate, d.tax) for d in result.lines[1].details] == [
        ("ILLINOIS", "IL STATE TAX", Decimal("6.25"), 312),
        ("COOK", "IL COUNTY TAX", Decimal(1), 50),
        ("CHICAGO", "IL CITY TAX", Decimal(2), 100)]
    assert avatax_server.transactions == {}
    assert avatax_server.requests == [("POST", "/api/v2/transactions/create")]


def test_exempt_line_and_untaxed_region(settings):
    exempt = ENGINE.quote(settings, invoice("Q-1", TaxLine(1, 10_000, exemption_code="RESALE")))
    assert (exempt.total_tax, exempt.lines[0].tax, exempt.lines[0].taxable) == (0, 0, 0)
    oregon = ENGINE.quote(settings, invoice("Q-2", address={**CHICAGO, "region": "OR",
                                                            "postal_code": "97201"}))
    assert oregon.total_tax == 0


def test_post_records_one_committed_transaction_under_our_code(settings, avatax_server):
    result = ENGINE.post(settings, invoice())
    stored = avatax_server.stored("INV-2026-0001")
    assert (stored["status"], stored["type"], stored["totalTax"]) == (
        "Committed", "SalesInvoice", Decimal("13.87"))
    assert result.total_tax == 1_387 and result.engine_ref == str(stored["id"])


def test_posting_the_same_invoice_twice_leaves_one_transaction(settings, avatax_server):
    first = ENGINE.post(settings, invoice())
    again = ENGINE.post(settings, invoice())
    assert first == again
    assert list(avatax_server.transactions) == [(COMPANY, "INV-2026-0001")]
    assert avatax_server.stored("INV-2026-0001")["version"] == 2


def test_void_cancels_the_transaction_and_tolerates_an_unknown_one(settings, avatax_server):
    ENGINE.post(settings, invoice("INV/2026+7"))  # characters AvaTax escapes in URL paths
    ENGINE.void(settings, "INV/2026+7")
    assert avatax_server.stored("INV/2026+7")["status"] == "Cancelled"
    ENGINE.void(settings, "NEVER-POSTED")  # its post failed: nothing to void
    assert list(avatax_server.transactions) == [(COMPANY, "INV/2026+7")]


def test_server_errors_and_refused_connections_mean_unavailable(settings, avatax_server):
    avatax_server.fail_with = 503
    with pytest.raises(TaxEngineUnavailable, match="503"):
        ENGINE.post(settings, invoice())
    assert avatax_server.transactions == {}
    with pytest.raises(TaxEngineUnavailable, match="ConnectionError"):
        ENGINE.post({**settings, "base_url": avatax_server.closed_url()}, invoice())
    avatax_server.fail_with = None
    ENGINE.post(settings, invoice())
    assert len(avatax_server.transactions) == 1


def test_timeout_is_unavailable_and_the_retry_does_not_double(settings, avatax_server):
    avatax_server.delay = 1.5  # longer than the 1 s timeout; the server still records it
    with pytest.raises(TaxEngineUnavailable, match="Timeout"):
        ENGINE.post({**settings, "timeout": 1}, invoice())
    avatax_server.delay = 0
    deadline = time.monotonic() + 5
    while not avatax_server.transactions and time.monotonic() < deadline:
        time.sleep(0.05)
    ENGINE.post(settings, invoice())
    assert list(avatax_server.transactions) == [(COMPANY, "INV-2026-0001")]


def test_bad_credentials_and_bad_documents_are_rejected(settings, avatax_server):
    with pytest.raises(TaxEngineRejected, match="AuthenticationException"):
        ENGINE.quote({**settings, "license_key": "wrong"}, invoice())
    with pytest.raises(TaxEngineRejected, match="CompanyNotFoundError"):
        ENGINE.post({**settings, "company_code": "NOPE"}, invoice())
    with pytest.raises(TaxEngineRejected, match="lines"):
        ENGINE.post(settings, TaxRequest("INV-9", "SUB-1", dt.date(2026, 3, 1), "USD", CHICAGO,
                                         ()))
    with pytest.raises(TaxEngineRejected, match="license_key"):
        ENGINE.quote({**settings, "license_key": None}, invoice())
    assert avatax_server.transactions == {}


def test_license_key_is_stored_encrypted_and_used(app, make_tenant, avatax_server):
    tenant = make_tenant("Avalara Fiber")
    values = {"account_id": ACCOUNT_ID, "company_code": COMPANY, "base_url": avatax_server.url}
    with app.app_context(), acting_as(tenant):
        with pytest.raises(ValidationFailed) as refused:
            configure_plugin(db.session, "avalara", True, values)
        assert "license_key" in refused.value.errors
        configure_plugin(db.session, "avalara", True, {**values, "license_key": LICENSE_KEY})
        db.session.commit()
        raw = db.session.execute(sa.text(
            "SELECT config, secret_config FROM plugin_configuration WHERE plugin_id = 'avalara'"
        )).one()
        assert LICENSE_KEY not in str(raw.config) and LICENSE_KEY not in raw.secret_config
        settings = plugin_settings(db.session, "avalara")
        (engine,) = app.extensions["headend_plugins"].plugins_for(tenant, "tax_engine")
    assert settings["license_key"] == LICENSE_KEY and settings["timeout"] == 5
    assert engine.plugin_id == "avalara"
    assert engine.post(settings, invoice()).total_tax == 1_387


def test_both_tax_engines_are_found_through_their_entry_points(app):
    engines = {p.plugin_id for p in app.extensions["headend_plugins"].of_kind("tax_engine")}
    assert {"simple_tax", "avalara"} <= engines
