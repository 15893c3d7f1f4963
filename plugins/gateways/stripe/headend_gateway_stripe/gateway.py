"""Card payments through Stripe with the official `stripe` SDK (StripeClient, API v1).

Charges are off-session PaymentIntents confirmed at once against a saved PaymentMethod: autopay
and staff charge a card while the cardholder is away, so a card that asks for authentication
(3-D Secure) cannot be charged this way; that intent is cancelled and the result is an error with
decline_code "authentication_required" for the core to ask the subscriber to pay themselves.

Every write carries our transaction id as Stripe's Idempotency-Key (and as metadata
`transaction_id`), so repeating a call, after a timeout for example, returns the first outcome
instead of charging again. The SDK's own retries are off: when Stripe's answer is lost (no
connection, timeout, 5xx, a concurrent request with the same key) the result is "undefined" and
the core reconciles with get_payment_info. Declines are "error" results, never exceptions.

Stripe's amounts are integers in the currency's smallest unit, which are our minor units except
for the few currencies where Stripe's exponent differs from ISO 4217's (see `stripe_amount`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping

import stripe
from headend.money import exponent
from headend.plugins.interfaces import (
    ConfigSchema,
    Field,
    GatewayUnavailable,
    PaymentGateway,
    PaymentResult,
    PaymentStatus,
    SavedMethod,
)

VERSION = "0.1.0"
API_BASE = "https://api.stripe.com"
# How many of the most recent PaymentIntents (and refunds) get_payment_info looks through when it
# has only our transaction id: Stripe lists newest first and the core reconciles soon after.
SEARCH_LIMIT = 1000
# Stripe refuses webhook signatures older than this many seconds (replays).
WEBHOOK_TOLERANCE = 300
_PAGE = 100

# Currencies Stripe counts in whole units, and ISK, which it still counts in hundredths.
_ZERO_DECIMAL = {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX",
                 "VND", "VUV", "XAF", "XOF", "XPF"}
_STRIPE_EXPONENTS = {"ISK": 2, "UGX": 2}  # zero-decimal, but sent with two decimals for history
_THREE_DECIMAL = {"BHD", "JOD", "KWD", "OMR", "TND"}


class NotConfigured(ValueError):
    """The tenant's Stripe settings lack what the call needs."""


def _stripe_exponent(currency: str) -> int:
    code = currency.upper()
    if code in _STRIPE_EXPONENTS:
        return _STRIPE_EXPONENTS[code]
    if code in _ZERO_DECIMAL:
        return 0
    return 3 if code in _THREE_DECIMAL else 2


def stripe_amount(amount: int, currency: str) -> int:
    """Our minor units as Stripe's integer amount; ValueError when it cannot be said exactly."""
    shift = _stripe_exponent(currency) - exponent(currency)
    if shift >= 0:
        return amount * 10**shift
    unit = 10**-shift
    if amount % unit:
        raise ValueError(f"Stripe takes {currency.upper()} in whole units: {amount} minor units "
                         "cannot be charged exactly")
    return amount // unit


def our_amount(amount: int, currency: str) -> int:
    """Stripe's integer amount as our minor units."""
    shift = exponent(currency) - _stripe_exponent(currency)
    return amount * 10**shift if shift >= 0 else amount // 10**-shift


@functools.lru_cache(maxsize=32)
def _cached_client(secret_key: str, api_base: str, timeout: int) -> stripe.StripeClient:
    # One client (and HTTP connection pool) per account and address, reused across calls.
    return stripe.StripeClient(secret_key, base_addresses={"api": api_base},
                               max_network_retries=0,
                               http_client=stripe.RequestsClient(timeout=timeout))


def client(settings: Mapping) -> stripe.StripeClient:
    if not settings.get("secret_key"):
        raise NotConfigured("Stripe is not configured: set secret_key")
    return _cached_client(settings["secret_key"], settings.get("api_base") or API_BASE,
                          int(settings.get("timeout") or 30))


def _plain(obj) -> dict:
    """A Stripe response as plain dicts (stripe 16's objects are not dicts)."""
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _error_body(exc: stripe.StripeError) -> dict:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    return dict(body.get("error") or {})


def _message(exc: stripe.StripeError) -> str:
    return _error_body(exc).get("message") or exc.user_message or type(exc).__name__


def _unreachable(exc: stripe.StripeError) -> bool:
    """The request may or may not have been carried out: its answer was lost or was a 5xx/409."""
    return isinstance(exc, stripe.APIConnectionError | stripe.APIError)


def _failure(transaction_id: str, exc: stripe.StripeError, amount: int,
             currency: str) -> PaymentResult:
    """A Stripe exception as a result: declines are errors with a code, lost answers undefined."""
    base = PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency.upper())
    if _unreachable(exc):
        return dataclasses.replace(base, status=PaymentStatus.UNDEFINED, message=(
            f"Stripe's answer was lost ({type(exc).__name__}); the outcome is unknown"))
    error = _error_body(exc)
    intent = error.get("payment_intent")
    ref = intent.get("id") if isinstance(intent, dict) else None
    if isinstance(exc, stripe.CardError):
        return dataclasses.replace(
            base, provider_ref=ref, message=_message(exc),
            decline_code=error.get("decline_code") or exc.code or "card_declined")
    return dataclasses.replace(base, provider_ref=ref,
                               message=f"Stripe refused the request: {_message(exc)}")


def _charge(intent: dict) -> dict:
    """The intent's latest charge when it came expanded (localstripe), else {} (an id)."""
    charge = intent.get("latest_charge")
    return charge if isinstance(charge, dict) else {}


def intent_result(transaction_id: str, intent: dict, amount: int | None = None) -> PaymentResult:
    """Our view of a PaymentIntent: what happened to the payment it stands for.

    `amount` (minor units) is what the call asked for, reported when Stripe does not say how much
    was received (localstripe lacks `amount_received`).
    """
    currency = intent["currency"].upper()
    received = intent.get("amount_received") or _charge(intent).get("amount_captured")
    if received:
        amount = our_amount(received, currency)
    elif amount is None:
        amount = our_amount(intent["amount"], currency)
    base = PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency,
                         provider_ref=intent["id"])
    status = intent["status"]
    if status == "succeeded":
        return dataclasses.replace(base, status=PaymentStatus.PROCESSED, message="paid")
    if status == "requires_capture":
        return dataclasses.replace(base, status=PaymentStatus.PROCESSED, message="authorized")
    if status == "processing":
        return dataclasses.replace(base, status=PaymentStatus.PENDING,
                                   message="Stripe is still processing the payment")
    if status == "canceled":
        return dataclasses.replace(base, status=PaymentStatus.CANCELLED, message="cancelled")
    if status == "requires_action":
        return dataclasses.replace(
            base, decline_code="authentication_required",
            message="The card asks for the cardholder's authentication, which an off-session "
                    "charge cannot give: the subscriber must pay with the card themselves")
    error = intent.get("last_payment_error") or {}
    if status == "requires_payment_method" and error:
        return dataclasses.replace(
            base, decline_code=error.get("decline_code") or error.get("code") or "card_declined",
            message=error.get("message") or "The card was declined")
    return dataclasses.replace(base, message=f"The payment is not complete at Stripe ({status})")


def refund_result(transaction_id: str, refund: dict) -> PaymentResult:
    currency = refund["currency"].upper()
    status = {"succeeded": PaymentStatus.PROCESSED, "pending": PaymentStatus.PENDING,
              "requires_action": PaymentStatus.PENDING, "canceled": PaymentStatus.CANCELLED,
              }.get(refund.get("status"), PaymentStatus.ERROR)
    message = refund.get("failure_reason") or f"refund {refund.get('status')}"
    return PaymentResult(status, transaction_id, our_amount(refund["amount"], currency), currency,
                         provider_ref=refund["id"], message=message, reversal="refund")


def _transaction_of(obj: Mapping) -> str | None:
    return (obj.get("metadata") or {}).get("transaction_id")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


class StripeGateway(PaymentGateway):
    plugin_id = "stripe"
    name = "Stripe"
    version = VERSION
    # Cards only: localstripe, which the tests run against, has no us_bank_account (ACH).
    methods = ("card",)
    saves_methods = True
    config_schema = ConfigSchema((
        Field("secret_key", "str", required=True, secret=True,
              help="sk_live_... (or sk_test_... for Stripe's test mode)"),
        Field("publishable_key", "str", help="pk_live_..., used by the card form in the browser"),
        Field("webhook_secret", "str", secret=True,
              help="whsec_... of the webhook endpoint set up in Stripe's dashboard"),
        Field("api_base", "str", label="API address", default=API_BASE,
              help="Stripe's API; change only to test against a fake Stripe"),
        Field("timeout", "int", label="Timeout (seconds)", default="30",
              help="How long to wait for Stripe before the outcome counts as unknown"),
    ))

    # --- customers and saved methods (exceptions: ValueError when refused, GatewayUnavailable
    # when Stripe cannot be reached) ------------------------------------------------------

    def create_customer(self, settings, customer_code, name, email):
        params = {"name": name, "email": email, "metadata": {"customer_code": customer_code}}
        customer = self._call(lambda c: c.v1.customers.create(
            params, {"idempotency_key": f"headend-customer-{customer_code}"}), settings)
        return customer["id"]

    def save_method(self, settings, customer_ref, token):
        if token.startswith("tok_"):
            # A card token (Stripe.js createToken; all localstripe's Stripe.js stand-in makes):
            # attached as the customer's card source; card_ ids are charged like PaymentMethods.
            card = self._call(lambda c: c.v1.customers.payment_sources.create(
                customer_ref, {"source": token}), settings)
            return SavedMethod(card["id"], "card", brand=(card.get("brand") or "").lower(),
                               last4=card.get("last4") or "", exp_month=card.get("exp_month"),
                               exp_year=card.get("exp_year"))
        method = self._call(lambda c: c.v1.payment_methods.attach(
            token, {"customer": customer_ref}), settings)
        card = method.get("card") or {}
        return SavedMethod(method["id"], "card", brand=card.get("brand") or "",
                           last4=card.get("last4") or "", exp_month=card.get("exp_month"),
                           exp_year=card.get("exp_year"))

    def remove_method(self, settings, provider_ref):
        try:
            self._call(lambda c: c.v1.payment_methods.detach(provider_ref), settings)
        except _Refused as exc:
            if exc.http_status not in (400, 404):
                raise
            # no such method, or attached to nobody: there is nothing left to remove

    @staticmethod
    def _call(send, settings) -> dict:
        try:
            return _plain(send(client(settings)))
        except stripe.StripeError as exc:
            if _unreachable(exc):
                raise GatewayUnavailable(f"Stripe could not be reached ({type(exc).__name__})"
                                      ) from exc
            raise _Refused(_message(exc), exc.http_status) from exc

    # --- payments ------------------------------------------------------------------------

    def purchase(self, settings, transaction_id, amount, currency, payment_method,
                 customer_ref=None):
        return self._confirm(settings, transaction_id, amount, currency, payment_method,
                             customer_ref, capture_method=None)

    def authorize(self, settings, transaction_id, amount, currency, payment_method,
                  customer_ref=None):
        return self._confirm(settings, transaction_id, amount, currency, payment_method,
                             customer_ref, capture_method="manual")

    def _confirm(self, settings, transaction_id, amount, currency, payment_method, customer_ref,
                 capture_method):
        failed = PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency.upper())
        try:
            stripe_client = client(settings)
            params = {"amount": stripe_amount(amount, currency), "currency": currency.lower(),
                      "payment_method": payment_method, "payment_method_types": ["card"],
                      "confirm": True, "off_session": True,
                      "metadata": {"transaction_id": transaction_id}}
        except ValueError as exc:
            return dataclasses.replace(failed, message=str(exc))
        if customer_ref:
            params["customer"] = customer_ref
        if capture_method:
            params["capture_method"] = capture_method
        try:
            intent = _plain(stripe_client.v1.payment_intents.create(
                params, {"idempotency_key": transaction_id}))
        except stripe.StripeError as exc:
            return _failure(transaction_id, exc, amount, currency)
        if intent["status"] == "requires_action":
            self._abandon(stripe_client, intent["id"], transaction_id)
        return intent_result(transaction_id, intent, amount)

    @staticmethod
    def _abandon(stripe_client, intent_id: str, transaction_id: str) -> None:
        """Cancel an intent waiting for authentication nobody will give, so it cannot succeed
        after we reported it failed (best effort: if this fails it stays unpaid anyway)."""
        try:
            stripe_client.v1.payment_intents.cancel(
                intent_id, options={"idempotency_key": f"{transaction_id}-abandon"})
        except stripe.StripeError:
            pass

    def capture(self, settings, transaction_id, provider_ref, amount, currency):
        return self._intent_call(
            settings, transaction_id, amount, currency,
            lambda c: c.v1.payment_intents.capture(
                provider_ref, {"amount_to_capture": stripe_amount(amount, currency)},
                {"idempotency_key": transaction_id}))

    def void(self, settings, transaction_id, provider_ref):
        return self._intent_call(
            settings, transaction_id, 0, "",
            lambda c: c.v1.payment_intents.cancel(
                provider_ref, options={"idempotency_key": transaction_id}))

    def _intent_call(self, settings, transaction_id, amount, currency, send) -> PaymentResult:
        try:
            intent = _plain(send(client(settings)))
        except ValueError as exc:  # not configured, or an amount Stripe cannot take
            return PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency.upper(),
                                 message=str(exc))
        except stripe.StripeError as exc:
            return _failure(transaction_id, exc, amount, currency)
        return intent_result(transaction_id, intent, amount or None)

    def refund(self, settings, transaction_id, provider_ref, amount, currency):
        """Void (cancel) the intent while it is not captured, refund it after.

        Both are sent with our refund's transaction id as the idempotency key, so repeating a
        refund that went through gets its first answer back rather than a second refund (or a
        refusal to cancel twice)."""
        failed = PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency.upper())
        try:
            stripe_client = client(settings)
            stripe_value = stripe_amount(amount, currency)
            intent = _plain(stripe_client.v1.payment_intents.retrieve(provider_ref))
        except ValueError as exc:
            return dataclasses.replace(failed, message=str(exc))
        except stripe.StripeError as exc:
            # nothing was given back yet: a known outcome, whatever Stripe answered
            return dataclasses.replace(failed, message=f"Nothing was refunded: {_message(exc)}")
        options = {"idempotency_key": transaction_id}
        status = intent["status"]
        if status in ("succeeded", "processing"):
            try:
                refund = stripe_client.v1.refunds.create(
                    {"payment_intent": provider_ref, "amount": stripe_value,
                     "metadata": {"transaction_id": transaction_id}}, options)
            except stripe.StripeError as exc:
                return dataclasses.replace(_failure(transaction_id, exc, amount, currency),
                                           reversal="refund")
            return refund_result(transaction_id, _plain(refund))
        if status not in ("requires_capture", "canceled"):
            return dataclasses.replace(failed, provider_ref=provider_ref, message=(
                f"Nothing was paid ({status}): there is nothing to give back"))
        # Not captured: release it. One already cancelled was so by this same refund (Stripe
        # replays the answer) or by another call (Stripe refuses to cancel it again).
        if stripe_value != intent["amount"]:
            return dataclasses.replace(failed, provider_ref=provider_ref, message=(
                "This payment is only authorized: it can be released whole (a void), not in "
                "part; capture less instead"))
        try:
            cancelled = _plain(stripe_client.v1.payment_intents.cancel(provider_ref,
                                                                       options=options))
        except stripe.StripeError as exc:
            return dataclasses.replace(_failure(transaction_id, exc, amount, currency),
                                       reversal="void")
        result = intent_result(transaction_id, cancelled, amount)
        if result.status == PaymentStatus.CANCELLED:
            result = dataclasses.replace(result, status=PaymentStatus.PROCESSED,
                                         message="authorization released")
        return dataclasses.replace(result, reversal="void")

    # --- reconciliation ------------------------------------------------------------------

    def get_payment_info(self, settings, transaction_id, provider_ref=None):
        """Stripe's view of one of our transactions.

        With a provider_ref: the refund (re_...) or the PaymentIntent (pi_...); for a
        PaymentIntent that is not this transaction's own, its refund carrying our id when there
        is one. Without: the PaymentIntent, else the refund, whose metadata names our id among
        the latest SEARCH_LIMIT. Not found: an error when everything was searched (it never
        reached Stripe), undefined when older ones were left unsearched.
        """
        unknown = PaymentResult(PaymentStatus.UNDEFINED, transaction_id, provider_ref=provider_ref)
        try:
            return self._lookup(client(settings), transaction_id, provider_ref)
        except NotConfigured as exc:
            return dataclasses.replace(unknown, message=str(exc))
        except stripe.StripeError as exc:
            return dataclasses.replace(unknown, message=f"Stripe could not tell: {_message(exc)}")

    @staticmethod
    def _lookup(stripe_client, transaction_id, provider_ref) -> PaymentResult:
        if provider_ref and provider_ref.startswith("re_"):
            return refund_result(transaction_id,
                                 _plain(stripe_client.v1.refunds.retrieve(provider_ref)))
        if provider_ref:
            intent = _plain(stripe_client.v1.payment_intents.retrieve(provider_ref))
            if _transaction_of(intent) != transaction_id:
                refund, _ = _find(stripe_client.v1.refunds.list(
                    {"payment_intent": provider_ref, "limit": _PAGE}), transaction_id)
                if refund is not None:
                    return refund_result(transaction_id, refund)
            return intent_result(transaction_id, intent)
        intent, all_intents = _find(stripe_client.v1.payment_intents.list({"limit": _PAGE}),
                                    transaction_id)
        if intent is not None:
            return intent_result(transaction_id, intent)
        refund, all_refunds = _find(stripe_client.v1.refunds.list({"limit": _PAGE}),
                                    transaction_id)
        if refund is not None:
            return refund_result(transaction_id, refund)
        if all_intents and all_refunds:
            return PaymentResult(PaymentStatus.ERROR, transaction_id, message=(
                "Stripe has no payment or refund with this transaction id"))
        return PaymentResult(PaymentStatus.UNDEFINED, transaction_id, message=(
            f"Not among Stripe's latest {SEARCH_LIMIT} payments and refunds"))

    # --- notifications -------------------------------------------------------------------

    def handle_webhook(self, settings, transaction_id, headers, body):
        """Check the Stripe-Signature (HMAC-SHA256 of "timestamp.body" with the endpoint's
        secret, at most WEBHOOK_TOLERANCE seconds old) and translate the event.

        payment_intent.succeeded and .payment_failed name the payment; charge.refunded names
        the refund by our refund's transaction id, or, for a refund made outside Headend (in
        Stripe's dashboard), the refunded payment's, which may need asking Stripe. ValueError
        when the signature or body is bad; GatewayUnavailable when Stripe could not be asked (the
        endpoint answers 5xx and Stripe delivers again).
        """
        secret = settings.get("webhook_secret")
        if not secret:
            raise NotConfigured("Stripe webhooks need the webhook_secret setting")
        try:
            stripe.WebhookSignature.verify_header(body, _header(headers, "Stripe-Signature"),
                                                  secret, WEBHOOK_TOLERANCE)
        except stripe.SignatureVerificationError as exc:
            raise ValueError(f"Stripe webhook refused: {exc.user_message or exc}") from exc
        event = json.loads(body)
        obj = (event.get("data") or {}).get("object") or {}
        kind = event.get("type")
        if kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
            ours = _transaction_of(obj) or transaction_id
            result = intent_result(ours, obj) if ours else None
        elif kind == "charge.refunded":
            result = self._refunded(settings, obj, transaction_id)
        else:
            result = None
        return dataclasses.replace(result, event_id=event["id"]) if result else None

    def _refunded(self, settings, charge: dict, transaction_id: str | None):
        refunds = (charge.get("refunds") or {}).get("data") or []
        newest = max(refunds, key=lambda r: r.get("created") or 0, default=None)
        ours = (newest and _transaction_of(newest)) or _transaction_of(charge)
        intent = charge.get("payment_intent")
        if not ours and isinstance(intent, dict):
            ours = _transaction_of(intent)
        elif not ours and intent:
            # Stripe does not copy the intent's metadata to its charge: ask for it
            ours = _transaction_of(self._call(
                lambda c: c.v1.payment_intents.retrieve(intent), settings))
        ours = ours or transaction_id
        if not ours:
            return None
        if newest is not None:
            return refund_result(ours, newest)
        currency = charge["currency"].upper()
        return PaymentResult(PaymentStatus.PROCESSED, ours,
                             our_amount(charge["amount_refunded"], currency), currency,
                             provider_ref=charge["id"], message="refunded", reversal="refund")


class _Refused(ValueError):
    """Stripe answered no (a 4xx), with its message."""

    def __init__(self, message: str, http_status: int | None):
        super().__init__(message)
        self.http_status = http_status


def _find(page, transaction_id: str) -> tuple[dict | None, bool]:
    """The first object of a Stripe list whose metadata names `transaction_id`, looking at no
    more than SEARCH_LIMIT; and whether the whole list was seen."""
    seen = 0
    for obj in page.auto_paging_iter():
        if seen >= SEARCH_LIMIT:
            return None, False
        seen += 1
        plain = _plain(obj)
        if _transaction_of(plain) == transaction_id:
            return plain, True
    return None, True
