"""The Stripe payment gateway plugin: registers StripeGateway with Headend."""

from __future__ import annotations

from headend import hookimpl

from headend_gateway_stripe.gateway import StripeGateway

__all__ = ["StripeGateway"]


@hookimpl
def register_payment_gateways():
    return [StripeGateway()]
