"""Stable permission names and the tenant roles built from them.

Every view and API declares one resource as `class_permission_name` and maps its methods onto
two permissions, `can_read` and `can_write`. Roles grant a level per resource, so renaming a view
class never changes who may do what.
"""

from __future__ import annotations

READ, WRITE = "read", "write"

CATALOG = "Catalog"
SUBSCRIBERS = "Subscribers"
SUBSCRIPTIONS = "Subscriptions"
NOTES = "Notes"
PLUGINS = "Plugins"
AUDIT = "AuditLog"
LEDGER = "Ledger"
BILLING = "Billing"
COLLECTIONS = "Collections"  # collection rules, autopay, promises to pay, overdue accounts
PAYMENTS = "Payments"  # payments, refunds, saved payment methods, gateway routes
NETWORK = "Network"  # routers and NAS, service activation, the reconcile preview, settings
DOCUMENTS = "Documents"  # branding, invoice design, PDFs and batch prints, email settings
PORTAL = "Portal"  # subscriber portal logins and invitations
TENANTS = "Tenants"  # operators only

RESOURCES = (CATALOG, SUBSCRIBERS, SUBSCRIPTIONS, NOTES, PLUGINS, AUDIT, LEDGER, BILLING,
             COLLECTIONS, PAYMENTS, NETWORK, DOCUMENTS, PORTAL)

METHOD_PERMISSIONS = {
    # ModelView
    "list": READ, "show": READ, "download": READ, "add": WRITE, "edit": WRITE,
    "delete": WRITE, "action": WRITE, "action_post": WRITE,
    # ModelRestApi
    "get": READ, "get_list": READ, "info": READ, "post": WRITE, "put": WRITE,
}

_ALL_READ = {resource: READ for resource in RESOURCES}

ROLE_GRANTS: dict[str, dict[str, str]] = {
    "Admin": {**{r: WRITE for r in RESOURCES}, AUDIT: READ},
    "Billing": {
        **_ALL_READ, CATALOG: WRITE, SUBSCRIBERS: WRITE, SUBSCRIPTIONS: WRITE, NOTES: WRITE,
        LEDGER: WRITE, BILLING: WRITE, COLLECTIONS: WRITE, PAYMENTS: WRITE, DOCUMENTS: WRITE,
        PORTAL: WRITE,
    },
    "Support": {**_ALL_READ, NOTES: WRITE, PORTAL: WRITE},
    "Technician": {**_ALL_READ, SUBSCRIPTIONS: WRITE, NOTES: WRITE, NETWORK: WRITE},
    "ReadOnly": dict(_ALL_READ),
}
TENANT_ROLES = tuple(ROLE_GRANTS)


def permissions_of(level: str) -> tuple[str, ...]:
    return ("can_read",) if level == READ else ("can_read", "can_write")


# FAB's own API documentation (OpenAPI spec and Swagger UI): every staff role may read it.
API_DOCS = [["^OpenApi$", "^can_get$"], ["^SwaggerView$", "^can_show$"]]


def fab_roles() -> dict[str, list[list[str]]]:
    """ROLE_GRANTS in FAB_ROLES form: [view-name regex, permission regex] pairs."""
    roles = {}
    for role, grants in ROLE_GRANTS.items():
        roles[role] = API_DOCS + [
            [f"^{resource}$", f"^({'|'.join(permissions_of(level))})$"]
            for resource, level in grants.items()
        ]
    return roles
