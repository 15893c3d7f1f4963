"""With CSRF on (as in production), every form post needs the token; GET never mutates."""

import re

import pytest
from headend.app import create_app
from headend.catalog.models import Item
from headend.db import db
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from headend.testing import PASSWORD, app_settings
from sqlalchemy import func, select

from tests.factories import make_row


@pytest.fixture
def csrf_app(app, database_url):
    return create_app(overrides={**app_settings(database_url), "WTF_CSRF_ENABLED": True})


def _login(client, username):
    page = client.get("/login/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or \
        re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page)
    resp = client.post("/login/", data={"username": username, "password": PASSWORD,
                                        "csrf_token": token.group(1)})
    assert resp.status_code == 302
    return token.group(1)


def _count(app, model, tenant):
    with app.app_context(), acting_as(tenant):
        return db.session.scalar(select(func.count()).select_from(model))


def test_posts_without_token_are_refused(csrf_app, make_tenant, make_user):
    tenant = make_tenant()
    with csrf_app.app_context(), acting_as(tenant):
        subscriber_id = make_row(db.session, Subscriber).id
        db.session.commit()
    client = csrf_app.test_client()
    _login(client, make_user(tenant, "Admin"))
    for url in (f"/subscribernoteview/add_for/{subscriber_id}", "/tenancy/act",
                "/itemview/add"):
        assert client.post(url, data={"body": "x", "code": "X1", "name": "n"}).status_code == 400
    assert _count(csrf_app, Item, tenant) == 0


def test_get_never_deletes(csrf_app, make_tenant, make_user):
    tenant = make_tenant()
    with csrf_app.app_context(), acting_as(tenant):
        subscriber_id = make_row(db.session, Subscriber).id
        db.session.commit()
    client = csrf_app.test_client()
    _login(client, make_user(tenant, "Admin"))
    client.get(f"/subscriberview/delete/{subscriber_id}")
    assert _count(csrf_app, Subscriber, tenant) == 1


def test_form_with_its_token_is_accepted(csrf_app, make_tenant, make_user):
    tenant = make_tenant()
    client = csrf_app.test_client()
    _login(client, make_user(tenant, "Admin"))
    page = client.get("/itemview/add").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    resp = client.post("/itemview/add", data={"csrf_token": token, "code": "RTR", "name": "R",
                                              "type": "equipment", "price": "1.00"})
    assert resp.status_code == 302
    assert _count(csrf_app, Item, tenant) == 1
