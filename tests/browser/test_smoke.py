from headend.testing import PASSWORD

from tests.browser.conftest import ui_login


def test_operator_logs_in_and_sees_tenants(live_server, page, make_user, make_tenant):
    make_tenant("Valley Fiber", "valley")
    ui_login(page, live_server, make_user(None), PASSWORD)
    page.goto(f"{live_server}/tenantview/list/")
    assert page.locator("text=Valley Fiber").count() >= 1
