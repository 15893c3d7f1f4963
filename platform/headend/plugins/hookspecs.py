"""Every hook a Headend plugin can implement (documented in docs/plugins.md).

Two families: `register_*` hooks hand the core objects that implement the interfaces in
headend.plugins.interfaces (behaviour lives in those objects, not in pluggy fan-out), and
past-tense event hooks announce something that already happened, inside the transaction that
did it (headend.plugins.events.fire). A hookimpl may accept fewer arguments than its spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from flask_appbuilder import AppBuilder

    from headend.plugins.interfaces import InvoiceForm, PaymentGateway, RouterDriver, TaxEngine

hookspec = pluggy.HookspecMarker("headend")
hookimpl = pluggy.HookimplMarker("headend")

# Registration hooks and the plugin kind each one hands over.
REGISTRATION_KINDS = {
    "register_payment_gateways": "payment_gateway",
    "register_tax_engines": "tax_engine",
    "register_router_drivers": "router_driver",
    "register_invoice_forms": "invoice_form",
}


# --- registration -------------------------------------------------------------------------


@hookspec
def register_payment_gateways() -> list[PaymentGateway]:
    """Return the PaymentGateway objects this plugin provides (may be empty)."""


@hookspec
def register_tax_engines() -> list[TaxEngine]:
    """Return the TaxEngine objects this plugin provides (may be empty)."""


@hookspec
def register_router_drivers() -> list[RouterDriver]:
    """Return the RouterDriver objects this plugin provides (may be empty)."""


@hookspec
def register_invoice_forms() -> list[InvoiceForm]:
    """Return the InvoiceForm objects this plugin provides (may be empty)."""


@hookspec
def register_admin_views(appbuilder: AppBuilder) -> None:
    """Add the plugin's own admin views or APIs to the app (use headend.ui.add_view)."""


# --- events (past tense; fired inside the transaction that made the change) ----------------


@hookspec
def tenant_created(tenant_id: int) -> None:
    """A tenant was created, with its default chart of accounts."""


@hookspec
def subscriber_created(tenant_id: int, subscriber_id: int) -> None:
    """A subscriber was created."""


@hookspec
def subscription_added(tenant_id: int, subscription_id: int) -> None:
    """A package was added to a subscriber as a new subscription (status may still be pending)."""


@hookspec
def subscription_activated(tenant_id: int, subscription_id: int) -> None:
    """A subscription became active: billing starts and its services are provisioned."""


@hookspec
def invoice_posted(tenant_id: int, invoice_id: int) -> None:
    """An invoice was posted to the ledger and is now immutable."""


@hookspec
def payment_received(tenant_id: int, payment_id: int) -> None:
    """A payment was recorded as processed and posted against the subscriber's balance."""


@hookspec
def service_suspended(tenant_id: int, subscription_id: int) -> None:
    """A subscription's service was suspended (unpaid, or by staff); the network follows."""


@hookspec
def service_restored(tenant_id: int, subscription_id: int) -> None:
    """A suspended subscription's service was restored; the network follows."""


def event_names() -> tuple[str, ...]:
    """The event hooks, i.e. every hookspec that is not a registration hook."""
    return tuple(name for name in spec_names() if not name.startswith("register_"))


def spec_names() -> tuple[str, ...]:
    return tuple(
        name for name, value in globals().items()
        if callable(value) and hasattr(value, "headend_spec")
    )
