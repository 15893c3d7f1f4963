"""Domain errors that views and APIs translate into form errors and 4xx JSON."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the business refused the operation."""


class ValidationFailed(DomainError):
    """Bad input: `errors` maps each field name to the reason it was refused."""

    def __init__(self, errors: dict[str, str | list[str]]):
        self.errors = {k: [v] if isinstance(v, str) else list(v) for k, v in errors.items()}
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in self.errors.items()))


class NotFound(DomainError):
    """The row does not exist, or belongs to another tenant: the caller sees no difference."""


def require(errors: dict, field: str, ok: bool, message: str) -> None:
    """Collect `message` under `field` unless `ok`."""
    if not ok:
        errors.setdefault(field, []).append(message)


def raise_if(errors: dict) -> None:
    if errors:
        raise ValidationFailed(errors)
