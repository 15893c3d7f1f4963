"""The plugin config schema and the encryption of secrets, without a database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from headend import secrets
from headend.errors import ValidationFailed
from headend.plugins.config_schema import ConfigSchema, Field, from_json, to_json

SCHEMA = ConfigSchema((
    Field("url", required=True),
    Field("retries", "int", default=3),
    Field("sandbox", "bool", default=True),
    Field("rate", "decimal"),
    Field("region", "choice", choices=("us", "eu")),
    Field("api_key", secret=True, required=True),
))


def test_valid_values_are_typed_and_split_into_plain_and_secret():
    plain, secret = SCHEMA.validate({
        "url": " https://x.test ", "retries": "5", "sandbox": "off", "rate": "0.0825",
        "region": "eu", "api_key": "sk_live_1",
    })
    assert plain == {"url": "https://x.test", "retries": 5, "sandbox": False,
                     "rate": Decimal("0.0825"), "region": "eu"}
    assert secret == {"api_key": "sk_live_1"}
    assert to_json(plain)["rate"] == "0.0825"
    assert from_json(SCHEMA, to_json(plain))["rate"] == Decimal("0.0825")


def test_errors_name_every_bad_field():
    with pytest.raises(ValidationFailed) as err:
        SCHEMA.validate({"retries": "2.5", "rate": 0.1, "region": "mars", "colour": "red",
                         "sandbox": "maybe"})
    assert set(err.value.errors) == {"url", "retries", "rate", "region", "colour", "sandbox",
                                     "api_key"}
    assert err.value.errors["api_key"] == ["is required"]
    assert "floats" in err.value.errors["rate"][0]


def test_blank_secret_keeps_the_stored_one_and_required_can_wait():
    plain, secret = SCHEMA.validate({"url": "u", "api_key": ""}, {"api_key": "old"})
    assert secret == {"api_key": "old"}
    plain, secret = SCHEMA.validate({}, enforce_required=False)
    assert secret == {} and plain == {"sandbox": True}
    assert SCHEMA.with_defaults(plain)["retries"] == 3


def test_schema_declaration_mistakes_are_caught():
    with pytest.raises(ValueError, match="type"):
        Field("x", "float")
    with pytest.raises(ValueError, match="choices"):
        Field("x", "choice")
    with pytest.raises(ValueError, match="unique"):
        ConfigSchema((Field("a"), Field("a")))


def test_secrets_round_trip_with_derived_or_explicit_key():
    derived = {"SECRET_KEY": "k1", "HEADEND_SECRET_ENCRYPTION_KEY": None}
    token = secrets.seal({"api_key": "sk_live_1"}, derived)
    assert "sk_live_1" not in token
    assert secrets.unseal(token, derived) == {"api_key": "sk_live_1"}
    assert secrets.seal({}, derived) is None and secrets.unseal(None, derived) == {}
    with pytest.raises(secrets.SecretsUnreadable):
        secrets.unseal(token, {"SECRET_KEY": "k2"})
    explicit = {"SECRET_KEY": "k1", "HEADEND_SECRET_ENCRYPTION_KEY": Fernet.generate_key()}
    with pytest.raises(secrets.SecretsUnreadable):
        secrets.unseal(token, explicit)
    assert secrets.unseal(secrets.seal({"a": 1}, explicit), explicit) == {"a": 1}
    assert secrets.derive_key("k1") == secrets.derive_key("k1") != secrets.derive_key("k2")
