"""Sales tax from Avalara AvaTax through the `avalara` SDK.

quote creates a SalesOrder (AvaTax computes it and records nothing); post uses CreateOrAdjust
with our invoice number as the transaction code and commit=true, so posting the same invoice
again (a retry after a timeout) adjusts the one transaction instead of recording a second one;
void voids it with DocVoided. A failure that may pass (no connection, timeout, 429, 5xx) raises
TaxEngineUnavailable so the core keeps the invoice waiting and retries; anything else AvaTax
refuses raises TaxEngineRejected with AvaTax's message.
"""

from __future__ import annotations

import requests
from avalara import AvataxClient
from headend.plugins.interfaces import (
    ConfigSchema,
    Field,
    TaxEngine,
    TaxEngineRejected,
    TaxEngineUnavailable,
    TaxRequest,
    TaxResult,
)

from headend_tax_avalara import wire

SANDBOX_URL = "https://sandbox-rest.avatax.com"
APP_NAME = "Headend"
VERSION = "0.1.0"
_INCLUDE = {"$include": "Details"}


def _client(settings) -> AvataxClient:
    missing = [name for name in ("account_id", "license_key", "company_code")
               if not settings.get(name)]
    if missing:
        raise TaxEngineRejected(f"AvaTax is not configured: set {', '.join(missing)}")
    client = AvataxClient(APP_NAME, VERSION, "headend", settings.get("base_url") or SANDBOX_URL,
                          timeout_limit=settings.get("timeout") or 5)
    return client.add_credentials(str(settings["account_id"]), settings["license_key"])


def _call(what: str, send, missing_ok: bool = False) -> requests.Response:
    """Run one SDK call and sort its failure into "try again later" or "refused"."""
    try:
        response = send()
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TaxEngineUnavailable(f"AvaTax {what}: {type(exc).__name__}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise TaxEngineUnavailable(f"AvaTax {what}: HTTP {response.status_code}")
    if response.status_code == 404 and missing_ok:
        return response
    if response.status_code >= 400:
        raise TaxEngineRejected(f"AvaTax {what}: {wire.error_message(response.text)}")
    return response


def _transaction(response: requests.Response, what: str) -> dict:
    try:
        return wire.decode(response.text)
    except ValueError as exc:  # a proxy's error page, a truncated body
        raise TaxEngineUnavailable(f"AvaTax {what}: the answer is not JSON") from exc


class AvalaraTax(TaxEngine):
    plugin_id = "avalara"
    name = "Avalara AvaTax"
    version = VERSION
    config_schema = ConfigSchema((
        Field("account_id", "str", label="Account ID", required=True),
        Field("license_key", "str", required=True, secret=True),
        Field("company_code", "str", required=True, help="The company's code in AvaTax"),
        Field("base_url", "str", label="Service URL", default=SANDBOX_URL,
              help="https://rest.avatax.com for production"),
        Field("timeout", "int", label="Timeout (seconds)", default="5",
              help="How long to wait for AvaTax before the invoice waits and retries"),
    ))

    def quote(self, settings, request: TaxRequest) -> TaxResult:
        client = _client(settings)
        model = wire.transaction_model(request, settings["company_code"], "SalesOrder",
                                       commit=False)
        response = _call("quote", lambda: client.create_transaction(model, _INCLUDE))
        return wire.tax_result(_transaction(response, "quote"), request.currency, False)

    def post(self, settings, request: TaxRequest) -> TaxResult:
        client = _client(settings)
        model = {
            "adjustmentReason": "Other",
            "adjustmentDescription": "Headend posted this invoice again",
            "createTransactionModel": wire.transaction_model(
                request, settings["company_code"], "SalesInvoice", commit=True),
        }
        response = _call("post", lambda: client.create_or_adjust_transaction(model, _INCLUDE))
        return wire.tax_result(_transaction(response, "post"), request.currency, True)

    def void(self, settings, document_code: str) -> None:
        """Void the document; one AvaTax never recorded (its post failed) needs nothing."""
        client = _client(settings)
        _call("void", lambda: client.void_transaction(
            settings["company_code"], wire.path_code(document_code), {"code": "DocVoided"}),
            missing_ok=True)
