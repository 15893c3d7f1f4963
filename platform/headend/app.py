"""The application factory: one call builds a complete, independent Headend app."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from flask import Flask
from flask_appbuilder import AppBuilder
from flask_wtf.csrf import CSRFProtect

import headend.audit.recorder  # noqa: F401  (registers the audit listener)
import headend.tenancy.scoping  # noqa: F401  (registers the tenant scoping listeners)
from headend.db import db
from headend.schema import metadata

# Each domain package exposes register(appbuilder) in its views module (and api module); a
# domain with more pages lists further modules in its own REGISTRARS tuple.
DOMAINS = (
    "headend.tenancy",
    "headend.catalog",
    "headend.subscribers",
    "headend.plugins",
    "headend.audit",
    "headend.ledger",
    "headend.billing",
    "headend.payments",
    "headend.dunning",
    "headend.network",
    "headend.branding",
    "headend.documents",
    "headend.mail",
    "headend.portal",
    "headend.signup",
)


class ConfigError(RuntimeError):
    """The deployment's settings cannot run safely."""


def _default_config_path() -> str | None:
    path = os.environ.get("HEADEND_CONFIG") or os.path.join(os.getcwd(), "config.py")
    return path if os.path.exists(path) else None


def _check_config(config) -> None:
    from headend.settings import DEV_SECRET_KEY

    if config["HEADEND_ENV"] == "production" and config["SECRET_KEY"] in (DEV_SECRET_KEY, "", None):
        raise ConfigError(
            "HEADEND_ENV=production needs its own SECRET_KEY: set HEADEND_SECRET_KEY"
        )
    if config["HEADEND_ENV"] == "production" and not config.get("HEADEND_PUBLIC_URL"):
        raise ConfigError(
            "HEADEND_ENV=production needs the address subscribers use (emailed links): "
            "set HEADEND_PUBLIC_URL"
        )


def create_app(config_path: str | None = None, overrides: dict | None = None) -> Flask:
    here = Path(__file__).parent
    app = Flask("headend", template_folder=str(here / "templates"),
                static_folder=str(here / "static"))
    app.config.from_object("headend.settings")
    path = config_path or _default_config_path()
    if path:
        app.config.from_pyfile(os.path.abspath(path))
    app.config.update(overrides or {})
    _check_config(app.config)
    hops = int(app.config.get("HEADEND_PROXY_HOPS") or 0)
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    metadata()  # map every model before FAB configures mappers (string relationships resolve)
    db.init_app(app)
    # Every form post needs the token (FAB's own forms carry it; so must ours). Registered before
    # the views: FAB exempts its API blueprints, which authenticate by token, never by cookie.
    CSRFProtect(app)
    with app.app_context():
        appbuilder = AppBuilder(update_perms=False)
        appbuilder.headend_menu = {}
        appbuilder.init_app(app, db.session)
        from headend.plugins.manager import init_plugins

        init_plugins(app, appbuilder)
        for domain in DOMAINS:
            package = importlib.import_module(domain)
            for module in getattr(package, "REGISTRARS", ("views", "api")):
                try:
                    mod = importlib.import_module(f"{domain}.{module}")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{domain}.{module}":
                        raise
                    continue
                mod.register(appbuilder)
        app.extensions["headend_plugins"].hook.register_admin_views(appbuilder=appbuilder)
    return app
