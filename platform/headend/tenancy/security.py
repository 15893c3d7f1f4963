"""FAB security manager: tenant-aware users and role-aware menus."""

from __future__ import annotations

from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.views import UserDBModelView

from headend.tenancy.models import TenantUser
from headend.tenancy.permissions import fab_roles


class TenantUserDBModelView(UserDBModelView):
    list_columns = ["first_name", "last_name", "username", "email", "tenant", "active", "roles"]
    show_fieldsets = [
        (
            "User info",
            {"fields": ["username", "active", "roles", "tenant", "login_count"]},
        ),
        ("Personal Info", {"fields": ["first_name", "last_name", "email"], "expanded": True}),
        ("Audit Info", {"fields": ["last_login", "fail_login_count", "created_on", "changed_on"]}),
    ]
    add_columns = [
        "first_name", "last_name", "username", "active", "email", "roles", "tenant",
        "password", "conf_password",
    ]
    edit_columns = ["first_name", "last_name", "username", "active", "email", "roles", "tenant"]


class HeadendSecurityManager(SecurityManager):
    user_model = TenantUser
    userdbmodelview = TenantUserDBModelView

    @staticmethod
    def create_builtin_roles():
        return fab_roles()

    def has_access(self, permission_name: str, view_name: str) -> bool:
        # A menu entry is visible to whoever may read the resource behind it.
        if permission_name == "menu_access":
            resources = getattr(self.appbuilder, "headend_menu", {}).get(view_name)
            if resources is not None:
                return any(super(HeadendSecurityManager, self).has_access("can_read", r)
                           for r in resources)
        return super().has_access(permission_name, view_name)

    def auth_user_db(self, username, password):
        """Staff of a deactivated tenant cannot log in (operators are never blocked here)."""
        from headend.tenancy.context import is_operator, tenant_is_active

        user = super().auth_user_db(username, password)
        if user is not None and not is_operator(user) and user.tenant_id is not None \
                and not tenant_is_active(user.tenant_id):
            return None
        return user

    def sync_roles(self) -> None:
        """Create the Operator, Public and tenant roles; permissions come from the views."""
        for name in (*self.builtin_roles, self.auth_role_admin, self.auth_role_public):
            self.add_role(name)
