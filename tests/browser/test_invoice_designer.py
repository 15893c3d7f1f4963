"""The invoice designer in a real browser: changing the colour and the marketing message
redraws the live preview (the PDF of the unsaved values), and Save keeps them."""

from headend.branding.services import branding_for
from headend.db import db
from headend.documents.services import current_design
from headend.tenancy.context import acting_as
from headend.testing import PASSWORD

from tests.browser.conftest import ui_login
from tests.documents_helpers import has_color, invoiced_tenant, page_image, pdf_text


def _preview(page, after: int) -> tuple[int, bytes]:
    """Wait for a preview newer than `after`; (its version, its PDF as the browser fetched)."""
    page.wait_for_function(
        f"Number(document.getElementById('preview').dataset.version) > {after}")
    version = int(page.get_attribute("#preview", "data-version"))
    url = page.get_attribute("#preview", "data-url")
    pdf = page.evaluate("""async (url) => {
        const resp = await fetch(url, {credentials: 'same-origin'});
        const bytes = new Uint8Array(await resp.arrayBuffer());
        return Array.from(bytes);
    }""", url)
    return version, bytes(pdf)


def test_changing_colour_and_message_updates_the_preview_then_save(
        app, live_server, page, make_tenant, make_user):
    tenant, _ = invoiced_tenant(app, make_tenant, "Designer Browser ISP", count=1)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ui_login(page, live_server, make_user(tenant, "Admin"), PASSWORD)
    page.goto(f"{live_server}/documents/design/")
    version, pdf = _preview(page, 0)
    assert "Fiber 500 monthly" in pdf_text(pdf), "the latest invoice is drawn"
    assert not has_color(page_image(pdf), "#c81e64")

    page.fill("#marketing_message", "Switch to Fiber 1000 this month")
    page.eval_on_selector("#primary_color", """(el) => { el.value = '#c81e64';
        el.dispatchEvent(new Event('input', {bubbles: true})); }""")
    version, pdf = _preview(page, version)
    assert "Switch to Fiber 1000 this month" in " ".join(pdf_text(pdf).split())
    assert has_color(page_image(pdf), "#c81e64"), "the new primary colour is drawn"

    page.uncheck("#remittance_stub")
    version, pdf = _preview(page, version)
    assert "Make payable to" not in pdf_text(pdf)

    with app.app_context(), acting_as(tenant):  # nothing saved by previewing
        assert current_design(db.session).marketing_message is None
        db.session.remove()
    page.click("#save-design")
    page.wait_for_selector(".alert-success")
    with app.app_context(), acting_as(tenant):
        row = current_design(db.session)
        assert (row.marketing_message, row.remittance_stub) == (
            "Switch to Fiber 1000 this month", False)
        assert branding_for(db.session, tenant).primary_color == "#c81e64"
    assert errors == []
