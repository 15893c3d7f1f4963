"""Registering views so that menus follow the permission of the resource behind them, and how
stored values read on admin pages."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from flask import url_for
from flask_appbuilder import AppBuilder
from markupsafe import Markup
from sqlalchemy import select
from wtforms import BooleanField, StringField, ValidationError

from headend.db import ExactDecimal, db
from headend.tenancy.permissions import METHOD_PERMISSIONS


def add_view(appbuilder: AppBuilder, view, name: str, category: str | None = None, **kw):
    """appbuilder.add_view, plus the menu -> resource map HeadendSecurityManager reads."""
    resource = view.class_permission_name
    menu = appbuilder.headend_menu
    menu.setdefault(name, set()).add(resource)
    if category:
        menu.setdefault(category, set()).add(resource)
    return appbuilder.add_view(view, name, category=category, **kw)


def add_view_no_menu(appbuilder: AppBuilder, view):
    return appbuilder.add_view_no_menu(view)


class PermissionsMixin:
    """Collapse every method onto can_read / can_write of one stable resource name."""

    method_permission_name = METHOD_PERMISSIONS
    # Every view of a resource declares the same two, or FAB's permission sync fights itself.
    base_permissions = ["can_read", "can_write"]


# --- how stored values read on list and show pages ----------------------------------------

def decimal_text(value) -> str:
    """A price or rate for people: at least 2 places, more only when the value has them
    (49.9900 -> 49.99, 0.0125 stays); nothing -> a dash, never "None"."""
    if value is None:
        return "—"
    number = (value if isinstance(value, Decimal) else Decimal(str(value))).normalize()
    if number.as_tuple().exponent > -2:
        number = number.quantize(Decimal("0.01"))
    return f"{number:f}"


def yes_no_text(value) -> str:
    if value is None:
        return "—"
    return "Yes" if value else "No"


def decimal_formatters(*columns: str) -> dict:
    """FAB formatters_columns for ExactDecimal columns."""
    return {column: decimal_text for column in columns}


def yes_no_formatters(*columns: str) -> dict:
    """FAB formatters_columns for boolean columns."""
    return {column: yes_no_text for column in columns}


def _or_dash(value):
    return "—" if value is None else value


def _moment_text(value) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _list_text(values) -> str:
    return ", ".join(map(str, values)) or "—"


def formatters_for(model) -> dict:
    """Formatters for every column and to-many relationship of a model, so no list or show page
    of it prints 49.9900, None, True, microseconds or a Python list."""
    mapper = sa.inspect(model)
    columns = mapper.columns
    formatters = {c.key: _or_dash for c in columns if c.nullable}
    formatters |= {c.key: _moment_text for c in columns if isinstance(c.type, sa.DateTime)}
    formatters |= {r.key: _list_text for r in mapper.relationships if r.uselist}
    formatters |= decimal_formatters(*(c.key for c in columns if isinstance(c.type, ExactDecimal)))
    formatters |= yes_no_formatters(*(c.key for c in columns if isinstance(c.type, sa.Boolean)))
    return formatters


class LinkedListMixin:
    """Make the given list columns links to each row's page (FAB formatters only see the value,
    not the row, so the list values are wrapped once the list widget is built)."""

    link_columns: tuple[str, ...] = ()
    link_endpoint = ""  # defaults to this view's show page

    def _get_list_widget(self, *args, **kwargs):
        widgets = super()._get_list_widget(*args, **kwargs)
        if self.link_columns:
            template = widgets["list"].template_args
            endpoint = self.link_endpoint or f"{type(self).__name__}.show"
            rows = list(template["value_columns"])
            for row, pk in zip(rows, template["pks"], strict=True):
                href = url_for(endpoint, pk=pk)
                for column in self.link_columns:
                    row[column] = Markup('<a href="{}">{}</a>').format(href, row[column] or "—")
            template["value_columns"] = rows
        return widgets


def titled(plural: str, singular: str):
    """Class decorator: page titles that read naturally ("Service lines", "Add service line")
    instead of FAB's "List Package Service Line". The list title also names related-view tabs."""

    def apply(view):
        view.list_title = plural
        view.show_title = singular[:1].upper() + singular[1:]
        view.add_title = f"Add {singular}"
        view.edit_title = f"Edit {singular}"
        view.add_row_message = f"{view.show_title} added"
        view.edit_row_message = f"{view.show_title} saved"
        view.delete_row_message = f"{view.show_title} deleted"
        return view

    return apply


def labels_for(model, **overrides: str) -> dict:
    """Sentence-case labels for every column and relationship ("Setup fee", not FAB's
    "Setup Fee"), so list headers, show pages and forms say the same thing."""
    mapper = sa.inspect(model)
    keys = [c.key for c in mapper.columns] + [r.key for r in mapper.relationships]
    return {key: key.replace("_", " ").capitalize() for key in keys} | overrides


def optional_checkboxes(model) -> dict:
    """Form fields for a model's boolean columns that may be left unticked.

    FAB marks every NOT NULL column required, and an unticked checkbox sends nothing, so a
    plain generated form could never save False.
    """
    return {
        col.key: BooleanField(
            col.key.replace("_", " ").capitalize(),
            default=col.default.arg if col.default is not None else False,
        )
        for col in sa.inspect(model).columns
        if isinstance(col.type, sa.Boolean)
    }


def row_by_key_field(model, key: str, label: str, description: str = "") -> StringField:
    """A text input naming a row by a unique key (an account number) instead of a drop-down.

    FAB renders a relationship as a <select> of every row: megabytes for 100k subscribers. This
    field resolves what was typed through the scoped session, so another tenant's key is as
    unknown as a missing one.
    """

    class RowByKey(StringField):
        def _value(self):
            return getattr(self.data, key, "") if self.data is not None else ""

        def process_formdata(self, valuelist):
            self.raw_text = (valuelist[0] if valuelist else "").strip()
            self.data = db.session.scalar(
                select(model).where(getattr(model, key) == self.raw_text)
            ) if self.raw_text else None

        def pre_validate(self, form):
            if getattr(self, "raw_text", "") and self.data is None:
                raise ValidationError(f"no {label.lower()} {self.raw_text}")

    return RowByKey(label, description=description)
