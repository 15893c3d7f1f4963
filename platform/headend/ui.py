"""Registering views and APIs so that menus follow the permission of the resource behind them."""

from __future__ import annotations

from flask_appbuilder import AppBuilder

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
