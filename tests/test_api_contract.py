"""The REST API as a client sees it: OpenAPI lists every resource; errors are JSON by field."""

import pytest

RESOURCES = ("package", "package_service_line", "package_inclusion", "internet_profile", "item",
             "service", "account", "tax_rate", "subscriber", "subscription", "subscriber_note")


def test_openapi_documents_every_resource(app, make_tenant, api_as):
    client, headers = api_as(make_tenant(), "ReadOnly")
    spec = client.get("/api/v1/_openapi", headers=headers).get_json()
    paths = set(spec["paths"])
    for resource in RESOURCES:
        assert f"/api/v1/{resource}/" in paths, resource
        assert "post" in spec["paths"][f"/api/v1/{resource}/"], resource


@pytest.mark.parametrize("resource", RESOURCES)
def test_unknown_field_is_a_422_naming_it(app, make_tenant, api_as, resource):
    client, headers = api_as(make_tenant(), "Admin")
    resp = client.post(f"/api/v1/{resource}/", json={"no_such_field": 1}, headers=headers)
    assert resp.status_code == 422
    assert "no_such_field" in resp.get_json()["message"]


def test_api_without_credentials_is_401(client):
    assert client.get("/api/v1/subscriber/").status_code == 401
