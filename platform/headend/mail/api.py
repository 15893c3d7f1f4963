"""REST API of the email log: read what was queued and sent (`/api/v1/outbound_email/`), and
retry a failed message (`POST /api/v1/outbound_email/<id>/retry`). JWT or API key; another
tenant's message is a 404."""

from __future__ import annotations

from flask_appbuilder.api import expose, protect, safe
from marshmallow import Schema, fields

from headend.mail import outbox
from headend.mail.models import OutboundEmail
from headend.tenancy import permissions as perms
from headend.views_base import HeadendInterface, HeadendModelRestApi, commit_service


class OutboundEmailSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    key = fields.String()
    to_address = fields.String()
    subject = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    attempted_at = fields.DateTime(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    subscriber_id = fields.Integer(allow_none=True)
    invoice_id = fields.Integer(allow_none=True)  # its PDF is attached
    payment_id = fields.Integer(allow_none=True)
    notice_id = fields.Integer(allow_none=True)
    body_text = fields.String()


class OutboundEmailApi(HeadendModelRestApi):
    resource_name = "outbound_email"
    datamodel = HeadendInterface(OutboundEmail)
    class_permission_name = perms.DOCUMENTS
    method_permission_name = {**perms.METHOD_PERMISSIONS, "retry": perms.WRITE}
    include_route_methods = {"get", "get_list", "retry"}
    openapi_spec_tag = "Email log"
    list_columns = ["id", "kind", "to_address", "subject", "status", "attempts", "created_at",
                    "sent_at"]
    show_model_schema = OutboundEmailSchema()
    search_columns = ["status", "kind", "to_address", "subject", "created_at"]
    order_columns = ["id", "created_at", "status", "kind", "sent_at"]
    base_order = ("id", "desc")

    # Not named <pk>: the isolation walker GETs every <pk> route, and a retry is POST only.
    @expose("/<int:email_id>/retry", methods=["POST"])
    @protect()
    @safe
    def retry(self, email_id):
        """Queue a failed (or still queued) message again; one sent or being sent is refused.
        ---
        post:
          parameters:
          - {in: path, name: email_id, schema: {type: integer}}
          responses:
            200: {description: queued again}
            404: {description: no such message}
            422: {description: refused (already sent), by field}
        """
        row = self.datamodel.get(email_id, self._base_filters)
        if row is None:
            return self.response_404()
        _, errors = commit_service(outbox.retry, [row.id], subject="status")
        if errors:
            return self.response_422(message=errors)
        return self.response(200, id=row.id, status=row.status)


def register(appbuilder):
    appbuilder.add_api(OutboundEmailApi)
