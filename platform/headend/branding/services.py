"""Reading and saving the tenant's branding; readers get defaults when nothing was saved."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, fields

from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.branding.models import LOGO_MAX_BYTES, LOGO_MEDIA_TYPES, Branding
from headend.errors import ValidationFailed, raise_if, require
from headend.tenancy.context import current_scope
from headend.tenancy.models import Tenant


@dataclass(frozen=True)
class BrandingView:
    """What documents and public pages draw: every field filled (defaults where unset)."""

    tenant_id: int
    tenant_slug: str
    display_name: str
    logo: bytes | None
    logo_media_type: str | None
    primary_color: str
    accent_color: str
    address: str | None
    phone: str | None
    email: str | None
    website: str | None
    tax_id: str | None
    billing_name: str
    billing_address: str | None
    billing_phone: str | None
    billing_email: str | None
    contact_phone: str | None
    contact_email: str | None
    contact_hours: str | None
    contact_message: str | None


def branding_row(session: Session, tenant_id: int) -> Branding | None:
    return session.scalars(select(Branding).where(Branding.tenant_id == tenant_id)).first()


def branding_for(session: Session, tenant_id: int) -> BrandingView:
    """The tenant's branding; billing and contact details fall back to the primary ones."""
    tenant = session.get(Tenant, tenant_id)
    row = branding_row(session, tenant_id) or Branding(primary_color="#1f4e79",
                                                       accent_color="#f0a500")
    name = row.display_name or tenant.name
    values = {f.name: getattr(row, f.name, None) for f in fields(BrandingView)
              if f.name not in ("tenant_id", "tenant_slug")}
    values.update(
        display_name=name,
        billing_name=row.billing_name or name,
        billing_address=row.billing_address or row.address,
        billing_phone=row.billing_phone or row.phone,
        billing_email=row.billing_email or row.email,
        contact_phone=row.contact_phone or row.phone,
        contact_email=row.contact_email or row.email,
    )
    return BrandingView(tenant_id=tenant.id, tenant_slug=tenant.slug, **values)


# --- saving ---------------------------------------------------------------------------------

COLOR = re.compile(r"#[0-9a-fA-F]{6}")
# text fields and their longest length (the column sizes; None: a text column, kept short)
TEXT_FIELDS = {
    "display_name": 120, "address": 500, "phone": 40, "email": 254, "website": 255,
    "tax_id": 60, "billing_name": 120, "billing_address": 500, "billing_phone": 40,
    "billing_email": 254, "contact_phone": 40, "contact_email": 254, "contact_hours": 120,
    "contact_message": 1000,
}
MULTILINE_FIELDS = ("address", "billing_address", "contact_message")
COLOR_FIELDS = ("primary_color", "accent_color")
EMAIL_FIELDS = ("email", "billing_email", "contact_email")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# what an image file starts with, by media type: the bytes decide, never the file name
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


LOGO_MAX_PIXELS = 4000  # a side: more is no sharper on paper, only slower to draw


def sniff_image(content: bytes) -> str | None:
    """The media type of a PNG, JPEG or GIF by its magic bytes; None for anything else."""
    return next((media for magic, media in MAGIC if content.startswith(magic)), None)


def validate_logo(content: bytes) -> str:
    """The logo's media type, or ValidationFailed on "logo" saying what is wrong with it."""
    errors: dict[str, list[str]] = {}
    require(errors, "logo", len(content) <= LOGO_MAX_BYTES,
            f"is too large ({-(-len(content) // 1024)} KB); the largest logo allowed is "
            f"{LOGO_MAX_BYTES // 1024} KB")
    media = sniff_image(content)
    require(errors, "logo", bool(content) and media in LOGO_MEDIA_TYPES,
            "must be a PNG, JPEG or GIF image")
    if not errors:
        problem = _undrawable(content)
        require(errors, "logo", problem is None, problem or "")
    raise_if(errors)
    return media


def _undrawable(content: bytes) -> str | None:
    """Why the image could not be drawn on every invoice, or None: it must decode whole (not
    only begin like an image) and stay within LOGO_MAX_PIXELS a side."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
            if max(width, height) > LOGO_MAX_PIXELS:
                return (f"is {width} x {height} pixels; at most {LOGO_MAX_PIXELS} a side "
                        "is allowed")
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "is not a readable image (the file is damaged or not what it claims to be)"
    return None


def validate_branding(values: dict) -> dict:
    """Errors by field for branding values (empty when they are fine)."""
    errors: dict[str, list[str]] = {}
    for name in COLOR_FIELDS:
        if name in values:
            require(errors, name, isinstance(values[name], str)
                    and COLOR.fullmatch(values[name]) is not None,
                    "must be a colour like #1f4e79")
    for name, limit in TEXT_FIELDS.items():
        text = values.get(name)
        require(errors, name, text is None or isinstance(text, str), "must be text")
        if isinstance(text, str):
            require(errors, name, len(text.strip()) <= limit,
                    f"must be at most {limit} characters")
            if name not in MULTILINE_FIELDS:  # names go into email headers, one line each
                require(errors, name, not any(c in text.strip() for c in "\r\n"),
                        "must be on one line")
    for name in EMAIL_FIELDS:
        text = values.get(name)
        if isinstance(text, str) and text.strip():
            require(errors, name, EMAIL.fullmatch(text.strip()) is not None,
                    "must be an email address")
    unknown = set(values) - set(TEXT_FIELDS) - set(COLOR_FIELDS)
    for name in sorted(unknown):
        errors[name] = ["is not a branding field"]
    return errors


def save_branding(session: Session, *, logo: bytes | None = None, clear_logo: bool = False,
                  **values) -> Branding:
    """Save the acting tenant's branding (fields not given are kept). A new logo replaces the
    old one; refused values or a bad logo name their field and nothing is written."""
    errors = validate_branding(values)
    if logo is not None:
        try:
            media = validate_logo(logo)
        except ValidationFailed as exc:
            errors.update(exc.errors)
    raise_if(errors)
    row = branding_row(session, current_scope().tenant_id)
    if row is None:
        row = Branding(primary_color="#1f4e79", accent_color="#f0a500")
        session.add(row)
    for name, value in values.items():
        if name in COLOR_FIELDS:
            setattr(row, name, value.lower())
        else:
            setattr(row, name, value.strip() or None if isinstance(value, str) else value)
    if logo is not None:
        row.logo, row.logo_media_type = logo, media
    elif clear_logo:
        row.logo = row.logo_media_type = None
    session.flush()
    return row


def logo_of(session: Session, tenant_slug: str) -> tuple[bytes, str] | None:
    """(logo, media type) of the active tenant with this slug, for the public logo route."""
    from headend.tenancy.context import acting_as

    tenant = session.scalar(select(Tenant).where(Tenant.slug == tenant_slug))
    if tenant is None or not tenant.active:
        return None
    with acting_as(tenant.id, actor_name="public"):
        row = branding_row(session, tenant.id)
        if row is None or not row.logo:
            return None
        return row.logo, row.logo_media_type or "image/png"
