"""REST APIs of the network: routers and NAS, a subscriber's Internet service (Autofill, Activate,
Deactivate), and the reconcile (a dry-run preview, or applied now).

JWT or API key only (never a bare cookie); the Network resource: read for GETs, write for the
rest. A router's password and RADIUS secret are write-only: accepted, never answered. Refused
input answers 422 naming the fields, nothing written; another tenant's router or service is a
404. An activation or deactivation reconciles the tenant's network after its commit.
"""

from __future__ import annotations

from flask_appbuilder.api import BaseApi, expose, protect, safe
from marshmallow import Schema, fields
from sqlalchemy import select

from headend.db import db
from headend.errors import ValidationFailed
from headend.network import services
from headend.network.models import Router
from headend.network.reconcile import reconcile
from headend.subscribers.models import ServiceInstance
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin
from headend.views_base import (
    HeadendInterface,
    HeadendModelRestApi,
    commit_or_raise,
    json_body,
)

ROUTER_FIELDS = {"name", "kind", "address", "api_port", "username", "password", "radius_secret",
                 "coa_port", "active"}
ACTIVATE_FIELDS = {"username", "password", "static_ip", "router", "download_override",
                   "upload_override"}


class RouterSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    kind = fields.String()
    address = fields.String()
    api_port = fields.Integer()
    username = fields.String(allow_none=True)
    coa_port = fields.Integer()
    active = fields.Boolean()
    status = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    reconciled_at = fields.DateTime(allow_none=True)


class RouterListSchema(RouterSchema):
    """The same fields, registered once more under the list's name in the OpenAPI spec."""


class ServiceNetworkSchema(Schema):
    id = fields.Integer()
    label = fields.String()
    status = fields.String()
    username = fields.String(allow_none=True)
    static_ip = fields.String(allow_none=True)
    router_id = fields.Integer(allow_none=True)
    download_override = fields.Integer(allow_none=True)
    upload_override = fields.Integer(allow_none=True)
    activated_at = fields.DateTime(allow_none=True)



def _acting() -> None:
    if current_scope().all_tenants:
        raise ValidationFailed({"tenant": "choose a tenant to act for"})



def _target_json(result) -> dict:
    return {"target": result.target, "status": result.status, "error": result.error,
            "added": result.added, "changed": result.changed, "removed": result.removed,
            "live": result.live, "changes": list(result.sample),
            "summary": result.describe()}


class RouterApi(HeadendModelRestApi):
    """POST {"name", "kind": "mikrotik" | "radius_nas", "address", "api_port", "username",
    "password", "radius_secret", "coa_port", "active"}; PUT changes what it is given (a
    password or secret left out or blank keeps the stored one). Secrets are never answered."""

    resource_name = "router"
    datamodel = HeadendInterface(Router)
    class_permission_name = perms.NETWORK
    include_route_methods = {"get", "get_list", "info", "post", "put"}
    list_columns = show_columns = list(RouterSchema._declared_fields)
    list_model_schema = RouterListSchema()
    show_model_schema = RouterSchema()
    add_columns = edit_columns = ["name", "kind", "address", "api_port", "username",
                                  "coa_port", "active"]  # described by `info`; secrets too
    search_columns = ["name", "kind", "active", "status"]
    order_columns = ["name", "kind", "status", "reconciled_at"]
    base_order = ("name", "asc")

    def post_headless(self):
        return self._guarded(self._save, None)

    def put_headless(self, pk):
        router = self.datamodel.get(pk, self._base_filters)
        if router is None:
            return self.response_404()
        return self._guarded(self._save, router)

    def _save(self, router: Router | None):
        _acting()
        data = json_body(ROUTER_FIELDS)
        if not isinstance(data.get("active", True), bool):
            raise ValidationFailed({"active": "must be true or false"})
        kept = {} if router is None else {
            "name": router.name, "kind": router.kind, "address": router.address,
            "api_port": router.api_port, "username": router.username,
            "coa_port": router.coa_port, "active": router.active}
        values = {"name": None, "kind": None, "address": None, "api_port": 8728,
                  "coa_port": 3799, "active": True} | kept | data
        saved = commit_or_raise(services.save_router, router, subject="router", **values)
        return self.response(201 if router is None else 200, id=saved.id,
                             result=RouterSchema().dump(saved))


class ServiceNetworkApi(PermissionsMixin, BaseApi):
    """A subscriber's Internet service (the id of the service on the subscription, as in
    GET /api/v1/subscription/<id>): Autofill, Activate, Deactivate."""

    resource_name = "service_instance"
    class_permission_name = perms.NETWORK
    method_permission_name = {"autofill": perms.WRITE, "activate": perms.WRITE,
                              "deactivate": perms.WRITE}
    allow_browser_login = False  # writes need a JWT or an API key, never a bare cookie
    openapi_spec_tag = "Service network"

    def _act(self, service_id: int, work):
        service = db.session.scalar(select(ServiceInstance).where(
            ServiceInstance.id == service_id))
        if service is None:
            return self.response_404()
        try:
            _acting()
            return work(service)
        except ValidationFailed as exc:
            db.session.rollback()
            return self.response_422(message=exc.errors)

    @expose("/<int:service_id>/autofill", methods=["POST"])
    @protect()
    @safe
    def autofill(self, service_id):
        """A free username from the tenant's pattern and a new password; nothing is saved.
        ---
        post:
          parameters:
          - {in: path, name: service_id, schema: {type: integer}}
          responses:
            200: {description: "result: {username, password}"}
            404: {description: no such service}
        """
        def fill(service):
            username, password = services.autofill(db.session, service.id)
            db.session.rollback()
            return self.response(200, result={"username": username, "password": password})

        return self._act(service_id, fill)

    @expose("/<int:service_id>/activate", methods=["POST"])
    @protect()
    @safe
    def activate(self, service_id):
        """Give the Internet service its credentials (and optional static address, router and
        speed overrides) and make it active; the network follows after the commit.
        ---
        post:
          parameters:
          - {in: path, name: service_id, schema: {type: integer}}
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    username: {type: string}
                    password: {type: string}
                    static_ip: {type: string}
                    router: {type: integer, description: a router's id}
                    download_override: {type: integer, description: "in the package's unit"}
                    upload_override: {type: integer}
          responses:
            200: {description: activated}
            404: {description: no such service}
            422: {description: refused by field; nothing saved}
        """
        def work(service):
            data = json_body(ACTIVATE_FIELDS)
            done = commit_or_raise(services.activate, service.id, subject="service",
                           username=data.get("username"), password=data.get("password"),
                           static_ip=data.get("static_ip"), router_id=data.get("router"),
                           download_override=data.get("download_override"),
                           upload_override=data.get("upload_override"))
            return self.response(200, id=done.id, result=ServiceNetworkSchema().dump(done))

        return self._act(service_id, work)

    @expose("/<int:service_id>/deactivate", methods=["POST"])
    @protect()
    @safe
    def deactivate(self, service_id):
        """Take the service off the network (its entries are removed after the commit).
        ---
        post:
          parameters:
          - {in: path, name: service_id, schema: {type: integer}}
          responses:
            200: {description: deactivated}
            404: {description: no such service}
        """
        def work(service):
            done = commit_or_raise(services.deactivate, service.id, subject="service")
            return self.response(200, id=done.id, result=ServiceNetworkSchema().dump(done))

        return self._act(service_id, work)


class NetworkApi(PermissionsMixin, BaseApi):
    """The reconcile of the tenant's targets: a dry-run preview, or applied now."""

    resource_name = "network"
    class_permission_name = perms.NETWORK
    method_permission_name = {"preview": perms.READ, "apply": perms.WRITE}
    allow_browser_login = False

    def _run(self, dry_run: bool):
        try:
            _acting()
            if dry_run:
                results = reconcile(db.session, dry_run=True)
                db.session.rollback()  # a dry run writes nothing
            else:
                results = commit_or_raise(reconcile, subject="network")
        except ValidationFailed as exc:
            return self.response_422(message=exc.errors)
        return self.response(200, result=[_target_json(r) for r in results])

    @expose("/preview", methods=["GET"])
    @protect()
    @safe
    def preview(self):
        """What a reconcile would change on each target now (drift included).
        ---
        get:
          responses:
            200: {description: "result: per target its status, counts and changes"}
        """
        return self._run(dry_run=True)

    @expose("/reconcile", methods=["POST"])
    @protect()
    @safe
    def apply(self):
        """Reconcile every target now; an unreachable one is reported, the others applied.
        ---
        post:
          responses:
            200: {description: "result: per target its status, counts and changes"}
        """
        return self._run(dry_run=False)


def register(appbuilder):
    appbuilder.add_api(RouterApi)
    appbuilder.add_api(ServiceNetworkApi)
    appbuilder.add_api(NetworkApi)
