"""REST API of invoice documents: GET /api/v1/invoice_document/<id> answers the invoice's PDF,
drawn with the tenant's design. JWT or API key; another tenant's invoice is a 404."""

from __future__ import annotations

from flask_appbuilder.api import BaseApi, expose, protect, safe
from sqlalchemy import select

from headend.billing.models import Invoice
from headend.db import db
from headend.documents.render import RenderFailed, invoice_pdf
from headend.tenancy import permissions as perms
from headend.tenancy.context import acting_as, current_scope
from headend.ui import PermissionsMixin
from headend.views_base import pdf_response


class InvoiceDocumentApi(PermissionsMixin, BaseApi):
    resource_name = "invoice_document"
    class_permission_name = perms.DOCUMENTS
    pk_model = Invoice  # what the <pk> names, for the tenant isolation walker
    method_permission_name = {"get": perms.READ}
    allow_browser_login = False
    openapi_spec_tag = "Invoice documents"

    @expose("/<int:pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk):
        """The invoice as a PDF.
        ---
        get:
          parameters:
          - {in: path, name: pk, schema: {type: integer}}
          responses:
            200:
              description: the PDF
              content: {application/pdf: {schema: {type: string, format: binary}}}
            404: {description: no such invoice}
            422: {description: the invoice form could not draw it}
        """
        invoice = db.session.scalar(select(Invoice).where(Invoice.id == pk))
        if invoice is None:
            return self.response_404()
        filename = f"{invoice.number or invoice.id}.pdf"
        try:
            with acting_as(invoice.tenant_id, actor_name=current_scope().actor_name):
                content = invoice_pdf(db.session, invoice.id)
        except RenderFailed as exc:
            return self.response_422(message={"invoice": [str(exc)]})
        finally:
            db.session.rollback()
        return pdf_response(content, filename)


def register(appbuilder):
    appbuilder.add_api(InvoiceDocumentApi)
