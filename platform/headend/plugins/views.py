"""The Plugins page: installed plugins, and enabling/configuring them for the acting tenant."""

from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access

from headend.db import db
from headend.errors import ValidationFailed
from headend.plugins import services
from headend.plugins.manager import current_manager
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin, add_view

CHOOSE_TENANT = "Choose a tenant to act for before changing plugin settings."


def form_values(schema, form) -> dict:
    """The schema's fields from a posted form; an unticked checkbox is an explicit false."""
    values = {}
    for field in schema:
        if field.type == "bool":
            values[field.name] = field.name in form
        elif field.name in form:
            values[field.name] = form[field.name]
    return values


class PluginsView(PermissionsMixin, BaseView):
    route_base = "/plugins"
    class_permission_name = perms.PLUGINS
    default_view = "index"
    method_permission_name = {
        **perms.METHOD_PERMISSIONS, "index": "read", "configure": "write", "toggle": "write",
    }

    def _plugin(self, plugin_id):
        plugin = current_manager().get(plugin_id)
        if plugin is None:
            abort(404)
        return plugin

    @expose("/")
    @has_access
    def index(self):
        plugins = list(current_manager().registry.values())
        return self.render_template(
            "plugins/list.html", rows=services.overview(db.session, plugins),
            acting=not current_scope().all_tenants,
        )

    @expose("/configure/<plugin_id>", methods=["GET", "POST"])
    @has_access
    def configure(self, plugin_id):
        plugin = self._plugin(plugin_id)
        errors, entered = {}, {}
        row = services.configuration(db.session, plugin_id)
        enabled = bool(row and row.enabled)
        if request.method == "POST":
            if current_scope().all_tenants:
                flash(CHOOSE_TENANT, "warning")
                return redirect(url_for("PluginsView.index"))
            entered = form_values(plugin.config_schema, request.form)
            enabled = "enabled" in request.form
            try:
                services.configure_plugin(db.session, plugin_id, enabled, entered)
                db.session.commit()
            except ValidationFailed as exc:
                db.session.rollback()
                errors = exc.errors
            else:
                flash(f"{plugin.name}: settings saved", "success")
                return redirect(url_for("PluginsView.index"))
        shown = services.public_settings(db.session, plugin_id)
        for name, value in entered.items():
            if not plugin.config_schema.field(name).secret:
                shown[name] = value  # keep what was typed when re-rendering with errors
        return self.render_template(
            "plugins/configure.html", plugin=plugin, values=shown, errors=errors,
            enabled=enabled, redacted=services.REDACTED,
        )

    @expose("/toggle/<plugin_id>", methods=["POST"])
    @has_access
    def toggle(self, plugin_id):
        plugin = self._plugin(plugin_id)
        if current_scope().all_tenants:
            flash(CHOOSE_TENANT, "warning")
            return redirect(url_for("PluginsView.index"))
        enable = request.form.get("enabled") == "1"
        try:
            services.set_enabled(db.session, plugin_id, enable)
            db.session.commit()
        except ValidationFailed as exc:
            db.session.rollback()
            flash(f"{plugin.name} cannot be enabled yet: {exc}", "danger")
            return redirect(url_for("PluginsView.configure", plugin_id=plugin_id))
        flash(f"{plugin.name} {'enabled' if enable else 'disabled'}", "success")
        return redirect(url_for("PluginsView.index"))


def register(appbuilder):
    add_view(appbuilder, PluginsView, "Plugins", category="Settings", icon="fa-plug")
