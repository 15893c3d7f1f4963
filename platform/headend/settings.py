"""Defaults for every deployment; the deployment's config.py (loaded by path) overrides them."""

import os

from flask_appbuilder.const import AUTH_DB

DEV_SECRET_KEY = "headend-development-key-not-for-production"

# "development" runs with the well-known key above; "production" refuses it (see app.py).
HEADEND_ENV = "development"
SECRET_KEY = DEV_SECRET_KEY
# Fernet key (urlsafe base64, 32 bytes) that encrypts plugin secrets at rest; derived from
# SECRET_KEY when unset so that development works out of the box.
HEADEND_SECRET_ENCRYPTION_KEY = None

SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.abspath("headend.db")
SQLALCHEMY_TRACK_MODIFICATIONS = False
# With no REDIS_URL jobs run in-process (the embedded default).
REDIS_URL = None

# Comma-separated plugin names allowed to load from the `headend` entry-point group; None = all.
HEADEND_PLUGIN_ALLOWLIST = None

APP_NAME = "Headend"
APP_THEME = ""
AUTH_TYPE = AUTH_DB
# The FAB admin role is the platform operator: it sees every tenant. Tenant staff get the
# builtin roles below.
AUTH_ROLE_ADMIN = "Operator"
AUTH_ROLE_PUBLIC = "Public"
AUTH_USER_REGISTRATION = False
AUTH_RATE_LIMITED = True
AUTH_RATE_LIMIT = "10 per 20 second"
RATELIMIT_STORAGE_URI = "memory://"

# Our migrations own every table, FAB's included.
FAB_CREATE_DB = False
FAB_UPDATE_PERMS = True
FAB_ADD_SECURITY_API = False
FAB_API_KEY_ENABLED = True
FAB_API_SWAGGER_UI = True
FAB_SECURITY_MANAGER_CLASS = "headend.tenancy.security.HeadendSecurityManager"
FAB_INDEX_VIEW = "headend.dashboard.DashboardIndexView"
WTF_CSRF_ENABLED = True
JWT_ACCESS_TOKEN_EXPIRES = 3600
LANGUAGES = {"en": {"flag": "us", "name": "English"}}
BABEL_DEFAULT_LOCALE = "en"

# The public signup page: at most this many attempts per address and tenant in the window.
SIGNUP_RATE_LIMIT = 5
SIGNUP_RATE_WINDOW_MINUTES = 10

# The address subscribers reach this installation at (https://billing.example.net): emailed
# links (portal invitations, password resets) use it rather than the request's Host header,
# which a client can forge. Required in production.
HEADEND_PUBLIC_URL = None

# How many reverse proxies (load balancer, TLS terminator) stand in front of the app: their
# X-Forwarded-For/-Proto/-Host are then trusted, so the signup rate limit counts the visitor's
# address, not the proxy's. 0: none, the client's headers are ignored.
HEADEND_PROXY_HOPS = 0
