"""The audit log, read-only: who changed what, when, before and after."""



from headend.audit.models import AuditLog
from headend.tenancy import permissions as perms
from headend.ui import add_view
from headend.views_base import HeadendInterface, HeadendModelView


class AuditLogView(HeadendModelView):
    datamodel = HeadendInterface(AuditLog)
    class_permission_name = perms.AUDIT
    base_permissions = ["can_read"]
    list_columns = ["at", "actor_name", "action", "entity", "entity_id"]
    show_columns = ["at", "actor_name", "action", "entity", "entity_id", "before", "after"]
    search_columns = ["actor_name", "action", "entity", "entity_id"]
    base_order = ("at", "desc")


def register(appbuilder):
    add_view(appbuilder, AuditLogView, "Audit log", category="Settings", icon="fa-history")
