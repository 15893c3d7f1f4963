"""The manual payment gateway plugin: registers ManualGateway with Headend."""

from __future__ import annotations

from headend import hookimpl

from headend_gateway_manual.gateway import ManualGateway

__all__ = ["ManualGateway"]


@hookimpl
def register_payment_gateways():
    return [ManualGateway()]
