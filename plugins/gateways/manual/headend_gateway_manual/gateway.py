"""Payments that staff record by hand once the money is in: cash, checks, bank transfers.

There is no provider to ask, so every payment is processed the moment it is recorded, and the
core's own records are the truth (a check's number, who took the cash). The provider reference
is derived from our transaction id, which makes every call idempotent by construction. Nothing
is held for later, so authorize/capture are refused; a void cancels the record and a refund is
money handed back.
"""

from __future__ import annotations

from headend.plugins.interfaces import PaymentGateway, PaymentResult, PaymentStatus

VERSION = "0.1.0"


def reference(transaction_id: str) -> str:
    return f"manual-{transaction_id}"


class ManualGateway(PaymentGateway):
    plugin_id = "manual"
    name = "Manual payments (cash, check, bank transfer)"
    version = VERSION
    methods = ("cash", "check", "bank_transfer", "other")

    def purchase(self, settings, transaction_id, amount, currency, payment_method,
                 customer_ref=None):
        """Record money received; `payment_method` is the billing method (cash, check...)."""
        if payment_method not in self.methods:
            return PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency,
                                 message=f"The manual gateway takes {', '.join(self.methods)}, "
                                         f"not {payment_method!r}")
        return PaymentResult(PaymentStatus.PROCESSED, transaction_id, amount, currency,
                             reference(transaction_id), message=f"{payment_method} received")

    def authorize(self, settings, transaction_id, amount, currency, payment_method,
                  customer_ref=None):
        return self._not_supported(transaction_id, amount, currency, "authorize")

    def capture(self, settings, transaction_id, provider_ref, amount, currency):
        return self._not_supported(transaction_id, amount, currency, "capture")

    @staticmethod
    def _not_supported(transaction_id, amount, currency, what) -> PaymentResult:
        return PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency,
                             message=f"{what} is not supported: manual payments are recorded "
                                     "once the money is in")

    def void(self, settings, transaction_id, provider_ref):
        return PaymentResult(PaymentStatus.CANCELLED, transaction_id, provider_ref=provider_ref,
                             message="recorded payment cancelled")

    def refund(self, settings, transaction_id, provider_ref, amount, currency):
        return PaymentResult(PaymentStatus.PROCESSED, transaction_id, amount, currency,
                             reference(transaction_id), message="money handed back",
                             reversal="refund")

    def get_payment_info(self, settings, transaction_id, provider_ref=None):
        """Processed: a manual payment exists only once it was recorded as received."""
        return PaymentResult(PaymentStatus.PROCESSED, transaction_id,
                             provider_ref=provider_ref or reference(transaction_id))

    def handle_webhook(self, settings, transaction_id, headers, body):
        return None
