"""Online signup: a prospect picks a package with "Signup Server" on and becomes a subscriber.

`sign_up` does everything in the caller's transaction, in this order: check every field; create
the subscriber (its additional information as a note) and the package as a pending subscription;
invoice it when the package says "invoice after signup"; when the package requires payment, save
the card and charge what is due (the first invoice, else the setup fee and first period the
first invoice will bill, kept as account credit that invoice consumes); then, per the package,
activate the subscription and its services. A declined card raises PaymentRefused before anything
is activated: the caller rolls the whole transaction back, so a failed payment leaves no
subscriber, no subscription and no invoice behind. A charge whose outcome is not known yet
(pending, or Stripe's answer lost) is kept with the subscription left pending, for the
reconciliation to settle and staff to activate.

Account numbers are drawn in a transaction of their own (`reserve_account_number`): the card's
customer at the provider is keyed by it, so a number must never be handed to a second prospect
after a rolled-back signup.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing.invoicing import billing_preview, invoice_now
from headend.billing.models import Invoice
from headend.catalog.models import Package, TaxRate
from headend.db import utcnow
from headend.errors import NotFound, ValidationFailed, raise_if, require
from headend.network.services import activate, autofill, internet_profile
from headend.payments.models import Payment
from headend.payments.services import receive_payment, save_card
from headend.plugins import events
from headend.signup.models import SignupAttempt
from headend.subscribers.models import Subscriber, Subscription
from headend.subscribers.services import (
    add_note,
    add_package,
    create_subscriber,
    next_account_number,
)
from headend.tenancy.models import Tenant

CUSTOMER_TYPES = ("residential", "business")
RATE_LIMIT = 5  # submits per IP and tenant within RATE_WINDOW (app config SIGNUP_RATE_LIMIT)
RATE_WINDOW = dt.timedelta(minutes=10)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,48}$")
# form field -> (subscriber column, most characters, required)
TEXT_FIELDS = {
    "first_name": ("first_name", 100, False),
    "last_name": ("last_name", 100, False),
    "company": ("company", 200, False),
    "email": ("email", 254, True),
    "phone": ("phone", 40, True),
    "service_line1": ("service_line1", 200, True),
    "service_line2": ("service_line2", 200, False),
    "service_city": ("service_city", 100, True),
    "service_region": ("service_region", 100, False),
    "service_postal_code": ("service_postal_code", 20, True),
    "service_country": ("service_country", 2, False),
}
ADDITIONAL_INFO_LIMIT = 2000
NOTE_AUTHOR = "online signup"
ALREADY_SUBMITTED = ("This signup was already sent: check your email, or reload the page to "
                     "sign up again.")


class PaymentRefused(ValidationFailed):
    """The card was declined (or refused when saved): errors name the `card` field, `reason`
    adds the provider's decline code for the attempt's record."""

    def __init__(self, message: str, decline_code: str | None = None):
        super().__init__({"card": message})
        self.reason = f"{decline_code}: {message}" if decline_code else message


# --- the page ------------------------------------------------------------------------------

def signup_tenant(session: Session, slug: str) -> Tenant:
    """The active tenant whose public page `slug` is, else NotFound."""
    tenant = session.scalar(sa.select(Tenant).where(Tenant.slug == slug))
    if tenant is None or not tenant.active:
        raise NotFound(f"no signup page {slug!r}")
    return tenant


def _offered():
    return sa.select(Package).where(Package.signup_enabled.is_(True), Package.active.is_(True))


def offered_packages(session: Session, customer_type: str | None = None) -> list[Package]:
    """The acting tenant's packages open to online signup, for one customer type or all."""
    stmt = _offered()
    if customer_type in CUSTOMER_TYPES:
        stmt = stmt.where(Package.customer_type.in_((customer_type, "both")))
    return list(session.scalars(stmt.order_by(Package.name)))


def offered_package(session: Session, package_id) -> Package:
    """One package open to online signup, else NotFound (another tenant's: not found either)."""
    package = session.scalar(_offered().where(Package.id == package_id)) \
        if isinstance(package_id, int) else None
    if package is None:
        raise NotFound(f"no package {package_id} to sign up for")
    return package


# --- abuse -----------------------------------------------------------------------------------

def too_many_attempts(session: Session, ip: str, limit: int = RATE_LIMIT,
                      window: dt.timedelta = RATE_WINDOW) -> bool:
    """Whether `ip` has already submitted `limit` signups to the acting tenant in `window`."""
    recent = session.scalar(sa.select(sa.func.count()).select_from(SignupAttempt).where(
        SignupAttempt.ip == ip, SignupAttempt.created_at > utcnow() - window))
    return recent >= limit


def record_attempt(session: Session, *, ip: str, status: str, package_id: int | None = None,
                   email: str | None = None, reason: str | None = None,
                   subscriber_id: int | None = None,
                   payment_id: int | None = None) -> SignupAttempt:
    attempt = SignupAttempt(ip=ip[:45], status=status, package_id=package_id,
                            email=(email or "")[:254] or None, reason=reason,
                            subscriber_id=subscriber_id, payment_id=payment_id)
    session.add(attempt)
    session.flush()
    return attempt


# --- signing up ------------------------------------------------------------------------------

def reserve_account_number(session: Session) -> str:
    """The next account number, for the caller to commit before the signup's own transaction."""
    return next_account_number(session)


def valid_nonce(value) -> bool:
    return isinstance(value, str) and bool(_NONCE.match(value))


def _payment_id(nonce: str) -> str:
    """The charge's transaction id (the provider's idempotency key): one per rendered form."""
    return f"signup-{nonce}"


@dataclass(frozen=True)
class Details:
    """A checked signup form."""

    subscriber: dict
    billing_cycle: str
    additional_info: str | None


def _text(form: Mapping, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def check_details(package: Package, form: Mapping) -> Details:
    """The form's fields for `package`, every problem named by its field."""
    errors: dict[str, list[str]] = {}
    values = {}
    for name, (column, limit, required) in TEXT_FIELDS.items():
        value = _text(form, name)
        require(errors, name, not required or bool(value), "is required")
        require(errors, name, len(value) <= limit, f"must be at most {limit} characters")
        values[column] = value or None
    kind = package.customer_type if package.customer_type in CUSTOMER_TYPES \
        else _text(form, "customer_type")
    require(errors, "customer_type", kind in CUSTOMER_TYPES,
            "choose residential or business")
    if kind == "business":
        require(errors, "company", bool(values["company"]), "is required for a business")
    else:
        require(errors, "first_name", bool(values["first_name"]), "is required")
        require(errors, "last_name", bool(values["last_name"]), "is required")
    if values["email"]:
        require(errors, "email", bool(_EMAIL.match(values["email"])), "is not an email address")
    if values["service_country"]:
        values["service_country"] = values["service_country"].upper()
        require(errors, "service_country", values["service_country"].isalpha()
                and len(values["service_country"]) == 2, "must be a two-letter country code")
    cycle = _text(form, "billing_cycle")
    offered = package.offered_cycles()
    require(errors, "billing_cycle", cycle in offered,
            f"choose one of: {', '.join(offered)}" if offered else "this package has no price")
    info = _text(form, "additional_info")
    if package.request_additional_info:
        require(errors, "additional_info", bool(info), "is required")
        require(errors, "additional_info", len(info) <= ADDITIONAL_INFO_LIMIT,
                f"must be at most {ADDITIONAL_INFO_LIMIT} characters")
    raise_if(errors)
    values["customer_type"] = kind
    return Details(values, cycle, info if package.request_additional_info else None)


@dataclass(frozen=True)
class Signup:
    subscriber: Subscriber
    subscription: Subscription
    invoice: Invoice | None
    payment: Payment | None

    @property
    def active(self) -> bool:
        return self.subscription.status == "active"

    @property
    def payment_pending(self) -> bool:
        return self.payment is not None and self.payment.status in ("pending", "undefined")


def check_signup(package: Package, form: Mapping, *, card_token: str | None = None,
                 transaction_id: str | None = None) -> Details:
    """Everything `sign_up` checks before it writes: the details, and the card and the form's
    nonce when the package requires payment."""
    errors: dict[str, list[str]] = {}
    details = None
    try:
        details = check_details(package, form)
    except ValidationFailed as exc:
        errors = exc.errors
    if package.signup_requires_payment:
        require(errors, "card", isinstance(card_token, str) and bool(card_token.strip()),
                "enter your card")
    require(errors, "form", valid_nonce(transaction_id), "the form has expired: reload the page")
    raise_if(errors)
    return details


def sign_up(session: Session, package_id, form: Mapping, *, account_number: str, ip: str,
            card_token: str | None = None, transaction_id: str | None = None,
            today: dt.date | None = None) -> Signup:
    """Make the prospect a subscriber of `package_id` (see the module's docstring for the order
    and what is kept when). Raises ValidationFailed naming fields, PaymentRefused for a declined
    card, payments.GatewayDown when the card could not be saved: the caller rolls back."""
    today = today or dt.date.today()
    package = offered_package(session, package_id)
    details = check_signup(package, form, card_token=card_token, transaction_id=transaction_id)
    pays = package.signup_requires_payment
    claim = _claim_form(session, transaction_id, ip, package.id, details.subscriber["email"])
    billed = pays or package.invoice_after_signup or package.activate_after_signup
    rates = session.scalars(sa.select(TaxRate.id).where(
        TaxRate.require_on_new_subscriber.is_(True), TaxRate.active.is_(True))).all()
    subscriber = create_subscriber(
        session, **details.subscriber, account_number=account_number, status="prospect",
        billing_cycle=details.billing_cycle, tax_rate_ids=list(rates))
    if details.additional_info:
        prompt = package.additional_info_prompt or "Additional information"
        add_note(session, subscriber.id, f"{prompt}\n{details.additional_info}", NOTE_AUTHOR)
    subscription = add_package(session, subscriber.id, package.id,
                               billing_cycle=details.billing_cycle,
                               bill_start_date=today if billed else None)
    invoice = invoice_now(session, subscriber.id, today) if package.invoice_after_signup \
        else None
    payment = _charge(session, subscriber, invoice, card_token, _payment_id(transaction_id),
                      today) if pays else None
    done = Signup(subscriber, subscription, invoice, payment)
    claim.subscriber_id, claim.payment_id = subscriber.id, payment.id if payment else None
    claim.reason = "payment not confirmed yet" if done.payment_pending else None
    session.flush()
    return done


def _claim_form(session: Session, form_id: str, ip: str, package_id: int,
                email: str | None) -> SignupAttempt:
    """The completed attempt of this form, written first: a form sent again finds it, and one
    sent at the same moment waits on the unique form id and is refused when this commits."""
    taken = ValidationFailed({"form": ALREADY_SUBMITTED})
    if session.scalar(sa.select(SignupAttempt.id).where(SignupAttempt.form_id == form_id)):
        raise taken
    claim = SignupAttempt(ip=ip[:45], status="completed", form_id=form_id,
                          package_id=package_id, email=(email or "")[:254] or None)
    session.add(claim)
    try:
        session.flush()
    except sa.exc.IntegrityError:  # the caller rolls the whole signup back
        raise taken from None
    return claim


def _charge(session: Session, subscriber: Subscriber, invoice: Invoice | None, card_token: str,
            transaction_id: str, today: dt.date) -> Payment | None:
    """Save the card and charge what is due now; a decline raises PaymentRefused."""
    try:
        saved = save_card(session, subscriber.id, card_token)
    except ValidationFailed as exc:  # refused at the provider, or not a token it knows
        problems = exc.errors.get("token") or exc.errors.get("method") or []
        raise PaymentRefused(" ".join(problems) or "The card was refused.") from exc
    posted = invoice is not None and invoice.status != "draft"
    amount = invoice.balance_due if posted \
        else billing_preview(session, subscriber.id, today).total
    if amount <= 0:
        return None
    payment = receive_payment(session, subscriber.id, amount, "card", today,
                              saved_method_id=saved.id, source="signup",
                              invoice_ids=[invoice.id] if posted else None,
                              transaction_id=transaction_id)
    if payment.subscriber_id != subscriber.id:  # the same form, sent twice at once
        raise ValidationFailed({"form": ALREADY_SUBMITTED})
    if payment.status == "failed":
        raise PaymentRefused(payment.message or "The card was declined.", payment.decline_code)
    return payment


def email_taken(session: Session, subscriber_id: int) -> bool:
    """Whether another subscriber of the tenant has this new subscriber's email."""
    email = session.scalar(sa.select(Subscriber.email).where(Subscriber.id == subscriber_id))
    return bool(email) and session.scalar(sa.select(sa.func.count()).select_from(Subscriber).where(
        sa.func.lower(Subscriber.email) == email.lower(), Subscriber.id != subscriber_id)) > 0


def activate_signup(session: Session, package: Package, done: Signup) -> None:
    """Per the package, the signup goes active - once paid, when it pays. Called in a
    transaction after the one that took the payment: whatever fails here (a plugin's hook, the
    network), the payment and the signup are kept and the subscription waits for staff."""
    if package.activate_after_signup and (done.payment is None
                                          or done.payment.status == "processed"):
        _activate(session, done.subscriber, done.subscription)


def _activate(session: Session, subscriber: Subscriber, subscription: Subscription) -> None:
    """The subscription, its services (Internet ones with Autofill credentials) and the
    subscriber go active. Refused (it should not be: Autofill picks a free username), the
    subscription stays pending for staff and the signup still stands."""
    try:
        with session.begin_nested():
            for service in subscription.services:
                if internet_profile(session, service) is not None:
                    username, password = autofill(session, service.id)
                    activate(session, service.id, username=username, password=password)
                else:
                    service.status, service.activated_at = "active", utcnow()
            subscription.status = subscriber.status = "active"
            session.flush()
    except ValidationFailed:
        return
    events.fire("subscription_activated", tenant_id=subscription.tenant_id,
                subscription_id=subscription.id)
