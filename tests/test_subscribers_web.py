"""Subscriber admin pages: create, search, profile, add a package, notes."""

from headend.db import db
from headend.subscribers.models import ServiceInstance, Subscriber, SubscriberNote, Subscription
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.subscribers_helpers import make_package, make_subscriber


def _rows(app, tenant_id, model):
    with app.app_context(), acting_as(tenant_id):
        return list(db.session.scalars(select(model)))


def _count(app, model):
    with app.app_context(), acting_as(None):
        return db.session.scalar(select(func.count()).select_from(model))


FORM = {
    "first_name": "Ada", "last_name": "Lovelace", "company": "", "customer_type": "residential",
    "email": "ada@example.net", "phone": "555-0100", "status": "prospect",
    "service_line1": "12 Analytical Way", "service_city": "Springfield",
    "service_postal_code": "62704", "billing_same_as_service": "y", "billing_cycle": "monthly",
    "bill_day": "1",
}


def test_create_subscriber_through_the_form(app, make_tenant, login_as):
    t = make_tenant()
    c = login_as(t, "Admin")
    page = c.get("/subscriberview/add")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for fieldset in ("Contact", "Service address", "Billing address", "Billing options", "Tax",
                     "Parent account"):
        assert fieldset in html
    resp = c.post("/subscriberview/add", data=FORM)
    assert resp.status_code == 302
    [sub] = _rows(app, t, Subscriber)
    assert (sub.account_number, sub.last_name, sub.tenant_id) == ("000001", "Lovelace", t)
    assert "lovelace" in sub.search_text and "5550100" in sub.search_text


def test_form_errors_are_shown_and_nothing_written(app, make_tenant, login_as):
    t = make_tenant()
    c = login_as(t, "Admin")
    resp = c.post("/subscriberview/add", data={**FORM, "email": "nope", "bill_day": "30"})
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "is not an email address" in page and "must be between 1 and 28" in page
    assert _count(app, Subscriber) == 0


def test_list_search_box_uses_the_search_service(app, make_tenant, login_as):
    t = make_tenant()
    make_subscriber(app, t)
    make_subscriber(app, t, first_name="Grace", last_name="Hopper", email="grace@navy.test",
                    phone="555-0199", service_line1="1 Cobol Road", service_city="Arlington")
    c = login_as(t, "ReadOnly")
    for q, expect, other in (("hopper", "Hopper", "Lovelace"), ("000001", "Lovelace", "Hopper"),
                             ("555 0199", "Hopper", "Lovelace"), ("cobol", "Hopper", "Lovelace"),
                             ("ada@example", "Lovelace", "Hopper")):
        html = c.get("/subscriberview/list/", query_string={"q": q}).get_data(as_text=True)
        assert expect in html and other not in html, q
    html = c.get("/subscriberview/list/").get_data(as_text=True)
    assert "Hopper" in html and "Lovelace" in html and 'id="subscriber-search"' in html


def test_profile_page_shows_the_packages_section(app, make_tenant, login_as):
    t = make_tenant()
    pkg = make_package(app, t)
    sid = make_subscriber(app, t)
    with app.app_context(), acting_as(t):
        from headend.subscribers.services import add_package

        add_package(db.session, sid, pkg)
        db.session.commit()
    c = login_as(t, "Support")
    html = c.get(f"/subscriberview/profile/{sid}").get_data(as_text=True)
    assert "Packages and Services" in html and "Fiber 100" in html
    assert "000001" in html and "Ada Lovelace" in html
    assert "0.00 USD" in html and "Account history" in html
    assert 'id="add-package"' not in html  # Support cannot add subscriptions
    assert 'id="add-note"' in html
    assert "/subscriberview/profile/" in c.get(f"/subscriberview/show/{sid}").get_data(
        as_text=True)


def test_another_tenants_profile_is_404(app, make_tenant, login_as):
    a, b = make_tenant("A Net"), make_tenant("B Net")
    theirs = make_subscriber(app, b)
    c = login_as(a, "Admin")
    assert c.get(f"/subscriberview/profile/{theirs}").status_code == 404
    assert c.get(f"/subscriptionview/add_package/{theirs}").status_code == 404


def test_add_package_page_and_add_and_configure(app, make_tenant, login_as):
    t = make_tenant()
    pkg = make_package(app, t, lines=(("Internet", 1), ("Voice", 1)))
    make_package(app, t, name="TV Basic")
    sid = make_subscriber(app, t)
    c = login_as(t, "Billing")
    profile = c.get(f"/subscriberview/profile/{sid}").get_data(as_text=True)
    assert 'id="add-package"' in profile
    page = c.get(f"/subscriptionview/add_package/{sid}",
                 query_string={"package_id": pkg, "quantity": "2"}).get_data(as_text=True)
    for element in ('id="package-search"', 'id="package-select"', 'data-package-id=',
                    'id="billing-cycle"', 'id="quantity"', 'id="custom-price"',
                    'id="price-review"', 'id="add-and-configure"'):
        assert element in page
    assert "99.98" in page  # 2 x 49.99 in the price review
    found = c.get("/subscriptionview/packages", query_string={"q": "fib"}).get_json()
    assert [p["name"] for p in found] == ["Fiber 100"]
    assert found[0]["cycles"] == [["monthly", "49.99"], ["annual", "499.00"]]
    preview = c.get("/subscriptionview/preview", query_string={
        "package_id": pkg, "billing_cycle": "annual", "quantity": "3"}).get_json()
    assert preview["line_total"] == "1497.00"

    resp = c.post(f"/subscriptionview/add_package/{sid}", data={
        "package_id": pkg, "billing_cycle": "annual", "quantity": "1"})
    assert resp.status_code == 302
    [subscription] = _rows(app, t, Subscription)
    assert (subscription.status, subscription.billing_cycle) == ("pending", "annual")
    assert resp.headers["Location"].endswith(f"/subscriptionview/configure/{subscription.id}")
    configure = c.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Internet" in configure and "Voice" in configure and "Pending" in configure
    assert len(_rows(app, t, ServiceInstance)) == 2


def test_custom_price_refused_in_the_ui(app, make_tenant, login_as):
    t = make_tenant()
    pkg = make_package(app, t, custom=False)
    sid = make_subscriber(app, t)
    c = login_as(t, "Admin")
    resp = c.post(f"/subscriptionview/add_package/{sid}", data={
        "package_id": pkg, "billing_cycle": "monthly", "quantity": "1", "custom_price": "9.99"})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'data-error-for="custom_price"' in html
    assert "this package does not allow custom pricing" in html
    assert _count(app, Subscription) == 0 and _count(app, ServiceInstance) == 0


def test_cycle_not_offered_refused_in_the_ui(app, make_tenant, login_as):
    t = make_tenant()
    pkg = make_package(app, t)
    sid = make_subscriber(app, t)
    c = login_as(t, "Admin")
    resp = c.post(f"/subscriptionview/add_package/{sid}", data={
        "package_id": pkg, "billing_cycle": "quarterly", "quantity": "1"})
    assert resp.status_code == 200
    assert 'data-error-for="billing_cycle"' in resp.get_data(as_text=True)
    assert _count(app, Subscription) == 0


def test_support_adds_a_note_but_cannot_add_packages(app, make_tenant, login_as):
    t = make_tenant()
    pkg = make_package(app, t)
    sid = make_subscriber(app, t)
    c = login_as(t, "Support")
    resp = c.post(f"/subscribernoteview/add_for/{sid}", data={"body": "Called about outage"})
    assert resp.status_code == 302
    [note] = _rows(app, t, SubscriberNote)
    assert note.body == "Called about outage" and note.author.startswith("support-")
    assert "Called about outage" in c.get(f"/subscriberview/profile/{sid}").get_data(as_text=True)
    resp = c.post(f"/subscriptionview/add_package/{sid}", data={"package_id": pkg})
    assert resp.status_code in (302, 403)
    assert _count(app, Subscription) == 0


def test_edit_keeps_search_current_and_account_number_required(app, make_tenant, login_as):
    t = make_tenant()
    sid = make_subscriber(app, t)
    c = login_as(t, "Admin")
    assert c.get(f"/subscriberview/edit/{sid}").status_code == 200
    form = {**FORM, "account_number": "000001", "last_name": "Byron"}
    assert c.post(f"/subscriberview/edit/{sid}", data=form).status_code == 302
    [sub] = _rows(app, t, Subscriber)
    assert sub.last_name == "Byron" and "byron" in sub.search_text
    resp = c.post(f"/subscriberview/edit/{sid}", data={**form, "account_number": ""})
    assert resp.status_code == 200 and "is required" in resp.get_data(as_text=True)
    assert _rows(app, t, Subscriber)[0].account_number == "000001"


def test_subscription_and_note_pages_render(app, make_tenant, login_as):
    t = make_tenant()
    pkg = make_package(app, t)
    sid = make_subscriber(app, t)
    with app.app_context(), acting_as(t):
        from headend.subscribers.services import add_note, add_package

        sub_id = add_package(db.session, sid, pkg).id
        add_note(db.session, sid, "First call", "tester")
        db.session.commit()
    c = login_as(t, "ReadOnly")
    for url in ("/subscriptionview/list/", f"/subscriptionview/show/{sub_id}",
                "/subscribernoteview/list/", f"/subscriptionview/configure/{sub_id}"):
        resp = c.get(url)
        assert resp.status_code == 200, url
    assert "Fiber 100" in c.get("/subscriptionview/list/").get_data(as_text=True)


def test_parent_account_is_named_by_account_number_never_listed(app, make_tenant, login_as):
    t, other = make_tenant("Parent ISP", "parent-isp"), make_tenant("Other ISP", "other-isp")
    parent = make_subscriber(app, t, first_name="Pat", last_name="Parent")
    theirs = make_subscriber(app, other, first_name="Not", last_name="Mine",
                             account_number="B-777")
    with app.app_context(), acting_as(None):
        numbers = {s.id: s.account_number for s in db.session.scalars(select(Subscriber))}
    c = login_as(t, "Admin")
    assert "Parent" not in c.get("/subscriberview/add").get_data(as_text=True).split(
        'name="parent"')[1][:300]  # a text input, not a list of every account
    form = {"first_name": "Kid", "last_name": "Child", "customer_type": "residential",
            "status": "active", "billing_cycle": "monthly", "bill_day": "1"}
    resp = c.post("/subscriberview/add", data={**form, "parent": numbers[theirs]})
    assert resp.status_code == 200 and f"no parent account {numbers[theirs]}" in \
        resp.get_data(as_text=True)
    assert c.post("/subscriberview/add", data={**form, "parent": numbers[parent]}).status_code \
        == 302
    with app.app_context(), acting_as(t):
        kid = db.session.scalar(select(Subscriber).where(Subscriber.first_name == "Kid"))
        assert kid.parent_id == parent
