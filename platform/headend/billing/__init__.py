"""Billing: periods, proration, charges, invoices, memos and the billing run."""

# Modules whose register(appbuilder) adds this domain's pages and APIs.
REGISTRARS = ("views", "api", "memo_views", "memo_api", "change_views", "change_api",
             "recurring_views")
