"""Subscriber and subscription rules, straight on the services."""

from decimal import Decimal

import pytest
from headend.db import db
from headend.errors import ValidationFailed
from headend.subscribers.models import ServiceInstance, Subscriber, Subscription
from headend.subscribers.services import (
    add_package,
    create_subscriber,
    price_preview,
    search_subscribers,
)
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.subscribers_helpers import make_package, make_subscriber, make_tax_rate


def _count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_account_numbers_are_sequential_and_per_tenant(app, make_tenant):
    a, b = make_tenant("A Net"), make_tenant("B Net")
    ids_a = [make_subscriber(app, a, last_name=f"A{i}") for i in range(3)]
    ids_b = [make_subscriber(app, b, last_name="B0")]
    with app.app_context(), acting_as(None):
        numbers = {s.id: s.account_number for s in db.session.scalars(select(Subscriber))}
    assert [numbers[i] for i in ids_a] == ["000001", "000002", "000003"]
    assert [numbers[i] for i in ids_b] == ["000001"]


def test_hand_typed_account_number_is_skipped_and_duplicates_refused(app, make_tenant):
    t = make_tenant()
    make_subscriber(app, t, account_number="000002")
    first = make_subscriber(app, t)
    second = make_subscriber(app, t)
    with app.app_context(), acting_as(t):
        assert db.session.get(Subscriber, first).account_number == "000001"
        assert db.session.get(Subscriber, second).account_number == "000003"
        with pytest.raises(ValidationFailed) as err:
            create_subscriber(db.session, first_name="X", last_name="Y", account_number="000003")
        assert "account_number" in err.value.errors


@pytest.mark.parametrize("fields, field", [
    ({"first_name": "", "last_name": "", "company": ""}, "last_name"),
    ({"email": "not-an-email"}, "email"),
    ({"bill_day": 29}, "bill_day"),
    ({"billing_cycle": "weekly"}, "billing_cycle"),
    ({"latitude": Decimal("91")}, "latitude"),
    ({"longitude": Decimal("-180.5")}, "longitude"),
])
def test_subscriber_validation_names_the_field(app, make_tenant, fields, field):
    t = make_tenant()
    with app.app_context(), acting_as(t):
        values = dict(first_name="Ada", last_name="Lovelace")
        values.update(fields)
        with pytest.raises(ValidationFailed) as err:
            create_subscriber(db.session, **values)
        assert field in err.value.errors
        assert _count(Subscriber) == 0


def test_company_alone_is_a_valid_name(app, make_tenant):
    t = make_tenant()
    sid = make_subscriber(app, t, first_name=None, last_name=None, company="Bakery Ltd")
    assert sid


def test_required_tax_rate_must_be_chosen_or_exempt(app, make_tenant):
    t = make_tenant()
    rate = make_tax_rate(app, t, required=True)
    with app.app_context(), acting_as(t):
        with pytest.raises(ValidationFailed) as err:
            create_subscriber(db.session, first_name="A", last_name="B")
        assert "tax_rates" in err.value.errors
        db.session.rollback()
        with_rate = create_subscriber(db.session, first_name="A", last_name="B",
                                      tax_rate_ids=[rate])
        exempt = create_subscriber(db.session, first_name="C", last_name="D", tax_exempt=True,
                                   tax_exemption_code="NONPROFIT-1")
        db.session.commit()
        assert [r.id for r in with_rate.tax_rates] == [rate]
        assert exempt.tax_exempt


def test_parent_account_cannot_make_a_loop(app, make_tenant):
    t = make_tenant()
    top = make_subscriber(app, t, last_name="Top")
    child = make_subscriber(app, t, last_name="Child", parent_id=top)
    with app.app_context(), acting_as(t):
        from headend.subscribers.services import validate_subscriber

        top_row = db.session.get(Subscriber, top)
        top_row.parent_id = child
        with pytest.raises(ValidationFailed) as err:
            validate_subscriber(db.session, top_row)
        assert "parent" in err.value.errors
        top_row.parent_id = top
        with pytest.raises(ValidationFailed) as err:
            validate_subscriber(db.session, top_row)
        assert "parent" in err.value.errors


@pytest.mark.parametrize("q", ["lovelace", "Ada Love", "000001", "ada@example", "555-0100",
                               "5550100", "analytical", "62704", "springfield"])
def test_search_finds_by_name_account_email_phone_address(app, make_tenant, q):
    t = make_tenant()
    make_subscriber(app, t)
    make_subscriber(app, t, first_name="Grace", last_name="Hopper", email="grace@navy.test",
                    phone="555-0199", service_line1="1 Cobol Road", service_city="Arlington",
                    service_postal_code="22201")
    with app.app_context(), acting_as(t):
        found = search_subscribers(db.session, q)
        assert [s.last_name for s in found] == ["Lovelace"]


def test_search_is_scoped_and_escapes_wildcards(app, make_tenant):
    a, b = make_tenant("A Net"), make_tenant("B Net")
    make_subscriber(app, a)
    make_subscriber(app, b, first_name="Ada", last_name="Other")
    with app.app_context(), acting_as(a):
        assert [s.last_name for s in search_subscribers(db.session, "ada")] == ["Lovelace"]
        assert search_subscribers(db.session, "%") == []


def test_add_package_creates_pending_subscription_with_one_instance_per_unit(app, make_tenant):
    t = make_tenant()
    pkg = make_package(app, t, lines=(("Internet", 1), ("Phone line", 2)))
    sid = make_subscriber(app, t)
    with app.app_context(), acting_as(t):
        sub = add_package(db.session, sid, pkg, quantity=2, billing_cycle="annual")
        db.session.commit()
        assert sub.status == "pending"
        labels = sorted(i.label for i in sub.services)
        assert labels == ["Internet #1", "Internet #2", "Phone line #1", "Phone line #2",
                          "Phone line #3", "Phone line #4"]
        assert {i.status for i in sub.services} == {"pending"}


def test_add_package_defaults_to_the_subscribers_cycle(app, make_tenant):
    t = make_tenant()
    pkg = make_package(app, t)
    sid = make_subscriber(app, t, billing_cycle="annual")
    with app.app_context(), acting_as(t):
        assert add_package(db.session, sid, pkg).billing_cycle == "annual"


@pytest.mark.parametrize("kwargs, field", [
    ({"custom_price": "10.00"}, "custom_price"),
    ({"billing_cycle": "quarterly"}, "billing_cycle"),
    ({"quantity": 0}, "quantity"),
    ({"quantity": "two"}, "quantity"),
])
def test_add_package_refusals_write_nothing(app, make_tenant, kwargs, field):
    t = make_tenant()
    pkg = make_package(app, t, custom=False)
    sid = make_subscriber(app, t)
    with app.app_context(), acting_as(t):
        with pytest.raises(ValidationFailed) as err:
            add_package(db.session, sid, pkg, **{"billing_cycle": "monthly", **kwargs})
        assert field in err.value.errors
        db.session.rollback()
        assert _count(Subscription) == 0 and _count(ServiceInstance) == 0


def test_custom_price_allowed_where_package_allows_it(app, make_tenant):
    t = make_tenant()
    pkg = make_package(app, t, custom=True)
    sid = make_subscriber(app, t)
    with app.app_context(), acting_as(t):
        with pytest.raises(ValidationFailed) as err:
            add_package(db.session, sid, pkg, custom_price="-1")
        assert "custom_price" in err.value.errors
        sub = add_package(db.session, sid, pkg, custom_price="39.5")
        db.session.commit()
        assert db.session.get(Subscription, sub.id).custom_price == Decimal("39.5")


def test_inactive_or_other_tenants_package_is_refused(app, make_tenant):
    a, b = make_tenant("A Net"), make_tenant("B Net")
    inactive = make_package(app, a, name="Old", active=False)
    foreign = make_package(app, b, name="Theirs")
    sid = make_subscriber(app, a)
    with app.app_context(), acting_as(a):
        for pkg in (inactive, foreign):
            with pytest.raises(ValidationFailed) as err:
                add_package(db.session, sid, pkg)
            assert "package" in err.value.errors


def test_price_preview_is_exact(app, make_tenant):
    t = make_tenant()
    pkg_id = make_package(app, t, custom=True, monthly="19.99")
    with app.app_context(), acting_as(t):
        from headend.catalog.models import Package

        pkg = db.session.get(Package, pkg_id)
        assert price_preview(pkg, "monthly", 3) == {
            "unit_price": Decimal("19.99"), "quantity": 3, "line_total": Decimal("59.97"),
            "setup_fee": Decimal("25.00"),
        }
        assert price_preview(pkg, "monthly", 2, Decimal("5.005"))["line_total"] == \
            Decimal("10.010")


def test_concurrent_creates_get_distinct_sequential_numbers(app, make_tenant):
    import threading

    t = make_tenant()
    barrier = threading.Barrier(8)
    errors = []

    def create(n):
        try:
            with app.app_context(), acting_as(t):
                barrier.wait()
                create_subscriber(db.session, first_name="P", last_name=f"Racer{n}")
                db.session.commit()
                db.session.remove()
        except Exception as exc:  # reported below, a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with app.app_context(), acting_as(t):
        numbers = sorted(db.session.scalars(select(Subscriber.account_number)))
    assert numbers == [f"{n:06d}" for n in range(1, 9)]
