"""The issue's flow in a real browser: an ISP admin builds the seed's "Triple Play" package
through the catalog pages, then adds it to a subscriber from the profile's Packages and Services."""

from decimal import Decimal

from headend.catalog.models import Item, Package, Service
from headend.db import db
from headend.subscribers.models import Subscription
from headend.tenancy.context import acting_as
from headend.testing import PASSWORD
from sqlalchemy import select

from tests.browser.conftest import ui_login
from tests.subscribers_helpers import make_subscriber

PRICES = {"setup_fee": "49.99", "price_monthly": "119.99", "price_quarterly": "349.99",
          "price_semiannual": "689.99", "price_annual": "1319.99"}


def _catalog(app, tenant_id) -> None:
    """What the tenant has before the admin builds the package: its services and the router."""
    with app.app_context(), acting_as(tenant_id):
        db.session.add_all([
            Service(name="Internet", type="internet"),
            Service(name="TV", type="tv"),
            Service(name="VoIP", type="voip"),
            Item(code="RTR-AC1200", name="AC1200 router", type="equipment",
                 price=Decimal("89.00")),
        ])
        db.session.commit()


def _open_packages(page) -> None:
    page.click("a.dropdown-toggle:has-text('Catalog')")
    page.click(".dropdown-menu a:has-text('Packages')")
    page.wait_for_url("**/packageview/list/**")


def _add_to_package(page, button: str, fields: dict[str, str], selects: dict[str, str]) -> None:
    """On the package page, click an add button, fill the form and save: back on the package."""
    page.click(button)
    page.wait_for_url("**/add?_flt_0_package=*")
    for name, label in selects.items():
        page.select_option(f"select#{name}", label=label, force=True)
    for name, value in fields.items():
        page.fill(f"#{name}", value)
    page.click("button[type=submit]:has-text('Save')")
    page.wait_for_url("**/packageview/show/*")
    assert page.locator(".alert-success").count() == 1, page.inner_text("body")


def test_admin_builds_triple_play_and_adds_it_to_a_subscriber(
        app, live_server, page, make_tenant, make_user, tmp_path):
    t = make_tenant()
    _catalog(app, t)
    sid = make_subscriber(app, t)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ui_login(page, live_server, make_user(t, "Admin"), PASSWORD)

    # Catalog > Packages > + : the package and its prices.
    _open_packages(page)
    page.click("a[href*='/packageview/add']")
    assert page.locator(".panel-title, .panel-heading").first.inner_text().strip() == "Add package"
    page.fill("#name", "Triple Play")
    for field, value in PRICES.items():
        page.fill(f"#{field}", value)
    page.click("button[type=submit]:has-text('Save')")
    page.wait_for_url("**/packageview/list/**")
    assert "Package added" in page.inner_text(".alert-success")
    row = page.locator("table tr", has_text="Triple Play")
    assert "119.99" in row.inner_text() and "1319.99" in row.inner_text()
    assert "119.9900" not in row.inner_text() and "True" not in row.inner_text()

    # The package page: its service lines and the free router, through its add buttons.
    row.locator("a:has-text('Triple Play')").click()
    page.wait_for_url("**/packageview/show/*")
    for tab in ("Service lines", "Inclusions", "Internet profile"):
        assert page.locator("a[data-toggle=tab]", has_text=tab).count() == 1
    detail = page.inner_text("#Home")
    assert "349.99" in detail and "None" not in detail and "49.9900" not in detail
    _add_to_package(page, "#add-service-line", {"label": "Internet"},
                    {"service": "Internet",
                     "fcc_technology_code": "50 Optical Carrier / Fiber to the Premises"})
    _add_to_package(page, "#add-service-line", {"label": "TV"}, {"service": "TV"})
    _add_to_package(page, "#add-service-line", {"label": "VoIP"}, {"service": "VoIP"})
    _add_to_package(page, "#add-inclusion", {"quantity": "1"},
                    {"item": "RTR-AC1200 AC1200 router"})
    page.click("a[data-toggle=tab][href='#PackageServiceLineView']")
    lines = page.locator("#PackageServiceLineView tbody tr")
    assert lines.count() == 3
    assert "50 Optical Carrier" in lines.first.inner_text()
    page.click("a[data-toggle=tab][href='#PackageInclusionView']")
    assert "Free" in page.inner_text("#PackageInclusionView tbody tr")

    # The subscriber's profile: + under Packages and Services, find, review, add.
    page.goto(f"{live_server}/subscriberview/profile/{sid}")
    page.click("#add-package")
    page.fill("#package-search", "Triple")
    results = page.locator("#package-results [data-package-id]")
    results.first.wait_for()
    assert results.count() == 1
    results.first.click()
    review = page.locator("#price-review")
    page.wait_for_function(
        "document.querySelector('#price-review [data-field=unit_price]')"
        "?.textContent === '119.99'")
    assert review.locator("[data-field=setup_fee]").inner_text() == "49.99"
    assert page.input_value("#quantity") == "1"
    page.select_option("#billing-cycle", "quarterly")
    page.wait_for_function(
        "document.querySelector('#price-review [data-field=unit_price]')"
        "?.textContent === '349.99'")
    assert review.locator("[data-field=line_total]").inner_text() == "349.99"
    page.click("#add-and-configure")
    page.wait_for_url("**/subscriptionview/configure/*")
    instances = page.locator("#service-instances tbody tr")
    assert instances.count() == 3
    assert instances.locator("[data-testid=status-pending]").count() == 3
    page.screenshot(path=str(tmp_path / "triple-play-configure.png"), full_page=True)
    assert "Triple Play" in page.inner_text("body")
    assert errors == []

    with app.app_context(), acting_as(t):
        package = db.session.scalar(select(Package).where(Package.name == "Triple Play"))
        assert (package.setup_fee, package.price_monthly, package.price_quarterly,
                package.price_semiannual, package.price_annual) == tuple(
                    Decimal(v) for v in PRICES.values())
        # The form starts on the model defaults, not on the first choice of each select.
        assert (package.customer_type, package.tax_mode) == ("both", "subscriber")
        lines = {line.label: line for line in package.service_lines}
        assert sorted(lines) == ["Internet", "TV", "VoIP"]
        assert lines["Internet"].fcc_technology_code == 50
        assert {line.service.type for line in lines.values()} == {"internet", "tv", "voip"}
        (router,) = package.inclusions
        assert router.item.code == "RTR-AC1200" and router.quantity == 1
        assert router.recurring_price in (None, Decimal(0))
        (subscription,) = db.session.scalars(select(Subscription)).all()
        assert subscription.subscriber_id == sid and subscription.package_id == package.id
        assert (subscription.status, subscription.billing_cycle, subscription.quantity) == (
            "pending", "quarterly", 1)
        assert len(subscription.services) == 3
        assert {si.status for si in subscription.services} == {"pending"}


def test_negative_monthly_price_is_refused_under_its_field(
        app, live_server, page, make_tenant, make_user):
    t = make_tenant()
    ui_login(page, live_server, make_user(t, "Admin"), PASSWORD)
    _open_packages(page)
    page.click("a[href*='/packageview/add']")
    page.fill("#name", "Broken Play")
    page.fill("#price_monthly", "-5")
    page.click("button[type=submit]:has-text('Save')")
    page.wait_for_load_state()
    field_row = page.locator("tr", has=page.locator("#price_monthly"))
    assert "cannot be negative" in field_row.inner_text()
    assert page.input_value("#price_monthly") == "-5"
    assert page.locator(".alert-success").count() == 0
    with app.app_context(), acting_as(t):
        assert db.session.scalars(select(Package)).all() == []
