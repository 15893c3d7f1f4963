"""Mail pages: Documents > Email settings (the SMTP server, what is emailed, a test email) and
Documents > Email log (every message with its delivery record, and Retry). Rules live in
headend.mail.services, .outbox and .delivery; these views read forms and show results."""

from __future__ import annotations

from flask import current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_appbuilder.actions import action

from headend.db import db
from headend.mail import outbox, services
from headend.mail.delivery import deliver
from headend.mail.models import SECURITY, OutboundEmail
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin, add_view, formatters_for, labels_for, titled
from headend.views_base import (
    NO_TENANT,
    HeadendInterface,
    HeadendModelView,
    TenantPagesMixin,
    acting,
    commit_service,
    flash_errors,
)

CATEGORY = "Documents"
TEXT_FIELDS = ("host", "port", "security", "username", "from_address", "from_name",
               "reply_to")
SWITCHES = ("enabled", "email_invoices", "email_receipts", "email_notices")



def can_write() -> bool:
    return current_app.appbuilder.sm.has_access("can_write", perms.DOCUMENTS)


def _port(raw: str):
    text = (raw or "").strip()
    try:
        return int(text)
    except ValueError:
        return text or None  # refused by the service, by field


class MailSettingsView(PermissionsMixin, BaseView):
    """The tenant's SMTP server and switches; the password is never shown back."""

    route_base = "/mail/settings"
    class_permission_name = perms.DOCUMENTS
    default_view = "index"
    method_permission_name = {"index": perms.READ, "save": perms.WRITE, "test": perms.WRITE}

    @expose("/")
    @has_access
    def index(self):
        if not acting():
            flash(NO_TENANT, "warning")
            return self._page({}, {})
        row = services.mail_settings(db.session)
        values = {f: "" if getattr(row, f) is None else str(getattr(row, f))
                  for f in TEXT_FIELDS}
        values |= {f: bool(getattr(row, f)) for f in SWITCHES}
        return self._page(values, {}, password_set=services.has_password(row))

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        values = {f: request.form.get(f, "") for f in TEXT_FIELDS}
        values |= {f: request.form.get(f) == "y" for f in SWITCHES}
        if not acting():
            flash(NO_TENANT, "danger")
            return self._page(values, {})
        _, errors = commit_service(
            services.save_settings, **values | {"port": _port(values["port"])},
            password=request.form.get("password") or None, subject="settings")
        if errors:
            row = services.mail_settings(db.session)
            return self._page(values, errors, password_set=services.has_password(row))
        flash("Email settings saved", "success")
        return redirect(url_for("MailSettingsView.index"))

    @expose("/test", methods=["POST"])
    @has_access
    def test(self):
        """Send a test email with the saved settings now and show what happened."""
        if not acting():
            flash(NO_TENANT, "danger")
            return redirect(url_for("MailSettingsView.index"))
        address = request.form.get("test_address", "")
        row, errors = commit_service(outbox.queue_test, current_scope().tenant_id, address,
                                     subject="test_address")
        if errors:
            flash_errors(errors)
            return redirect(url_for("MailSettingsView.index"))
        pk = row.id
        deliver(db.session, ids=[pk], even_when_off=True)
        sent = db.session.get(OutboundEmail, pk)
        if sent.status == "sent":
            flash(f"Test email sent to {sent.to_address}", "success")
        else:
            flash(f"The test email to {sent.to_address} was not sent: {sent.last_error}",
                  "danger")
        return redirect(url_for("MailSettingsView.index"))

    def _page(self, values, errors, password_set=False):
        return self.render_template(
            "mail/settings.html", values=values, errors=errors, securities=SECURITY,
            password_set=password_set, acting=acting(), can_write=can_write())


@titled("Email log", "email")
class OutboundEmailView(TenantPagesMixin, HeadendModelView):
    """Every message, newest first, with its delivery record; Retry sends a failed one again."""

    route_base = "/mail/log"
    datamodel = HeadendInterface(OutboundEmail)
    class_permission_name = perms.DOCUMENTS
    method_permission_name = {**perms.METHOD_PERMISSIONS, "retry": perms.WRITE}
    include_route_methods = {"list", "show", "action", "action_post"}
    list_columns = ["created_at", "kind", "to_address", "subject", "status", "attempts",
                    "sent_at"]
    show_columns = ["created_at", "kind", "key", "to_address", "subject", "status", "attempts",
                    "attempted_at", "next_attempt_at", "last_error", "sent_at", "body_text"]
    search_columns = ["status", "kind", "to_address", "subject", "created_at"]
    order_columns = ["created_at", "status", "kind", "to_address", "sent_at"]
    base_order = ("created_at", "desc")
    label_columns = labels_for(OutboundEmail, created_at="Queued", to_address="To",
                               last_error="Last error", attempted_at="Last attempt",
                               next_attempt_at="Next retry", body_text="Text")
    formatters_columns = formatters_for(OutboundEmail)


    @action("retry", "Retry", "Send again now?", "fa-repeat")
    def retry(self, items):
        rows = items if isinstance(items, list) else [items]
        _, errors = commit_service(outbox.retry, [r.id for r in rows], subject="status")
        if errors:
            flash_errors(errors)
        else:
            flash(f"{len(rows)} email(s) queued again", "success")
        return redirect(request.referrer or self.get_redirect())


def register(appbuilder):
    add_view(appbuilder, MailSettingsView, "Email settings", category=CATEGORY,
             icon="fa-envelope")
    add_view(appbuilder, OutboundEmailView, "Email log", category=CATEGORY, icon="fa-inbox")
