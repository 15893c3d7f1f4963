"""Billing > Import payments: upload a deposit file (bank, lockbox, spreadsheet) and post it.
The rules live in payments.deposit_file and payments.batch; this page reads the upload and
shows the result or every refused line."""

from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access

from headend.db import db
from headend.errors import ValidationFailed
from headend.payments.deposit_file import COLUMNS, MAX_BYTES, import_deposit_file
from headend.payments.models import PAYMENT_METHODS
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin, add_view
from headend.views_base import WRITE_ERRORS, WriteRefused

BATCH_METHODS = [m for m in PAYMENT_METHODS if m not in ("card", "echeck")]


class PaymentImportView(PermissionsMixin, BaseView):
    route_base = "/payments/import"
    class_permission_name = perms.PAYMENTS
    default_view = "form"
    method_permission_name = {"form": perms.WRITE, "upload": perms.WRITE}

    def _page(self, errors: dict | None = None, values: dict | None = None):
        return self.render_template(
            "payments/import.html", errors=errors or {}, values=values or {},
            columns=COLUMNS, methods=BATCH_METHODS, max_mb=MAX_BYTES // 1024 // 1024,
            acting=not current_scope().all_tenants)

    @expose("/")
    @has_access
    def form(self):
        return self._page()

    @expose("/", methods=["POST"])
    @has_access
    def upload(self):
        values = {"method": request.form.get("method", ""),
                  "allow_archived": request.form.get("allow_archived") == "y"}
        if current_scope().all_tenants:
            return self._page({"tenant": ["choose a tenant to act for first"]}, values)
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return self._page({"file": ["choose a CSV file"]}, values)
        data = upload.read(MAX_BYTES + 1)
        try:
            result = import_deposit_file(
                db.session, data, default_method=values["method"] or None,
                allow_archived=values["allow_archived"], after_chunk=db.session.commit)
        except ValidationFailed as exc:
            db.session.rollback()
            return self._page(exc.errors, values)
        except WRITE_ERRORS as exc:
            db.session.rollback()
            return self._page({"file": [str(WriteRefused(exc))]}, values)
        flash(f"{upload.filename}: {result.describe()}", "success")
        return redirect(url_for("PaymentView.list"))


def register(appbuilder):
    add_view(appbuilder, PaymentImportView, "Import payments", category="Billing",
             icon="fa-upload")
