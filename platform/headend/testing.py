"""pytest fixtures for Headend and its plugins: a migrated app on SQLite or PostgreSQL.

Use from a conftest.py with `pytest_plugins = ["headend.testing"]`. HEADEND_TEST_DB picks the
database: "sqlite" (default) or "postgresql" (a fresh database on 127.0.0.1:5432, dropped at the
end; HEADEND_TEST_PG_URL overrides the server URL).
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from headend.app import create_app
from headend.db import db
from headend.migrate import upgrade
from headend.schema import metadata
from headend.tenancy.context import acting_as

PG_SERVER = os.environ.get("HEADEND_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
# Rows that belong to the schema, not to a test: kept between tests.
KEEP_TABLES = {
    "alembic_version", "ab_permission", "ab_view_menu", "ab_permission_view", "ab_role",
    "ab_permission_view_role",
}
PASSWORD = "Secret-pass-123"


def test_db_kind() -> str:
    kind = os.environ.get("HEADEND_TEST_DB", "sqlite")
    if kind not in ("sqlite", "postgresql"):
        raise pytest.UsageError("HEADEND_TEST_DB must be sqlite or postgresql")
    return kind


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "postgresql_only: tests of PostgreSQL-only mechanisms (database triggers); "
        "not collected on the SQLite run, whose guards have their own tests")


def pytest_collection_modifyitems(config, items):
    if test_db_kind() == "postgresql":
        return
    deselected = [item for item in items if item.get_closest_marker("postgresql_only")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    if test_db_kind() == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'headend.db'}"
        return
    name = f"headend_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_SERVER}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def app_settings(database_url: str) -> dict:
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-that-is-long-enough-for-hs256",
        "WTF_CSRF_ENABLED": False,
        "AUTH_RATE_LIMITED": False,
        "SERVER_NAME": None,
    }


@pytest.fixture(scope="session")
def app(database_url):
    app = create_app(overrides=app_settings(database_url))
    upgrade(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def wipe(connection) -> None:
    tables = [t for t in metadata().sorted_tables if t.name not in KEEP_TABLES]
    if connection.dialect.name == "postgresql":
        names = ", ".join(f'"{t.name}"' for t in tables)
        connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    else:
        for table in reversed(tables):
            connection.execute(table.delete())


@pytest.fixture(autouse=True)
def _clean_database(request):
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as connection:
            wipe(connection)


@pytest.fixture
def ctx(app):
    """An app context acting as the system (every tenant), as CLI commands and jobs do."""
    with app.app_context(), acting_as(None):
        yield db.session
        db.session.remove()


@pytest.fixture
def books(app, make_tenant):
    """The session of a fresh tenant (with its default chart), acting as that tenant; its id is
    in `books.info["tenant"]`."""
    tenant = make_tenant(f"Books {uuid.uuid4().hex[:8]}")
    with app.app_context(), acting_as(tenant):
        db.session.info["tenant"] = tenant
        yield db.session
        db.session.rollback()
        db.session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_tenant(app):
    from headend.tenancy.services import create_tenant

    def make(name="Acme Fiber", slug=None, currency="USD"):
        with app.app_context(), acting_as(None):
            tenant = create_tenant(db.session, name, slug or name.lower().replace(" ", "-"),
                                   currency)
            db.session.commit()
            return tenant.id
    return make


@pytest.fixture
def make_user(app):
    """Create a staff user of a tenant with one role (or an operator with tenant_id=None)."""

    def make(tenant_id, role="Admin", username=None):
        with app.app_context():
            sm = app.appbuilder.sm
            role_name = role if tenant_id is not None else app.config["AUTH_ROLE_ADMIN"]
            username = username or f"{role_name.lower()}-{tenant_id}-{uuid.uuid4().hex[:6]}"
            user = sm.add_user(username, "Test", role_name, f"{username}@example.test",
                               sm.find_role(role_name), PASSWORD)
            assert user, f"could not create {username}"
            user.tenant_id = tenant_id
            db.session.commit()
            return username
    return make


def login(client, username, password=PASSWORD):
    resp = client.post("/login/", data={"username": username, "password": password})
    assert resp.status_code == 302, f"login of {username} failed ({resp.status_code})"
    return client


def api_token(client, username, password=PASSWORD) -> dict:
    resp = client.post("/api/v1/security/login", json={
        "username": username, "password": password, "provider": "db", "refresh": False,
    })
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return {"Authorization": f"Bearer {resp.get_json()['access_token']}"}


@pytest.fixture
def login_as(app, make_user):
    """A logged-in test client for a new user of `tenant_id` with `role`."""

    def make(tenant_id, role="Admin"):
        c = app.test_client()
        return login(c, make_user(tenant_id, role))
    return make


@pytest.fixture
def api_as(app, make_user):
    """(client, auth headers) for a new user of `tenant_id` with `role`, over JWT."""

    def make(tenant_id, role="Admin"):
        c = app.test_client()
        return c, api_token(c, make_user(tenant_id, role))
    return make


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def on_redis(app):
    """The app pointed at the real Redis (127.0.0.1:6379) under a key prefix of its own: its
    jobs are enqueued for real; the keys are removed afterwards. Yields the prefix."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.ConnectionError:
        pytest.fail("Redis must run on 127.0.0.1:6379 (.ci/run starts it)")
    prefix = f"test-{uuid.uuid4().hex[:8]}-"
    saved = {k: app.config.get(k) for k in ("REDIS_URL", "RQ_QUEUE_PREFIX")}
    app.config.update(REDIS_URL=REDIS_URL, RQ_QUEUE_PREFIX=prefix)
    yield prefix
    app.config.update(saved)
    conn = redis.Redis.from_url(REDIS_URL)
    keys = list(conn.scan_iter(f"*{prefix}*"))
    if keys:
        conn.delete(*keys)
