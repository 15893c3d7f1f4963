"""The public signup pages, per tenant and without a login: /signup/<slug>/ lists the packages
open to online signup, /signup/<slug>/<package id> takes the details (and the card), and
/signup/<slug>/welcome thanks the new subscriber. Requests act as the tenant ("signup").

Against abuse: the global CSRF protection (the form carries its token), a honeypot field that
people never see (filled: the bot is thanked and nothing is created) and at most
SIGNUP_RATE_LIMIT submits per address and tenant in SIGNUP_RATE_WINDOW_MINUTES, counted from the
SignupAttempt rows every submit leaves (a completed signup's in its own transaction, a refused or
failed one in a commit of its own).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as http_session
from flask_appbuilder import BaseView, expose, has_access
from sqlalchemy import select

from headend.branding.services import branding_for
from headend.db import db
from headend.errors import NotFound, ValidationFailed
from headend.money import format_money, to_minor
from headend.payments.card_form import card_form_context
from headend.payments.services import GatewayDown
from headend.portal.accounts import invite
from headend.signup import services
from headend.signup.models import SignupAttempt
from headend.tenancy import permissions as perms
from headend.tenancy.context import acting_as, current_scope
from headend.tenancy.models import Tenant
from headend.ui import PermissionsMixin, add_view
from headend.views_base import WRITE_ERRORS, public_base_url

log = logging.getLogger(__name__)
blueprint = Blueprint("signup", __name__, url_prefix="/signup/<slug>")
HONEYPOT = "website"  # hidden from people by the page's style; bots fill it in
DONE = "signup_done"  # what the welcome page shows, kept in the Flask session
LOGO_RULES = ("/brand/<slug>/logo", "/brand/<string:slug>/logo")
CYCLE_LABELS = {"monthly": "month", "quarterly": "quarter", "semiannual": "half year",
                "annual": "year"}
FORM_FIELDS = (*services.TEXT_FIELDS, "customer_type", "billing_cycle", "additional_info")


def _tenant(slug: str):
    try:
        return services.signup_tenant(db.session, slug)
    except NotFound:
        abort(404)


def _logo_url(brand) -> str | None:
    """The branding module's logo route, when it has one and the tenant a logo."""
    if not brand.logo:
        return None
    for rule in current_app.url_map.iter_rules():
        if rule.rule in LOGO_RULES:
            return url_for(rule.endpoint, slug=brand.tenant_slug)
    return None


def _render(template: str, tenant, status: int = 200, **context):
    brand = branding_for(db.session, tenant.id)

    def money(amount) -> str:
        return format_money(to_minor(amount, tenant.currency), tenant.currency)

    return render_template(f"signup/{template}", tenant=tenant, slug=tenant.slug, brand=brand,
                           logo_url=_logo_url(brand), money=money, cycle_labels=CYCLE_LABELS,
                           **context), status


def _package(package_id: int):
    try:
        return services.offered_package(db.session, package_id)
    except NotFound:
        abort(404)


def _ip() -> str:
    return request.remote_addr or "unknown"


@blueprint.route("/", methods=["GET"])
def packages(slug):
    tenant = _tenant(slug)
    kind = request.args.get("type")
    kind = kind if kind in services.CUSTOMER_TYPES else None
    with acting_as(tenant.id, actor_name="signup"):
        return _render("packages.html", tenant, packages=services.offered_packages(
            db.session, kind), kind=kind)


def _form(tenant, package, values: dict, errors: dict, status: int = 200):
    return _render("form.html", tenant, status, package=package, values=values, errors=errors,
                   card=card_form_context(db.session) if package.signup_requires_payment
                   else None, nonce=secrets.token_urlsafe(18), honeypot=HONEYPOT)


@blueprint.route("/<int:package_id>", methods=["GET", "POST"])
def signup(slug, package_id):
    tenant = _tenant(slug)
    with acting_as(tenant.id, actor_name="signup"):
        package = _package(package_id)
        if request.method == "GET":
            cycles = list(package.offered_cycles())
            return _form(tenant, package, {"billing_cycle": cycles[0] if cycles else "",
                                           "service_country": "US"}, {})
        return _submit(tenant, package)


def _submit(tenant, package):
    form = request.form
    values = {name: form.get(name, "") for name in FORM_FIELDS}
    ip, email = _ip(), values["email"].strip() or None
    attempt = {"ip": ip, "package_id": package.id, "email": email}
    config = current_app.config
    window = dt.timedelta(minutes=config.get("SIGNUP_RATE_WINDOW_MINUTES", 10))
    if services.too_many_attempts(db.session, ip, config.get("SIGNUP_RATE_LIMIT", 5), window):
        services.record_attempt(db.session, status="refused", reason="rate limit", **attempt)
        db.session.commit()
        return _form(tenant, package, values, {"form": [
            "Too many signups from your address: please try again later, or call us."]}, 429)
    if form.get(HONEYPOT):
        services.record_attempt(db.session, status="refused", reason="honeypot", **attempt)
        db.session.commit()
        http_session[DONE] = {"slug": tenant.slug}
        return redirect(url_for("signup.welcome", slug=tenant.slug))
    card_token, nonce = form.get("card_token") or None, form.get("nonce")
    try:
        services.check_signup(package, form, card_token=card_token, transaction_id=nonce)
        number = services.reserve_account_number(db.session)
        db.session.commit()
        done = services.sign_up(db.session, package.id, form, account_number=number, ip=ip,
                                card_token=card_token, transaction_id=nonce)
        db.session.commit()  # the payment, if any, is kept whatever activation does
    except services.PaymentRefused as exc:
        db.session.rollback()
        return _refused(tenant, package, values, exc.errors, attempt, "failed", exc.reason)
    except ValidationFailed as exc:
        db.session.rollback()
        return _refused(tenant, package, values, exc.errors, attempt, "refused", str(exc))
    except GatewayDown as exc:
        db.session.rollback()
        return _refused(tenant, package, values, {"card": [str(exc)]}, attempt, "failed",
                        str(exc))
    except WRITE_ERRORS as exc:
        db.session.rollback()
        return _refused(tenant, package, values, {"form": [
            "Your signup could not be saved: please try again, or call us."]}, attempt,
            "failed", type(exc).__name__)
    _activate(package, done)
    http_session[DONE] = {**_welcome(tenant, done), "invited": _invite(done.subscriber.id)}
    return redirect(url_for("signup.welcome", slug=tenant.slug))


def _activate(package, done: services.Signup) -> None:
    """Activation per the package, in a transaction of its own; a failure is logged and leaves
    the (paid) signup pending for staff."""
    try:
        services.activate_signup(db.session, package, done)
        db.session.commit()
    except Exception:  # noqa: BLE001  (a plugin's hook or the network failing must not lose it)
        db.session.rollback()
        log.exception("signup of subscriber %s: activation failed, left for staff",
                      done.subscriber.id)


def _refused(tenant, package, values, errors, attempt, status, reason):
    """The form again with the errors (the card is typed anew); the attempt recorded."""
    services.record_attempt(db.session, status=status, reason=reason[:1000], **attempt)
    db.session.commit()
    return _form(tenant, package, values, errors, 422)


def _invite(subscriber_id: int) -> bool:
    """Email the new subscriber a portal invitation, in a transaction of its own: a signup
    stands even when the invitation cannot be sent (the email is another portal login)."""
    try:
        if services.email_taken(db.session, subscriber_id):
            return False  # the portal login is another subscriber's to claim, not a prospect's
        invite(db.session, subscriber_id, base_url=public_base_url())
        db.session.commit()
    except (ValidationFailed, *WRITE_ERRORS):
        db.session.rollback()
        return False
    return True


def _welcome(tenant, done: services.Signup) -> dict:
    invoice, payment = done.invoice, done.payment
    return {
        "slug": tenant.slug,
        "account_number": done.subscriber.account_number,
        "name": done.subscriber.display_name,
        "email": done.subscriber.email,
        "package": done.subscription.package.name,
        "active": done.active,
        "invoice": invoice.number if invoice is not None and invoice.number else None,
        "invoice_total": format_money(invoice.total, invoice.currency)
        if invoice is not None else None,
        "paid": format_money(payment.amount, payment.currency)
        if payment is not None and payment.status == "processed" else None,
        "payment_pending": done.payment_pending,
    }


@blueprint.route("/welcome", methods=["GET"])
def welcome(slug):
    tenant = _tenant(slug)
    done = http_session.pop(DONE, None)  # shown once: the next person at this browser sees none
    if not done or done.get("slug") != tenant.slug:
        return redirect(url_for("signup.packages", slug=tenant.slug))
    with acting_as(tenant.id, actor_name="signup"):
        return _render("welcome.html", tenant, done=done)


class SignupAttemptsView(PermissionsMixin, BaseView):
    """Staff see the latest signup submits: who, what became of each and why, and the link to
    the tenant's public page."""

    route_base = "/signups"
    class_permission_name = perms.SUBSCRIBERS
    default_view = "index"
    method_permission_name = {"index": perms.READ}
    LIMIT = 200

    @expose("/")
    @has_access
    def index(self):
        tenant_id = current_scope().tenant_id
        tenant = db.session.get(Tenant, tenant_id) if tenant_id else None
        attempts = db.session.scalars(select(SignupAttempt).order_by(
            SignupAttempt.id.desc()).limit(self.LIMIT)).all() if tenant else []
        return self.render_template("signup/attempts.html", tenant=tenant, attempts=attempts,
                                    limit=self.LIMIT)


def register(appbuilder) -> None:
    current_app._get_current_object().register_blueprint(blueprint)
    add_view(appbuilder, SignupAttemptsView, "Online signups", category="Subscribers",
             icon="fa-user-plus")
