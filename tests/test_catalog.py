"""Catalog rules on the database: default chart, exact decimals, validators, delete guards."""

from decimal import Decimal

import pytest
from headend.catalog import models as m
from headend.catalog import services
from headend.db import ExactDecimal
from headend.errors import ValidationFailed
from headend.tenancy.context import acting_as
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_new_tenant_gets_the_default_chart(ctx, make_tenant):
    a, b = make_tenant("Acme Fiber"), make_tenant("Valley Wireless")
    with acting_as(a):
        chart = {acc.code: acc for acc in ctx.scalars(select(m.Account))}
    assert {code for code, _, _ in services.DEFAULT_CHART} == set(chart)
    assert chart["1200"].name == "Accounts Receivable" and chart["1200"].type == "asset"
    assert chart["1000"].name == "Cash" and chart["1010"].name == "Undeposited Funds"
    assert chart["2200"].type == "liability" and chart["3000"].type == "equity"
    assert {acc.type for acc in chart.values()} == set(m.ACCOUNT_TYPES)
    assert all(acc.tenant_id == a for acc in chart.values())
    with acting_as(b):
        assert count(ctx, m.Account) == len(services.DEFAULT_CHART)


@pytest.mark.parametrize("value", ["0.0001", "12345678.9999", "0", "99999999999999.9999"])
def test_exact_decimals_round_trip(ctx, make_tenant, value):
    with acting_as(make_tenant()):
        item = m.Item(code="X", name="X", type="fee", price=Decimal(value))
        ctx.add(item)
        ctx.commit()
        ctx.expire_all()
        stored = ctx.scalar(select(m.Item.price))
    assert stored == Decimal(value) and str(stored.normalize()) == str(Decimal(value).normalize())


@given(st.decimals(min_value=Decimal("-99999999999999.9999"),
                   max_value=Decimal("99999999999999.9999"), places=4,
                   allow_nan=False, allow_infinity=False))
def test_exact_decimal_type_round_trips_any_4_place_decimal(value):
    column = ExactDecimal(4)
    stored = column.process_bind_param(value, None)
    assert isinstance(stored, int)
    assert column.process_result_value(stored, None) == value


def test_offered_cycles_keep_order_and_skip_missing():
    package = m.Package(name="P", price_annual=Decimal("100"), price_monthly=Decimal("10"))
    assert list(package.offered_cycles().items()) == [
        ("monthly", Decimal("10")), ("annual", Decimal("100"))]


def _errors(call, *args) -> dict:
    with pytest.raises(ValidationFailed) as err:
        call(*args)
    return err.value.errors


def test_package_validation_names_fields(ctx, make_tenant):
    with acting_as(make_tenant()):
        errors = _errors(services.validate_package, ctx, m.Package(
            name="P", setup_fee=Decimal("-1"), price_monthly="abc", customer_type="both",
            account_manager_visibility="visible", tax_mode="custom", custom_tax_kind="percent",
            hibernation_fee=Decimal("-5")))
        assert set(errors) == {"setup_fee", "price_monthly", "hibernation_fee",
                               "custom_tax_cycle_rate", "custom_tax_setup_rate"}
        no_cycle = _errors(services.validate_package, ctx, m.Package(
            name="P", customer_type="both", account_manager_visibility="visible",
            tax_mode="none"))
        assert "billing cycle" in no_cycle["price_monthly"][0]
        too_precise = _errors(services.validate_package, ctx, m.Package(
            name="P", price_monthly=Decimal("1.00001"), customer_type="both",
            account_manager_visibility="visible", tax_mode="none"))
        assert "4 decimal places" in too_precise["price_monthly"][0]


def test_account_parent_cannot_form_a_cycle(ctx, make_tenant):
    with acting_as(make_tenant()):
        parent = m.Account(code="4000X", name="Parent", type="income")
        child = m.Account(code="4001X", name="Child", type="income", parent=parent)
        ctx.add_all([parent, child])
        ctx.flush()
        parent.parent = child
        assert "parent" in _errors(services.validate_account, ctx, parent)
        ctx.rollback()
        dup = m.Account(code="1200", name="AR again", type="asset")
        assert "code" in _errors(services.validate_account, ctx, dup)


def test_internet_profile_rules(ctx, make_tenant):
    with acting_as(make_tenant()):
        package = m.Package(name="Fiber", price_monthly=Decimal("50"))
        profile = services.new_internet_profile(package)
        profile.download_speed, profile.burst_download = 100, 50
        errors = _errors(services.validate_internet_profile, ctx, profile)
        assert {"burst_upload", "burst_threshold_download", "burst_threshold_upload",
                "burst_time_seconds"} <= set(errors)
        profile.burst_upload, profile.burst_threshold_download = 10, 80
        profile.burst_threshold_upload, profile.burst_time_seconds = 4, 8
        assert set(_errors(services.validate_internet_profile, ctx, profile)) == {
            "burst_download"}
        profile.burst_download, profile.throttled_download = 200, 150
        assert set(_errors(services.validate_internet_profile, ctx, profile)) == {
            "data_limit_gb", "throttled_download"}
        profile.data_limit_gb, profile.throttled_download = 500, 10
        services.validate_internet_profile(ctx, profile)


def test_restore_defaults(ctx, make_tenant):
    with acting_as(make_tenant()):
        package = m.Package(name="Fiber", price_monthly=Decimal("50"))
        ctx.add(package)
        package.internet_profile = m.InternetProfile(download_speed=300, upload_speed=300,
                                                     data_limit_gb=100, throttled_download=1)
        ctx.flush()
        profile = services.restore_internet_profile_defaults(ctx, package)
        ctx.commit()
        for field, value in m.INTERNET_PROFILE_DEFAULTS.items():
            assert getattr(profile, field) == value
        assert count(ctx, m.InternetProfile) == 1


def test_service_line_in_use_cannot_be_deleted(ctx, make_tenant):
    from headend.subscribers.models import ServiceInstance, Subscriber, Subscription

    with acting_as(make_tenant()):
        internet = m.Service(name="Internet", type="internet")
        package = m.Package(name="Fiber", price_monthly=Decimal("50"))
        line = m.PackageServiceLine(package=package, service=internet, label="Internet")
        subscriber = Subscriber(account_number="1001", first_name="Ann")
        ctx.add_all([internet, package, line, subscriber])
        for status in ("active", "active", "suspended", "cancelled"):
            sub = Subscription(subscriber=subscriber, package=package, status=status)
            ctx.add(ServiceInstance(subscription=sub, service_line=line, label="Internet"))
        ctx.commit()
        errors = _errors(services.guard_service_line_delete, ctx, line)
        assert "used by 3 active subscriptions" in errors["service_lines"][0]
        assert "package" in _errors(services.guard_package_delete, ctx, package)
