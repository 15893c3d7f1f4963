"""Payments: gateways per billing method, receiving money, refunds, saved payment methods,
gateway notifications."""

# Modules whose register(appbuilder) adds this domain's pages, APIs and the webhook endpoint.
REGISTRARS = ("views", "import_views", "api", "webhook")
