"""The invoice design: validation by field (nothing saved when refused), the form a tenant may
choose, the designer page and its preview of unsaved values."""

from __future__ import annotations

import pytest
from headend.db import db
from headend.documents.models import InvoiceDesign
from headend.documents.services import current_design, form_choices, save_design
from headend.errors import ValidationFailed
from headend.plugins.interfaces import InvoiceForm
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.documents_helpers import invoiced_tenant, pdf_text


class PlainForm(InvoiceForm):
    plugin_id = "plain_form"
    name = "Plain"

    def render(self, invoice, branding):
        from headend_form_classic import ClassicForm

        return ClassicForm().render(invoice, {**branding, "display_name": "PLAIN FORM"})


class PlainPlugin:
    from headend import hookimpl

    @hookimpl
    def register_invoice_forms(self):
        return [PlainForm()]


@pytest.fixture
def plain_form(app):
    pm = app.extensions["headend_plugins"]
    plugin = PlainPlugin()
    pm.register(plugin, name="plain-form")
    yield
    pm.unregister(plugin)


def _designs() -> int:
    return db.session.scalar(select(func.count(InvoiceDesign.id)))


@pytest.mark.parametrize(("values", "field"), [
    ({"form_plugin_id": "no_such_form"}, "form_plugin_id"),
    ({"columns": ["quantity", "colour"]}, "columns"),
    ({"columns": "quantity"}, "columns"),
    ({"header_text": "x" * 501}, "header_text"),
    ({"footer_text": "x" * 501}, "footer_text"),
    ({"marketing_message": "x" * 1001}, "marketing_message"),
    ({"remittance_stub": "yes"}, "remittance_stub"),
    ({"show_usage": None}, "show_usage"),
    ({"paper_size": "A4"}, "paper_size"),
])
def test_bad_design_values_name_their_field_and_save_nothing(app, make_tenant, values, field):
    tenant = make_tenant("Valid ISP")
    with app.app_context(), acting_as(tenant):
        with pytest.raises(ValidationFailed) as refused:
            save_design(db.session, tenant, **values)
        assert field in refused.value.errors
        db.session.rollback()
        assert _designs() == 0


def test_a_saved_design_is_kept_and_fields_not_given_stay(app, make_tenant):
    tenant = make_tenant("Saved ISP")
    with app.app_context(), acting_as(tenant):
        assert current_design(db.session).form_plugin_id == "classic"  # the default, unsaved
        save_design(db.session, tenant, marketing_message="  Refer a friend  ",
                    columns=["tax", "quantity"])
        db.session.commit()
        save_design(db.session, tenant, remittance_stub=False)
        db.session.commit()
        row = current_design(db.session)
        assert (row.marketing_message, row.columns, row.remittance_stub) == (
            "Refer a friend", ["quantity", "tax"], False)
        assert _designs() == 1


def test_a_form_is_offered_once_the_tenant_enables_it(app, make_tenant, plain_form):
    from headend.plugins.services import set_enabled

    tenant = make_tenant("Choice ISP")
    with app.app_context(), acting_as(tenant):
        assert [f.plugin_id for f in form_choices(tenant)] == ["classic"]
        with pytest.raises(ValidationFailed):
            save_design(db.session, tenant, form_plugin_id="plain_form")
        db.session.rollback()
        set_enabled(db.session, "plain_form", True)
        db.session.commit()
        assert [f.plugin_id for f in form_choices(tenant)] == ["classic", "plain_form"]
        save_design(db.session, tenant, form_plugin_id="plain_form")
        db.session.commit()


def test_the_chosen_form_draws_the_invoice(app, make_tenant, plain_form, login_as):
    from headend.plugins.services import set_enabled

    tenant, (invoice_id, _) = invoiced_tenant(app, make_tenant, "Drawn ISP")
    with app.app_context(), acting_as(tenant):
        set_enabled(db.session, "plain_form", True)
        save_design(db.session, tenant, form_plugin_id="plain_form")
        db.session.commit()
    resp = login_as(tenant).get(f"/documents/invoice/{invoice_id}.pdf")
    assert "PLAIN FORM" in pdf_text(resp.data)


def _form(**over):
    values = {"form_plugin_id": "classic", "header_text": "", "footer_text": "",
              "marketing_message": "", "columns": ["quantity", "tax"],
              "remittance_stub": "y", "show_usage": "y", "primary_color": "#1f4e79",
              "accent_color": "#f0a500"}
    values.update(over)
    return values


def test_the_designer_saves_design_and_colours(app, make_tenant, login_as):
    tenant = make_tenant("Designer ISP")
    client = login_as(tenant)
    page = client.get("/documents/design/")
    assert page.status_code == 200 and b'id="preview"' in page.data
    resp = client.post("/documents/design/", data=_form(marketing_message="Go fiber",
                                                        primary_color="#112233"))
    assert resp.status_code == 302
    with app.app_context(), acting_as(tenant):
        from headend.branding.services import branding_for

        assert current_design(db.session).marketing_message == "Go fiber"
        assert branding_for(db.session, tenant).primary_color == "#112233"


def test_the_designer_shows_errors_and_saves_nothing(app, make_tenant, login_as):
    tenant = make_tenant("Refused ISP")
    client = login_as(tenant)
    resp = client.post("/documents/design/", data=_form(primary_color="red",
                                                        header_text="x" * 600))
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert 'data-error-for="primary_color"' in body and 'data-error-for="header_text"' in body
    with app.app_context(), acting_as(tenant):
        assert _designs() == 0
        from headend.branding.services import branding_row

        assert branding_row(db.session, tenant) is None


def test_the_preview_draws_unsaved_values_and_saves_nothing(app, make_tenant, login_as):
    tenant, (invoice_id, _) = invoiced_tenant(app, make_tenant, "Preview ISP")
    client = login_as(tenant, "ReadOnly")
    resp = client.get("/documents/design/preview.pdf", query_string=_form(
        marketing_message="Not saved yet", columns=["period"]))
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    text = " ".join(pdf_text(resp.data).split())
    assert "Not saved yet" in text and "Qty" not in text and "Unit price" not in text
    assert "Fiber 500 monthly" in text, "the latest invoice is previewed"
    bad = client.get("/documents/design/preview.pdf", query_string=_form(accent_color="blue"))
    assert bad.status_code == 422 and "accent_color" in bad.get_json()["message"]
    with app.app_context(), acting_as(tenant):
        assert _designs() == 0


def test_without_invoices_the_preview_draws_a_sample(app, make_tenant, login_as):
    tenant = make_tenant("Sample ISP")
    resp = login_as(tenant).get("/documents/design/preview.pdf", query_string=_form())
    assert "INV-SAMPLE-000001" in pdf_text(resp.data)


def test_readonly_staff_cannot_save_the_design(app, make_tenant, login_as):
    tenant = make_tenant("Readonly ISP")
    client = login_as(tenant, "ReadOnly")
    assert client.get("/documents/design/").status_code == 200
    resp = client.post("/documents/design/", data=_form(marketing_message="nope"))
    assert resp.status_code in (302, 403)
    with app.app_context(), acting_as(tenant):
        assert _designs() == 0
