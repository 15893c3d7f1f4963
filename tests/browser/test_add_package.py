from headend.testing import PASSWORD

from tests.browser.conftest import ui_login
from tests.subscribers_helpers import make_package, make_subscriber


def test_add_package_flow(app, live_server, page, make_tenant, make_user):
    t = make_tenant()
    make_package(app, t, name="Fiber 100", custom=False)
    make_package(app, t, name="Business Custom", custom=True, monthly="80.00")
    sid = make_subscriber(app, t)
    ui_login(page, live_server, make_user(t, "Admin"), PASSWORD)
    page.goto(f"{live_server}/subscriberview/profile/{sid}")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.click("#add-package")
    page.fill("#package-search", "busi")
    page.wait_for_function(
        "document.querySelectorAll('#package-results [data-package-id]').length === 1")
    page.click("#package-results [data-package-id]")
    assert page.is_visible("#custom-price")
    page.fill("#quantity", "3")
    page.wait_for_function("document.querySelector('#price-review').textContent.includes('240.00')")
    page.fill("#custom-price", "70")
    page.wait_for_function("document.querySelector('#price-review').textContent.includes('210.00')")
    page.click("#add-and-configure")
    page.wait_for_url("**/subscriptionview/configure/*")
    assert page.locator("#service-instances tbody tr").count() == 3
    page.goto(f"{live_server}/subscriberview/profile/{sid}")
    assert errors == []
