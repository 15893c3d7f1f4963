"""The small declarative settings schema every plugin declares, and its validation.

A plugin lists its settings as `Field`s; the core builds the configure form from them, checks
submitted values, and keeps `secret` fields encrypted (headend.secrets), never showing them back.
Values arrive as form strings or JSON values and leave as str / int / bool / Decimal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from headend.errors import ValidationFailed

TYPES = ("str", "int", "bool", "decimal", "choice")
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


@dataclass(frozen=True)
class Field:
    name: str
    type: str = "str"
    label: str = ""
    required: bool = False
    secret: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"field {self.name}: type must be one of {', '.join(TYPES)}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"field {self.name}: a choice field needs choices")
        if self.secret and self.type == "bool":
            raise ValueError(f"field {self.name}: a bool cannot be secret")

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def coerce(self, raw: Any) -> Any:
        """The typed value of `raw`; ValueError with a message for the form when it is bad."""
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError("must be true or false")
        text = raw if isinstance(raw, str) else str(raw)
        text = text.strip()
        if self.type == "int":
            if isinstance(raw, bool) or not re.fullmatch(r"-?\d+", text):
                raise ValueError("must be a whole number")
            return int(text)
        if self.type == "decimal":
            if isinstance(raw, float):
                raise ValueError("send decimals as strings, not floats")
            try:
                value = Decimal(text)
            except InvalidOperation:
                raise ValueError("must be a decimal number") from None
            if not value.is_finite():
                raise ValueError("must be a decimal number")
            return value
        if self.type == "choice" and text not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        return text


def _blank(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and raw.strip() == "")


@dataclass(frozen=True)
class ConfigSchema:
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def __post_init__(self):
        names = [f.name for f in self.fields]
        if len(names) != len(set(names)):
            raise ValueError("config schema: field names must be unique")

    def __iter__(self):
        return iter(self.fields)

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def secret_names(self) -> set[str]:
        return {f.name for f in self.fields if f.secret}

    def validate(self, values: Mapping[str, Any], stored_secrets: Mapping[str, Any] = (),
                 enforce_required: bool = True) -> tuple[dict, dict]:
        """Check `values`; return (plain, secret) typed dicts or raise ValidationFailed.

        A blank secret keeps the stored one, so a form never has to show it back. A bool that
        is absent is false (an unticked checkbox sends nothing).
        """
        errors: dict[str, list[str]] = {}
        for name in values:
            if self.field(name) is None:
                errors.setdefault(name, []).append("is not a setting of this plugin")
        plain, secret = {}, {}
        for f in self.fields:
            raw = values.get(f.name)
            if f.secret and _blank(raw):
                if f.name in stored_secrets:
                    secret[f.name] = stored_secrets[f.name]
                elif f.required and enforce_required:
                    errors.setdefault(f.name, []).append("is required")
                continue
            if f.type == "bool" and raw is None:
                raw = f.default if f.default is not None else False
            if _blank(raw):
                if f.required and enforce_required and f.default is None:
                    errors.setdefault(f.name, []).append("is required")
                continue
            try:
                value = f.coerce(raw)
            except ValueError as exc:
                errors.setdefault(f.name, []).append(str(exc))
                continue
            (secret if f.secret else plain)[f.name] = value
        if errors:
            raise ValidationFailed(errors)
        return plain, secret

    def with_defaults(self, values: Mapping[str, Any]) -> dict:
        """Every field's value: the stored one, else its default (coerced), else None."""
        result = {}
        for f in self.fields:
            if f.name in values:
                result[f.name] = values[f.name]
            else:
                result[f.name] = None if f.default is None else f.coerce(f.default)
        return result


def to_json(values: Mapping[str, Any]) -> dict:
    """Typed values as JSON-safe ones: Decimals become strings (never floats)."""
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in values.items()}


def from_json(schema: ConfigSchema, values: Mapping[str, Any]) -> dict:
    """Stored JSON values back to their types; settings the schema no longer has are dropped."""
    result = {}
    for name, value in values.items():
        f = schema.field(name)
        if f is not None and value is not None:
            result[name] = f.coerce(value)
    return result
