"""Operators' pages: tenants, and choosing the tenant to act for."""

from __future__ import annotations

from flask import abort, flash, redirect, request, session, url_for
from flask_appbuilder import BaseView, expose, has_access

from headend.db import db
from headend.tenancy import permissions as perms
from headend.tenancy.context import is_operator
from headend.tenancy.models import Tenant
from headend.tenancy.services import tenant_created, validate_tenant
from headend.ui import PermissionsMixin, add_view, optional_checkboxes
from headend.views_base import HeadendInterface, HeadendModelView


class TenantView(HeadendModelView):
    datamodel = HeadendInterface(Tenant)
    class_permission_name = perms.TENANTS
    validator = staticmethod(validate_tenant)
    list_columns = ["name", "slug", "currency", "timezone", "active", "created_at"]
    add_columns = edit_columns = ["name", "slug", "currency", "timezone", "active"]
    show_columns = ["name", "slug", "currency", "timezone", "active", "created_at"]
    search_columns = ["name", "slug"]
    add_form_extra_fields = edit_form_extra_fields = optional_checkboxes(Tenant)

    def pre_add(self, item):
        # The tenant and everything it starts with commit together (FAB commits in add()).
        db.session.add(item)
        db.session.flush()
        tenant_created(db.session, item)


class ActAsTenantView(PermissionsMixin, BaseView):
    """Operators pick the tenant they act for; until they do they see every tenant."""

    route_base = "/tenancy"
    class_permission_name = perms.TENANTS
    default_view = "act"
    method_permission_name = {"act": "write"}

    @expose("/act", methods=["GET", "POST"])
    @has_access
    def act(self):
        from flask_login import current_user

        if not is_operator(current_user):
            abort(403)
        if request.method == "POST":
            tenant_id = request.form.get("tenant_id", type=int)
            if tenant_id and db.session.get(Tenant, tenant_id) is None:
                abort(404)
            if tenant_id:
                session["acting_tenant_id"] = tenant_id
            else:
                session.pop("acting_tenant_id", None)
            flash("Now acting for " + (db.session.get(Tenant, tenant_id).name if tenant_id
                                       else "all tenants"), "info")
            return redirect(url_for("DashboardIndexView.index"))
        tenants = db.session.query(Tenant).order_by(Tenant.name).all()
        return self.render_template(
            "headend/act_as.html", tenants=tenants, acting=session.get("acting_tenant_id")
        )


def register(appbuilder):
    add_view(appbuilder, TenantView, "Tenants", category="Platform", icon="fa-building")
    add_view(appbuilder, ActAsTenantView, "Act for tenant", category="Platform",
             icon="fa-exchange")
