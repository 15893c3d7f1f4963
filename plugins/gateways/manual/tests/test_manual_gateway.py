"""The manual gateway: payments recorded by staff, processed at once, keyed by our id."""

from __future__ import annotations

import inspect

import pytest
from headend.db import db
from headend.plugins.interfaces import BILLING_METHODS, PaymentGateway, PaymentResult, PaymentStatus
from headend.plugins.services import configure_plugin, plugin_settings
from headend.tenancy.context import acting_as
from headend_gateway_manual import ManualGateway

GATEWAY = ManualGateway()


@pytest.mark.parametrize("method", ["cash", "check", "bank_transfer", "other"])
def test_purchase_is_processed_at_once(method):
    result = GATEWAY.purchase({}, "pay-1", 2_500, "USD", method)
    assert result == PaymentResult(PaymentStatus.PROCESSED, "pay-1", 2_500, "USD",
                                   "manual-pay-1", message=f"{method} received")
    assert GATEWAY.purchase({}, "pay-1", 2_500, "USD", method) == result


def test_card_or_unknown_methods_are_refused():
    for method in ("card", "echeck", "bitcoin"):
        result = GATEWAY.purchase({}, "pay-1", 2_500, "USD", method)
        assert result.status == PaymentStatus.ERROR and method in result.message
        assert result.provider_ref is None


def test_refund_hands_money_back_and_void_cancels():
    refund = GATEWAY.refund({}, "ref-1", "manual-pay-1", 1_000, "USD")
    assert (refund.status, refund.amount, refund.reversal, refund.provider_ref) == (
        PaymentStatus.PROCESSED, 1_000, "refund", "manual-ref-1")
    void = GATEWAY.void({}, "void-1", "manual-pay-1")
    assert (void.status, void.provider_ref) == (PaymentStatus.CANCELLED, "manual-pay-1")


def test_authorize_and_capture_are_refused_as_results():
    for result in (GATEWAY.authorize({}, "auth-1", 500, "USD", "cash"),
                   GATEWAY.capture({}, "cap-1", "manual-auth-1", 500, "USD")):
        assert result.status == PaymentStatus.ERROR and "not supported" in result.message


def test_payment_info_echoes_processed_and_webhooks_are_ignored():
    assert GATEWAY.get_payment_info({}, "pay-1") == PaymentResult(
        PaymentStatus.PROCESSED, "pay-1", provider_ref="manual-pay-1")
    assert GATEWAY.get_payment_info({}, "pay-1", "manual-pay-1").provider_ref == "manual-pay-1"
    assert GATEWAY.handle_webhook({}, None, {}, b"{}") is None


def test_offline_methods_only_and_nothing_saved():
    assert set(GATEWAY.methods) <= set(BILLING_METHODS)
    assert GATEWAY.methods == ("cash", "check", "bank_transfer", "other")
    assert GATEWAY.saves_methods is False and list(GATEWAY.config_schema) == []
    with pytest.raises(NotImplementedError):
        GATEWAY.create_customer({}, "SUB-1", "Ada", "ada@example.org")
    for name in ("purchase", "authorize", "capture", "void", "refund", "get_payment_info",
                 "handle_webhook"):
        assert inspect.signature(getattr(ManualGateway, name)).parameters.keys() == \
            inspect.signature(getattr(PaymentGateway, name)).parameters.keys(), name


def test_enabled_per_tenant_without_settings(app, make_tenant):
    tenant, other = make_tenant("Cash Valley"), make_tenant("Card Only")
    with app.app_context(), acting_as(tenant):
        configure_plugin(db.session, "manual", True, {})
        db.session.commit()
        assert plugin_settings(db.session, "manual") == {}
    pm = app.extensions["headend_plugins"]
    with app.app_context():
        assert [g.plugin_id for g in pm.plugins_for(tenant, "payment_gateway")] == ["manual"]
        assert pm.plugins_for(other, "payment_gateway") == []


def test_both_gateways_are_on_the_plugins_page(make_tenant, login_as):
    page = login_as(make_tenant(), "Admin").get("/plugins/")
    assert page.status_code == 200
    assert b"Manual payments (cash, check, bank transfer)" in page.data
    assert b"Stripe" in page.data and b"payment gateway" in page.data
