"""REST API of the Plugins page: list plugins with redacted settings, configure one."""

from __future__ import annotations

from flask import request
from flask_appbuilder.api import BaseApi, expose
from flask_appbuilder.security.decorators import protect

from headend.db import db
from headend.errors import ValidationFailed
from headend.plugins import services
from headend.plugins.manager import current_manager
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin


def _describe(session, entry) -> dict:
    p = entry["plugin"]
    return {
        "plugin_id": p.plugin_id, "name": p.name, "kind": p.kind, "version": p.version,
        "enabled": entry["enabled"],
        "settings": services.public_settings(session, p.plugin_id, p),
        "schema": [
            {"name": f.name, "type": f.type, "required": f.required, "secret": f.secret,
             "default": None if f.default is None else str(f.default), "choices": f.choices}
            for f in p.config_schema
        ],
    }


class PluginApi(PermissionsMixin, BaseApi):
    resource_name = "plugins"
    class_permission_name = perms.PLUGINS
    method_permission_name = {**perms.METHOD_PERMISSIONS, "get_list": "read", "put": "write"}
    allow_browser_login = False

    @expose("/", methods=["GET"])
    @protect()
    def get_list(self):
        plugins = list(current_manager().registry.values())
        entries = services.overview(db.session, plugins)
        return self.response(200, result=[_describe(db.session, e) for e in entries])

    @expose("/<plugin_id>", methods=["PUT"])
    @protect()
    def put(self, plugin_id):
        """Body {"enabled": bool, "settings": {...}}; a missing or blank secret keeps its value."""
        plugin = current_manager().get(plugin_id)
        if plugin is None:
            return self.response_404()
        if current_scope().all_tenants:
            return self.response_400(message="choose a tenant to act for")
        body = request.get_json(silent=True) or {}
        try:
            services.configure_plugin(db.session, plugin_id, bool(body.get("enabled")),
                                      body.get("settings") or {}, plugin)
            db.session.commit()
        except ValidationFailed as exc:
            db.session.rollback()
            return self.response_422(message=exc.errors)
        entry = services.overview(db.session, [plugin])[0]
        return self.response(200, result=_describe(db.session, entry))


def register(appbuilder):
    appbuilder.add_api(PluginApi)
