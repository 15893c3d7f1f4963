"""The subscriber portal's pages under /portal/<tenant slug>/: login, forgotten password and
set-password by emailed link, overview, invoices (PDF), payments, usage, pay now, cards and
autopay.

A plain Flask blueprint, outside FAB's security: a portal login is remembered under its own
session key (`portal`), which FAB never reads, so it opens no admin page or API, and an admin's
login is no portal login. Each request acts as the slug's tenant (acting_as) with the actor
"portal:<login>"; pages show only the signed-in subscriber's rows, another's are 404.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as http_session

from headend.branding.services import branding_for
from headend.branding.views import logo_url
from headend.db import db
from headend.documents.render import RenderFailed, invoice_pdf
from headend.errors import NotFound, ValidationFailed
from headend.money import format_money
from headend.payments.card_form import card_form_context
from headend.payments.models import Payment
from headend.payments.services import METHOD_LABELS, GatewayDown, saved_methods
from headend.portal import accounts, pay, statements
from headend.portal.models import PortalAccount
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from headend.views_base import commit_service, pdf_response, public_base_url

blueprint = Blueprint("portal", __name__, url_prefix="/portal/<slug>")
SESSION_KEY = "portal"


# --- the tenant, the signed-in account and the page around them ------------------------------

def _tenant(slug: str) -> Tenant:
    tenant = db.session.scalar(sa.select(Tenant).where(Tenant.slug == slug,
                                                       Tenant.active.is_(True)))
    if tenant is None:
        abort(404)
    return tenant


def _signed_in(tenant: Tenant) -> PortalAccount | None:
    """The session's portal account when it is of this tenant, active, and its password has not
    changed since the login (a new password ends the other sessions)."""
    remembered = http_session.get(SESSION_KEY)
    if not isinstance(remembered, dict) or remembered.get("tenant_id") != tenant.id:
        return None
    account = db.session.scalar(sa.select(PortalAccount).where(
        PortalAccount.id == remembered.get("account_id")))
    if account is None or not account.active or not account.password_hash \
            or accounts.session_stamp(account) != remembered.get("stamp"):
        return None
    return account


def _sign_in(account: PortalAccount) -> None:
    http_session[SESSION_KEY] = {"tenant_id": account.tenant_id, "account_id": account.id,
                                 "stamp": accounts.session_stamp(account)}


def public_page(view):
    """A page of the tenant's portal that needs no login; runs acting as the tenant."""
    @functools.wraps(view)
    def wrapper(slug, **kwargs):
        tenant = _tenant(slug)
        with acting_as(tenant.id, actor_name="portal"):
            g.portal_tenant = tenant
            return view(tenant, **kwargs)
    return wrapper


def subscriber_page(view):
    """A page for the signed-in subscriber; others go to the login page."""
    @functools.wraps(view)
    def wrapper(slug, **kwargs):
        tenant = _tenant(slug)
        with acting_as(tenant.id, actor_name="portal"):
            account = _signed_in(tenant)
        if account is None:
            http_session.pop(SESSION_KEY, None)
            if request.method != "GET":
                abort(403)
            return redirect(url_for("portal.login", slug=slug, next=request.full_path))
        with acting_as(tenant.id, actor_name=f"portal:{account.login}"):
            g.portal_tenant, g.portal_account = tenant, account
            g.portal_subscriber = db.session.get(Subscriber, account.subscriber_id)
            return view(tenant, g.portal_subscriber, **kwargs)
    return wrapper


def _money(minor) -> str:
    return "—" if minor is None else format_money(minor, g.portal_tenant.currency)


def _page(template: str, status: int = 200, **context):
    tenant = g.portal_tenant
    brand = branding_for(db.session, tenant.id)
    return render_template(
        f"portal/{template}", tenant=tenant, slug=tenant.slug, brand=brand,
        logo_url=logo_url(brand.tenant_slug) if brand.logo else None,
        account=g.get("portal_account"), subscriber=g.get("portal_subscriber"), money=_money,
        method_text=_method_text,
        **context), status


def _method_text(payment: Payment) -> str:
    if payment.saved_method is not None and payment.saved_method.last4:
        return f"{payment.saved_method.brand or 'card'} ending {payment.saved_method.last4}"
    return METHOD_LABELS.get(payment.method, payment.method)


def _safe_next(slug: str) -> str:
    target = request.values.get("next") or ""
    prefix = f"/portal/{slug}/"
    if target.startswith(prefix) and "//" not in target and "\\" not in target:
        return target
    return url_for("portal.overview", slug=slug)


# --- signing in and out, passwords ------------------------------------------------------------

@blueprint.route("/login", methods=["GET", "POST"])
@public_page
def login(tenant):
    if request.method == "GET":
        if _signed_in(tenant) is not None:
            return redirect(url_for("portal.overview", slug=tenant.slug))
        return _page("login.html", values={}, error=None)
    values = {"login": (request.form.get("login") or "").strip()}
    try:
        account = accounts.authenticate(db.session, values["login"],
                                        request.form.get("password") or "",
                                        address=request.remote_addr)
        db.session.commit()  # a failure is recorded, a success clears the count
    except accounts.LoginThrottled as exc:
        db.session.rollback()
        return _page("login.html", 429, values=values, error=str(exc))
    if account is None:
        return _page("login.html", 401, values=values, error="Wrong login or password.")
    _sign_in(account)
    return redirect(_safe_next(tenant.slug))


@blueprint.route("/logout", methods=["POST"])
@public_page
def logout(tenant):
    http_session.pop(SESSION_KEY, None)
    flash("You are signed out.", "info")
    return redirect(url_for("portal.login", slug=tenant.slug))


@blueprint.route("/forgot", methods=["GET", "POST"])
@public_page
def forgot(tenant):
    if request.method == "GET":
        return _page("forgot.html", values={})
    # The same answer whether or not the login exists (or the request was refused).
    commit_service(accounts.request_reset, request.form.get("login") or "",
                   base_url=public_base_url(), subject="login")
    flash("If an account uses that login, we have emailed it a link to choose a new password.",
          "info")
    return redirect(url_for("portal.login", slug=tenant.slug))


@blueprint.route("/set-password/<token>", methods=["GET", "POST"])
@public_page
def set_password(tenant, token):
    if request.method == "GET":
        try:
            accounts.check_token(db.session, token)
        except ValidationFailed as exc:
            return _page("set_password.html", 400, token=None, errors=exc.errors)
        return _page("set_password.html", token=token, errors={})
    account, errors = commit_service(
        accounts.set_password, token, request.form.get("password") or "",
        request.form.get("confirm") or "", subject="token")
    if errors:
        return _page("set_password.html", 400, token=None if "token" in errors else token,
                     errors=errors)
    _sign_in(account)
    flash("Your password is set: welcome.", "info")
    return redirect(url_for("portal.overview", slug=tenant.slug))


# --- the subscriber's pages -------------------------------------------------------------------

@blueprint.route("/")
@subscriber_page
def overview(tenant, sub):
    return _page("overview.html", summary=statements.overview(db.session, sub.id),
                 packages=statements.packages(db.session, sub.id),
                 autopay=pay.autopay_on(db.session, sub.id))


@blueprint.route("/invoices")
@subscriber_page
def invoices(tenant, sub):
    return _page("invoices.html", invoices=statements.invoices(db.session, sub.id))


@blueprint.route("/invoices/<int:invoice_id>.pdf")
@subscriber_page
def invoice_file(tenant, sub, invoice_id):
    invoice = statements.own_invoice(db.session, sub.id, invoice_id)
    if invoice is None:
        abort(404)
    try:
        pdf = invoice_pdf(db.session, invoice.id)
    except LookupError:
        abort(404)
    except RenderFailed:
        abort(503)
    return pdf_response(pdf, f"invoice-{invoice.number or invoice.id}.pdf")


@blueprint.route("/payments")
@subscriber_page
def payments(tenant, sub):
    return _page("payments.html", payments=statements.payments(db.session, sub.id))


@blueprint.route("/usage")
@subscriber_page
def usage(tenant, sub):
    return _page("usage.html", services=statements.usage(db.session, sub.id, dt.date.today()))


# --- paying -----------------------------------------------------------------------------------

def _invoice_arg() -> int | None:
    raw = (request.values.get("invoice") or "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= 12):
        abort(404)
    return int(raw)


def _pay_form(sub, invoice_id: int | None, errors: dict, status: int = 200, chosen: str = ""):
    invoice = statements.own_invoice(db.session, sub.id, invoice_id) if invoice_id else None
    if invoice_id is not None and invoice is None:
        abort(404)
    amount = pay.amount_due(db.session, sub.id, invoice_id)
    cards = saved_methods(db.session, sub.id)
    default = next((c for c in cards if c.is_default), cards[0] if cards else None)
    return _page("pay.html", status, invoice=invoice, amount=amount, cards=cards,
                 chosen=chosen or (str(default.id) if default else "new"),
                 nonce=secrets.token_urlsafe(24), card=card_form_context(db.session),
                 errors=errors)


@blueprint.route("/pay", methods=["GET"])
@subscriber_page
def pay_form(tenant, sub):
    return _pay_form(sub, _invoice_arg(), {})


@blueprint.route("/pay", methods=["POST"])
@subscriber_page
def pay_now(tenant, sub):
    invoice_id = _invoice_arg()
    chosen = request.form.get("saved_method") or ""
    token = (request.form.get("card_token") or "").strip() if chosen == "new" else ""
    try:
        payment, errors = commit_service(
            pay.pay, sub.id, g.portal_account.id, request.form.get("nonce") or "",
            invoice_id=invoice_id,
            saved_method_id=int(chosen) if chosen.isascii() and chosen.isdecimal()
            and len(chosen) <= 12 else None,
            card_token=token or None, subject="payment")
    except NotFound:
        db.session.rollback()
        abort(404)
    except GatewayDown as exc:
        db.session.rollback()
        errors = {"card": [str(exc)]}
    if errors:
        if chosen == "new" and not token and "saved_method" in errors:
            errors = {"card": ["enter your card's details"]}
        return _pay_form(sub, invoice_id, errors, 422, chosen)
    return redirect(url_for("portal.payment_result", slug=tenant.slug, payment_id=payment.id))


@blueprint.route("/payments/<int:payment_id>")
@subscriber_page
def payment_result(tenant, sub, payment_id):
    payment = db.session.scalar(sa.select(Payment).where(
        Payment.id == payment_id, Payment.subscriber_id == sub.id))
    if payment is None:
        abort(404)
    return _page("payment.html", payment=payment,
                 allocations=[(a.invoice, a.amount) for a in payment.allocations])


# --- cards and autopay ------------------------------------------------------------------------

@blueprint.route("/cards", methods=["GET"])
@subscriber_page
def cards(tenant, sub):
    return _page("cards.html", cards=saved_methods(db.session, sub.id),
                 autopay=pay.autopay_on(db.session, sub.id), card=card_form_context(db.session))


def _card_action(action, *args, done: str, **kwargs):
    try:
        _, errors = commit_service(action, *args, subject="card", **kwargs)
    except NotFound:
        db.session.rollback()
        abort(404)
    except GatewayDown as exc:
        db.session.rollback()
        errors = {"card": [str(exc)]}
    if errors:
        for messages in errors.values():
            flash(" ".join(messages), "error")
    else:
        flash(done, "info")
    return redirect(url_for("portal.cards", slug=g.portal_tenant.slug))


@blueprint.route("/cards", methods=["POST"])
@subscriber_page
def add_card(tenant, sub):
    token = (request.form.get("card_token") or "").strip()
    if not token:
        flash("Enter your card's details.", "error")
        return redirect(url_for("portal.cards", slug=tenant.slug))
    return _card_action(pay.add_card, sub.id, token,
                        make_default=request.form.get("make_default") == "y", done="Card saved.")


@blueprint.route("/cards/<int:method_id>/default", methods=["POST"])
@subscriber_page
def default_card(tenant, sub, method_id):
    return _card_action(pay.make_default, sub.id, method_id, done="Default card changed.")


@blueprint.route("/cards/<int:method_id>/remove", methods=["POST"])
@subscriber_page
def remove_card(tenant, sub, method_id):
    return _card_action(pay.remove_card, sub.id, method_id, done="Card removed.")


@blueprint.route("/autopay", methods=["POST"])
@subscriber_page
def autopay(tenant, sub):
    on = request.form.get("autopay") == "on"
    return _card_action(pay.set_autopay, sub.id, on,
                        done="Autopay is on: due invoices are charged to your default card."
                        if on else "Autopay is off.")


def register(appbuilder):
    current_app._get_current_object().register_blueprint(blueprint)
