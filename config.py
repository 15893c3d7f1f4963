"""This deployment's settings, loaded by path over headend/settings.py.

Secrets come from the environment only. Set HEADEND_ENV=production for a real deployment:
the app then refuses to start with the development SECRET_KEY.
"""

import os

HEADEND_ENV = os.environ.get("HEADEND_ENV", "development")
if os.environ.get("HEADEND_SECRET_KEY"):
    SECRET_KEY = os.environ["HEADEND_SECRET_KEY"]
HEADEND_SECRET_ENCRYPTION_KEY = os.environ.get("HEADEND_SECRET_ENCRYPTION_KEY")

# Embedded default: SQLite in the working directory, jobs in-process.
SQLALCHEMY_DATABASE_URI = os.environ.get(
    "HEADEND_DATABASE_URL", "sqlite:///" + os.path.abspath("headend.db")
)
REDIS_URL = os.environ.get("HEADEND_REDIS_URL") or None
HEADEND_PLUGIN_ALLOWLIST = os.environ.get("HEADEND_PLUGIN_ALLOWLIST") or None
HEADEND_PUBLIC_URL = os.environ.get("HEADEND_PUBLIC_URL") or None
HEADEND_PROXY_HOPS = int(os.environ.get("HEADEND_PROXY_HOPS") or 0)
# Where `headend demo` keeps each demo tenant's RADIUS database (SQLite files).
DEMO_RADIUS_DIR = os.environ.get("HEADEND_DEMO_RADIUS_DIR") or os.path.abspath(".")
