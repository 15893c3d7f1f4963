"""Documents > Branding: the tenant's name, logo, colours and primary, billing and "contact us"
details; and the public logo route the signup page, the portal and emails link to
(`/brand/<tenant slug>/logo`)."""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access

from headend.branding.models import LOGO_MAX_BYTES
from headend.branding.services import (
    COLOR_FIELDS,
    TEXT_FIELDS,
    branding_row,
    logo_of,
    save_branding,
)
from headend.db import db
from headend.tenancy import permissions as perms
from headend.tenancy.context import current_scope
from headend.ui import PermissionsMixin, add_view
from headend.views_base import NO_TENANT, acting, commit_service

CATEGORY = "Documents"
FIELDS = tuple(TEXT_FIELDS) + COLOR_FIELDS
public = Blueprint("brand", __name__, url_prefix="/brand")


def logo_url(tenant_slug: str) -> str:
    """Where the tenant's logo is served (public; 404 when it has none)."""
    return url_for("brand.logo", slug=tenant_slug)


@public.route("/<slug>/logo")
def logo(slug: str):
    """The tenant's logo for public pages; no login. Cached briefly, revalidated by ETag."""
    found = logo_of(db.session, slug)
    db.session.rollback()
    if found is None:
        abort(404)
    content, media_type = found
    response = Response(content, mimetype=media_type)
    response.set_etag(hashlib.sha256(content).hexdigest()[:32])
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response.make_conditional(request)



class BrandingSettingsView(PermissionsMixin, BaseView):
    """The tenant's face on invoices, emails, the signup page and the portal."""

    route_base = "/documents/branding"
    class_permission_name = perms.DOCUMENTS
    default_view = "index"
    method_permission_name = {"index": perms.READ, "save": perms.WRITE}

    @expose("/")
    @has_access
    def index(self):
        if not acting():
            flash(NO_TENANT, "warning")
            return self._page({}, {})
        row = branding_row(db.session, current_scope().tenant_id)
        values = {f: (getattr(row, f, None) or "") for f in FIELDS} if row else {}
        values.setdefault("primary_color", "#1f4e79")
        values.setdefault("accent_color", "#f0a500")
        return self._page(values, {})

    @expose("/", methods=["POST"])
    @has_access
    def save(self):
        values = {f: request.form.get(f, "") for f in FIELDS}
        if not acting():
            flash(NO_TENANT, "danger")
            return self._page(values, {})
        upload = request.files.get("logo")
        # one byte over the limit is enough to refuse it: never read an upload of any size
        logo = upload.read(LOGO_MAX_BYTES + 1) if upload and upload.filename else None
        _, errors = commit_service(save_branding, logo=logo,
                                   clear_logo=request.form.get("clear_logo") == "y",
                                   subject="branding", **values)
        if errors:
            return self._page(values, errors)
        flash("Branding saved", "success")
        return redirect(url_for("BrandingSettingsView.index"))

    def _page(self, values, errors):
        row = branding_row(db.session, current_scope().tenant_id) if acting() else None
        slug = None
        if acting():
            from headend.tenancy.models import Tenant

            slug = db.session.get(Tenant, current_scope().tenant_id).slug
        return self.render_template(
            "branding/settings.html", values=values, errors=errors, acting=acting(),
            has_logo=bool(row and row.logo), logo_src=logo_url(slug) if slug else None,
            max_kb=LOGO_MAX_BYTES // 1024,
            can_write=current_app.appbuilder.sm.has_access("can_write", perms.DOCUMENTS))


def register(appbuilder):
    add_view(appbuilder, BrandingSettingsView, "Branding", category=CATEGORY,
             icon="fa-paint-brush")
    current_app._get_current_object().register_blueprint(public)
