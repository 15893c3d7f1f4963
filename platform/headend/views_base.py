"""Thin FAB base classes: every write goes through a domain validator, errors name fields.

A view or API sets `validator(session, item)` and optionally `delete_guard(session, item)`;
both are plain service functions raising ValidationFailed. The UI re-renders the form with the
errors under their fields and the input kept; the API answers 422 JSON {"message": {field: [...]}}.
Nothing is written when validation fails.
"""

from __future__ import annotations

from typing import Any

from flask import Response, abort, current_app, flash, request
from flask_appbuilder import ModelRestApi, ModelView, expose, has_access
from flask_appbuilder.exceptions import DatabaseException
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.urltools import (
    get_filter_args,
    get_order_args,
    get_page_args,
    get_page_size_args,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from headend.api_schema import HeadendSchemaConverter
from headend.db import db
from headend.errors import DomainError, ValidationFailed, raise_if
from headend.tenancy.context import current_scope
from headend.tenancy.scoping import TenantScopeError
from headend.ui import PermissionsMixin

# What a commit in a custom view can fail with after validation passed: a race on a unique key,
# or an operator who has not chosen the tenant to act for.
WRITE_ERRORS = (SQLAlchemyError, DatabaseException, TenantScopeError)


class WriteRefused(DomainError):
    """A write that passed validation but that the database or the tenant scope refused.

    Its message is for users: never SQL or bound values (FAB's own DatabaseException message
    carries both, and FAB's PUT handler would send it to the client).
    """

    def __init__(self, exc: Exception):
        if isinstance(exc, DatabaseException) and exc.__cause__ is not None:
            exc = exc.__cause__  # FAB's wrapper: what the database said is its cause
        self.scope_error = isinstance(exc, TenantScopeError)
        if self.scope_error:
            message = f"{exc} (Platform > Act for tenant)"
        elif isinstance(exc, IntegrityError):
            message = "This conflicts with an existing record (a value that must be unique " \
                      "is taken, or a row still refers to this one)."
        else:
            message = "The database refused the change; nothing was saved."
        super().__init__(message)


class HeadendInterface(SQLAInterface):
    """FAB's datamodel whose writes fail with WriteRefused, after rolling back."""

    def _write(self, write, item) -> None:
        try:
            write(item)
        except WRITE_ERRORS as exc:
            self.session.rollback()
            raise WriteRefused(exc) from exc

    def add(self, item, commit: bool = True) -> None:
        self._write(lambda i: super(HeadendInterface, self).add(i, commit), item)

    def edit(self, item, commit: bool = True) -> None:
        self._write(lambda i: super(HeadendInterface, self).edit(i, commit), item)

    def delete(self, item, commit: bool = True) -> None:
        self._write(lambda i: super(HeadendInterface, self).delete(i, commit), item)


def commit_service(action, *args, subject: str, **kwargs) -> tuple[Any, dict]:
    """Run a service on the request's session and commit: (its result, {}) when saved.

    What a custom view or API does with every write, in one place: a refusal by the service
    (ValidationFailed) or by the database at commit (WRITE_ERRORS) rolls back, so nothing is
    written, and comes back as (None, {field: [messages]}); the database's refusal is filed
    under `subject` with a message for users (never SQL). Other domain errors (a gateway that
    is down, say) propagate for the caller to answer.
    """
    try:
        result = action(db.session, *args, **kwargs)
        db.session.commit()
    except ValidationFailed as exc:
        db.session.rollback()
        return None, exc.errors
    except WRITE_ERRORS as exc:
        db.session.rollback()
        return None, {subject: [str(WriteRefused(exc))]}
    return result, {}


def commit_or_raise(action, *args, subject: str, **kwargs):
    """`commit_service` for the APIs: a refusal is raised (ValidationFailed) for the API's
    error handling to answer 422 by field."""
    result, errors = commit_service(action, *args, subject=subject, **kwargs)
    raise_if(errors)
    return result


def json_body(accepted: set[str]) -> dict:
    """The request's JSON object, refusing fields the endpoint does not take."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "must be a JSON object"})
    unknown = set(data) - accepted
    if unknown:
        raise ValidationFailed({k: "is not accepted here" for k in sorted(unknown)})
    return data


def flash_errors(errors: dict) -> None:
    """Errors by field as flash messages, for forms that redirect back ("Grace days: ...")."""
    for field, messages in errors.items():
        flash(f"{field.replace('_', ' ').capitalize()}: {' '.join(messages)}", "danger")


def row_or_404(model, pk):
    """The acting tenant's row `pk` of `model` (a SELECT, so scoping applies), else 404."""
    row = db.session.scalar(select(model).where(model.id == pk))
    if row is None:
        abort(404)
    return row


def _no_validation(session, item):
    return None


def _attach(form, errors: dict) -> None:
    for field, messages in errors.items():
        target = getattr(form, field, None)
        if target is None:
            flash(f"{field}: {' '.join(messages)}", "danger")
            continue
        target.errors = list(target.errors or []) + list(messages)


class HeadendModelView(PermissionsMixin, ModelView):
    validator = staticmethod(_no_validation)
    delete_guard = staticmethod(_no_validation)
    page_size = 25

    def _validated(self, form, item) -> bool:
        try:
            with db.session.no_autoflush:
                self.validator(db.session, item)
        except ValidationFailed as exc:
            db.session.rollback()
            _attach(form, exc.errors)
            return False
        return True

    def _write(self, write, item) -> bool:
        try:
            write(item)
        except WRITE_ERRORS as exc:  # raised by work done in pre_add/pre_update, before FAB's
            db.session.rollback()
            flash(str(WriteRefused(exc)), "danger")
            return False
        except WriteRefused as exc:
            flash(str(exc), "danger")
            return False
        return True

    def _pre_add_then_add(self, item):
        self.pre_add(item)
        self.datamodel.add(item)

    def _pre_update_then_edit(self, item):
        self.pre_update(item)
        self.datamodel.edit(item)

    def _add(self):
        get_filter_args(self._filters, disallow_if_not_in_search=False)
        exclude_cols = self._filters.get_relation_cols()
        form = self.add_form.refresh()
        if request.method == "POST":
            self._fill_form_exclude_cols(exclude_cols, form)
            if form.validate():
                self.process_form(form, True)
                item = self.datamodel.obj()
                form.populate_obj(item)
                if self._validated(form, item) and self._write(self._pre_add_then_add, item):
                    self.post_add(item)
                    flash(self.add_row_message, "success")
                    return None
            return self._get_add_widget(form=form, exclude_cols=exclude_cols)
        self.update_redirect()
        return self._get_add_widget(form=form, exclude_cols=exclude_cols)

    def _edit(self, pk):
        get_filter_args(self._filters, disallow_if_not_in_search=False)
        exclude_cols = self._filters.get_relation_cols()
        item = self.datamodel.get(pk, self._base_filters)
        if not item:
            abort(404)
        pk = self.datamodel.get_pk_value(item)
        if request.method == "POST":
            form = self.edit_form.refresh(request.form)
            self._fill_form_exclude_cols(exclude_cols, form)
            form._id = pk
            if form.validate():
                self.process_form(form, False)
                with db.session.no_autoflush:
                    form.populate_obj(item)
                if self._validated(form, item) and self._write(self._pre_update_then_edit, item):
                    self.post_update(item)
                    flash(self.edit_row_message, "success")
                    return None
        else:
            form = self.edit_form.refresh(obj=item)
            self.prefill_form(form, pk)
            self.update_redirect()
        widgets = self._get_edit_widget(form=form, exclude_cols=exclude_cols)
        return self._get_related_views_widgets(
            item, filters={}, orders=get_order_args(), pages=get_page_args(),
            page_sizes=get_page_size_args(), widgets=widgets,
        )

    def _visible(self, pk) -> bool:
        pk = self._deserialize_pk_if_composite(pk)
        return self.datamodel.get(pk, self._base_filters) is not None

    # FAB answers an unknown action with a 500 and hands an invisible row to the action as
    # None; both are simply not there.
    @expose("/action/<string:name>/<pk>", methods=["GET", "POST"])
    def action(self, name, pk):
        if name not in self.actions or not self._visible(pk):
            abort(404)
        return super().action(name, pk)

    @expose("/action_post", methods=["POST"])
    def action_post(self):
        pks = request.form.getlist("rowid")
        if request.form.get("action") not in self.actions or not all(map(self._visible, pks)):
            abort(404)
        return super().action_post()

    def pre_delete(self, item):
        # FAB flashes the message of an exception raised here and deletes nothing.
        self.delete_guard(db.session, item)


class HeadendModelRestApi(PermissionsMixin, ModelRestApi):
    model2schemaconverter = HeadendSchemaConverter
    validator = staticmethod(_no_validation)
    delete_guard = staticmethod(_no_validation)
    allow_browser_login = False  # writes need a JWT or an API key, never a bare cookie

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except ValidationFailed as exc:
            db.session.rollback()
            return self.response_422(message=exc.errors)
        except WriteRefused as exc:
            return self.response(409 if exc.scope_error else 422, message=str(exc))

    def pre_add(self, item):
        with db.session.no_autoflush:
            self.validator(db.session, item)

    def pre_update(self, item):
        with db.session.no_autoflush:
            self.validator(db.session, item)

    def pre_delete(self, item):
        self.delete_guard(db.session, item)

    def post_headless(self):
        return self._guarded(super().post_headless)

    def put_headless(self, pk):
        return self._guarded(super().put_headless, pk)

    def delete_headless(self, pk):
        return self._guarded(super().delete_headless, pk)


NO_TENANT = "Choose a tenant to act for (Platform > Act for tenant) first."


def acting() -> bool:
    """Whether this request acts for one tenant (an operator chooses one first)."""
    return not current_scope().all_tenants


class TenantPagesMixin:
    """List and show pages of one tenant's rows: an operator acting for no tenant is asked to
    choose one instead of seeing every tenant's rows. Put it before the ModelView."""

    def _no_tenant(self):
        flash(NO_TENANT, "warning")
        return self.render_template("headend/no_tenant.html", title=self.list_title)

    @expose("/list/")
    @has_access
    def list(self):
        return super().list() if acting() else self._no_tenant()

    @expose("/show/<pk>", methods=["GET"])
    @has_access
    def show(self, pk):
        return super().show(pk) if acting() else self._no_tenant()


def public_base_url() -> str:
    """Where emailed links point: HEADEND_PUBLIC_URL when set, else this request's address.
    Deployments must set it (production refuses to start without): the Host header is the
    client's to choose, and a forged one would put a link to the attacker's site into a
    subscriber's mailbox."""
    return current_app.config.get("HEADEND_PUBLIC_URL") or request.url_root


def pdf_response(content: bytes, filename: str, download: bool = False) -> Response:
    """A PDF for the browser (shown, or saved when `download`), never kept by a shared cache."""
    disposition = "attachment" if download else "inline"
    return Response(content, mimetype="application/pdf", headers={
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "Cache-Control": "private, no-store"})
