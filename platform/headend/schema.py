"""The complete metadata: FAB's tables and every domain's models, for Alembic and tests."""

import importlib

from headend.db import Model

MODEL_MODULES = (
    "flask_appbuilder.security.sqla.models",
    "headend.tenancy.models",
    "headend.sequences",
    "headend.audit.models",
    "headend.catalog.models",
    "headend.subscribers.models",
    "headend.plugins.models",
    "headend.ledger.models",
    "headend.billing.models",
    "headend.payments.models",
    "headend.dunning.models",
    "headend.network.models",
    "headend.branding.models",
    "headend.documents.models",
    "headend.mail.models",
    "headend.portal.models",
    "headend.signup.models",
)


def metadata():
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return Model.metadata
