"""Thin FAB base classes: every write goes through a domain validator, errors name fields.

A view or API sets `validator(session, item)` and optionally `delete_guard(session, item)`;
both are plain service functions raising ValidationFailed. The UI re-renders the form with the
errors under their fields and the input kept; the API answers 422 JSON {"message": {field: [...]}}.
Nothing is written when validation fails.
"""

from __future__ import annotations

from flask import abort, flash, request
from flask_appbuilder import ModelRestApi, ModelView
from flask_appbuilder.urltools import (
    get_filter_args,
    get_order_args,
    get_page_args,
    get_page_size_args,
)

from headend.db import db
from headend.errors import ValidationFailed
from headend.ui import PermissionsMixin


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
                if self._validated(form, item):
                    self.pre_add(item)
                    if self.datamodel.add(item):
                        self.post_add(item)
                        flash(self.add_row_message, "success")
                        return None
                    db.session.rollback()
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
                if self._validated(form, item):
                    self.pre_update(item)
                    if self.datamodel.edit(item):
                        self.post_update(item)
                        flash(self.edit_row_message, "success")
                        return None
                    db.session.rollback()
        else:
            form = self.edit_form.refresh(obj=item)
            self.prefill_form(form, pk)
            self.update_redirect()
        widgets = self._get_edit_widget(form=form, exclude_cols=exclude_cols)
        return self._get_related_views_widgets(
            item, filters={}, orders=get_order_args(), pages=get_page_args(),
            page_sizes=get_page_size_args(), widgets=widgets,
        )

    def pre_delete(self, item):
        # FAB flashes the message of an exception raised here and deletes nothing.
        self.delete_guard(db.session, item)


class HeadendModelRestApi(PermissionsMixin, ModelRestApi):
    validator = staticmethod(_no_validation)
    delete_guard = staticmethod(_no_validation)
    allow_browser_login = False  # writes need a JWT or an API key, never a bare cookie

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except ValidationFailed as exc:
            db.session.rollback()
            return self.response_422(message=exc.errors)

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
