"""Branding: saving by field, the logo (PNG/JPEG/GIF sniffed by its bytes, size-checked;
nothing saved when refused), the settings page and the public logo route."""

from __future__ import annotations

import io

import pytest
from headend.branding.models import LOGO_MAX_BYTES, Branding
from headend.branding.services import branding_for, save_branding, sniff_image
from headend.db import db
from headend.errors import ValidationFailed
from headend.tenancy.context import acting_as
from PIL import Image
from sqlalchemy import func, select


def _image(kind: str, size=(64, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, kind)
    return out.getvalue()


def _rows() -> int:
    return db.session.scalar(select(func.count(Branding.id)))


def test_images_are_known_by_their_bytes():
    assert sniff_image(_image("PNG")) == "image/png"
    assert sniff_image(_image("JPEG")) == "image/jpeg"
    assert sniff_image(_image("GIF")) == "image/gif"
    assert sniff_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert sniff_image(_image("BMP")) is None


@pytest.mark.parametrize(("values", "field"), [
    ({"primary_color": "blue"}, "primary_color"),
    ({"accent_color": "#12345"}, "accent_color"),
    ({"accent_color": "#12345g"}, "accent_color"),
    ({"display_name": "x" * 121}, "display_name"),
    ({"display_name": "Valley\nFiber"}, "display_name"),
    ({"billing_email": "not-an-address"}, "billing_email"),
    ({"contact_message": "x" * 1001}, "contact_message"),
    ({"logo_url": "http://x"}, "logo_url"),
    ({"logo": b"plain text, not an image"}, "logo"),
    ({"logo": b"\x89PNG\r\n\x1a\n" + b"\0" * LOGO_MAX_BYTES}, "logo"),
    ({"logo": b""}, "logo"),
])
def test_bad_branding_names_its_field_and_saves_nothing(app, make_tenant, values, field):
    tenant = make_tenant("Brand ISP")
    with app.app_context(), acting_as(tenant):
        with pytest.raises(ValidationFailed) as refused:
            save_branding(db.session, **{"phone": "555-0100"} | values)
        assert field in refused.value.errors, refused.value.errors
        db.session.rollback()
        assert _rows() == 0


def test_a_logo_that_only_begins_like_an_image_or_is_huge_is_refused(app, make_tenant):
    from PIL import Image

    tenant = make_tenant("Odd ISP")
    out = io.BytesIO()
    Image.new("1", (5000, 10)).save(out, "PNG")  # tiny file, 5000 pixels wide
    with app.app_context(), acting_as(tenant):
        for logo, words in ((b"\x89PNG\r\n\x1a\n" + b"junk" * 100, "not a readable image"),
                            (_image("PNG")[:60], "not a readable image"),
                            (out.getvalue(), "5000 x 10 pixels")):
            with pytest.raises(ValidationFailed) as refused:
                save_branding(db.session, logo=logo)
            assert words in refused.value.errors["logo"][0]
        db.session.rollback()
        assert _rows() == 0


def test_an_oversized_logo_says_how_large_it_may_be(app, make_tenant):
    tenant = make_tenant("Big ISP")
    with app.app_context(), acting_as(tenant), pytest.raises(ValidationFailed) as refused:
        save_branding(db.session, logo=_image("PNG") + b"\0" * LOGO_MAX_BYTES)
    (message,) = refused.value.errors["logo"]
    assert f"{LOGO_MAX_BYTES // 1024} KB" in message and "too large" in message


def test_saved_branding_fills_what_documents_read(app, make_tenant):
    tenant = make_tenant("Filled ISP", "filled-isp")
    with app.app_context(), acting_as(tenant):
        view = branding_for(db.session, tenant)
        assert (view.display_name, view.primary_color, view.logo) == ("Filled ISP", "#1f4e79",
                                                                      None)
        save_branding(db.session, display_name=" Filled Fiber ", primary_color="#AABBCC",
                      phone="555-0100", email="hi@filled.test", logo=_image("JPEG"))
        db.session.commit()
        view = branding_for(db.session, tenant)
        assert view.display_name == "Filled Fiber" and view.primary_color == "#aabbcc"
        assert view.billing_name == "Filled Fiber" and view.contact_phone == "555-0100"
        assert view.logo_media_type == "image/jpeg"
        save_branding(db.session, clear_logo=True)
        db.session.commit()
        assert branding_for(db.session, tenant).logo is None


def test_the_settings_page_uploads_a_logo_and_the_public_route_serves_it(app, make_tenant,
                                                                         login_as, client):
    tenant = make_tenant("Logo ISP", "logo-isp")
    admin = login_as(tenant)
    assert admin.get("/documents/branding/").status_code == 200
    assert client.get("/brand/logo-isp/logo").status_code == 404  # no logo yet
    gif = _image("GIF")
    resp = admin.post("/documents/branding/", content_type="multipart/form-data", data={
        "display_name": "Logo Fiber", "primary_color": "#102030", "accent_color": "#405060",
        "logo": (io.BytesIO(gif), "logo.gif")})
    assert resp.status_code == 302
    served = client.get("/brand/logo-isp/logo")  # public: no login
    assert served.status_code == 200 and served.mimetype == "image/gif" and served.data == gif
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    again = client.get("/brand/logo-isp/logo", headers={"If-None-Match": served.headers["ETag"]})
    assert again.status_code == 304
    assert client.get("/brand/no-such-tenant/logo").status_code == 404


def test_a_non_image_logo_with_an_image_name_is_refused_on_the_page(app, make_tenant, login_as,
                                                                   client):
    tenant = make_tenant("Fake ISP", "fake-isp")
    admin = login_as(tenant)
    resp = admin.post("/documents/branding/", content_type="multipart/form-data", data={
        "display_name": "Fake Fiber", "primary_color": "#102030", "accent_color": "#405060",
        "logo": (io.BytesIO(b"<?php echo 'hi'; ?>"), "logo.png")})
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert 'data-error-for="logo"' in body and "must be a PNG, JPEG or GIF image" in body
    big = admin.post("/documents/branding/", content_type="multipart/form-data", data={
        "display_name": "Fake Fiber", "primary_color": "#102030", "accent_color": "#405060",
        "logo": (io.BytesIO(_image("PNG") + b"\0" * LOGO_MAX_BYTES), "logo.png")})
    assert "too large" in big.get_data(as_text=True)
    with app.app_context(), acting_as(tenant):
        assert _rows() == 0, "nothing saved, not even the valid fields"
    assert client.get("/brand/fake-isp/logo").status_code == 404


def test_a_suspended_tenants_logo_is_not_served(app, make_tenant, client):
    from headend.tenancy.models import Tenant

    tenant = make_tenant("Gone ISP", "gone-isp")
    with app.app_context(), acting_as(tenant):
        save_branding(db.session, logo=_image("PNG"))
        db.session.commit()
    assert client.get("/brand/gone-isp/logo").status_code == 200
    with app.app_context(), acting_as(None):
        db.session.get(Tenant, tenant).active = False
        db.session.commit()
    assert client.get("/brand/gone-isp/logo").status_code == 404
