"""Every hook, exercised through a test plugin registered directly with the app's manager."""

from __future__ import annotations

import pytest
from flask_appbuilder import BaseView, expose
from headend import hookimpl
from headend.app import create_app
from headend.db import db
from headend.plugins import events, manager
from headend.plugins.interfaces import (
    ConfigSchema,
    Field,
    InvoiceForm,
    PaymentGateway,
    PaymentResult,
    PaymentStatus,
    RouterDriver,
    TaxEngine,
    TaxResult,
)
from headend.testing import app_settings


class EchoGateway(PaymentGateway):
    plugin_id = "echo_gateway"
    name = "Echo gateway"
    config_schema = ConfigSchema((Field("api_key", required=True, secret=True),))

    def _ok(self, transaction_id, amount=0, currency=""):
        return PaymentResult(PaymentStatus.PROCESSED, transaction_id, amount, currency, "ref-1")

    def purchase(self, settings, transaction_id, amount, currency, payment_method,
                 customer_ref=None):
        if payment_method == "declined-card":
            return PaymentResult(PaymentStatus.ERROR, transaction_id, amount, currency,
                                 decline_code="card_declined")
        return self._ok(transaction_id, amount, currency)

    def authorize(self, settings, transaction_id, amount, currency, payment_method,
                  customer_ref=None):
        return self._ok(transaction_id, amount, currency)

    def capture(self, settings, transaction_id, provider_ref, amount, currency):
        return self._ok(transaction_id, amount, currency)

    def void(self, settings, transaction_id, provider_ref):
        return PaymentResult(PaymentStatus.CANCELLED, transaction_id)

    def refund(self, settings, transaction_id, provider_ref, amount, currency):
        return self._ok(transaction_id, amount, currency)

    def get_payment_info(self, settings, transaction_id, provider_ref=None):
        return self._ok(transaction_id)

    def handle_webhook(self, settings, transaction_id, headers, body):
        return None


class ZeroTax(TaxEngine):
    plugin_id = "zero_tax"
    name = "Zero tax"

    def quote(self, settings, request):
        return TaxResult(0)

    def post(self, settings, request):
        return TaxResult(0)

    def void(self, settings, document_code):
        return None


class NullRouter(RouterDriver):
    plugin_id = "null_router"
    name = "Null router"

    def read_state(self, settings, router):
        return []

    def apply_diff(self, settings, router, diff):
        return None

    def disconnect(self, settings, router, username):
        return None

    def change_rate(self, settings, router, username, rate):
        return None


class TextForm(InvoiceForm):
    plugin_id = "text_form"
    name = "Plain text invoice"
    media_type = "text/plain"

    def render(self, invoice, branding):
        return f"{branding['name']}: invoice {invoice['number']}".encode()


class EverythingPlugin:
    """Implements every registration hook and every event hook, recording the events."""

    def __init__(self):
        self.events = []

    @hookimpl
    def register_payment_gateways(self):
        return [EchoGateway()]

    @hookimpl
    def register_tax_engines(self):
        return [ZeroTax()]

    @hookimpl
    def register_router_drivers(self):
        return [NullRouter()]

    @hookimpl
    def register_invoice_forms(self):
        return [TextForm()]

    @hookimpl
    def tenant_created(self, tenant_id):
        self.events.append(("tenant_created", tenant_id))

    @hookimpl
    def subscriber_created(self, tenant_id, subscriber_id):
        self.events.append(("subscriber_created", tenant_id, subscriber_id))

    @hookimpl
    def subscription_added(self, tenant_id, subscription_id):
        self.events.append(("subscription_added", tenant_id, subscription_id))

    @hookimpl
    def subscription_activated(self, tenant_id, subscription_id):
        self.events.append(("subscription_activated", tenant_id, subscription_id))

    @hookimpl
    def invoice_posted(self, tenant_id, invoice_id):
        self.events.append(("invoice_posted", tenant_id, invoice_id))

    @hookimpl
    def payment_received(self, tenant_id, payment_id):
        self.events.append(("payment_received", tenant_id, payment_id))
        return "seen"

    @hookimpl
    def service_suspended(self, tenant_id, subscription_id):
        self.events.append(("service_suspended", tenant_id, subscription_id))

    @hookimpl
    def service_restored(self, tenant_id):  # a hookimpl may take fewer arguments than its spec
        self.events.append(("service_restored", tenant_id))


@pytest.fixture
def everything(app):
    pm = app.extensions["headend_plugins"]
    plugin = EverythingPlugin()
    pm.register(plugin, name="everything")
    pm.check()
    yield plugin
    pm.unregister(plugin)


def test_registration_hooks_fill_the_registry_by_kind(app, everything):
    pm = app.extensions["headend_plugins"]
    gateways = [p.plugin_id for p in pm.of_kind("payment_gateway")]
    assert gateways[-1] == "echo_gateway"  # after the installed ones (plugins/gateways/*)
    tax_engines = [p.plugin_id for p in pm.of_kind("tax_engine")]
    assert tax_engines[-1] == "zero_tax"  # after the installed ones (plugins/taxes/*)
    routers = [p.plugin_id for p in pm.of_kind("router_driver")]
    assert routers[-1] == "null_router"  # after the installed ones (plugins/routers/*)
    forms = [p.plugin_id for p in pm.of_kind("invoice_form")]
    assert forms[-1] == "text_form"  # after the installed ones (plugins/forms/*)
    form = pm.get("text_form")
    assert form.render({"number": "INV-7"}, {"name": "Acme"}) == b"Acme: invoice INV-7"
    declined = pm.get("echo_gateway").purchase({}, "tx-1", 1999, "USD", "declined-card")
    assert declined.status == PaymentStatus.ERROR and declined.decline_code == "card_declined"


def test_registry_forgets_an_unregistered_plugin(app, everything):
    pm = app.extensions["headend_plugins"]
    pm.unregister(everything)
    assert pm.get("echo_gateway") is None
    pm.register(everything, name="everything")
    assert pm.get("echo_gateway") is not None


def _enable(app, tenant_id, plugin_id):
    from headend.plugins.services import set_enabled
    from headend.tenancy.context import acting_as

    with app.app_context(), acting_as(tenant_id):
        set_enabled(db.session, plugin_id, True)
        db.session.commit()


def test_every_event_hook_reaches_the_plugin(app, everything, make_tenant):
    t = make_tenant("Events ISP", "events-isp")
    _enable(app, t, "zero_tax")
    everything.events.clear()
    with app.app_context():
        events.fire("tenant_created", tenant_id=t)
        events.fire("subscriber_created", tenant_id=t, subscriber_id=2)
        events.fire("subscription_added", tenant_id=t, subscription_id=3)
        events.fire("subscription_activated", tenant_id=t, subscription_id=3)
        events.fire("invoice_posted", tenant_id=t, invoice_id=4)
        assert events.fire("payment_received", tenant_id=t, payment_id=5) == ["seen"]
        events.fire("service_suspended", tenant_id=t, subscription_id=3)
        events.fire("service_restored", tenant_id=t, subscription_id=3)
    assert everything.events == [
        ("tenant_created", t), ("subscriber_created", t, 2), ("subscription_added", t, 3),
        ("subscription_activated", t, 3), ("invoice_posted", t, 4), ("payment_received", t, 5),
        ("service_suspended", t, 3), ("service_restored", t),
    ]


def test_events_reach_only_the_tenants_that_enabled_the_plugin(app, everything, make_tenant):
    on, off = make_tenant("On ISP", "on-isp"), make_tenant("Off ISP", "off-isp")
    _enable(app, on, "zero_tax")
    everything.events.clear()
    with app.app_context():
        events.fire("invoice_posted", tenant_id=off, invoice_id=1)
        events.fire("invoice_posted", tenant_id=on, invoice_id=2)
    assert everything.events == [("invoice_posted", on, 2)]


class Listener:
    """A plugin that provides no gateway/engine/driver/form: it hears every tenant."""

    def __init__(self):
        self.events = []

    @hookimpl
    def tenant_created(self, tenant_id):
        self.events.append(("tenant_created", tenant_id))


def test_fire_is_a_no_op_outside_an_app_and_refuses_unknown_events(everything):
    assert events.fire("tenant_created", tenant_id=1) == []
    assert everything.events == []
    with pytest.raises(ValueError, match="not an event hook"):
        events.fire("tenant_deleted", tenant_id=1)
    with pytest.raises(ValueError, match="not an event hook"):
        events.fire("register_tax_engines")


def test_plugins_for_returns_only_what_the_tenant_enabled(app, ctx, everything, make_tenant):
    from headend.plugins.services import configure_plugin
    from headend.tenancy.context import acting_as

    a, b = make_tenant("Alpha Net"), make_tenant("Beta Net")
    with acting_as(a):
        configure_plugin(ctx, "zero_tax", True, {})
        configure_plugin(ctx, "echo_gateway", False, {})
        ctx.commit()
    pm = app.extensions["headend_plugins"]
    assert [p.plugin_id for p in pm.plugins_for(a, "tax_engine")] == ["zero_tax"]
    assert pm.plugins_for(a, "payment_gateway") == []
    assert pm.plugins_for(b, "tax_engine") == []
    with pytest.raises(ValueError, match="unknown plugin kind"):
        pm.plugins_for(a, "teleporter")


class Typo:
    @hookimpl
    def register_tax_engine(self):  # missing "s": no such hook
        return []


def test_hookimpl_without_a_spec_fails_startup_naming_the_plugin():
    pm = manager.HeadendPluginManager()
    pm.register(Typo(), name="typo-plugin")
    with pytest.raises(manager.PluginLoadError, match="typo-plugin.*register_tax_engine"):
        pm.check()


class Twice:
    @hookimpl
    def register_tax_engines(self):
        return [ZeroTax()]


class NotAnEngine:
    @hookimpl
    def register_tax_engines(self):
        return [NullRouter()]


def test_duplicate_or_mistyped_plugin_objects_fail_startup():
    pm = manager.HeadendPluginManager()
    pm.register(Twice(), name="first")
    pm.register(Twice(), name="second")
    with pytest.raises(manager.PluginLoadError, match="'zero_tax' is already registered"):
        pm.check()
    pm = manager.HeadendPluginManager()
    pm.register(NotAnEngine(), name="confused")
    with pytest.raises(manager.PluginLoadError, match="confused.*does not implement TaxEngine"):
        pm.check()


def test_allowlist_parsing():
    assert manager.parse_allowlist(None) is None
    assert manager.parse_allowlist("hello, stripe ,") == {"hello", "stripe"}
    assert manager.parse_allowlist(["avatax"]) == {"avatax"}
    assert manager.parse_allowlist("") == set()


class HelloPage(BaseView):
    route_base = "/hello-plugin"
    default_view = "index"

    @expose("/")
    def index(self):
        return "hello from a plugin"


@hookimpl
def register_admin_views(appbuilder):
    appbuilder.add_view_no_menu(HelloPage())


def test_register_admin_views_adds_a_plugin_page(database_url, monkeypatch, app):
    monkeypatch.setattr(manager, "DEFAULT_PLUGINS", (__name__,))
    new_app = create_app(overrides=app_settings(database_url))
    assert new_app.extensions["headend_plugins"].get_plugin(__name__) is not None
    resp = new_app.test_client().get("/hello-plugin/")
    assert resp.status_code == 200 and b"hello from a plugin" in resp.data


def test_services_announce_their_events(app, make_tenant):
    """The core fires the events itself: creating a tenant reaches tenant_created."""
    pm = app.extensions["headend_plugins"]
    listener = Listener()
    pm.register(listener, name="listener")
    try:
        tenant = make_tenant("Event ISP", "event-isp")
    finally:
        pm.unregister(listener)
    assert listener.events == [("tenant_created", tenant)]
