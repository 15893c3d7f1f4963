"""Billing engine: periods, proration, invoicing. `periods` and `proration` are pure (no DB)."""
