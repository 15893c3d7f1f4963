"""The tenant's invoice design and form: reading (defaults when nothing was saved), validating
and saving, and which InvoiceForm plugins the tenant may choose."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.documents.data import Design, design_of
from headend.documents.models import COLUMNS, InvoiceDesign
from headend.errors import raise_if, require
from headend.plugins.interfaces import InvoiceForm

DEFAULT_FORM = "classic"
# longest text per field (a line or two on the page; the message a short paragraph)
TEXT_LIMITS = {"header_text": 500, "footer_text": 500, "marketing_message": 1000}
DESIGN_FIELDS = ("form_plugin_id", "header_text", "footer_text", "marketing_message",
                 "remittance_stub", "columns", "show_usage")


def _manager():
    from headend.plugins.manager import current_manager

    return current_manager()


def form_choices(tenant_id: int) -> list[InvoiceForm]:
    """The installed invoice forms the tenant may use: the default one, and any the tenant
    enabled on the Plugins page."""
    manager = _manager()
    enabled = manager.enabled_ids(tenant_id)
    return [p for p in manager.of_kind(InvoiceForm.kind)
            if p.plugin_id == DEFAULT_FORM or p.plugin_id in enabled]


def design_row(session: Session) -> InvoiceDesign | None:
    return session.scalars(select(InvoiceDesign)).first()


def current_design(session: Session) -> InvoiceDesign:
    """The acting tenant's design; an unsaved default one when it never saved any."""
    return design_row(session) or InvoiceDesign(
        form_plugin_id=DEFAULT_FORM, remittance_stub=True, columns=list(COLUMNS),
        show_usage=True)


def validate_design(values: dict, tenant_id: int) -> dict:
    """Errors by field for design values (an empty dict when they are fine)."""
    errors: dict[str, list[str]] = {}
    choices = {p.plugin_id for p in form_choices(tenant_id)}
    require(errors, "form_plugin_id", values.get("form_plugin_id") in choices,
            f"must be one of the invoice forms available: {', '.join(sorted(choices))}")
    for name, limit in TEXT_LIMITS.items():
        text = values.get(name)
        require(errors, name, text is None or isinstance(text, str), "must be text")
        if isinstance(text, str):
            require(errors, name, len(text) <= limit, f"must be at most {limit} characters")
    columns = values.get("columns")
    ok = isinstance(columns, (list, tuple)) and all(isinstance(c, str) for c in columns)
    require(errors, "columns", ok, "must be a list of column names")
    if ok:
        unknown = sorted(set(columns) - set(COLUMNS))
        require(errors, "columns", not unknown,
                f"unknown column {', '.join(unknown)}; choose from {', '.join(COLUMNS)}")
    for flag in ("remittance_stub", "show_usage"):
        require(errors, flag, isinstance(values.get(flag), bool), "must be true or false")
    return errors


def _clean(values: dict) -> dict:
    out = dict(values)
    for name in TEXT_LIMITS:
        text = out.get(name)
        out[name] = text.strip() or None if isinstance(text, str) else text
    if isinstance(out.get("columns"), (list, tuple)):
        out["columns"] = [c for c in COLUMNS if c in out["columns"]]
    return out


def preview_design(session: Session, tenant_id: int, values: dict) -> Design:
    """The Design that unsaved values would make (refused like a save when bad)."""
    merged = _merged(session, values)
    raise_if(validate_design(merged, tenant_id))
    return design_of(InvoiceDesign(**_clean(merged)))


def _merged(session: Session, values: dict) -> dict:
    row = current_design(session)
    unknown = set(values) - set(DESIGN_FIELDS)
    raise_if({k: "is not a design field" for k in sorted(unknown)})
    return {f: getattr(row, f) for f in DESIGN_FIELDS} | values


def save_design(session: Session, tenant_id: int, **values) -> InvoiceDesign:
    """Save the tenant's design (fields not given are kept); refused values name their field
    and nothing is written."""
    merged = _merged(session, values)
    raise_if(validate_design(merged, tenant_id))
    row = design_row(session)
    if row is None:
        row = InvoiceDesign()
        session.add(row)
    for name, value in _clean(merged).items():
        setattr(row, name, value)
    session.flush()
    return row
